"""LM task: corpus reading (.txt / .jsonl), truncation, BOS, answer-free batches and corpus errors."""

from __future__ import annotations

import json

import pytest

from saeeval.errors import SaeevalError
from saeeval.tasks.lm import LMDataModule, default_corpus


def built(tok, prepend_bos: bool = True, n_ctx: int | None = None, **kw) -> LMDataModule:
    dm = LMDataModule(**kw)
    dm.bind(tok, prepend_bos, n_ctx)
    dm.setup("test")
    return dm


def test_txt_corpus_one_text_per_non_empty_line(gpt2_tokenizer, tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("The cat sat.\n\n   \nA dog ran far away from home.\n", encoding="utf-8")
    dm = built(gpt2_tokenizer, path=str(p), max_length=5)
    assert [e.prompt for e in dm.examples] == ["The cat sat.", "A dog ran far away from home."]
    bos = gpt2_tokenizer.bos_token_id
    texts = ("The cat sat.", "A dog ran far away from home.")
    enc = [gpt2_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert dm.examples[0].tokens == [bos] + enc[0] and len(enc[0]) == 4
    assert dm.examples[1].tokens == ([bos] + enc[1])[:5]
    assert dm.groups == [{}] and dm.slice_fields == ()
    batch = next(iter(dm.test_dataloader()))
    assert "correct" not in batch and batch["positions"] == {}
    assert batch["attention_mask"].tolist() == [[1] * 5, [1] * 5]
    assert dm.example_record(0)["correct"] is None and dm.example_record(0)["fields"] == {}


def test_model_context_caps_the_length(gpt2_tokenizer, tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("one two three four five six seven eight\n", encoding="utf-8")
    dm = built(gpt2_tokenizer, prepend_bos=False, n_ctx=3, path=str(p), max_length=100)
    assert dm.examples[0].tokens == gpt2_tokenizer("one two three", add_special_tokens=False)["input_ids"]


def test_jsonl_corpus_reads_the_text_field(gpt2_tokenizer, tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"body": t, "n": i}) for i, t in enumerate(["alpha", "beta"])), encoding="utf-8")
    dm = built(gpt2_tokenizer, path=str(p), text_field="body")
    assert [e.prompt for e in dm.examples] == ["alpha", "beta"]
    with pytest.raises(SaeevalError, match=r"line 1 has no string field 'text'; set task\.text_field"):
        built(gpt2_tokenizer, path=str(p))


def test_bad_jsonl_line_is_an_error(gpt2_tokenizer, tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(SaeevalError, match="line 2 is not JSON"):
        built(gpt2_tokenizer, path=str(p))


def test_empty_or_missing_corpus_names_task_path(gpt2_tokenizer, tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(SaeevalError, match=r"has no text; set task\.path"):
        built(gpt2_tokenizer, path=str(p))
    with pytest.raises(SaeevalError, match=r"task\.path=.*missing\.txt.*is not a file"):
        built(gpt2_tokenizer, path=str(tmp_path / "missing.txt"))


def test_default_corpus_is_the_zoo_heldout_text(gpt2_tokenizer):
    assert default_corpus().parts[-3:] == ("tiny", "corpus", "heldout.txt")
    if default_corpus().is_file():
        assert len(built(gpt2_tokenizer, limit=3).examples) <= 3
    else:
        with pytest.raises(SaeevalError, match=r"heldout\.txt.*is not a file"):
            built(gpt2_tokenizer)
