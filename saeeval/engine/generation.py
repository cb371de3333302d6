"""Greedy generation under a condition: SAEs or ablations spliced into the prompt and into every generated position.

Why its own loop: TransformerLens's `generate` rebuilds an attention mask from the tokens (for GPT-2 pad == BOS,
so a left-padded batch loses its pads) and offers no place to say which new positions a hook should touch. Here a
left-padded batch runs with its own attention mask and a TransformerLens key-value cache: the prompt in one forward,
then one forward per new token. The condition's hooks (the same `Splicer.replacement` the suffix passes use) fire
in each forward on the positions it computes, so each new position's activation is spliced as it is computed and
the cached keys and values downstream of a splice are the spliced ones. `use_kv_cache=False` recomputes the whole
sequence every step (the reference the cached loop is tested against).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from saeeval.engine.conditions import Condition
from saeeval.engine.hook_context import forward_hooks
from saeeval.engine.masks import TokenMask
from saeeval.engine.unembed import Unembed

NOT_GENERATED = -1
"""Token id stored after a row's first EOS (and after the loop stopped because every row had ended)."""


@dataclass(frozen=True)
class SpliceAt:
    """Where one forward's condition replaces activations `[B, t]`: SAEs at `splice`, ablations at `ablate`."""

    splice: Tensor
    ablate: Tensor

    def cat(self, other: SpliceAt) -> SpliceAt:
        return SpliceAt(torch.cat([self.splice, other.splice], 1), torch.cat([self.ablate, other.ablate], 1))

    def last(self, n: int) -> SpliceAt:
        return SpliceAt(self.splice[:, -n:], self.ablate[:, -n:])

    def repeat(self, k: int) -> SpliceAt:
        """The masks of `k` conditions stacked along the batch."""
        return SpliceAt(self.splice.repeat(k, 1), self.ablate.repeat(k, 1))


def generated_positions(
    splice_mask: TokenMask, special_ids: Sequence[int], ablate_special: bool = False
) -> Callable[[Tensor], SpliceAt]:
    """Where a condition splices a generated token `[B, 1]`: every generated position, unless the splice mask
    names positions (IOI S2, `answer`, -1: those are prompt positions), in which case none; the mask's token-id
    and special-token exclusions apply to the token fed in. Ablations follow the same rule (`ablate_special`: also at
    special tokens, as the compat modes ablate them)."""

    def at(new: Tensor) -> SpliceAt:
        if splice_mask.positions is not None:
            none = torch.zeros_like(new, dtype=torch.bool)
            return SpliceAt(none, none)
        ones = torch.ones_like(new)
        splice = splice_mask(new, ones, None, special_ids)
        ablate = ones.bool() if ablate_special else splice
        return SpliceAt(splice, ablate)

    return at


def stacked_hooks(
    splicer: Any, conds: Sequence[Condition | None], means: Mapping[str, Tensor] | None
) -> Callable[[SpliceAt], list[tuple[str, Callable]]]:
    """Forward hooks for `conds` run as one batch, condition i on rows `[i*b, (i+1)*b)` (several conditions per
    forward on a GPU; `[cond]` for one, None for clean); each condition's rows get `Splicer.replacement` at its
    hooks, the others pass through."""
    names = list(dict.fromkeys(h for c in conds if c is not None for h in c.hooks))

    def hooks(at: SpliceAt) -> list[tuple[str, Callable]]:
        b = at.splice.shape[0] // len(conds)
        masks = [
            None if c is None else (at.ablate if c.ablation is not None else at.splice)[i * b : (i + 1) * b]
            for i, c in enumerate(conds)
        ]
        # which conditions splice anything in this forward: one host sync per forward, not per hook and condition
        spliced = [m is not None for m in masks]
        if any(spliced):
            found = iter(torch.stack([m.any() for m in masks if m is not None]).tolist())
            spliced = [bool(next(found)) if s else False for s in spliced]
        if not any(spliced):
            return []

        def splice(act: Tensor, hook: Any) -> Tensor:
            pieces = []
            for i, (c, m) in enumerate(zip(conds, masks, strict=True)):
                rows = act[i * b : (i + 1) * b]
                touched = c is not None and m is not None and spliced[i] and hook.name in c.hooks
                pieces.append(splicer.replacement(c, hook.name, rows, m, means)[0] if touched else rows)
            return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

        return [(h, splice) for h in names]

    return hooks


def _next_tokens(model: Any, unembed: Unembed, resid: Tensor) -> Tensor:
    """Greedy next token `[B]` from the final residual of the last column (only that column is unembedded)."""
    last = resid[:, -1:]
    if model.cfg.normalization_type is not None:
        last = model.ln_final(last)
    return unembed(model.unembed.hook_in(last)[:, 0]).argmax(-1)


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokens: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    prompt_at: SpliceAt,
    step_at: Callable[[Tensor], SpliceAt],
    hooks: Callable[[SpliceAt], list[tuple[str, Callable]]],
    eos_id: int | None,
    use_kv_cache: bool = True,
) -> Tensor:
    """`[B, max_new_tokens]` greedy continuations of left-padded `tokens` (NOT_GENERATED after a row's first EOS).

    `prompt_at` `[B, T]` says where the prompt is spliced, `step_at(new [B, 1])` where a fed generated token is,
    `hooks(at)` gives the forward hooks for the positions of one forward. Stops early once every row wrote EOS.
    """
    b, n_layers = tokens.shape[0], model.cfg.n_layers
    unembed = Unembed(model)
    device = tokens.device
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, b) if use_kv_cache else None
    seq, am, at = tokens, attention_mask, prompt_at
    out = torch.full((b, max_new_tokens), NOT_GENERATED, dtype=torch.long, device=device)
    ended = torch.zeros(b, dtype=torch.bool, device=device)
    inp, inp_am, inp_at = tokens, attention_mask, prompt_at
    for step in range(max_new_tokens):
        with forward_hooks(model, hooks(inp_at)):
            resid = model(inp, attention_mask=inp_am, past_kv_cache=cache, stop_at_layer=n_layers)
        new = _next_tokens(model, unembed, resid).to(device)
        out[:, step] = torch.where(ended, NOT_GENERATED, new)
        if eos_id is not None:
            ended |= new == eos_id
        if bool(ended.all()) or step == max_new_tokens - 1:
            break
        fed = new[:, None]
        seq, am, at = torch.cat([seq, fed], 1), torch.cat([am, torch.ones_like(fed)], 1), at.cat(step_at(fed))
        inp, inp_am, inp_at = (fed, torch.ones_like(fed), at.last(1)) if use_kv_cache else (seq, am, at)
    return out
