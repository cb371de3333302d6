"""SAEEvalModule: a LightningModule whose test loop feeds torchmetrics states for every splice condition.

Per batch: one clean pass, then each condition runs from its first spliced layer (saeeval.engine.splicing). All numbers
are metric states (sums or concatenations), so a DDP run gives the single-process result; they are computed
once, at epoch end (`compute_results`); saeeval.results.document turns them into the results document. When the task
generates (`task.answer_mode`), each condition then also writes greedy continuations (saeeval.engine.generation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from sae_lens import SAE
from torch import Tensor, nn

from saeeval.engine.compat import Compat, get_compat
from saeeval.engine.computed import CLEAN, GROUP_SUMS, Computed
from saeeval.engine.conditions import Condition, hooks_of
from saeeval.engine.generation import SpliceAt, generated_positions, greedy_generate, stacked_hooks
from saeeval.engine.masks import BatchMasks, Masks
from saeeval.engine.mean_ablation import ActivationMeans
from saeeval.engine.scoring import LMStates, answer_logit_diff, answer_rows, score_lm
from saeeval.engine.splicing import Splicer, conditions_per_forward
from saeeval.metrics.batchwise import BatchwiseReconstruction
from saeeval.metrics.generation import GenerationMetrics
from saeeval.metrics.lm_loss import KLDivergence, NextTokenCrossEntropy, PairedCEDifference
from saeeval.metrics.logit_diff import GroupedLogitDiff, LogitDiff, PerExample
from saeeval.metrics.non_finite import ANSWERS, FINAL, LOGITS, NonFinite, bad_rows, reconstruction_site
from saeeval.metrics.reconstruction import Reconstruction
from saeeval.tasks.answer_parsing import GenerationOptions, generated_text, parse_answer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformer_lens.utilities import TypedModuleList
else:
    TypedModuleList = nn.ModuleList  # the item types are for mypy; the modules hold plain nn.ModuleLists

FINALS_BUDGET = 1 << 28
"""Bytes of conditions' final residuals held at once per batch (256 MiB); more conditions are scored in groups."""


class ConditionMetrics(nn.Module):
    """The metric states of one condition (clean or spliced/ablated)."""

    recon: TypedModuleList[Reconstruction]
    batchwise: TypedModuleList[BatchwiseReconstruction] | None

    def __init__(
        self,
        has_answers: bool,
        num_groups: int,
        recon: Mapping[str, tuple[str, int, int]],
        paired: bool,
        batchwise: str | None = None,
    ):
        """`recon`: SAE name -> (hook, d_in, d_sae) of each SAE the condition splices."""
        super().__init__()
        self.ce = NextTokenCrossEntropy()
        self.kl = KLDivergence() if paired else None
        self.ce_delta = PairedCEDifference() if paired else None
        self.ld = LogitDiff() if has_answers else None
        self.delta = LogitDiff() if has_answers and paired else None
        self.grouped = GroupedLogitDiff(num_groups) if has_answers else None
        self.per_example = PerExample() if has_answers else None
        self.recon_names = list(recon)
        self.recon = TypedModuleList(Reconstruction(d_in, d_sae) for _, d_in, d_sae in recon.values())
        self.batchwise = (
            TypedModuleList(BatchwiseReconstruction(batchwise, d_in) for _, d_in, _ in recon.values())
            if batchwise
            else None
        )
        self.recon_sites = [reconstruction_site(hook) for hook, _, _ in recon.values()]
        self.non_finite = NonFinite([*self.recon_sites, FINAL, LOGITS, *([ANSWERS] if has_answers else [])])

    def update_recon(self, recon: Mapping[str, tuple[Tensor, Tensor, Tensor]], keep: Tensor | None) -> None:
        """Reconstruction states from one batch's `(x, x_hat, feats)` per SAE; `keep` `[N]` picks the rows that
        count (compat=saebench: spliced tokens that are also scored). Non-finite reconstructions are counted on
        every spliced row: each one feeds the forward."""
        for i, name in enumerate(self.recon_names):
            x, x_hat, feats = recon[name]
            self.non_finite.update(self.recon_sites[i], bad_rows(x_hat))
            if keep is not None:
                k = keep.to(x.device)
                x, x_hat, feats = x[k], x_hat[k], feats[k.to(feats.device)]
            self.recon[i].update(x, x_hat, feats)
            if self.batchwise is not None:
                self.batchwise[i].update(x, x_hat, feats)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> nn.Module:
        """Move the metric states with the module, never change their dtype.

        Lightning's precision plugins convert the whole LightningModule (`module.to(torch.bfloat16)` for
        `bf16-true`), and torchmetrics lets `.to(dtype)` through to the states: the float64 sums would become
        bfloat16, where a count of 638 tokens rounds to 640.
        """

        def move_only(t: Tensor) -> Tensor:
            return t.to(fn(t.new_empty(0)).device)

        return super()._apply(move_only, recurse)


class SAEEvalModule(L.LightningModule):
    """Evaluate `conditions` (SAE splices and ablation baselines) against the clean model on a task's batches.

    `answer_position` names the batch position whose logits are scored (None: the last column). The computed
    values are left in `self.computed` after `trainer.test` (on every rank; only rank 0 writes files).
    `condition_batch`: how many conditions starting at the same block share one forward (None:
    `splicing.conditions_per_forward`, 1 on CPU). `mask` chooses where SAEs and ablations replace activations
    and which positions CE/KL count; `compat` (none | saelens | saebench, saeeval.engine.compat) reproduces those
    tools' ablation positions and definitions. `generation` (a task's answer options): when it
    generates, every condition also writes greedy continuations whose parsed answers are counted (`_generate`).
    """

    metrics: TypedModuleList[ConditionMetrics]
    generated: TypedModuleList[GenerationMetrics] | None

    def __init__(
        self,
        model: HookedTransformer,
        saes: Mapping[str, SAE],
        conditions: Sequence[Condition],
        mask: Masks,
        special_ids: Sequence[int],
        has_answers: bool,
        num_groups: int,
        condition_batch: int | None = None,
        answer_position: str | None = None,
        compat: Compat | str | None = None,
        generation: GenerationOptions | None = None,
    ):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.sae_modules = nn.ModuleList(sae.requires_grad_(False) for sae in saes.values())  # moved with the module
        self.splicer = Splicer(self.model, saes)  # validated once; holds the same (in-place moved) modules
        self.conditions = list(conditions)
        self.masks = mask
        self.compat = get_compat(compat)
        self.special_ids = list(special_ids)
        self.has_answers = has_answers
        self.condition_batch = condition_batch
        self.answer_position = answer_position
        self.hooks = hooks_of(self.conditions)
        self.metrics = TypedModuleList(
            [ConditionMetrics(has_answers, num_groups, {}, paired=False)]
            + [
                ConditionMetrics(
                    has_answers, num_groups, self._recon_shapes(c), paired=True, batchwise=self.compat.batchwise
                )
                for c in self.conditions
            ]
        )
        self.generation = generation if generation is not None and generation.generates and has_answers else None
        self.generated = (
            None
            if self.generation is None
            else TypedModuleList(
                GenerationMetrics(num_groups, self.generation.max_new_tokens) for _ in range(1 + len(self.conditions))
            )
        )
        self.means: dict[str, Tensor] | None = None
        self.computed: list[Computed] | None = None
        # the most SAE latents per position one condition holds (Σ d_sae), for the batching estimate
        self._widest = max((sum(saes[n].cfg.d_sae for n in c.saes) for c in self.conditions), default=0)

    @property
    def saes(self) -> dict[str, SAE]:
        return self.splicer.saes

    def _recon_shapes(self, cond: Condition) -> dict[str, tuple[str, int, int]]:
        if cond.ablation is not None:
            return {}
        saes = self.saes
        return {
            name: (saes[name].cfg.metadata.hook_name, saes[name].cfg.d_in, saes[name].cfg.d_sae) for name in cond.saes
        }

    def _masks(self, batch: Mapping[str, Any]) -> BatchMasks:
        return self.masks(
            batch["tokens"], batch["attention_mask"], batch.get("positions"), self.special_ids, self.compat
        )

    def on_test_model_eval(self) -> None:
        """Follow placement here, not in `on_test_start`: Lightning calls this hook first and the callbacks'
        `on_test_start` (the feature callback's mean pass runs forwards) before the module's own."""
        super().on_test_model_eval()
        self.follow_placement()

    def on_test_start(self) -> None:
        if any(c.ablation == "mean" for c in self.conditions):
            self.means = self._mean_activations()

    def follow_placement(self) -> None:
        """Make TransformerLens's `cfg.device/dtype` and each SAE's `device/dtype` match their parameters.

        Lightning places and converts the module with `nn.Module.to`, which moves the tensors but not that
        bookkeeping; TransformerLens routes tokens and the residual stream by `cfg.device` and sae_lens casts
        inputs to `SAE.dtype`, so without this a rank on `cuda:1` would send its tokens to `cuda:0` and a
        `64-true` run would still encode in float32. The device keeps its index (`cuda:1`): TransformerLens's own
        `.to(torch.device)` would keep only the type.

        Outside inference mode (Lightning's test loop runs in it): a buffer the move converts (TransformerLens keeps
        its attention's `IGNORE` in float32 beside bf16 weights) would otherwise become an inference tensor, which
        the caller's model could never be written into again (`evaluate` restores the weights it was given).
        """
        param = next(self.model.parameters())
        with torch.inference_mode(False):
            self.model.to(str(param.device), print_details=False)
            self.model.to(param.dtype, print_details=False)
            for sae in self.saes.values():
                sae_param = next(sae.parameters())
                sae.to(device=sae_param.device, dtype=sae_param.dtype)

    @torch.no_grad()
    def _mean_activations(self) -> dict[str, Tensor]:
        """Mean activation per hook over the positions ablations replace, on the whole eval set (summed over
        ranks)."""
        means = ActivationMeans(self.hooks)
        # Lightning sets `trainer.datamodule` in its data connector; the Trainer class does not declare it.
        for batch in self.trainer.datamodule.test_dataloader():  # type: ignore[attr-defined]
            batch = self.transfer_batch_to_device(batch, self.device, 0)
            means.update(
                self.splicer.clean(batch["tokens"], batch["attention_mask"], self.hooks), self._masks(batch).ablate
            )
        means.sync()
        return means.compute()

    @torch.no_grad()
    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        tokens, attention_mask = batch["tokens"], batch["attention_mask"]
        masks = self._masks(batch)
        keep = masks.score[masks.splice] if self.compat.recon_within_score else None
        clean = self.splicer.clean(tokens, attention_mask, self.hooks)
        real = attention_mask.to(clean.final.device, torch.bool)
        self.metrics[0].non_finite.update(FINAL, bad_rows(clean.final) & real)
        clean_ld = self._update_answers(self.metrics[0], clean.final, batch, None)
        lds = {0: clean_ld}
        per_forward = self.condition_batch or conditions_per_forward(self.model, tokens.shape, self._widest)
        for n, group in enumerate(self._groups(clean.final)):
            finals: list[Tensor | None] = [None] * len(group)
            conds = [self.conditions[i] for i in group]
            for j, out in self.splicer.iter_many(conds, clean, masks.splice, self.means, per_forward, masks.ablate):
                metrics = self.metrics[1 + group[j]]
                metrics.update_recon(out.recon, keep)
                metrics.non_finite.update(FINAL, bad_rows(out.final) & real)
                lds[1 + group[j]] = self._update_answers(metrics, out.final, batch, clean_ld)
                finals[j] = out.final
            scored = [self.metrics[1 + i] for i in group]
            filled = cast("list[Tensor]", finals)  # iter_many yields every condition of the group once
            score_lm(
                self.splicer.unembed,
                clean.final,
                tokens,
                masks.score,
                [(f, LMStates(m.ce, m.kl, m.non_finite, m.ce_delta)) for f, m in zip(filled, scored, strict=True)],
                LMStates(self.metrics[0].ce, non_finite=self.metrics[0].non_finite) if n == 0 else None,
                input_only=self.compat.ce_input_only,
            )
        if self.generated is not None:
            # a task generates only with answers, so every condition's logit difference is a Tensor
            self._generate(batch, SpliceAt(masks.splice, masks.ablate), cast("dict[int, Tensor]", lds))

    def _generate(self, batch: Mapping[str, Any], prompt_at: SpliceAt, lds: Mapping[int, Tensor]) -> None:
        """Greedy continuations under clean and every condition (spliced in the prompt at `prompt_at` and at the
        generated positions per saeeval.engine.generation), parsed into answers and counted against the logit
        difference's label of the same condition."""
        tok: Any  # a Hugging Face tokenizer, duck-typed as elsewhere in saeeval (generating needs one)
        opts, tok = self.generation, self.model.tokenizer
        assert opts is not None and self.generated is not None  # test_step calls this only when generating
        tokens, attention_mask = batch["tokens"], batch["attention_mask"]
        prompts = [row[m.bool()].tolist() for row, m in zip(tokens, attention_mask, strict=True)]
        cands = [
            [tok.decode([int(c)]).strip(), tok.decode([int(i)]).strip()]
            for c, i in zip(batch["correct"], batch["incorrect"], strict=True)
        ]
        step_at = generated_positions(self.masks.splice, self.special_ids, self.compat.ablate_special)
        conds, b = [None, *self.conditions], tokens.shape[0]
        per_forward = self.condition_batch or conditions_per_forward(
            self.model, tokens.shape, self._widest, opts.max_new_tokens
        )
        for start in range(0, len(conds), per_forward):
            chunk = conds[start : start + per_forward]
            k = len(chunk)
            new = greedy_generate(
                self.model,
                tokens.repeat(k, 1),
                attention_mask.repeat(k, 1),
                opts.max_new_tokens,
                prompt_at.repeat(k),
                step_at,
                stacked_hooks(self.splicer, chunk, self.means),
                tok.eos_token_id,
            )
            for i in range(k):
                rows = new[i * b : (i + 1) * b]
                parsed = [
                    parse_answer(opts.answer_regex, *generated_text(tok, p, g), c)
                    for p, g, c in zip(prompts, rows.tolist(), cands, strict=True)
                ]
                parsed_t = torch.tensor(parsed, dtype=torch.long, device=tokens.device)
                self.generated[start + i].labels.update(parsed_t, batch["group"], lds[start + i])
                self.generated[start + i].tokens.update(batch["example_id"], rows, parsed_t)

    def _groups(self, final: Tensor) -> list[list[int]]:
        """Condition indices in groups whose final residuals fit FINALS_BUDGET together (at least one group, so the
        clean CE is scored even without conditions); each group shares one clean unembedding per chunk."""
        size = max(1, FINALS_BUDGET // max(1, final.numel() * final.element_size()))
        idx = list(range(len(self.conditions)))
        return [idx[i : i + size] for i in range(0, len(idx), size)] or [[]]

    def _update_answers(
        self, m: ConditionMetrics, final: Tensor, batch: Mapping[str, Any], clean_ld: Tensor | None
    ) -> Tensor | None:
        """Logit-difference states at the task's answer position."""
        if not self.has_answers:
            return None
        assert m.ld is not None and m.grouped is not None and m.per_example is not None  # built with has_answers
        rows = answer_rows(final, batch.get("positions"), self.answer_position)
        ld = answer_logit_diff(self.splicer.unembed, rows, batch["correct"], batch["incorrect"])
        m.non_finite.update(ANSWERS, ld)
        m.ld.update(ld)
        m.grouped.update(ld, batch["group"])
        m.per_example.update(batch["example_id"], ld)
        if m.delta is not None:
            assert clean_ld is not None  # a paired condition: test_step scored the clean pass's answers first
            m.delta.update(ld - clean_ld)
        return ld

    def on_test_epoch_end(self) -> None:
        self.computed = self.compute_results()

    def compute_results(self) -> list[Computed]:
        """Compute every metric state (synced across ranks; call on every rank), clean first; saeeval.results.document
        shapes them into results.json."""
        hook_of = {name: sae.cfg.metadata.hook_name for name, sae in self.saes.items()}
        conds: list[Condition | None] = [None, *self.conditions]
        computed = [_compute(cond, m, hook_of) for cond, m in zip(conds, self.metrics, strict=True)]
        if self.generated is not None:
            for res, gen in zip(computed, self.generated, strict=True):
                res.generation = gen.compute()
        return computed


def _compute(cond: Condition | None, m: ConditionMetrics, hook_of: Mapping[str, str]) -> Computed:
    task: dict[str, float] = {}
    if m.ld is not None:
        task = {k: float(v) for k, v in m.ld.compute().items()}
    if m.delta is not None:
        task.update({f"delta_{k}": float(v) for k, v in m.delta.compute().items() if k.startswith("logit")})
    groups = samples = None
    if m.grouped is not None:
        sums = m.grouped.compute()
        groups = {k: sums[k].detach().cpu() for k in GROUP_SUMS}
    if m.per_example is not None:
        ids, values = m.per_example.compute()
        samples = (ids.tolist(), values.tolist())
    return Computed(
        name=CLEAN if cond is None else cond.name,
        condition=cond,
        ce=float(m.ce.compute()),
        kl=float(m.kl.compute()) if m.kl is not None else None,
        kl_stderr=float(m.kl.stderr()) if m.kl is not None else None,
        ce_delta_stderr=float(m.ce_delta.stderr()) if m.ce_delta is not None else None,
        task=task,
        groups=groups,
        recon={
            hook_of[n]: {k: float(v) for k, v in r.compute().items()}
            for n, r in zip(m.recon_names, m.recon, strict=True)
        },
        batchwise={
            hook_of[n]: {k: float(v) for k, v in b.compute().items()}
            for n, b in zip(m.recon_names, m.batchwise, strict=True)
        }
        if m.batchwise is not None
        else {},
        samples=samples,
        non_finite=m.non_finite.compute(),
    )
