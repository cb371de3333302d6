"""One SAE's latents against the task's logit difference: gradients for attribution, exact edits for verification.

The SAE is spliced *with its error term* at the chosen positions: the hook's activation becomes
`x + decode(f') − decode(f)` where `f = encode(x)` is the clean encoding and `f'` the (possibly edited) latents.
Unedited (`f' = f`) that is `x` itself, so the clean model is reproduced exactly and the gradient with respect to
`f'` and any edit of `f'` measure one latent at a time against the clean model (sae_lens's `use_error_term=True`
computes the same `sae_out(f') + (x − sae_out(f))`). Only the blocks from the SAE's hook on are run
(`Splicer.suffix`), from the clean pass's cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from saeeval.engine.scoring import answer_logit_diff, answer_rows
from saeeval.engine.splicing import CleanPass, Splicer, encode_decode
from saeeval.hooknames import sae_hook


class LatentProbe:
    """The logit difference of a batch as a function of one SAE's latents at the masked-in positions.

    `prepare` encodes the clean activations once per batch; `gradients` and `edited` then run suffix forwards
    with the latents replaced (a leaf that takes gradients, or explicit edits of chosen latents).
    """

    def __init__(self, splicer: Splicer, sae_name: str, answer_position: str | None) -> None:
        self.splicer, self.name = splicer, sae_name
        self.sae = splicer.saes[sae_name]
        self.hook = sae_hook(self.sae)
        self.answer_position = answer_position
        self.d_sae = int(self.sae.cfg.d_sae)

    @torch.no_grad()
    def prepare(self, clean: CleanPass, mask: Tensor) -> tuple[Tensor, Tensor]:
        """`(f [N, d_sae], row [N])`: the clean latents at the N masked-in positions and the batch row of each."""
        act = clean.acts[self.hook]
        mask = mask.to(act.device)
        _, _, feats = encode_decode(self.sae, act[mask])
        return feats.detach(), mask.nonzero()[:, 0]

    def _decode(self, f: Tensor) -> Tensor:
        return self.sae.decode(f.to(self.sae.device, self.sae.dtype)).reshape(f.shape[0], -1)

    def logit_diffs(self, clean: CleanPass, mask: Tensor, batch: Mapping[str, Any], f: Tensor, f_new: Tensor) -> Tensor:
        """`[K, B]` logit differences with the latents `f [N, d]` replaced by each of `f_new [K, N, d]` (the K
        versions share one suffix forward, stacked along the batch)."""
        k, n = f_new.shape[0], f.shape[0]
        delta_flat = self._decode(f_new.reshape(k * n, -1)) - self._decode(f).repeat(k, 1)
        mask_rep = mask.repeat(k, 1)

        def edit(act: Tensor) -> Tensor:
            m = mask_rep.to(act.device)
            sel = act[m]
            out = act.clone()
            out[m] = sel + delta_flat.reshape(sel.shape).to(device=act.device, dtype=act.dtype)
            return out

        final = self.splicer.suffix(clean, self.hook, edit, copies=k)
        rows = answer_rows(final, batch["positions"], self.answer_position, k)
        correct, incorrect = (batch[key].to(final.device).repeat(k) for key in ("correct", "incorrect"))
        return answer_logit_diff(self.splicer.unembed, rows, correct, incorrect).view(k, -1)

    def gradients(
        self, clean: CleanPass, mask: Tensor, batch: Mapping[str, Any], f: Tensor, points: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`(LD [K, B], ∂LD/∂f' [K, N, d])` at K points `f'` (`points [K, N, d]`); examples do not interact, so the
        gradient of the summed LD is each example's own gradient at its positions."""
        with torch.enable_grad():
            leaf = points.detach().clone().requires_grad_(True)
            ld = self.logit_diffs(clean, mask, batch, f, leaf)
            (grad,) = torch.autograd.grad(ld.sum(), leaf)
        return ld.detach(), grad


def per_example(values: Tensor, row: Tensor, n_rows: int) -> Tensor:
    """Sum the per-position rows `values [N, ...]` into their examples `[B, ...]` (one-hot matmul: deterministic)."""
    onehot = torch.nn.functional.one_hot(row, n_rows).to(values.dtype)
    return (onehot.T @ values.reshape(values.shape[0], -1)).reshape(n_rows, *values.shape[1:])


def attribution(
    probe: LatentProbe,
    clean: CleanPass,
    mask: Tensor,
    batch: Mapping[str, Any],
    patch: Tensor,
    method: str = "atp",
    steps: int = 16,
    points_per_forward: int = 8,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-example attribution `[B, d_sae]` of the logit difference to every latent, the clean latents `f` and
    their rows.

    atp: `(p − f)·∂LD/∂f` at the clean point. ig: `(p − f)·mean_k ∂LD/∂f'` over the midpoints
    `f' = f + α_k (p − f)`, `α_k = (k + ½)/steps` (midpoint rule: as `steps` grows the attributions of all latents
    sum to LD(p) − LD(f), IG's completeness). `patch` is `[d_sae]` (the baseline per latent) or `[N, d_sae]`.
    Positions of one example are summed: moving a latent means moving it at all of them.
    """
    f, row = probe.prepare(clean, mask)
    p = patch.to(f).expand_as(f)
    move = p - f
    b = clean.tokens.shape[0]
    if method == "atp":
        _, grad = probe.gradients(clean, mask, batch, f, f[None])
        mean_grad = grad[0]
    elif method == "ig":
        # midpoints and their sum in float32 at least: in bf16, (k + ½)/steps repeats once steps > 128
        wide = torch.promote_types(f.dtype, torch.float32)
        mean_grad = torch.zeros_like(f, dtype=wide)
        alphas = (torch.arange(steps, dtype=wide, device=f.device) + 0.5) / steps
        for chunk in alphas.split(points_per_forward):
            points = f.to(wide)[None] + chunk[:, None, None] * move.to(wide)[None]
            mean_grad += probe.gradients(clean, mask, batch, f, points)[1].sum(0)
        mean_grad /= steps
        move = move.to(wide)
    else:
        raise ValueError(f"unknown attribution method {method!r}; use atp or ig")
    return per_example(move * mean_grad, row, b), f, row


@torch.no_grad()
def ablation_effects(
    probe: LatentProbe,
    clean: CleanPass,
    mask: Tensor,
    batch: Mapping[str, Any],
    patch: Tensor,
    edits: Sequence[Sequence[int]],
    latents_per_forward: int = 8,
) -> Tensor:
    """`[B, len(edits)]`: for each edit (a set of latents) LD with those latents set to `patch` at the masked-in
    positions, minus the unedited LD; `latents_per_forward` edits share one suffix forward.

    The unedited LD comes from an unedited copy in the same forward, not from the clean pass: a GPU rounds a
    `k·B`-row matmul differently from a `B`-row one, so against the clean pass an edit that changes nothing would
    show an effect. In the same forward it shows exactly 0.
    """
    f, _ = probe.prepare(clean, mask)
    p = patch.to(f).expand_as(f)
    out = []
    for start in range(0, len(edits), latents_per_forward):
        chunk = edits[start : start + latents_per_forward]
        f_new = f[None].repeat(len(chunk) + 1, 1, 1)  # copy 0 stays unedited
        for k, latents in enumerate(chunk, start=1):
            idx = torch.as_tensor(list(latents), dtype=torch.long, device=f.device)
            f_new[k][:, idx] = p[:, idx]
        ld = probe.logit_diffs(clean, mask, batch, f, f_new)
        out.append(ld[1:] - ld[:1])
    return torch.cat(out).T if out else torch.zeros(clean.tokens.shape[0], 0, device=f.device)
