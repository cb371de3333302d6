"""The results document (results.json, schema 1): the one place that shapes conditions, slices, gaps, samples
and run metadata from what the LightningModule computed.

The module only feeds and computes metric states (`Computed`, raw: NaN where undefined); everything a task or
reader sees is assembled here, so the CLI, the Python API, the report and the loggers share one schema. Tasks
declare what is task-specific (their groups, slice fields and per-slice error rates); nothing here names a task.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, cast, overload

import torch
from torch import Tensor

from saeeval._version import __version__
from saeeval.engine.computed import CLEAN, GROUP_SUMS, Computed
from saeeval.metrics.generation import summarize_generation
from saeeval.metrics.stats import ce_loss_score, ill_conditioned, kl_div_score, recovered, summarize_logit_diffs
from saeeval.results.config_hash import config_hash, versions
from saeeval.results.schema import NAN, SCHEMA_VERSION
from saeeval.tasks.answer_parsing import UNPARSED, generated_text

SLICE_KEYS = ("logit_diff", "logit_diff_stderr", "accuracy", "error_rate", "n")
GAP_METRICS = ("accuracy", "logit_diff")
COUNT_KEYS = ("n", "n_tokens")


@overload
def json_number(v: float | Tensor | None, non_finite: Literal[False] = False) -> float | None: ...
@overload
def json_number(v: Any, non_finite: bool = False) -> float | str | None: ...
def json_number(v: Any, non_finite: bool = False) -> float | str | None:
    """A finite Python float; a NaN/inf value as None (not applicable), or as the NAN mark when `non_finite`
    (the condition's outputs became non-finite, so NaN is what was measured)."""
    if v is None or v == NAN:
        return v
    f = float(v)
    return f if math.isfinite(f) else (NAN if non_finite else None)


def json_values(d: Mapping[str, Any], non_finite: bool = False) -> dict[str, Any]:
    """Metric values as JSON numbers: counts as int, the rest as finite float, None or the NAN mark.

    With `non_finite`, a NaN logit_diff also marks the accuracy family: a NaN difference counts as "not > 0",
    so the accuracy would look like a measured number."""
    out = {k: int(v) if k in COUNT_KEYS and math.isfinite(v) else json_number(v, non_finite) for k, v in d.items()}
    if non_finite and out.get("logit_diff") == NAN:
        out.update({k: NAN for k in out if k.startswith(("accuracy", "error_rate"))})
    return out


def _sub(a: float | str | None, b: float | str | None) -> float | str | None:
    if NAN in (a, b):
        return NAN
    return None if a is None or b is None else a - b  # type: ignore[operator]


def _score(fn: Any, *values: Any) -> float | str | None:
    """A cross-condition score; the NAN mark when any input carries it (NaN in, NaN out)."""
    return NAN if NAN in values else fn(*values)


def describe_model(model: Any) -> dict[str, Any]:
    """The "model" entry: what the numbers were measured on."""
    cfg = model.cfg
    return {"name": cfg.model_name, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "d_vocab": cfg.d_vocab}


def conditions_entry(computed: Sequence[Computed], has_answers: bool) -> dict[str, Any]:
    """The "conditions" part: clean first, then each spliced/ablated condition with its scores against its
    baseline (ce_loss_score, kl_div_score, logit_diff_recovered) and, in `unreliable`, those of the scores whose
    baseline barely moves the metric (saeeval.metrics.stats.ill_conditioned)."""
    by_name = {c.name: c for c in computed}
    clean = by_name[CLEAN]
    bad = {c.name: bool(c.non_finite) for c in computed}
    clean_ce = json_number(clean.ce, bad[CLEAN])
    clean_task = json_values(clean.task, bad[CLEAN])
    out: dict[str, Any] = {CLEAN: {"task": clean_task, "lm": {"ce_loss": clean_ce}}}
    if clean.generation is not None:
        out[CLEAN]["generation"] = summarize_generation(clean.generation.counts)
    if clean.non_finite:
        out[CLEAN]["non_finite"] = dict(clean.non_finite)
    for res in computed:
        cond = res.condition
        if cond is None:
            continue
        ce, kl = json_number(res.ce, bad[res.name]), json_number(res.kl, bad[res.name])
        lm: dict[str, Any] = {
            "ce_loss": ce,
            "ce_loss_delta": _sub(ce, clean_ce),
            "ce_loss_delta_stderr": json_number(res.ce_delta_stderr),
            "kl_div": kl,
            "kl_div_stderr": json_number(res.kl_stderr),
        }
        entry: dict[str, Any] = {
            "saes": list(cond.saes),
            "hooks": list(cond.hooks),
            "ablation": cond.ablation,
            "baseline": cond.baseline,
            "use_error_term": cond.use_error_term,
            "task": json_values(res.task, bad[res.name]),
            "lm": lm,
        }
        base = by_name.get(cond.baseline) if cond.baseline else None
        if base is not None:
            base_bad = bad[base.name]
            lm["ce_loss_score"] = _score(ce_loss_score, clean_ce, ce, json_number(base.ce, base_bad))
            lm["kl_div_score"] = _score(kl_div_score, kl, json_number(base.kl, base_bad))
            if has_answers:
                entry["task"]["logit_diff_recovered"] = _score(
                    recovered,
                    clean_task.get("logit_diff"),
                    entry["task"].get("logit_diff"),
                    json_number(base.task["logit_diff"], base_bad),
                )
            entry["unreliable"] = unreliable_scores(entry, base, clean_ce)
        if res.generation is not None:
            entry["generation"] = summarize_generation(res.generation.counts)
        if res.recon:
            entry["reconstruction"] = {
                hook: json_values({**r, **res.batchwise.get(hook, {})}, bad[res.name]) for hook, r in res.recon.items()
            }
        if res.non_finite:
            entry["non_finite"] = dict(res.non_finite)
        out[res.name] = entry
    return out


def unreliable_scores(entry: Mapping[str, Any], base: Computed, clean_ce: float | str | None) -> list[str]:
    """The condition's non-null scores whose denominator, its baseline's effect (paired ΔLD and ΔCE against
    clean, KL to clean), lies within UNRELIABLE_Z standard errors of zero (saeeval.metrics.stats)."""
    denominators = {
        "logit_diff_recovered": ("task", base.task.get("delta_logit_diff"), base.task.get("delta_logit_diff_stderr")),
        "ce_loss_score": ("lm", _sub(json_number(base.ce), clean_ce), base.ce_delta_stderr),
        "kl_div_score": ("lm", json_number(base.kl), base.kl_stderr),
    }
    return [
        key
        for key, (section, den, stderr) in denominators.items()
        # a float score has a numeric denominator (a NAN one makes the score the NAN mark, not a float)
        if isinstance(entry[section].get(key), float) and ill_conditioned(cast("float | None", den), stderr)
    ]


def _pooled(sums: Mapping[str, Tensor], idx: Sequence[int], non_finite: bool = False) -> dict[str, Any]:
    """Logit-diff statistics of the examples of groups `idx` pooled together."""
    sel = torch.as_tensor(list(idx), dtype=torch.long)
    stats = summarize_logit_diffs(*(sums[k][sel].sum() for k in GROUP_SUMS))
    return json_values({k: stats[k] for k in SLICE_KEYS}, non_finite)


def slices_and_gaps(
    computed: Sequence[Computed],
    groups: Sequence[Mapping[str, str]],
    slice_fields: Sequence[str],
    slice_rates: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per slice value (`<field>=<value>`, e.g. identity=african) and condition: the pooled logit-diff
    statistics and the task's declared error rates; per field with several values, the gaps between them."""
    slices: dict[str, dict[str, Any]] = {}
    gaps: dict[str, dict[str, Any]] = {}
    for field in slice_fields:
        values = list(dict.fromkeys(g[field] for g in groups))
        per_value: dict[str, dict[str, dict[str, Any]]] = {}
        for value in values:
            idx = [i for i, g in enumerate(groups) if g[field] == value]
            key = f"{field}={value}"
            slices[key] = {}
            for res in computed:
                sums, bad = res.groups or {}, bool(res.non_finite)
                stats = _pooled(sums, idx, bad)
                for rate, keep in slice_rates.items():
                    sub = [i for i in idx if all(groups[i].get(f) == v for f, v in keep.items())]
                    stats[rate] = _pooled(sums, sub, bad)["error_rate"] if sub else None
                if res.generation is not None:
                    stats["generation"] = summarize_generation(res.generation.counts, idx)
                slices[key][res.name] = stats
                per_value.setdefault(res.name, {})[value] = stats
        if len(values) > 1:
            gaps[field] = {name: gap(vals) for name, vals in per_value.items()}
    return slices, gaps


def gap(per_value: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Spread of accuracy and mean logit diff across the values of one slice field (the bias signal)."""
    out: dict[str, Any] = {}
    for metric in GAP_METRICS:
        vals = {v: s[metric] for v, s in per_value.items() if s.get(metric) not in (None, NAN)}
        if vals:
            # typeshed's dict.get may return None; every key here is in vals
            lo, hi = min(vals, key=vals.get), max(vals, key=vals.get)  # type: ignore[arg-type]
            out[f"{metric}_gap"] = vals[hi] - vals[lo]
            out[f"{metric}_lowest"], out[f"{metric}_highest"] = lo, hi
    return out


def build_document(
    *,
    config: Mapping[str, Any],
    model: Mapping[str, Any],
    task: Any,
    mask: Mapping[str, Any],
    computed: Sequence[Computed],
) -> dict[str, Any]:
    """The whole results.json document (the contract in docs/results.md) of one run; `task` is the run's
    TaskDataModule."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "saeeval_version": __version__,
        "config_hash": config_hash(config),
        "config": dict(config),
        "versions": versions(),
        "model": dict(model),
        "task": task.describe(),
        "mask": dict(mask),
        "conditions": conditions_entry(computed, task.has_answers),
    }
    if task.has_answers:
        doc["slices"], doc["gaps"] = slices_and_gaps(computed, task.groups, task.slice_fields, task.slice_rates)
    return doc


def sample_records(task: Any, computed: Sequence[Computed]) -> Iterator[dict[str, Any]]:
    """samples.jsonl: one record per example (ascending id) with its logit diff under every condition."""
    if not task.has_answers:
        return
    ids = computed[0].samples[0]  # type: ignore[index]
    values = {c.name: c.samples[1] for c in computed}  # type: ignore[index]
    for row, i in enumerate(ids):
        rec = task.example_record(i)
        rec["logit_diff"] = {name: v[row] if math.isfinite(v[row]) else NAN for name, v in values.items()}
        if computed[0].generation is not None:
            rec["generation"] = {c.name: generated_record(task, c.generation, row, rec) for c in computed}
        yield rec


def generated_record(task: Any, gen: Any, row: int, rec: Mapping[str, Any]) -> dict[str, Any]:
    """One example's generation under one condition: the text the model wrote after the prompt, the answer parsed
    from it (None: unparsed) and whether that is the correct answer."""
    ex = task.examples[gen.ids[row]]
    parsed = gen.parsed[row]
    answers = [rec["correct_str"], rec["incorrect_str"]]
    return {
        "text": generated_text(task.tokenizer, ex.tokens, gen.tokens[row])[1],
        "answer": None if parsed == UNPARSED else answers[parsed].strip(),
        "correct": parsed == 0,
        "tokens": [t for t in gen.tokens[row] if t >= 0],
    }
