"""Splicing engine: one clean pass per batch, then each condition as a suffix pass from its first spliced layer.

Why this shape: SAELens/SAEBench run three full forwards per SAE per batch (clean, spliced, zero-ablated).
Here the clean pass runs once and caches only the residual stream entering each layer a suffix starts from
and the activations at the spliced hooks; each condition (an SAE, a group of SAEs, or an ablation baseline)
then re-runs only the blocks from its first spliced layer on, and several conditions that start at the same
layer can share one batched forward. A splice at `blocks.L.hook_resid_post` (block L's output, block L+1's
input) is applied to the cached activation and the suffix starts at block L+1, so block L is not re-run.
Hooks are attached for one call only (saeeval.engine.hook_context), so the model is never modified (no `add_sae`,
no module swap). Masked-out positions keep their clean activation bit for bit.
Every pass stops at the final residual stream (after ln_final, `[B, T, d]`): logits at a 256k vocabulary are GBs,
so saeeval.engine.scoring unembeds them a chunk of positions at a time; `.logits` gives them whole on demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sae_lens import SAE

from saeeval.engine.conditions import Condition, hooks_of
from saeeval.engine.hook_context import forward_hooks
from saeeval.engine.spliceable import check_structure
from saeeval.engine.unembed import Unembed
from saeeval.errors import SaeevalError
from saeeval.hooknames import hook_layer, sae_hook

Recon = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _entry_layer(hook_name: str) -> int | None:
    """First block a suffix must run to feel a splice at this hook: L+1 for `blocks.L.hook_resid_post`
    (its value is block L+1's input, so the splice is applied to the cached activation), L for other block hooks."""
    layer = hook_layer(hook_name)
    if layer is not None and hook_name == f"blocks.{layer}.hook_resid_post":
        return layer + 1
    return layer


@dataclass
class CleanPass:
    """What one clean forward leaves for the conditions: the final residual and only the activations they need.

    `final` is the residual after ln_final `[B, T, d]` (what the unembedding reads); `resid_pre[l]` is the residual
    entering block l (l = n_layers: the input of ln_final).
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    final: torch.Tensor
    acts: dict[str, torch.Tensor]
    resid_pre: dict[int, torch.Tensor]
    unembed: Unembed
    shortformer_pos_embed: torch.Tensor | None = None
    order: dict[str, int] = field(default_factory=dict)

    @property
    def logits(self) -> torch.Tensor:
        """Whole `[B, T, V]` logits, computed on demand (small models, tests); scoring never asks for them."""
        return self.unembed(self.final)


@dataclass
class SplicedPass:
    """The final residual `[B, T, d]` under a condition and, per SAE, `(x, x_hat, feats)` at the N masked-in
    positions."""

    condition: Condition
    final: torch.Tensor
    unembed: Unembed
    recon: dict[str, Recon] = field(default_factory=dict)

    @property
    def logits(self) -> torch.Tensor:
        """Whole `[B, T, V]` logits, computed on demand (small models, tests); scoring never asks for them."""
        return self.unembed(self.final)


def encode_decode(sae: SAE, acts: torch.Tensor) -> Recon:
    """`(x [N, d_in], x_hat [N, d_in], feats [N, d_sae])` for hook activations `[N, ...]` (hook_z: `[N, H, dh]`).

    A hook_z SAE with sae_lens' reshaping on expects `[..., H, dh]` (and learns d_head from it); otherwise it
    expects the flattened `[..., H*dh]` that sae_lens' evals feed it.
    """
    n, d_in = acts.shape[0], math.prod(acts.shape[1:])
    x = acts.reshape(n, d_in)
    inp = x.to(sae.device)
    feats = sae.encode(inp.view(acts.shape) if getattr(sae, "hook_z_reshaping_mode", False) else inp)
    x_hat = sae.decode(feats).reshape(n, d_in).to(x.device)
    return x, x_hat, feats


GPU_BATCH_SHARE = 0.25
"""Share of free GPU memory that conditions batched into one forward may take."""
MAX_CONDITIONS_PER_FORWARD = 8


def conditions_per_forward(model: Any, shape: Sequence[int], latents: int = 0, new_tokens: int | None = None) -> int:
    """How many conditions to batch into one suffix forward for token batches of `shape` `(B, T)`.

    1 on CPU (one thread's matmuls are already efficient at B·T rows: batching only adds memory); on CUDA as many
    as fit in GPU_BATCH_SHARE of the free memory (at most MAX_CONDITIONS_PER_FORWARD), by an upper estimate of
    what one condition keeps alive: one block's activations (residual copies, attention scores and pattern, MLP
    hidden), its SAEs' `latents` per position (Σ d_sae: the latents and the encoder's pre-activations, `[N, d_sae]`
    each; 2 GB at d_sae 131k and 4096 tokens in float32) and, when generating `new_tokens`, its KV cache
    (`2·n_layers·n_kv_heads·d_head·(T + new_tokens)` per row).
    """
    device = torch.device(model.cfg.device) if model.cfg.device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return 1
    cfg, (b, t) = model.cfg, shape
    per_position = 8 * cfg.d_model + 3 * cfg.n_heads * t + 3 * (cfg.d_mlp or 4 * cfg.d_model) + 2 * latents
    elements = b * t * per_position
    if new_tokens is not None:
        kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        elements += b * 2 * cfg.n_layers * kv_heads * cfg.d_head * (t + new_tokens)
    per_condition = elements * torch.finfo(cfg.dtype).bits // 8
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(MAX_CONDITIONS_PER_FORWARD, int(free * GPU_BATCH_SHARE) // max(1, per_condition))))


def _check_no_attached_saes(model: Any) -> None:
    if getattr(model, "acts_to_saes", None):
        raise SaeevalError("the model has SAEs attached with add_sae; call model.reset_saes() before evaluating")


class Splicer:
    """Runs conditions over a TransformerLens model and sae_lens SAEs without ever modifying either."""

    def __init__(self, model: Any, saes: Mapping[str, SAE]) -> None:
        _check_no_attached_saes(model)
        self.model = model
        self.saes = dict(saes)
        self.unembed = Unembed(model)
        for name, sae in self.saes.items():
            check_structure(name, sae, model)

    def start_layer(self, cond: Condition) -> int | None:
        """First block the condition's suffix runs (n_layers: only ln_final + unembed); None: the whole model."""
        layers = [_entry_layer(h) for h in cond.hooks]
        return None if None in layers else min(layers)  # type: ignore[type-var]

    @torch.no_grad()
    def clean(self, tokens: torch.Tensor, attention_mask: torch.Tensor, hooks: Iterable[str]) -> CleanPass:
        """One clean forward; caches the activations at `hooks` and the residual entering each block a suffix
        for them starts at (after a resid_post hook that is the hook's own activation, not a second copy)."""
        model = self.model
        _check_no_attached_saes(model)
        hooks = list(dict.fromkeys(hooks))
        for h in hooks:
            if h not in model.hook_dict:
                raise SaeevalError(f"hook {h!r} is not in the model; see model.hook_dict for valid names")
        layers = sorted({layer for h in hooks if (layer := _entry_layer(h)) is not None})
        post_of = {layer: h for h in hooks if (layer := _entry_layer(h)) is not None and layer != hook_layer(h)}
        pre = {layer: post_of.get(layer, f"blocks.{layer}.hook_resid_pre") for layer in layers}
        names = list(dict.fromkeys([*hooks, *pre.values()]))
        shortformer = model.cfg.positional_embedding_type == "shortformer"
        if shortformer and layers:
            names.append("hook_pos_embed")
        store: dict[str, torch.Tensor] = {}
        order: dict[str, int] = {}

        def save(act: torch.Tensor, hook: Any) -> None:
            store[hook.name] = act
            order.setdefault(hook.name, len(order))

        with forward_hooks(model, [(n, save) for n in names]):
            final = self._final(model(tokens, attention_mask=attention_mask, stop_at_layer=model.cfg.n_layers))
        self._check_widths(store)
        return CleanPass(
            tokens=tokens,
            attention_mask=attention_mask,
            final=final,
            acts={h: store[h] for h in hooks},
            resid_pre={layer: store[name] for layer, name in pre.items()},
            unembed=self.unembed,
            shortformer_pos_embed=store.get("hook_pos_embed") if shortformer else None,
            order=order,
        )

    def _final(self, resid: torch.Tensor) -> torch.Tensor:
        """ln_final and the unembedding's input hook, as the model's forward applies them (inside the caller's
        hook context, so hooks there still fire); the matmul itself is left to saeeval.engine.unembed."""
        if self.model.cfg.normalization_type is not None:
            resid = self.model.ln_final(resid)
        return self.model.unembed.hook_in(resid)

    def _check_widths(self, store: Mapping[str, torch.Tensor]) -> None:
        for name, sae in self.saes.items():
            act = store.get(sae_hook(sae))
            if act is not None and act[0, 0].numel() != sae.cfg.d_in:
                raise SaeevalError(
                    f"SAE {name!r} has d_in={sae.cfg.d_in} but {sae_hook(sae)} is {act[0, 0].numel()} wide; "
                    "pick an SAE trained on this model"
                )

    @torch.no_grad()
    def reconstruct(self, clean: CleanPass, sae_name: str, mask: torch.Tensor) -> Recon:
        """`(x, x_hat, feats)` of one SAE on the clean activations at masked-in positions, without a forward."""
        act = clean.acts[sae_hook(self.saes[sae_name])]
        return encode_decode(self.saes[sae_name], act[mask.to(act.device)])

    def run(
        self,
        cond: Condition,
        clean: CleanPass,
        mask: torch.Tensor,
        means: Mapping[str, torch.Tensor] | None = None,
        ablate_mask: torch.Tensor | None = None,
    ) -> SplicedPass:
        """The final residual (and SAE reconstructions) under one condition, from its first spliced layer on."""
        return self.run_many([cond], clean, mask, means, ablate_mask=ablate_mask)[0]

    def run_many(
        self,
        conds: Sequence[Condition],
        clean: CleanPass,
        mask: torch.Tensor,
        means: Mapping[str, torch.Tensor] | None = None,
        chunk_size: int = 1,
        ablate_mask: torch.Tensor | None = None,
    ) -> list[SplicedPass]:
        """Every condition's pass, in the order of `conds` (see `iter_many`)."""
        results: list[SplicedPass | None] = [None] * len(conds)
        for i, res in self.iter_many(conds, clean, mask, means, chunk_size, ablate_mask):
            results[i] = res
        return results  # type: ignore[return-value]

    def iter_many(
        self,
        conds: Sequence[Condition],
        clean: CleanPass,
        mask: torch.Tensor,
        means: Mapping[str, torch.Tensor] | None = None,
        chunk_size: int = 1,
        ablate_mask: torch.Tensor | None = None,
    ) -> Iterator[tuple[int, SplicedPass]]:
        """`(index into conds, pass)` as each forward finishes, so a caller can consume and drop reconstructions
        before the next one; up to `chunk_size` conditions starting at the same layer share one forward (their
        inputs concatenated along the batch), trading memory for fewer, larger matmuls. SAEs replace activations
        at `mask`, ablations at `ablate_mask` (default: `mask`)."""
        if chunk_size < 1:
            raise SaeevalError(f"chunk_size={chunk_size} must be at least 1")
        for cond in conds:
            self._validate(cond, clean, means)
        by_start: dict[int | None, list[int]] = {}
        for i, cond in enumerate(conds):
            by_start.setdefault(self.start_layer(cond), []).append(i)
        for start, idxs in by_start.items():
            for j in range(0, len(idxs), chunk_size):
                chunk = idxs[j : j + chunk_size]
                yield from zip(
                    chunk,
                    self._run_chunk([conds[i] for i in chunk], start, clean, mask, means, ablate_mask),
                    strict=True,
                )

    def _validate(self, cond: Condition, clean: CleanPass, means: Mapping[str, torch.Tensor] | None) -> None:
        missing = [h for h in cond.hooks if h not in clean.acts]
        if missing:
            raise ValueError(f"condition {cond.name!r} needs {missing} cached; pass them to Splicer.clean")
        if cond.ablation is None:
            unknown = [n for n in cond.saes if n not in self.saes]
            if unknown:
                raise SaeevalError(f"condition {cond.name!r} uses unknown SAEs {unknown}; loaded: {list(self.saes)}")
            if sorted(sae_hook(self.saes[n]) for n in cond.saes) != sorted(cond.hooks):
                raise ValueError(f"condition {cond.name!r}: hooks {cond.hooks} do not match its SAEs' hooks")
        elif cond.ablation == "mean":
            if means is None or any(h not in means for h in cond.hooks):
                raise ValueError(f"condition {cond.name!r} is a mean ablation; pass means for {list(cond.hooks)}")
        elif cond.ablation != "zero":
            raise SaeevalError(f"condition {cond.name!r}: ablation {cond.ablation!r} is unknown; use zero or mean")

    def replacement(
        self,
        cond: Condition,
        hook_name: str,
        act: torch.Tensor,
        mask: torch.Tensor,
        means: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Recon | None]:
        """`act` with the condition's replacement at `mask`'s positions (zeros, the mean, or the SAE's
        reconstruction, plus the error term when asked) and, for an SAE, its `(x, x_hat, feats)` there.

        The one definition of a splice: the suffix passes here and generation (saeeval.engine.generation) both use it.
        """
        m = mask.to(act.device)
        out = act.clone()
        if cond.ablation == "zero":
            out[m] = 0
            return out, None
        if cond.ablation == "mean":
            out[m] = means[hook_name].to(out)  # type: ignore[index]
            return out, None
        name = next(n for n in cond.saes if sae_hook(self.saes[n]) == hook_name)
        sel = act[m]
        x, x_hat, feats = encode_decode(self.saes[name], sel)
        new = x_hat + (x - x_hat) if cond.use_error_term else x_hat
        out[m] = new.reshape(sel.shape).to(out.dtype)
        return out, (x, x_hat, feats)

    @torch.no_grad()
    def _run_chunk(
        self,
        conds: Sequence[Condition],
        start: int | None,
        clean: CleanPass,
        mask: torch.Tensor,
        means: Mapping[str, torch.Tensor] | None,
        ablate_mask: torch.Tensor | None = None,
    ) -> list[SplicedPass]:
        k, b = len(conds), clean.tokens.shape[0]
        recons: list[dict[str, Recon]] = [{} for _ in conds]
        # The first spliced hook of a condition sees exactly the clean activation (nothing upstream changed),
        # so it is taken from the cache: reconstructions match the clean activations bit for bit.
        first = [min(c.hooks, key=lambda h: clean.order[h]) for c in conds]
        sae_at = [{sae_hook(self.saes[n]): n for n in c.saes} for c in conds]
        # Block start-1's output: where a condition splices it, the suffix input is the spliced cached activation.
        entry = None if not start else f"blocks.{start - 1}.hook_resid_post"

        def splice_one(i: int, hook_name: str, base: torch.Tensor) -> torch.Tensor:
            """`base` with condition i's replacement written at the masked-in positions (SAE: recon recorded)."""
            cond = conds[i]
            m = mask if cond.ablation is None or ablate_mask is None else ablate_mask
            out, recon = self.replacement(cond, hook_name, base, m, means)
            if recon is not None:
                recons[i][sae_at[i][hook_name]] = recon
            return out

        def splice(act: torch.Tensor, hook: Any) -> torch.Tensor:
            pieces = []
            for i, cond in enumerate(conds):
                live = act if k == 1 else act[i * b : (i + 1) * b]
                if hook.name not in cond.hooks:
                    pieces.append(live)
                    continue
                pieces.append(splice_one(i, hook.name, clean.acts[hook.name] if hook.name == first[i] else live))
            return pieces[0] if k == 1 else torch.cat(pieces)

        fwd_hooks = [(h, splice) for h in hooks_of(conds) if h != entry]
        resid = None
        if start is not None:
            inputs = [
                splice_one(i, entry, clean.acts[entry]) if entry in c.hooks else clean.resid_pre[start]
                for i, c in enumerate(conds)
            ]
            resid = inputs[0] if k == 1 else torch.cat(inputs)
        final = self._forward_from(clean, start, resid, k, fwd_hooks)
        return [
            SplicedPass(cond, final if k == 1 else final[i * b : (i + 1) * b], self.unembed, recons[i])
            for i, cond in enumerate(conds)
        ]

    def suffix(
        self, clean: CleanPass, hook: str, edit: Callable[[torch.Tensor], torch.Tensor], copies: int = 1
    ) -> torch.Tensor:
        """The final residual `[copies·B, T, d]` with `edit` applied to the activation at `hook` of `copies`
        stacked copies of the batch, running only the blocks from that hook on (like a condition's suffix).

        No `no_grad` here: feature attribution (saeeval.features) takes gradients through it. `edit` receives the
        hook's activation for all copies (at a resid_post hook: the cached clean one, the suffix's input).
        """
        if hook not in clean.acts:
            raise ValueError(f"hook {hook!r} is not cached; pass it to Splicer.clean")
        start = _entry_layer(hook)
        at_input = start is not None and start != hook_layer(hook)
        fwd_hooks = [] if at_input else [(hook, lambda act, hook: edit(act))]
        resid = None
        if start is not None:
            resid = edit(_repeat(clean.acts[hook], copies)) if at_input else _repeat(clean.resid_pre[start], copies)
        return self._forward_from(clean, start, resid, copies, fwd_hooks)

    def _forward_from(
        self,
        clean: CleanPass,
        start: int | None,
        resid: torch.Tensor | None,
        copies: int,
        fwd_hooks: Sequence[tuple[str, Callable[..., Any]]],
    ) -> torch.Tensor:
        """The final residual `[copies·B, T, d]` of `copies` stacked copies of the batch with `fwd_hooks` on: the
        whole model from the tokens (`start` None), else the blocks from `start` on with input `resid`."""
        model = self.model
        am, stop = _repeat(clean.attention_mask, copies), model.cfg.n_layers
        with forward_hooks(model, fwd_hooks):
            if start is None:
                out = model(_repeat(clean.tokens, copies), attention_mask=am, stop_at_layer=stop)
            else:
                sf = clean.shortformer_pos_embed
                out = model(
                    resid,
                    start_at_layer=start,
                    stop_at_layer=stop,
                    attention_mask=am,
                    shortformer_pos_embed=None if sf is None else _repeat(sf, copies),
                )
            return self._final(out)


def _repeat(t: torch.Tensor, copies: int) -> torch.Tensor:
    """`copies` copies of a batch stacked along dim 0 (the tensor itself for one)."""
    return t if copies == 1 else t.repeat(copies, *([1] * (t.ndim - 1)))
