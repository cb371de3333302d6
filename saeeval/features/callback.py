"""The Lightning Callback that runs feature attribution beside the evaluation, on the same test batches.

Pass 1 (the test loop, `on_test_batch_end`): per batch one clean pass for the attributed SAEs' hooks, then per
SAE the attribution (one forward + backward from its hook on; IG: `ig_steps` points) and the fire counts. At the
end of the epoch the synced sums give each SAE's top latents; pass 2 walks this rank's test batches again and
measures the exact effect of ablating each top latent alone, the top-k together (faithfulness) and all latents.
With the `mean` baseline a pass 0 (`on_test_start`) takes each latent's mean first. Every sum is a torchmetrics
state, so under DDP every rank ends with the same numbers; `document` holds features.json afterwards.

Lightning's default `Trainer(inference_mode=True)` runs the test loop under `torch.inference_mode()`, whose tensors
can never enter autograd; saeeval builds the trainer with `inference_mode=False` when features are on (the loop is
then under `no_grad`) and this callback turns gradients on only around its own backward passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from saeeval.engine.masks import TokenMask
from saeeval.engine.scoring import answer_logit_diff, answer_rows
from saeeval.features.attribution import LatentProbe, ablation_effects, attribution
from saeeval.features.metrics import ExampleRows, FireCounts, GroupedSums, LatentSum
from saeeval.features.options import FeatureAttribution
from saeeval.features.summary import SaeStates, faithfulness_ks, summarize
from saeeval.tasks.base import TaskDataModule


class FeatureCallback(L.Callback):
    """Feature attribution for `sae_names` of the module's splicer on `task`; see the module docstring."""

    def __init__(
        self,
        options: FeatureAttribution,
        sae_names: Sequence[str],
        task: TaskDataModule,
        mask: TokenMask,
        special_ids: Sequence[int],
    ) -> None:
        self.options, self.sae_names, self.task = options, list(sae_names), task
        self.mask = options.mask or mask
        self.special_ids = list(special_ids)
        self.num_groups = max(1, len(task.groups))
        self.document: dict[str, Any] | None = None
        self.probes: dict[str, LatentProbe] = {}
        self.states: dict[str, SaeStates] = {}
        self.patches: dict[str, Tensor] = {}
        self.clean_ld: GroupedSums | None = None

    def _batches(self, module: L.LightningModule) -> Any:
        for batch in self.task.test_dataloader():
            yield module.transfer_batch_to_device(batch, module.device, 0)

    def _clean(self, module: Any, batch: Mapping[str, Any]) -> tuple[Any, Tensor, Tensor]:
        """The clean pass for every attributed hook, the feature mask and the clean logit differences `[B]`."""
        hooks = list(dict.fromkeys(p.hook for p in self.probes.values()))
        clean = module.splicer.clean(batch["tokens"], batch["attention_mask"], hooks)
        mask = self.mask(batch["tokens"], batch["attention_mask"], batch.get("positions"), self.special_ids)
        rows = answer_rows(clean.final, batch["positions"], module.answer_position, 1)
        ld = answer_logit_diff(module.splicer.unembed, rows, batch["correct"], batch["incorrect"])
        return clean, mask, ld

    @torch.no_grad()
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module: Any = pl_module
        if torch.is_inference_mode_enabled():
            raise RuntimeError("feature attribution needs gradients: build the Trainer with inference_mode=False")
        device = module.device
        self.probes = {n: LatentProbe(module.splicer, n, module.answer_position) for n in self.sae_names}
        self.clean_ld = GroupedSums(self.num_groups, 1).to(device)
        for name, probe in self.probes.items():
            d = probe.d_sae
            self.states[name] = SaeStates(
                hook=probe.hook,
                d_sae=d,
                fires=FireCounts(d).to(device),
                attribution=GroupedSums(self.num_groups, d).to(device),
            )
            self.patches[name] = torch.zeros(d, device=device)
        if self.options.baseline == "mean":
            sums = {n: LatentSum(p.d_sae).to(device) for n, p in self.probes.items()}
            for batch in self._batches(module):
                clean, mask, _ = self._clean(module, batch)
                for name, probe in self.probes.items():
                    sums[name].update(probe.prepare(clean, mask)[0])
            self.patches = {n: s.compute().float().to(device) for n, s in sums.items()}

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        module: Any = pl_module
        opts = self.options
        with torch.no_grad():
            clean, mask, ld = self._clean(module, batch)
        group = batch["group"]
        self.clean_ld.update(ld[:, None], group)  # type: ignore[union-attr]
        for name, probe in self.probes.items():
            attr, feats, _ = attribution(
                probe, clean, mask, batch, self.patches[name], opts.method, opts.ig_steps, opts.latents_per_forward
            )
            self.states[name].attribution.update(attr, group)
            self.states[name].fires.update(feats)

    @torch.no_grad()
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module: Any = pl_module
        device = module.device
        for st in self.states.values():
            mean = st.attribution.pooled()["mean"]
            k = min(self.options.top_k, st.d_sae)
            order = torch.argsort(mean.abs().nan_to_num(0.0).cpu(), descending=True, stable=True)
            st.top = [int(i) for i in order[:k]]
            st.edits = [[j] for j in st.top] + [st.top[:kk] for kk in faithfulness_ks(k)] + [list(range(st.d_sae))]
            st.effects = GroupedSums(self.num_groups, len(st.edits)).to(device)
            st.rows = ExampleRows(len(st.top)).to(device)
        for batch in self._batches(module):
            clean, mask, _ = self._clean(module, batch)
            for name, probe in self.probes.items():
                st = self.states[name]
                assert st.effects is not None and st.rows is not None  # set for every SAE by the loop above
                eff = ablation_effects(
                    probe, clean, mask, batch, self.patches[name], st.edits, self.options.latents_per_forward
                )
                st.effects.update(eff, batch["group"])
                st.rows.update(batch["example_id"], eff[:, : len(st.top)])
        assert self.clean_ld is not None
        self.document = summarize(self.options, self._positions(), self.task, self.clean_ld, self.states)

    def _positions(self) -> dict[str, Any]:
        if self.options.positions is not None:
            return {"positions": self.options.positions, "positions_from": "features.positions"}
        return {
            "positions": self.mask.describe()["positions"],
            "positions_from": "mask",
            "exclude_special": self.mask.exclude_special,
        }
