"""What the LightningModule hands on at epoch end: one condition's synced metric values, raw (NaN where undefined).

The results document (saeeval.results.document) is built from these; the engine never shapes the document itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from saeeval.engine.conditions import Condition
from saeeval.metrics.generation import GenerationComputed

CLEAN = "clean"
GROUP_SUMS = ("n", "total", "total_sq", "n_correct")


@dataclass
class Computed:
    """One condition's synced metric values as the module computed them (floats may be NaN).

    `task`: LogitDiff values plus `delta_*` paired changes against clean; `groups`: the per-group sums
    (GROUP_SUMS, float64 vectors) slices pool; `recon`: hook name -> Reconstruction values; `samples`: example
    ids and their logit diffs (ascending ids); `batchwise`: hook name -> a compat mode's per-batch metrics
    (`<metric>_saelens`, ...), reported beside `recon`'s. Task parts are None/empty when the task has no answers.
    `generation`: the generated-answer states when the task's answer_mode generates (None otherwise).
    `non_finite`: site -> positions whose values became NaN/inf (saeeval.metrics.non_finite), empty when none.
    `kl_stderr`, `ce_delta_stderr`: standard errors over positions of the KL and of the paired CE change against
    clean (what tells whether an ablation moved the metric at all).
    """

    name: str
    condition: Condition | None
    ce: float
    kl: float | None
    task: dict[str, float]
    groups: dict[str, Tensor] | None
    recon: dict[str, dict[str, float]]
    samples: tuple[list[int], list[float]] | None
    batchwise: dict[str, dict[str, float]] = field(default_factory=dict)
    generation: GenerationComputed | None = None
    non_finite: dict[str, int] = field(default_factory=dict)
    kl_stderr: float | None = None
    ce_delta_stderr: float | None = None
