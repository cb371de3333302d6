"""The catalogue of reported metrics and the one number formatter every output reads.

The terminal table, the PNG charts, the HTML report, the wandb report and `Results.to_pandas` all take their
columns, labels and number formats from `METRICS`: a metric computed by its metric file shows everywhere
once it has one declaration here. Condition names are shortened the same way everywhere too (`short_name`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from saeeval.results.schema import NAN

SECTIONS = ("task", "lm", "reconstruction", "generation")
MISSING = "—"


@dataclass(frozen=True)
class Metric:
    """One reported number: where it lives in a condition (`section`, `key`), how it is named (`label` in the
    report and charts, `short` as a terminal column), its terminal format and how much a narrow terminal keeps
    it (`priority` 0 always shown, higher dropped first). `derive` computes a shown value (the CI half-width)
    from the section instead of reading `key`; derived metrics are display-only (not a column of to_pandas)."""

    key: str
    section: str
    label: str
    short: str
    spec: str = ".3f"
    priority: int = 5
    derive: Callable[[Mapping[str, Any]], Any] | None = None

    def value(self, section: Mapping[str, Any]) -> Any:
        return self.derive(section) if self.derive is not None else section.get(self.key)


def fmt(value: Any, spec: str | None = None) -> str:
    """A cell: '—' for null, 'NaN' for the NAN mark, `spec` (default 4 significant digits) for floats, str() for
    the rest."""
    if value is None:
        return MISSING
    if value == NAN:
        return "NaN"
    if isinstance(value, float):
        return format(value, spec or ".4g")
    return str(value)


def as_number(value: Any) -> Any:
    """A document value for numeric readers (charts, pandas): the NAN mark as float NaN, the rest unchanged."""
    return float("nan") if value == NAN else value


UNRELIABLE_MARK = "?"
UNRELIABLE_LEGEND = "? unreliable: its ablation baseline moves the metric by < 3.9 standard errors"
"""The line under tables with a flagged value (the rule: saeeval.metrics.stats.ill_conditioned)."""


def flagged(condition: Mapping[str, Any], key: str) -> bool:
    """Whether the condition's results mark metric `key` unreliable (its `unreliable` list)."""
    return key in (condition.get("unreliable") or ())


def cell(m: Metric, section: Mapping[str, Any], condition: Mapping[str, Any], spec: str | None = None) -> str:
    """A metric's cell for one condition: `fmt` of its value, with UNRELIABLE_MARK appended when flagged."""
    text = fmt(m.value(section), m.spec if spec is None else spec)
    return text + UNRELIABLE_MARK if text != MISSING and flagged(condition, m.key) else text


def any_flagged(conditions: Mapping[str, Any]) -> bool:
    """Whether any condition has an unreliable value (then tables print UNRELIABLE_LEGEND)."""
    return any(c.get("unreliable") for c in conditions.values())


def _ci_half_width(task: Mapping[str, Any]) -> float | None:
    low, high = task.get("logit_diff_ci_low"), task.get("logit_diff_ci_high")
    if NAN in (low, high):
        return NAN  # type: ignore[return-value]
    return None if low is None or high is None else (high - low) / 2


METRICS: list[Metric] = [
    Metric("logit_diff", "task", "logit diff", "LD", priority=0),
    Metric("logit_diff_ci95", "task", "95% CI ±", "±CI", priority=3, derive=_ci_half_width),
    Metric("accuracy", "task", "accuracy", "acc", priority=0),
    Metric("logit_diff_recovered", "task", "LD recovered", "rec", priority=1),
    Metric("delta_logit_diff", "task", "ΔLD vs clean", "ΔLD", "+.3f", priority=2),
    Metric("ce_loss", "lm", "CE loss", "CE", priority=1),
    Metric("ce_loss_delta", "lm", "ΔCE", "ΔCE", "+.3f", priority=0),
    Metric("ce_loss_score", "lm", "CE score", "CEsc", priority=2),
    Metric("kl_div", "lm", "KL", "KL", priority=1),
    Metric("kl_div_score", "lm", "KL score", "KLsc", priority=3),
    Metric("explained_variance", "reconstruction", "explained variance", "EV", priority=0),
    Metric("l0", "reconstruction", "L0", "L0", ".1f", priority=0),
    Metric("mse", "reconstruction", "MSE", "MSE", ".3g", priority=2),
    Metric("cosine_similarity", "reconstruction", "cosine sim.", "cos", priority=3),
    Metric("l2_ratio", "reconstruction", "L2 ratio", "L2r", priority=4),
    Metric("l1", "reconstruction", "L1", "L1", ".1f", priority=4),
    Metric("relative_reconstruction_bias", "reconstruction", "rel. bias", "bias", priority=5),
    Metric("dead_fraction", "reconstruction", "dead fraction", "dead", priority=5),
    # compat=saelens / saebench: those tools' batch-dependent definitions (saeeval.metrics.batchwise)
    Metric("relative_reconstruction_bias_saelens", "reconstruction", "rel. bias (SAELens)", "bias_SL", priority=6),
    Metric("explained_variance_legacy_saelens", "reconstruction", "EV legacy (SAELens)", "EVleg_SL", priority=7),
    Metric("mse_saebench", "reconstruction", "MSE (SAEBench)", "MSE_SB", ".3g", priority=6),
    Metric("explained_variance_saebench", "reconstruction", "EV (SAEBench)", "EV_SB", priority=6),
    Metric("explained_variance_legacy_saebench", "reconstruction", "EV legacy (SAEBench)", "EVleg_SB", priority=7),
    Metric("relative_reconstruction_bias_saebench", "reconstruction", "rel. bias (SAEBench)", "bias_SB", priority=7),
    Metric("l1_saebench", "reconstruction", "L1 (SAEBench)", "L1_SB", ".1f", priority=7),
    # task.answer_mode=generate / both: answers parsed from greedy generation (saeeval.metrics.generation)
    Metric("accuracy", "generation", "generated accuracy", "gen acc", priority=0),
    Metric("unparsed_rate", "generation", "unparsed rate", "unparsed", priority=0),
    Metric("agreement", "generation", "agrees with LD label", "agree LD", priority=1),
    Metric("accuracy_parsed", "generation", "accuracy of parsed", "acc parsed", priority=2),
]


def metrics(*sections: str, derived: bool = True) -> list[Metric]:
    """The declared metrics of `sections` (all when none), in declaration order."""
    return [m for m in METRICS if (not sections or m.section in sections) and (derived or m.derive is None)]


def metric(key: str, section: str | None = None) -> Metric:
    """The declaration of `key` (in `section`; the first one declared when None)."""
    return next(m for m in METRICS if m.key == key and section in (None, m.section))


def present(decls: Iterable[Metric], sections: Iterable[Mapping[str, Any]]) -> list[Metric]:
    """The declarations with a non-null value in at least one of `sections` (so empty columns are left out)."""
    sections = list(sections)
    return [m for m in decls if any(m.value(s) not in (None, MISSING) for s in sections)]


def reconstructions(conditions: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(condition, hook, values) for every SAE spliced in every condition."""
    return [(name, hook, r) for name, c in conditions.items() for hook, r in (c.get("reconstruction") or {}).items()]


_HOOK_RE = re.compile(r"blocks\.(\d+)\.((?:[a-z_0-9]+\.)*)hook_([a-z_0-9]+)")
_ABLATION_RE = re.compile(r"\b(zero|mean)_ablation@")


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut: how labels are shortened in every output."""
    return text if len(text) <= width else text[: width - 1] + "…"


def short_name(name: str) -> str:
    """A condition or hook name abbreviated the same way everywhere: `blocks.1.attn.hook_z` -> `L1.attn.z`,
    `zero_ablation@blocks.0.hook_resid_post` -> `zero@L0.resid_post`; other names are kept."""
    return _ABLATION_RE.sub(r"\1@", _HOOK_RE.sub(r"L\1.\2\3", name))
