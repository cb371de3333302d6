"""Check, before any forward pass, that the run selects something: token ids the model has, and at least one
token position the mask keeps. Otherwise every metric is empty and a run "succeeds" with nothing in it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saeeval.engine.masks import Masks
from saeeval.errors import SaeevalError


def check_selection(task: Any, mask: Masks, special_ids: Sequence[int], d_vocab: int) -> None:
    """Raise one SaeevalError line for a token id outside `d_vocab` or a splice or score mask that keeps no
    position at all."""
    for tid in mask.exclude_token_ids:
        if not 0 <= tid < d_vocab:
            raise SaeevalError(
                f"mask.exclude_token_ids holds {tid}, outside the model's vocabulary (ids 0..{d_vocab - 1}):"
                " use token ids of this model's tokenizer"
            )
    selected, longest = {"splice": 0, "score": 0}, 0
    for batch in task.make_dataloader():
        tokens = batch["tokens"]
        for field in ("tokens", "correct", "incorrect"):
            if field in batch and int(batch[field].max()) >= d_vocab:
                raise SaeevalError(
                    f"task {task.name!r} produces token id {int(batch[field].max())} ({field}), outside the model's "
                    f"vocabulary (ids 0..{d_vocab - 1}): the tokenizer does not match the model; load both together"
                )
        longest = max(longest, int(batch["attention_mask"].sum(dim=1).max()))
        masks = mask(tokens, batch["attention_mask"], batch.get("positions"), special_ids)
        for name in selected:
            selected[name] += int(getattr(masks, name).sum())
    for name, count in selected.items():
        if count == 0:
            part = getattr(mask, name)
            raise SaeevalError(
                f"the mask selects no token to {name} in any of the {len(task.examples)} examples (mask.{name}: "
                f"positions={part.positions}, exclude_special={part.exclude_special}, exclude_token_ids="
                f"{part.exclude_token_ids}; longest prompt {longest} tokens): choose positions inside the prompts, "
                f"e.g. mask.{'' if name == 'splice' else 'score.'}positions=[-1]"
            )
