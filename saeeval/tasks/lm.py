"""Plain language modelling on a local corpus: no answers, only next-token loss and reconstruction metrics.

The default corpus is the bundled zoo model's held-out text, so `+task=lm` measures CE/KL on text the model and
its SAEs were not trained on.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.tasks.base import TaskDataModule, TaskExample
from saeeval.tasks.text import read_utf8


def default_corpus() -> Path:
    """The bundled zoo's held-out corpus (`saeeval/zoo/tiny/corpus/heldout.txt`)."""
    return Path(str(resources.files("saeeval.zoo").joinpath("tiny", "corpus", "heldout.txt")))


def read_corpus(path: str | Path, text_field: str = "text") -> list[str]:
    """Texts of a .txt file (one per non-empty line) or a .jsonl file (field `text_field` of each line)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SaeevalError(f"task.path={str(path)!r} is not a file; point it at a .txt or .jsonl corpus")
    lines = [ln for ln in read_utf8(p, "task.path").splitlines() if ln.strip()]
    if p.suffix != ".jsonl":
        return [ln.strip() for ln in lines]
    texts = []
    for n, ln in enumerate(lines, start=1):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as err:
            raise SaeevalError(f"{p} line {n} is not JSON ({err.msg}); fix the line or use a .txt corpus") from None
        if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
            raise SaeevalError(f"{p} line {n} has no string field {text_field!r}; set task.text_field to its name")
        texts.append(rec[text_field])
    return texts


class LMDataModule(TaskDataModule):
    """Texts of `path` (default: the zoo's held-out corpus), truncated to `max_length` tokens (BOS included)."""

    name = "lm"
    position_names = ()
    slice_fields = ()
    has_answers = False

    def __init__(
        self,
        path: str | None = None,
        max_length: int = 128,
        text_field: str = "text",
        batch_size: int = 32,
        limit: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, limit=limit, seed=seed, num_workers=num_workers)
        if max_length < 2:
            raise SaeevalError(f"task.max_length={max_length} must be at least 2 to score a next token")
        self.path = None if path is None else str(path)
        self.max_length, self.text_field = max_length, text_field

    def options(self) -> dict[str, Any]:
        path = self.path or str(default_corpus())
        return {"path": path, "max_length": self.max_length, "text_field": self.text_field}

    def _load(self) -> list[str]:
        texts = read_corpus(self.path or default_corpus(), self.text_field)
        if not texts:
            raise SaeevalError(f"corpus {self.options()['path']} has no text; set task.path to a non-empty corpus")
        self.groups = [{}]
        return texts

    def _example(self, idx: int, item: str) -> TaskExample:
        length = self.max_length if self.n_ctx is None else min(self.max_length, self.n_ctx)
        tokens = (self.bos_ids() + self.encode(item))[:length]
        return TaskExample(id=idx, prompt=item, tokens=tokens, correct=None, incorrect=None, positions={}, group=0)
