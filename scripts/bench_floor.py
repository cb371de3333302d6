"""The floor of scripts/bench.py: the work any evaluator of the benchmark's conditions must do, and nothing more.

One clean forward, then for each condition its splice (the SAE's `decode(encode(x))` at every position, or zeros)
on a plain hook point and its suffix forward from the block saeeval starts it at, to TransformerLens's logits; no
metrics. The cached inputs are prepared before the timing, so the floor is the forwards and the splices alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from saeeval.engine.conditions import Condition, build_conditions, hooks_of
from saeeval.engine.splicing import Splicer

Splice = Callable[[torch.Tensor], torch.Tensor]


def plain_splice(cond: Condition, saes: dict) -> Splice:
    """The condition's replacement at every position, as a hand-written hook would do it: the SAE's
    `decode(encode(x))` (sae_lens reshapes hook_z itself) or zeros."""
    if cond.ablation == "zero":
        return torch.zeros_like
    (name,) = cond.saes
    sae = saes[name]
    return lambda act: sae.decode(sae.encode(act))


def floor_inputs(model: Any, saes: dict, batches: list[torch.Tensor]) -> list[tuple]:
    """Per batch: tokens, attention mask, and per condition its suffix: (start layer, the cached activation it
    starts from, its splice, the hook point the splice goes on — None where it replaces that cached input,
    i.e. at `blocks.{start-1}.hook_resid_post` —, the clean activation at its hook)."""
    splicer, conditions = Splicer(model, saes), build_conditions(saes)
    hooks = hooks_of(conditions)
    prepared = []
    for tokens in batches:
        am = torch.ones_like(tokens)
        clean = splicer.clean(tokens, am, hooks)
        suffixes = []
        for cond in conditions:
            (hook,) = cond.hooks  # the benchmark's conditions splice one hook each
            start = splicer.start_layer(cond)
            at_input = start is not None and hook == f"blocks.{start - 1}.hook_resid_post"
            cached = clean.acts[hook] if at_input else clean.resid_pre[start]
            point = None if at_input else model.hook_dict[hook]
            suffixes.append((start, cached, plain_splice(cond, saes), point, clean.acts[hook]))
        prepared.append((tokens, am, suffixes))
    return prepared


@torch.no_grad()
def floor_step(model: Any, batch: tuple) -> None:
    """The unavoidable work of one batch: a clean forward, then for each condition its splice and its suffix
    forward (TransformerLens logits), through plain hook points, with no metrics."""
    tokens, am, suffixes = batch
    model(tokens, attention_mask=am, return_type="logits")
    for start, cached, splice, point, _ in suffixes:
        if point is None:
            model(splice(cached), start_at_layer=start, attention_mask=am, return_type="logits")
            continue
        point.add_hook(lambda act, hook, splice=splice: splice(act))
        try:
            model(cached, start_at_layer=start, attention_mask=am, return_type="logits")
        finally:
            point.remove_hooks()


@torch.no_grad()
def splices_alone(prepared: list[tuple]) -> None:
    """Each condition's splice applied to the clean activation at its hook, without any forward: the SAEs' share
    of the floor."""
    for _, _, suffixes in prepared:
        for *_, splice, _, act in suffixes:
            splice(act)
