"""Answer-token resolution and span-to-token mapping, on the real GPT-2 tokenizer and a word-level tokenizer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saeeval.errors import SaeevalError
from saeeval.tasks.answers import resolve_answer, resolve_answers, resolve_prompt, span_token_positions
from saeeval.tasks.words import TOXICITY_TEMPLATE, generate_ioi


def word_tokenizer(texts: list[str], pad: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (words and punctuation) over `texts`; unknown words map to <unk>."""
    pre = pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    specials = ["<bos>", "<unk>"] + (["<pad>"] if pad else [])
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>" if pad else None
    )
    out.init_kwargs["name_or_path"] = "word-level-test"
    return out


def gpt2_encode(tok):
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


def test_label_prompt_moves_trailing_space_into_answer_for_gpt2(gpt2_tokenizer):
    tok = gpt2_tokenizer
    prompt = TOXICITY_TEMPLATE.replace("{phrase}", "Jim is a horrible african")
    ids, answer = resolve_answer(tok, gpt2_encode(tok), prompt, "1")
    assert tok.convert_ids_to_tokens(ids[-2:]) == ["Label", ":"]
    assert ids == tok(prompt.rstrip(), add_special_tokens=False)["input_ids"]
    (space_one,) = tok(" 1", add_special_tokens=False)["input_ids"]
    assert answer == space_one and tok.decode([answer]) == " 1"
    assert answer == 352  # the research note's id, now confirmed by the tokenizer itself


def test_prompt_without_trailing_space_keeps_its_tokens(gpt2_tokenizer):
    tok = gpt2_tokenizer
    text, ids, answers = resolve_prompt(tok, gpt2_encode(tok), "Label:", [" 1", " 0"])
    assert text == "Label:" and ids == tok("Label:", add_special_tokens=False)["input_ids"]
    assert answers == [tok(a, add_special_tokens=False)["input_ids"][0] for a in (" 1", " 0")]


def test_multi_token_answer_error_names_answer_tokenizer_and_fix(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match=r"name ' Xzqwvbnm' is not a single token.*gpt2-fixture.*task\.names"):
        resolve_answer(
            gpt2_tokenizer, gpt2_encode(gpt2_tokenizer), "gave it to", " Xzqwvbnm", what="name", fix="set task.names"
        )


def test_answers_sharing_a_token_are_rejected(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match="share a token"):
        resolve_answers(gpt2_tokenizer, gpt2_encode(gpt2_tokenizer), "Label: ", ["1", "1"], what="label")


def test_word_level_unknown_answer_is_not_a_single_token():
    tok = word_tokenizer(["Label : 1 0"])
    enc = gpt2_encode(tok)
    ids, one = resolve_answer(tok, enc, "Label: ", "1")
    assert tok.convert_ids_to_tokens(ids) == ["Label", ":"] and tok.convert_ids_to_tokens([one]) == ["1"]
    with pytest.raises(SaeevalError, match="'yes' is not a single token.*word-level-test"):
        resolve_answer(tok, enc, "Label: ", "yes", what="label")


def test_span_positions_agree_between_offsets_and_prefix_tokenization(gpt2_tokenizer):
    tok, enc = gpt2_tokenizer, gpt2_encode(gpt2_tokenizer)
    for p in generate_ioi(20, seed=3):
        fast = span_token_positions(tok, enc, p.prompt, p.spans)
        slow = span_token_positions(SimpleNamespace(is_fast=False), enc, p.prompt, p.spans)
        assert fast == slow
        ids = enc(p.prompt)
        assert tok.decode([ids[fast["IO"]]]) == " " + p.io
        assert tok.decode([ids[fast["S1"]]]) == tok.decode([ids[fast["S2"]]]) == " " + p.s
