"""`python -m saeeval ... features=attribution` as a user runs it: features.json parsed and checked against
sae_lens's own error-term splice (`HookedSAETransformer.run_with_hooks_with_saes`, latents zeroed with a hook on
`hook_sae_acts_post`), scipy's Spearman correlation and the run's own results.json; the API gives the same file."""

from __future__ import annotations

import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from cli_harness import run_inprocess
from conftest import run_cli_into
from rich.console import Console
from scipy.stats import spearmanr

import saeeval
from saeeval.engine.masks import special_token_ids
from saeeval.errors import SaeevalError
from saeeval.loading.models import load_model
from saeeval.loading.saes import load_saes
from saeeval.tasks.ioi import IOIDataModule
from saeeval.tasks.toxicity import ToxicityDataModule

pytestmark = pytest.mark.slow
torch.set_num_threads(1)
N, TOP = 24, 6
COMMON = (f"limit={N}", "batch_size=8", "features=attribution", f"features.top_k={TOP}")
RUNS = {
    "ioi": ("+task=ioi", "features.positions=[S2,END]", "features.method=ig", "features.ig_steps=8"),
    "toxicity": ("+task=toxicity",),  # default positions: the mask's (every real token but BOS)
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features")
    return {task: run_cli_into(root / task, *extra, *COMMON) for task, extra in RUNS.items()}


@pytest.fixture(scope="module")
def zoo():
    model = load_model("tiny", device="cpu", dtype="float32")
    return model, load_saes(model, source="zoo", name="tiny")


def examples(task: str, model):
    dm = (IOIDataModule if task == "ioi" else ToxicityDataModule)(limit=N)
    dm.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    dm.setup()
    return dm, dm.examples


def positions_of(task: str, e, model) -> list[int]:
    if task == "ioi":
        return [e.positions["S2"], e.positions["END"]]
    special = set(special_token_ids(model.tokenizer))
    return [i for i, t in enumerate(e.tokens) if t not in special]


def sae_lens_ld(model, sae, e, answer: int, zero: list[int], cols: list[int]) -> float:
    """LD of one example with the SAE attached by sae_lens (use_error_term=True) and latents `zero` set to 0 at
    `cols`."""

    def hook(acts, hook):
        acts = acts.clone()
        for c in cols:
            acts[0, c, zero] = 0.0
        return acts

    model.add_sae(sae, use_error_term=True)
    try:
        with torch.no_grad():
            logits = model.run_with_hooks_with_saes(
                torch.tensor([e.tokens]),
                saes=[],
                fwd_hooks=[(f"{sae.cfg.metadata.hook_name}.hook_sae_acts_post", hook)],
            )
    finally:
        model.reset_saes()
    return float(logits[0, answer, e.correct] - logits[0, answer, e.incorrect])


def test_samples_record_named_positions_as_token_indices(runs, zoo):
    model, _ = zoo
    for task, folder in runs.items():
        _, exs = examples(task, model)
        lines = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        assert [ln["positions"] for ln in lines] == [e.positions for e in exs]


@pytest.mark.parametrize("task", list(RUNS))
def test_features_json_matches_sae_lens_ablations_and_the_run(runs, zoo, task):
    model, saes = zoo
    folder = runs[task]
    doc = json.loads((folder / "features.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    assert doc["task"] == task and doc["n_examples"] == N and doc["top_k"] == TOP
    assert doc["method"] == ("ig" if task == "ioi" else "atp") and doc["baseline"] == "zero"
    assert doc["clean_logit_diff"] == pytest.approx(results["conditions"]["clean"]["task"]["logit_diff"], rel=1e-6)
    assert set(doc["saes"]) == set(saes)  # every single-SAE condition
    dm, exs = examples(task, model)
    answer = [e.positions[dm.answer_position] for e in exs]
    clean = [sae_lens_ld(model, saes[next(iter(saes))], e, a, [], []) for e, a in zip(exs, answer, strict=True)]
    assert statistics.fmean(clean) == pytest.approx(doc["clean_logit_diff"], abs=1e-4)
    for name, s in doc["saes"].items():
        sae = saes[name]
        assert s["hook"] == sae.cfg.metadata.hook_name and s["d_sae"] == sae.cfg.d_sae
        top = s["top"]
        assert len(top) == TOP and [t["feature"] for t in top] == s["examples"]["features"]
        mags = [abs(t["attribution"]) for t in top]
        assert mags == sorted(mags, reverse=True)
        assert s["examples"]["ids"] == list(range(N))
        effects = []
        for k, t in enumerate(top):
            per = [
                sae_lens_ld(model, sae, e, a, [t["feature"]], positions_of(task, e, model)) - c
                for e, a, c in zip(exs, answer, clean, strict=True)
            ]
            got = [row[k] for row in s["examples"]["ablation_effect"]]
            assert got == pytest.approx(per, abs=1e-4)
            assert t["ablation_effect"] == pytest.approx(statistics.fmean(per), abs=1e-4)
            half = 1.959963984540054 * statistics.stdev(per) / math.sqrt(N)
            lo, hi = t["ablation_effect_ci"]
            assert (lo, hi) == pytest.approx((statistics.fmean(per) - half, statistics.fmean(per) + half), abs=1e-4)
            lo, hi = t["attribution_ci"]
            assert lo <= t["attribution"] <= hi
            effects.append(statistics.fmean(per))
        if len(set(effects)) > 2 and len({t["attribution"] for t in top}) > 2:
            assert s["rank_correlation"] == pytest.approx(
                spearmanr([t["attribution"] for t in top], [t["ablation_effect"] for t in top]).statistic, abs=1e-9
            )
        faith = s["faithfulness"]
        assert [p["k"] for p in faith] == [1, 2, 5, TOP]
        assert faith[0]["effect"] == pytest.approx(top[0]["ablation_effect"], abs=1e-9)
        together = [
            sae_lens_ld(model, sae, e, a, [t["feature"] for t in top], positions_of(task, e, model)) - c
            for e, a, c in zip(exs, answer, clean, strict=True)
        ]
        assert faith[-1]["effect"] == pytest.approx(statistics.fmean(together), abs=1e-4)
        for p in faith:
            assert p["logit_diff"] == pytest.approx(doc["clean_logit_diff"] + p["effect"], abs=1e-9)
            assert p["fraction_kept"] == pytest.approx(p["logit_diff"] / doc["clean_logit_diff"], rel=1e-9)
        n_pos = sum(len(positions_of(task, e, model)) for e in exs)
        assert s["n_positions"] == n_pos and 0 < s["n_live"] <= s["d_sae"]
        assert all(0 <= t["fire_rate"] <= 1 for t in top)
    live = [s for s in doc["saes"].values() if abs(s["top"][0]["ablation_effect"]) > 1e-3]
    assert live, "no SAE has a latent that moves the logit difference"


def test_slices_pool_back_to_the_overall_numbers(runs):
    doc = json.loads((runs["toxicity"] / "features.json").read_text())
    for s in doc["saes"].values():
        for t in s["top"]:
            for field in ("identity", "label"):
                parts = {k: v for k, v in t["slices"].items() if k.startswith(f"{field}=")}
                assert sum(v["n"] for v in parts.values()) == N
                pooled = sum(v["n"] * v["attribution"] for v in parts.values()) / N
                assert pooled == pytest.approx(t["attribution"], abs=1e-9)
        assert set(s["differing"]) == {"identity", "label"}
        for d in s["differing"]["identity"]:
            vals = {v: x["attribution"] for v, x in d["values"].items()}
            assert d["spread"] == pytest.approx(max(vals.values()) - min(vals.values()), abs=1e-12)
            assert vals[d["highest"]] == max(vals.values()) and d["spread_ci"][0] <= d["spread"] <= d["spread_ci"][1]
    assert set(
        json.loads((runs["ioi"] / "features.json").read_text())["saes"]["blocks.0.hook_resid_post"]["differing"]
    ) == {"order"}


def test_charts_are_written(runs):
    for folder in runs.values():
        for name in ("features_heatmap.png", "features_faithfulness.png", "results.json", "features.json"):
            assert (folder / name).read_bytes()[:4] in (b"\x89PNG", b'{\n "')


def test_evaluate_gives_the_cli_features_and_results_round_trip(runs, zoo, tmp_path):
    model, saes = zoo
    res = saeeval.evaluate(
        model,
        saes,
        "ioi",
        limit=N,
        batch_size=8,
        features={"positions": ["S2", "END"], "method": "ig", "ig_steps": 8, "top_k": TOP},
    )
    cli = json.loads((runs["ioi"] / "features.json").read_text())
    assert res.features["config_hash"] == res.document["config_hash"] != cli["config_hash"]  # in-memory model
    same = {k: v for k, v in res.features.items() if k != "config_hash"}
    assert json.dumps(same, sort_keys=True) == json.dumps(
        {k: v for k, v in cli.items() if k != "config_hash"}, sort_keys=True
    )
    res.save(tmp_path)
    assert saeeval.Results.load(tmp_path).features == res.features
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(res.feature_table())
    text = console.export_text()
    for name, s in cli["saes"].items():
        assert f"features · {name} · ig" in text and f"\n {s['top'][0]['feature']} " in text
    with pytest.raises(SaeevalError, match="inference_mode=False"):
        saeeval.evaluate(
            model,
            saes,
            "ioi",
            limit=4,
            features="attribution",
            trainer=L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False),
        )


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (("features.positions=[XX]",), ("features.positions names 'XX'", "S2")),
        (("features.method=grad",), ("features.method",)),
        (("features.saes=[nope]",), ("features.saes names 'nope'",)),
        (("features.top_k=0",), ("features.top_k=0 must be at least 1",)),
    ],
)
def test_bad_feature_options_are_one_line(overrides, needles, tmp_path, capfd):
    run_inprocess(
        "+task=ioi", "limit=4", "features=attribution", *overrides, out=tmp_path, capfd=capfd
    ).assert_one_line_error(*needles)


def test_a_task_without_answers_is_refused(tmp_path, capfd):
    run_inprocess("+task=lm", "limit=4", "features=attribution", out=tmp_path, capfd=capfd).assert_one_line_error(
        "needs a task with answers"
    )


def test_report_has_a_feature_section_per_task(runs, tmp_path):
    from saeeval.publish.html_report import build_report

    page = build_report([runs["ioi"], runs["toxicity"]], tmp_path / "report.html").read_text()
    files = tmp_path / "report_files"
    for task in RUNS:
        assert f'id="features-{task}"' in page and f'href="#features-{task}"' in page
        for chart in (f"{task}_features_faithfulness", f"{task}_features_heatmap_r{1 if task == 'ioi' else 2}"):
            assert f'data-chart="{chart}"' in page and (files / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    assert page.count("<img") == int(page.split('data-images-expected="')[1].split('"')[0])
    top = json.loads((runs["toxicity"] / "features.json").read_text())["saes"]["blocks.0.hook_resid_post"]["top"]
    assert f"<td class=num>{top[0]['feature']}</td>" in page


def test_wandb_run_logs_feature_tables_and_numbers(tmp_path):
    from test_loggers import merged, offline_env, read_wandb_run

    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "saeeval",
            "+task=ioi",
            "limit=12",
            "features=attribution",
            "features.top_k=4",
            "logger=wandb",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=offline_env(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "features.json").read_text())
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    summary = merged(read_wandb_run(run_dir), "summary")
    for name, s in doc["saes"].items():
        assert summary[f"features/{name}/top_ablation_effect"] == pytest.approx(s["top"][0]["ablation_effect"])
        (table,) = [p for p in (run_dir / "files" / "media" / "table").rglob("*.table.json") if name in p.name]
        rows = json.loads(table.read_text())["data"]
        assert [r[0] for r in rows] == [t["feature"] for t in s["top"]]
        assert [r[4] for r in rows] == pytest.approx([t["ablation_effect"] for t in s["top"]])
    images = {p.name.split("_")[1] for p in (run_dir / "files" / "media" / "images").glob("features_*.png")}
    assert images == {"heatmap", "faithfulness"}


def test_wandb_report_has_the_feature_tables_and_a_panel_over_logged_keys(runs, monkeypatch):
    interface = pytest.importorskip("wandb_workspaces.reports.v2.interface")
    from test_report import _FakeWandbApi

    from saeeval.publish.loggers import feature_metrics
    from saeeval.publish.runs import load_runs
    from saeeval.publish.wandb_report import wandb_report

    monkeypatch.setattr(interface, "_get_api", lambda: _FakeWandbApi())
    found = load_runs([runs["ioi"], runs["toxicity"]])
    report = wandb_report(found, "my-team", "saeeval")
    texts = [getattr(b, "text", "") for b in report.blocks]
    assert texts.count("Feature attribution") == 2
    tables = [t for t in texts if t.startswith("Latents ranked")]
    top = json.loads((runs["ioi"] / "features.json").read_text())["saes"]["blocks.1.hook_mlp_out"]["top"][0]
    assert len(tables) == 2 and "| R1 | blocks.1.hook_mlp_out | " in tables[0] and f"| {top['feature']} |" in tables[0]
    logged = set(feature_metrics(runs["ioi"])) | set(feature_metrics(runs["toxicity"]))
    panels = [p for b in report.blocks for p in getattr(b, "panels", []) if "rank correlation" in p.title]
    assert len(panels) == 2 and all(set(p.metrics) <= logged and p.metrics for p in panels)


def test_features_json_belongs_to_its_run(runs, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(runs["ioi"], folder)
    res = saeeval.Results.load(folder)
    assert res.features["config_hash"] == res.document["config_hash"]
    doc = json.loads((folder / "features.json").read_text())
    (folder / "features.json").write_text(json.dumps({**doc, "config_hash": "0" * 16}))
    assert saeeval.Results.load(folder).features is None  # another config's file is not this run's
    saeeval.Results(res.document, res.samples).save(folder)  # a (forced) rerun without features
    assert not [p.name for p in folder.iterdir() if p.name.startswith("features")]
