"""Batching contract shared by all tasks: left padding, absolute positions, masks and unrepeated DDP shards."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from test_tasks_answers import word_tokenizer

from saeeval.errors import SaeevalError
from saeeval.tasks.ioi import IOIDataModule
from saeeval.tasks.toxicity import ToxicityDataModule


def built(dm, tok, prepend_bos: bool = True):
    dm.bind(tok, prepend_bos)
    dm.setup("test")
    return dm


def test_collate_left_pads_and_shifts_positions_by_the_pad_count(gpt2_tokenizer):
    dm = built(IOIDataModule(n_examples=16, batch_size=16), gpt2_tokenizer)
    batch = next(iter(dm.test_dataloader()))
    lengths = [len(e.tokens) for e in dm.examples]
    width = max(lengths)
    assert len(set(lengths)) > 1  # the check below exercises real padding
    assert batch["tokens"].shape == batch["attention_mask"].shape == (16, width)
    assert batch["tokens"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    for b, e in enumerate(dm.examples):
        pad = width - len(e.tokens)
        assert batch["tokens"][b, :pad].tolist() == [gpt2_tokenizer.pad_token_id] * pad
        assert batch["tokens"][b, pad:].tolist() == e.tokens
        assert batch["attention_mask"][b].tolist() == [0] * pad + [1] * len(e.tokens)
        for name in ("IO", "S1", "S2", "END"):
            assert batch["positions"][name][b].item() == pad + e.positions[name]
        assert batch["tokens"][b, batch["positions"]["IO"][b]].item() == e.correct == batch["correct"][b].item()
        assert batch["tokens"][b, batch["positions"]["S2"][b]].item() == e.incorrect == batch["incorrect"][b].item()
    assert batch["positions"]["END"].tolist() == [width - 1] * 16
    assert batch["example_id"].tolist() == list(range(16))
    assert batch["group"].tolist() == [0, 1] * 8


def test_pad_id_falls_back_to_the_tokenizers_own_then_zero():
    tok = word_tokenizer(["Mary John Anna"])
    dm = IOIDataModule(names=["Mary", "John"])
    dm.bind(tok, True)
    assert dm.pad_id() == tok.pad_token_id == tok.convert_tokens_to_ids("<pad>") != 0
    dm.bind(word_tokenizer(["Mary John"], pad=False), True)
    assert dm.pad_id() == 0


def test_test_dataloader_is_in_order_and_covers_everything(gpt2_tokenizer):
    dm = built(ToxicityDataModule(n_examples=30, batch_size=7), gpt2_tokenizer)
    ids = [i for b in dm.test_dataloader() for i in b["example_id"].tolist()]
    assert ids == list(range(30))


def test_unrepeated_sampler_partitions_101_examples_over_2_ranks(gpt2_tokenizer):
    dm = built(IOIDataModule(n_examples=101, batch_size=8), gpt2_tokenizer)
    shards = []
    for rank in (0, 1):
        loader = dm.make_dataloader(num_replicas=2, rank=rank)
        assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
        shards.append([i for b in loader for i in b["example_id"].tolist()])
    assert [len(s) for s in shards] == [51, 50]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(101))


def test_more_ranks_than_examples_is_an_error(gpt2_tokenizer):
    dm = built(IOIDataModule(n_examples=4, limit=2), gpt2_tokenizer)
    with pytest.raises(SaeevalError, match="2 examples for 3 processes"):
        dm.make_dataloader(num_replicas=3, rank=0)


def test_setup_needs_bind_and_is_idempotent(gpt2_tokenizer):
    dm = IOIDataModule(n_examples=6)
    with pytest.raises(RuntimeError, match="bind"):
        dm.setup("test")
    built(dm, gpt2_tokenizer)
    first = dm.examples
    dm.setup("test")
    assert dm.examples is first
    dm.bind(gpt2_tokenizer, False)
    dm.setup("test")
    assert dm.examples is not first and dm.examples[0].tokens == first[0].tokens[1:]


def test_example_record_and_describe_carry_the_answers(gpt2_tokenizer):
    dm = built(IOIDataModule(n_examples=6, seed=3), gpt2_tokenizer)
    e = dm.examples[2]
    rec = dm.example_record(2)
    assert rec == {
        "id": 2,
        "prompt": e.prompt,
        "n_tokens": len(e.tokens),
        "correct": e.correct,
        "correct_str": gpt2_tokenizer.decode([e.correct]),
        "incorrect": e.incorrect,
        "incorrect_str": gpt2_tokenizer.decode([e.incorrect]),
        "fields": {"order": "BABA"},
        "positions": e.positions,
    }
    # named positions are token indices of the example (BOS included): IO and both S mentions hold the names
    pos = rec["positions"]
    assert e.tokens[pos["IO"]] == e.correct and e.tokens[pos["S1"]] == e.tokens[pos["S2"]] == e.incorrect
    assert pos["END"] == len(e.tokens) - 1 and pos["S1"] < pos["S2"]
    d = dm.describe()
    assert d == {
        "name": "ioi",
        "n_examples": 6,
        "dataset_hash": dm.dataset_hash,
        "options": {
            "n_examples": 6,
            "names": None,
            "answer_mode": "logit_diff",
            "max_new_tokens": 4,
            "answer_regex": r"\b{label}\b",
            "limit": None,
            "seed": 3,
            "prepend_bos": True,
        },
    }


def test_bad_batch_size_and_limit_are_errors():
    with pytest.raises(SaeevalError, match="batch_size=0"):
        IOIDataModule(batch_size=0)
    with pytest.raises(SaeevalError, match="limit=-1"):
        IOIDataModule(limit=-1)


@pytest.mark.parametrize("task", ["toxicity", "ioi", "lm"])
def test_task_configs_instantiate_with_the_top_level_options(task):
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "saeeval" / "conf" / "task" / f"{task}.yaml"
    cfg = OmegaConf.create({"batch_size": 4, "limit": 9, "seed": 5, "task": OmegaConf.load(conf)})
    dm = instantiate(cfg.task)
    assert dm.name == task and (dm.batch_size, dm.limit, dm.seed) == (4, 9, 5)
    if task == "toxicity":
        assert dm.identities == ["african", "straight", "paralyzed"] and dm.labels == {"toxic": "1", "nontoxic": "0"}
