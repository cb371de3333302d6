"""IOI task: name positions, answer ids, BABA/ABBA alternation and the single-token name check."""

from __future__ import annotations

import pytest
from test_tasks_answers import word_tokenizer

from saeeval.errors import SaeevalError
from saeeval.tasks.ioi import IOIDataModule
from saeeval.tasks.words import generate_ioi, load_words


def built(tok, prepend_bos: bool = True, **kw) -> IOIDataModule:
    dm = IOIDataModule(**kw)
    dm.bind(tok, prepend_bos)
    dm.setup("test")
    return dm


def name_id(tok, name: str) -> int:
    ids = tok(" " + name, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_positions_point_at_the_names_and_answers_are_their_tokens(gpt2_tokenizer, prepend_bos):
    tok = gpt2_tokenizer
    dm = built(tok, prepend_bos, n_examples=40, seed=7)
    reference = generate_ioi(40, seed=7)
    assert len(dm.examples) == 40
    for e, ref in zip(dm.examples, reference, strict=True):
        assert e.prompt == ref.prompt
        assert e.correct == name_id(tok, ref.io) and e.incorrect == name_id(tok, ref.s)
        assert tok.decode([e.tokens[e.positions["IO"]]]) == " " + ref.io
        assert tok.decode([e.tokens[e.positions["S1"]]]) == " " + ref.s
        assert tok.decode([e.tokens[e.positions["S2"]]]) == " " + ref.s
        assert e.positions["S1"] < e.positions["S2"] < e.positions["END"] == len(e.tokens) - 1
        assert tok.decode([e.tokens[-1]]) == " to"
        assert (e.tokens[0] == tok.bos_token_id) is prepend_bos


def test_orders_alternate_baba_abba(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, n_examples=20)
    assert dm.groups == [{"order": "BABA"}, {"order": "ABBA"}]
    assert [e.group for e in dm.examples] == [0, 1] * 10
    for e in dm.examples:
        first_is_s = e.positions["S1"] < e.positions["IO"]
        assert first_is_s is (dm.groups[e.group]["order"] == "BABA")


def test_all_default_names_pass_for_gpt2(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, n_examples=4)
    assert dm.describe()["options"]["names"] is None
    names = load_words("ioi")["names"]
    assert all(len(gpt2_tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1 for n in names)


def test_multi_token_names_are_named_in_the_error(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match=r"1 of 3 IOI names are not one token .*\(Xzqwvbnm\); set task\.names="):
        built(gpt2_tokenizer, names=["Mary", "John", "Xzqwvbnm"])


def test_names_subset_is_used(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, names=["Mary", "John", "Mary"], n_examples=10)
    ids = {name_id(gpt2_tokenizer, "Mary"), name_id(gpt2_tokenizer, "John")}
    assert all({e.correct, e.incorrect} == ids for e in dm.examples)
    with pytest.raises(SaeevalError, match="at least two distinct names"):
        IOIDataModule(names=["Mary"])


def test_word_level_tokenizer_positions_and_unknown_names():
    prompts = generate_ioi(30, seed=2, names=["Mary", "John", "Anna"])
    tok = word_tokenizer([p.prompt for p in prompts] + ["Mary John Anna"])
    dm = built(tok, names=["Mary", "John", "Anna"], n_examples=30, seed=2)
    for e, ref in zip(dm.examples, prompts, strict=True):
        assert tok.convert_ids_to_tokens([e.correct, e.incorrect]) == [ref.io, ref.s]
        assert e.tokens[e.positions["IO"]] == e.correct
        assert e.tokens[e.positions["S1"]] == e.tokens[e.positions["S2"]] == e.incorrect
    with pytest.raises(SaeevalError, match=r"1 of 3 IOI names .*word-level-test.*\(Zed\)"):
        built(tok, names=["Mary", "John", "Zed"])


def test_limit_truncates_and_empty_is_an_error(gpt2_tokenizer):
    assert len(built(gpt2_tokenizer, n_examples=50, limit=7).examples) == 7
    with pytest.raises(SaeevalError, match=r"task\.n_examples=0 leaves no examples"):
        IOIDataModule(n_examples=0)
