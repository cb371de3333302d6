"""Charts of one or more runs: one matplotlib Figure per question, runs side by side (headless, no pyplot).

The run's own PNG (`logit_diff.png`, `Results.plot()`) is the comparison chart with one run in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from saeeval.metrics.stats import Z_95
from saeeval.render.catalog import UNRELIABLE_MARK, clip, flagged, metric, short_name
from saeeval.results.schema import NAN

CHART_FILE = "logit_diff.png"
PALETTE = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000"]

_BAR_IN = 0.2  # inches of height per bar
_HATCH = "///"  # ablation baselines
_MARKERS = "osD^vPX*<>hp"
_ANNOTATE_MAX = 10  # name the points of a scatter only while the names stay readable


class RunLike(Protocol):
    """What a chart needs of a run: its short id, legend label, colour and results.json document. Read only, so a
    run may offer them as properties and hold its document as a dict."""

    @property
    def rid(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def color(self) -> str: ...

    @property
    def doc(self) -> Mapping[str, Any]: ...


def conditions_of(runs: Sequence[RunLike]) -> list[str]:
    """Condition names in order of first appearance across the runs (clean first where present)."""
    return list(dict.fromkeys(c for r in runs for c in r.doc.get("conditions", {})))


def _cond(run: RunLike, name: str) -> Mapping[str, Any]:
    return run.doc.get("conditions", {}).get(name) or {}


def _task(run: RunLike, name: str) -> Mapping[str, Any]:
    return _cond(run, name).get("task") or {}


def _ci(task: Mapping[str, Any]) -> tuple[float, float]:
    """Distances from the mean to the 95% CI ends (from ci_low/high, else Z_95·stderr, else none)."""
    keys = ("logit_diff", "logit_diff_ci_low", "logit_diff_ci_high", "logit_diff_stderr")
    m, lo, hi, se = (task.get(k) for k in keys)
    if NAN in (m, lo, hi, se):
        return 0.0, 0.0
    if lo is not None and hi is not None:
        return max(m - lo, 0.0), max(hi - m, 0.0)
    return (Z_95 * se, Z_95 * se) if se is not None else (0.0, 0.0)


def _legend(fig: Figure, runs: Sequence[RunLike]) -> None:
    """Run legend under the axes: one column when labels are long, so nothing is cut at the figure's edge."""
    wide = any(len(r.label) > 40 for r in runs)
    fig.legend(loc="outside lower center", ncols=1 if wide else min(len(runs), 3), fontsize=8, frameon=False)


def _legend_label(run: RunLike) -> str:
    return clip(run.label, 100)


def _grouped_barh(
    runs: Sequence[RunLike],
    conds: Sequence[str],
    value: Callable[[RunLike, str], float | None],
    err: Callable[[RunLike, str], tuple[float, float]] | None,
    xlabel: str,
    title: str,
    flag: Callable[[RunLike, str], bool] | None = None,
) -> Figure:
    """Conditions down the y axis, one bar per run inside each condition; a missing value is written 'n/a', a
    value `flag` marks (an unreliable ratio) is drawn faded with a '?' at its end."""
    n = len(runs)
    legend_rows = n if any(len(r.label) > 40 for r in runs) else -(-n // 3)
    height = 1.2 + 0.22 * legend_rows + _BAR_IN * n * len(conds) + 0.15 * len(conds)
    fig = Figure(figsize=(9.0, height), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / n
    for i, run in enumerate(runs):
        ys = [c + (i - (n - 1) / 2) * height for c in range(len(conds))]
        vals = [value(run, c) for c in conds]
        present = [k for k, v in enumerate(vals) if v not in (None, NAN)]
        xs = cast("list[float]", [vals[k] for k in present])  # `present`: the indices with a value
        bar_kw: dict[str, Any] = {}
        if err is not None and present:
            errs = [err(run, conds[k]) for k in present]
            bar_kw = {"xerr": np.array(errs).T, "capsize": 3, "error_kw": {"elinewidth": 1, "ecolor": "#333"}}
        bars = ax.barh(
            [ys[k] for k in present], xs, height=height * 0.92, color=run.color, label=_legend_label(run), **bar_kw
        )
        for k, bar in zip(present, bars, strict=True):
            if _cond(run, conds[k]).get("ablation"):
                bar.set_hatch(_HATCH)
                bar.set_edgecolor("white")
            if flag is not None and flag(run, conds[k]):
                bar.set_alpha(0.4)
                ax.text(  # k is in `present`, so vals[k] is a float
                    cast(float, vals[k]),
                    ys[k],
                    f" {UNRELIABLE_MARK} " if cast(float, vals[k]) >= 0 else f"{UNRELIABLE_MARK} ",
                    va="center",
                    ha="left" if cast(float, vals[k]) >= 0 else "right",
                    fontsize=9,
                    color="#a00",
                )
        for k, v in enumerate(vals):
            if v in (None, NAN) and conds[k] in run.doc.get("conditions", {}):
                ax.text(0, ys[k], " NaN" if v == NAN else " n/a", va="center", ha="left", fontsize=7, color="#777")
    ax.axvline(0, color="#222", linewidth=0.8)
    ax.set_yticks(range(len(conds)), [short_name(c) for c in conds], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    _legend(fig, runs)
    return fig


def logit_diff_chart(runs: Sequence[RunLike], task: str) -> Figure | None:
    """Mean logit(correct) − logit(incorrect) per condition and run, 95% CI error bars; None without answers."""
    conds = [c for c in conditions_of(runs) if any(_task(r, c).get("logit_diff") is not None for r in runs)]
    if not conds:
        return None
    return _grouped_barh(
        runs,
        conds,
        lambda r, c: _task(r, c).get("logit_diff"),
        lambda r, c: _ci(_task(r, c)),
        "logit(correct) − logit(incorrect)",
        f"{task}: {metric('logit_diff').label} per condition",
    )


def recovered_chart(runs: Sequence[RunLike], task: str) -> Figure | None:
    """Share of the clean-vs-ablation logit diff that each spliced condition keeps; None when never computed."""
    conds = [c for c in conditions_of(runs) if any(_task(r, c).get("logit_diff_recovered") is not None for r in runs)]
    if not conds:
        return None

    def unreliable(r: RunLike, c: str) -> bool:
        return flagged(_cond(r, c), "logit_diff_recovered")

    note = (
        f"; {UNRELIABLE_MARK} = unreliable, the ablation barely moves it"
        if any(unreliable(r, c) for r in runs for c in conds)
        else ""
    )
    fig = _grouped_barh(
        runs,
        conds,
        lambda r, c: _task(r, c).get("logit_diff_recovered"),
        None,
        f"fraction of logit diff recovered (1 = clean, 0 = ablated){note}",
        f"{task}: logit diff recovered",
        flag=unreliable,
    )
    fig.axes[0].axvline(1, color="#2a7", linewidth=1, linestyle="--")
    return fig


def frontier_points(run: RunLike) -> list[tuple[str, float, float]]:
    """(condition, total L0 over its SAEs, CE loss delta) for each SAE condition with both numbers."""
    out = []
    for name, c in run.doc.get("conditions", {}).items():
        recon = (c.get("reconstruction") or {}).values()
        l0s = [r.get("l0") for r in recon]
        delta = (c.get("lm") or {}).get("ce_loss_delta")
        numbers = [*l0s, delta]
        if c.get("saes") and not c.get("ablation") and l0s and None not in numbers and NAN not in numbers:
            out.append((name, float(sum(l0s)), float(cast(float, delta))))  # None is not in `numbers`
    return out


def frontier_chart(runs: Sequence[RunLike], task: str) -> Figure | None:
    """The sparsity/fidelity frontier: L0 against CE loss increase; colour = run, marker = condition."""
    points = [(r, frontier_points(r)) for r in runs]
    if not any(p for _, p in points):
        return None
    conds = list(dict.fromkeys(name for _, pts in points for name, _, _ in pts))
    marker = {c: _MARKERS[i % len(_MARKERS)] for i, c in enumerate(conds)}
    annotate = sum(len(p) for _, p in points) <= _ANNOTATE_MAX
    fig = Figure(figsize=(9.0, 5.2 + 0.2 * len(conds)), layout="constrained")
    ax = fig.add_subplot()
    for run, pts in points:
        for name, x, y in pts:
            ax.scatter([x], [y], s=52, color=run.color, marker=marker[name], edgecolor="white", linewidth=0.8, zorder=3)
            if annotate:
                ax.annotate(
                    clip(short_name(name), 30),
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color="#444",
                )
    handles = [
        Line2D([], [], linestyle="", marker="s", markersize=8, color=r.color, label=_legend_label(r))
        for r, p in points
        if p
    ]
    handles += [
        Line2D([], [], linestyle="", marker=marker[c], markersize=7, color="#666", label=clip(short_name(c), 60))
        for c in conds
    ]
    ax.axhline(0, color="#222", linewidth=0.8)
    ax.set_xlabel("L0: active SAE features per token (summed over the condition's SAEs)")
    ax.set_ylabel("CE loss delta (spliced − clean), nats")
    ax.set_title(f"{task}: CE loss delta against L0 (lower left is better)", fontsize=11, loc="left")
    ax.grid(color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def identity_slices(runs: Sequence[RunLike]) -> list[str]:
    """The `identity=...` slice names of these runs, in order of first appearance."""
    return list(dict.fromkeys(s for r in runs for s in (r.doc.get("slices") or {}) if s.startswith("identity=")))


def identity_heatmap(runs: Sequence[RunLike], task: str) -> Figure | None:
    """Accuracy and mean logit diff per identity slice (rows) and run × condition (columns); None without slices."""
    rows = identity_slices(runs)
    if not rows:
        return None
    cols = [
        (r, c)
        for r in runs
        for c in conditions_of([r])
        if any(c in ((r.doc.get("slices") or {}).get(s) or {}) for s in rows)
    ]
    width = min(max(3.0 + 0.42 * len(cols), 7.0), 16.0)
    fig = Figure(figsize=(width, 2.6 + 0.64 * len(rows) + 0.09 * max(len(c) for _, c in cols)), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, cmap in zip(axes, ("accuracy", "logit_diff"), ("RdYlGn", "viridis"), strict=True):
        grid = np.full((len(rows), len(cols)), np.nan)
        for j, (r, c) in enumerate(cols):
            for i, s in enumerate(rows):
                v = (((r.doc.get("slices") or {}).get(s) or {}).get(c) or {}).get(key)
                grid[i, j] = np.nan if v in (None, NAN) else v
        ax.set_facecolor("#e8e8e8")
        finite = grid[np.isfinite(grid)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        im = ax.imshow(
            np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9
        )
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = grid[i, j]
                shade = (v - vmin) / (vmax - vmin) if np.isfinite(v) and vmax > vmin else 0.5
                light = cmap == "viridis" and shade > 0.6 or cmap == "RdYlGn" and 0.3 < shade < 0.7
                ax.text(
                    j,
                    i,
                    "—" if not np.isfinite(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="#111" if light or not np.isfinite(v) else "white",
                )
        ax.set_yticks(range(len(rows)), [s.removeprefix("identity=") for s in rows], fontsize=8)
        ax.set_title(f"{key.replace('_', ' ')} per identity", fontsize=10, loc="left")
        fig.colorbar(im, ax=ax, shrink=0.9, pad=0.01)
    axes[1].set_xticks(
        range(len(cols)), [f"{r.rid} · {clip(c, 28)}" for r, c in cols], rotation=40, ha="right", fontsize=7
    )
    fig.suptitle(f"{task}: identity slices", fontsize=11, x=0.01, ha="left")
    return fig


@dataclass
class _OneRun:
    """A single run as a chart sees it."""

    doc: Mapping[str, Any]
    rid: str = "R1"
    color: str = PALETTE[0]

    @property
    def label(self) -> str:
        return f"{self.doc['task'].get('name')} · {self.doc.get('model', {}).get('name')}"


def run_logit_diff_chart(doc: Mapping[str, Any]) -> Figure | None:
    """One run's logit-difference chart (the comparison chart with a single run); None without answers."""
    return logit_diff_chart([_OneRun(doc)], str(doc["task"].get("name")))


def save_figure(fig: Figure, target: Path | BinaryIO) -> Path | BinaryIO:
    """Write `fig` as a PNG to a path or binary file (no timestamp metadata, white background)."""
    fig.savefig(target, format="png", dpi=110, metadata={"Software": None}, facecolor="white")
    return target
