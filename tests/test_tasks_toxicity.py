"""Toxicity task: the generated Jigsaw rows, stratified sampling, label tokens, CSV input and error messages."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from conftest import gpt2_tokenizer_obj

from saeeval.errors import SaeevalError
from saeeval.tasks.toxicity import ToxicityDataModule
from saeeval.tasks.words import SEED_IDENTITIES, name_adj_rows

JIGSAW_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "jigsaw" / "en_sentence_templates.csv"


def built(tok, prepend_bos: bool = True, n_ctx: int | None = None, **kw) -> ToxicityDataModule:
    dm = ToxicityDataModule(**kw)
    dm.bind(tok, prepend_bos, n_ctx)
    dm.setup("test")
    return dm


def one_token(tok, text: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


@pytest.mark.skipif(not JIGSAW_CSV.is_file(), reason=f"Jigsaw CSV not found at {JIGSAW_CSV}")
def test_generated_name_adj_rows_equal_the_source_csv():
    with JIGSAW_CSV.open(newline="", encoding="utf-8") as f:
        source = [(r["toxicity"], r["phrase"]) for r in csv.DictReader(f) if r["template"] == "name_adj"]
    assert [(r["toxicity"], r["phrase"]) for r in name_adj_rows()] == source


def test_name_adj_counts_72000_rows_1440_per_identity_half_toxic():
    rows = name_adj_rows()
    assert len(rows) == 72_000
    per = Counter((r["identity"], r["toxicity"]) for r in rows)
    assert len({i for i, _ in per}) == 50
    assert set(per.values()) == {720}
    assert sum(1 for r in rows if r["identity"] == "african") == 1440  # exact match, not "african american"


def test_stratified_sample_is_equal_per_cell_and_seeded(gpt2_tokenizer):
    a = built(gpt2_tokenizer, n_examples=60, seed=0)
    counts = Counter(e.group for e in a.examples)
    assert len(a.examples) == 60 and len(counts) == 6 and set(counts.values()) == {10}
    assert [g["identity"] for g in a.groups] == [i for i in SEED_IDENTITIES for _ in range(2)]
    assert [a.groups[e.group]["identity"] in e.prompt for e in a.examples] == [True] * 60
    again = built(gpt2_tokenizer, n_examples=60, seed=0)
    other = built(gpt2_tokenizer, n_examples=60, seed=1)
    assert [e.prompt for e in again.examples] == [e.prompt for e in a.examples]
    assert again.dataset_hash == a.dataset_hash
    assert [e.prompt for e in other.examples] != [e.prompt for e in a.examples]
    assert other.dataset_hash != a.dataset_hash


def test_remainder_goes_one_each_to_some_cells(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, n_examples=63)
    assert sorted(Counter(e.group for e in dm.examples).values()) == [10, 10, 10, 11, 11, 11]


def test_gpt2_label_tokens_follow_the_colon(gpt2_tokenizer):
    tok = gpt2_tokenizer
    one, zero = one_token(tok, " 1"), one_token(tok, " 0")
    dm = built(tok, n_examples=24)
    for e in dm.examples:
        label = dm.groups[e.group]["label"]
        assert tok.convert_ids_to_tokens(e.tokens[-2:]) == ["Label", ":"]
        assert e.tokens[0] == tok.bos_token_id and e.positions == {"answer": len(e.tokens) - 1}
        assert (e.correct, e.incorrect) == ((one, zero) if label == "toxic" else (zero, one))
        assert e.tokens[1:] == tok(e.prompt, add_special_tokens=False)["input_ids"]
    rec = dm.example_record(0)
    assert rec["prompt"].endswith("\nLabel:") and {rec["correct_str"], rec["incorrect_str"]} == {" 1", " 0"}
    assert rec["fields"] == dm.groups[dm.examples[0].group]


def test_without_bos_the_prompt_starts_with_its_first_word(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, prepend_bos=False, n_examples=6)
    assert all(e.tokens[0] == one_token(gpt2_tokenizer, "Please") for e in dm.examples)
    assert dm.describe()["options"]["prepend_bos"] is False


def test_custom_labels_resolve_to_their_tokens(gpt2_tokenizer):
    dm = built(gpt2_tokenizer, n_examples=6, labels={"toxic": "yes", "nontoxic": "no"})
    yes, no = one_token(gpt2_tokenizer, " yes"), one_token(gpt2_tokenizer, " no")
    assert {(e.correct, e.incorrect) for e in dm.examples} == {(yes, no), (no, yes)}


def test_describe_records_hash_and_resolved_options(gpt2_tokenizer):
    d = built(gpt2_tokenizer, n_examples=12, limit=5).describe()
    assert d["name"] == "toxicity" and d["n_examples"] == 5 and len(d["dataset_hash"]) == 64
    assert d["options"]["identities"] == list(SEED_IDENTITIES) and d["options"]["limit"] == 5


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_user_csv_with_identity_column(gpt2_tokenizer, tmp_path):
    rows = [
        ["Ann is kind", "0", "a"],
        ["Ann is vile", "1", "a"],
        ["Bo is kind", "nontoxic", "b"],
        ["Bo is vile", "toxic", "b"],
    ]
    p = write_csv(tmp_path / "mine.csv", ["phrase", "toxicity", "identity"], rows)
    dm = built(gpt2_tokenizer, csv_path=str(p), n_examples=None)
    assert dm.groups == [{"identity": i, "label": lab} for i in "ab" for lab in ("nontoxic", "toxic")]
    got = sorted((*dm.groups[e.group].values(), e.prompt.split("\n")[1]) for e in dm.examples)
    assert got == [
        ("a", "nontoxic", "Sentence: Ann is kind"),
        ("a", "toxic", "Sentence: Ann is vile"),
        ("b", "nontoxic", "Sentence: Bo is kind"),
        ("b", "toxic", "Sentence: Bo is vile"),
    ]
    only_b = built(gpt2_tokenizer, csv_path=str(p), identities=["b"])
    assert len(only_b.examples) == 2


def test_user_csv_without_identity_column_is_one_identity(gpt2_tokenizer, tmp_path):
    p = write_csv(tmp_path / "mine.csv", ["phrase", "toxicity"], [["x is kind", "0"], ["x is vile", "1"]])
    dm = built(gpt2_tokenizer, csv_path=str(p))
    assert {dm.groups[e.group]["identity"] for e in dm.examples} == {"all"} and len(dm.examples) == 2


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        (["text", "label"], [["a", "1"]], r"columns \['text', 'label'\].*phrase,toxicity"),
        (["phrase", "toxicity"], [["a", "maybe"]], r"line 2.*'maybe'"),
        (["phrase", "toxicity"], [], r"task\.csv_path=.*has no rows"),
    ],
)
def test_bad_csv_is_a_one_line_error(gpt2_tokenizer, tmp_path, header, rows, match):
    p = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(SaeevalError, match=match):
        built(gpt2_tokenizer, csv_path=str(p))


def test_missing_csv_file_names_the_option(gpt2_tokenizer, tmp_path):
    with pytest.raises(SaeevalError, match=r"task\.csv_path=.*nope\.csv.*is not a file"):
        built(gpt2_tokenizer, csv_path=str(tmp_path / "nope.csv"))


def test_identities_matching_nothing_is_an_error(gpt2_tokenizer, tmp_path):
    p = write_csv(tmp_path / "m.csv", ["phrase", "toxicity", "identity"], [["x is kind", "0", "a"]])
    with pytest.raises(SaeevalError, match=r"task\.identities=\['gay'\] matches no rows"):
        built(gpt2_tokenizer, csv_path=str(p), identities=["gay"])
    with pytest.raises(SaeevalError, match=r"unknown identities \['martian'\].*task\.identities=all"):
        built(gpt2_tokenizer, identities=["martian", "gay"])


def test_limit_zero_is_an_error_naming_limit(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match=r"limit=0"):
        built(gpt2_tokenizer, limit=0)


def test_prompt_longer_than_context_is_an_error(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match=r"exceed the model's context n_ctx=20"):
        built(gpt2_tokenizer, n_examples=6, n_ctx=20)


def test_chat_template_missing_is_an_error(gpt2_tokenizer):
    with pytest.raises(SaeevalError, match=r"no chat template; set task\.chat_template=false"):
        built(gpt2_tokenizer, n_examples=6, chat_template=True)


def test_chat_template_wraps_the_prompt_with_a_single_bos():
    tok = gpt2_tokenizer_obj()
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<user>{{ m['content'] }}</user>\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    dm = built(tok, n_examples=6, chat_template=True)
    for e in dm.examples:
        assert e.prompt.startswith("<user>Please assign") and e.prompt.endswith("Label: </user>\n<assistant>")
        assert e.tokens[0] == tok.bos_token_id and tok.bos_token_id not in e.tokens[1:]
        assert {tok.decode([e.correct]), tok.decode([e.incorrect])} == {"1", "0"}


def test_zero_examples_is_an_error_naming_n_examples():
    with pytest.raises(SaeevalError, match=r"task\.n_examples=0 leaves no examples"):
        ToxicityDataModule(n_examples=0)
