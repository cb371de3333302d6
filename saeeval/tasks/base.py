"""The task contract: a LightningDataModule that turns prompts into left-padded batches with answer positions.

A task builds its examples once per tokenizer (`bind` then `setup`); every batch carries absolute column indices of
its named positions, so metrics never search for pads (for GPT-2, pad == eos == bos).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from saeeval.errors import SaeevalError
from saeeval.tasks.answer_parsing import GenerationOptions
from saeeval.tasks.answers import tokenizer_name


@dataclass(frozen=True)
class TaskExample:
    """One tokenized prompt; `positions` index into `tokens` (BOS included), `group` indexes the task's `groups`."""

    id: int
    prompt: str
    tokens: list[int]
    correct: int | None
    incorrect: int | None
    positions: dict[str, int]
    group: int


class TaskDataModule(L.LightningDataModule):
    """Base of every task. Subclasses set the class attributes and implement `_load`, `_example`, `options`.

    `_load` returns the task's raw items (sets `self.groups`); the base applies `limit`, tokenizes each item with
    `_example`, validates lengths and hashes the result.
    """

    name: str = "task"
    position_names: tuple[str, ...] = ()
    slice_fields: tuple[str, ...] = ()
    has_answers: bool = True
    answer_position: str | None = None
    """The named position whose next-token logits are scored (correct vs incorrect); None: the last real token."""
    slice_rates: Mapping[str, Mapping[str, str]] = MappingProxyType({})
    """Per-slice error rates over a sub-population: rate name -> group fields it keeps, e.g. toxicity's
    false_positive_rate = error rate on the slice's {"label": "nontoxic"} examples."""
    generation: GenerationOptions | None = None
    """How answers are read (logit difference and/or greedy generation); None: the task cannot generate."""

    def __init__(self, batch_size: int = 32, limit: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise SaeevalError(f"batch_size={batch_size} must be at least 1; set batch_size=32")
        if limit is not None and limit < 0:
            raise SaeevalError(f"limit={limit} must be >= 0 or null; set limit=null to use every example")
        self.batch_size, self.limit, self.seed, self.num_workers = batch_size, limit, seed, num_workers
        self.tokenizer: Any = None
        self.prepend_bos = True
        self.n_ctx: int | None = None
        self.examples: list[TaskExample] = []
        self.groups: list[dict[str, str]] = []
        self.dataset_hash = ""
        self._built = False

    def bind(self, tokenizer: Any, prepend_bos: bool, n_ctx: int | None = None) -> None:
        """Attach the model's HF tokenizer, its BOS convention and (optionally) its context length."""
        if tokenizer is None:
            raise SaeevalError("the model has no tokenizer; load a model with a tokenizer to run a text task")
        if prepend_bos and tokenizer.bos_token_id is None:
            raise SaeevalError(
                f"tokenizer {tokenizer_name(tokenizer)!r} has no bos_token but the model prepends BOS; "
                "use a model with default_prepend_bos=False or a tokenizer that defines bos_token"
            )
        self.tokenizer, self.prepend_bos, self.n_ctx = tokenizer, bool(prepend_bos), n_ctx
        self._built = False

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens (BOS is added once, by `bos_ids`, never by the tokenizer)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def bos_ids(self) -> list[int]:
        return [self.tokenizer.bos_token_id] if self.prepend_bos else []

    def _load(self) -> list[Any]:
        """The task's raw items in dataset order (before `limit`); must also fill `self.groups`."""
        raise NotImplementedError

    def _example(self, idx: int, item: Any) -> TaskExample:
        """Tokenize one raw item into a TaskExample with id `idx`."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """Task options recorded in results.json (JSON-serialisable)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build and tokenize the examples once per bound tokenizer (idempotent)."""
        if self._built:
            return
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.bind(tokenizer, prepend_bos) must be called before setup")
        if self.limit == 0:
            raise SaeevalError("limit=0 leaves no examples; set limit to a positive number or null")
        items = self._load()
        if not items:
            raise SaeevalError(f"task {self.name!r} has no examples with options {self.options()}; change them")
        items = items[: self.limit]
        examples = [self._example(i, item) for i, item in enumerate(items)]
        too_long = [e for e in examples if self.n_ctx is not None and len(e.tokens) > self.n_ctx]
        if too_long:
            raise SaeevalError(
                f"task {self.name!r}: {len(too_long)} prompts exceed the model's context n_ctx={self.n_ctx} "
                f"(longest {max(len(e.tokens) for e in too_long)} tokens); "
                "use shorter prompts or a longer-context model"
            )
        gen = self.generation
        if gen is not None and gen.generates and self.n_ctx is not None:
            longest = max(len(e.tokens) for e in examples)
            if longest + gen.max_new_tokens > self.n_ctx:
                raise SaeevalError(
                    f"task {self.name!r}: the longest prompt ({longest} tokens) plus task.max_new_tokens="
                    f"{gen.max_new_tokens} exceeds the model's context n_ctx={self.n_ctx}; "
                    f"set task.max_new_tokens={max(1, self.n_ctx - longest)} or lower"
                )
        self.examples = examples
        self.dataset_hash = hashlib.sha256(
            json.dumps([[e.prompt, e.tokens, e.correct, e.incorrect] for e in examples]).encode("utf-8")
        ).hexdigest()
        self._built = True

    def describe(self) -> dict[str, Any]:
        """The "task" entry of results.json."""
        return {
            "name": self.name,
            "n_examples": len(self.examples),
            "dataset_hash": self.dataset_hash,
            "options": {**self.options(), "limit": self.limit, "seed": self.seed, "prepend_bos": self.prepend_bos},
        }

    def token_str(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.tokenizer.decode([token_id])

    def example_record(self, i: int) -> dict[str, Any]:
        """One samples.jsonl line (without the per-condition scores, which the module adds)."""
        e = self.examples[i]
        return {
            "id": e.id,
            "prompt": e.prompt,
            "n_tokens": len(e.tokens),
            "correct": e.correct,
            "correct_str": self.token_str(e.correct),
            "incorrect": e.incorrect,
            "incorrect_str": self.token_str(e.incorrect),
            "fields": dict(self.groups[e.group]),
            "positions": dict(e.positions),
        }

    def pad_id(self) -> int:
        for tid in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if tid is not None:
                return int(tid)
        return 0

    def collate(self, idx: list[int]) -> dict[str, Any]:
        """Left-pad examples `idx` into a batch; `positions` are absolute column indices in the padded batch."""
        exs = [self.examples[i] for i in idx]
        width = max(len(e.tokens) for e in exs)
        tokens = torch.full((len(exs), width), self.pad_id(), dtype=torch.long)
        mask = torch.zeros((len(exs), width), dtype=torch.long)
        shift = [width - len(e.tokens) for e in exs]
        for b, e in enumerate(exs):
            tokens[b, shift[b] :] = torch.tensor(e.tokens, dtype=torch.long)
            mask[b, shift[b] :] = 1
        batch: dict[str, Any] = {
            "tokens": tokens,
            "attention_mask": mask,
            "example_id": torch.tensor([e.id for e in exs], dtype=torch.long),
            "group": torch.tensor([e.group for e in exs], dtype=torch.long),
            "positions": {
                name: torch.tensor([s + e.positions[name] for s, e in zip(shift, exs, strict=True)], dtype=torch.long)
                for name in self.position_names
            },
        }
        if self.has_answers:
            batch["correct"] = torch.tensor([e.correct for e in exs], dtype=torch.long)
            batch["incorrect"] = torch.tensor([e.incorrect for e in exs], dtype=torch.long)
        return batch

    def make_dataloader(self, num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
        """In-order loader; with `num_replicas` > 1 each rank gets a disjoint share and no example is repeated."""
        self.setup("test")
        indices = list(range(len(self.examples)))
        sampler = None
        if num_replicas is not None and num_replicas > 1:
            if len(indices) < num_replicas:
                raise SaeevalError(
                    f"task {self.name!r} has {len(indices)} examples for {num_replicas} processes; "
                    "raise limit or run on fewer devices"
                )
            sampler = UnrepeatedDistributedSampler(indices, num_replicas=num_replicas, rank=rank, shuffle=False)
        # torch annotates a Dataset, but any map-style sequence (__getitem__, __len__) works: here a list of indices
        return DataLoader(
            indices,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return self.make_dataloader(dist.get_world_size(), dist.get_rank())
        return self.make_dataloader()
