"""Experiment loggers: flat metric names, and what `logger=wandb|csv|none` runs actually write, read back.

The wandb runs are offline with every wandb path in tmp and the API host pointed at a closed port, and are read
back with wandb's own transaction-log reader (`wandb leet inspect --json`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saeeval.publish.loggers import CHART_KEY, SAMPLES_KEY, flat_metrics, logged_config, samples_table

ROOT = Path(__file__).resolve().parents[1]
DOC = {
    "config": {"task": {"_target_": "saeeval.tasks.toxicity.ToxicityDataModule"}, "seed": 0},
    "config_hash": "0123456789abcdef",
    "task": {"name": "toxicity", "n_examples": 2},
    "conditions": {
        "clean": {
            "task": {"logit_diff": 1.5, "accuracy": 1.0, "logit_diff_recovered": None, "n": 2.0},
            "lm": {"ce_loss": 2.0},
            "ablation": None,
            "baseline": None,
            "use_error_term": False,
        },
        "L0": {
            "task": {"logit_diff": 0.5, "accuracy": 0.5, "logit_diff_recovered": 0.25},
            "lm": {"ce_loss": 2.5, "kl_div": 0.1},
            "reconstruction": {"blocks.0.hook_resid_post": {"mse": 0.2, "l0": 7}},
            "ablation": None,
            "baseline": "zero_ablation@L0",
            "use_error_term": False,
        },
    },
    "slices": {"identity=african": {"clean": {"accuracy": 1.0, "false_positive_rate": None}}},
    "gaps": {"identity": {"clean": {"accuracy_gap": 0.5, "accuracy_lowest": "straight"}}},
}


def test_flat_metrics_names_every_number_and_skips_none_strings_and_flags():
    assert flat_metrics(DOC) == {
        "clean/task/logit_diff": 1.5,
        "clean/task/accuracy": 1.0,
        "clean/task/n": 2.0,
        "clean/lm/ce_loss": 2.0,
        "L0/task/logit_diff": 0.5,
        "L0/task/accuracy": 0.5,
        "L0/task/logit_diff_recovered": 0.25,
        "L0/lm/ce_loss": 2.5,
        "L0/lm/kl_div": 0.1,
        "L0/reconstruction/blocks.0.hook_resid_post/mse": 0.2,
        "L0/reconstruction/blocks.0.hook_resid_post/l0": 7,
        "slices/identity=african/clean/accuracy": 1.0,
        "gaps/identity/clean/accuracy_gap": 0.5,
    }


def test_logged_config_keeps_resolved_config_on_top_and_run_facts_under_saeeval():
    cfg = logged_config(DOC)
    assert cfg["task"] == DOC["config"]["task"] and cfg["seed"] == 0
    assert cfg["saeeval"] == {"task": DOC["task"], "config_hash": "0123456789abcdef"}


def test_samples_table_has_answer_strings_fields_and_logit_diff_per_condition(tmp_path):
    rec = {
        "id": 3,
        "prompt": "p",
        "n_tokens": 4,
        "correct": 7,
        "correct_str": "0",
        "incorrect": 8,
        "incorrect_str": "1",
        "fields": {"identity": "african", "label": "nontoxic"},
        "logit_diff": {"clean": 0.75, "L0": -0.25},
    }
    (tmp_path / "samples.jsonl").write_text(json.dumps(rec) + "\n")
    columns, rows = samples_table(DOC, tmp_path)
    assert columns == [
        "id",
        "prompt",
        "correct",
        "incorrect",
        "fields/identity",
        "fields/label",
        "logit_diff/clean",
        "logit_diff/L0",
    ]
    assert rows == [[3, "p", "0", "1", "african", "nontoxic", 0.75, -0.25]]
    assert samples_table(DOC, tmp_path / "none") is None


# --- end to end: `python -m saeeval ... logger=...` ------------------------------------------------------------


def offline_env(home: Path) -> dict[str, str]:
    """wandb offline, every wandb folder under `home`, no credentials, and the API host a closed local port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        (home / var).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / var)
    env.update(WANDB_MODE="offline", WANDB_BASE_URL="http://127.0.0.1:9", OMP_NUM_THREADS="1")
    return env


def run_cli(out: Path, *overrides: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", "+task=toxicity", "limit=12", *overrides, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def processes_with_env(marker: str) -> list[int]:
    """Live processes whose environment contains `marker` (so: started by the run we launched)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def read_wandb_run(run_dir: Path) -> list[dict]:
    """Every record of the run's .wandb transaction log, decoded by wandb itself."""
    (log,) = run_dir.glob("run-*.wandb")
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def records(recs: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in recs if r["type"] == kind]


def merged(recs: list[dict], kind: str) -> dict:
    """The config or summary as the run ends: its updates applied in order."""
    out: dict = {}
    for r in records(recs, kind):
        out.update(r.get("update", {}))
    return out


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("wandb_home")
    out = home / "run"
    env = offline_env(home)
    proc = run_cli(out, "logger=wandb", env=env)
    return out, proc, env


@pytest.mark.slow
def test_wandb_offline_run_holds_config_metrics_samples_table_and_chart(wandb_run):
    out, _, _ = wandb_run
    doc = json.loads((out / "results.json").read_text())
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    recs = read_wandb_run(run_dir)

    (run,) = records(recs, "run")
    assert run["display_name"] == "toxicity-tiny" and run["project"] == "saeeval"
    config = merged(recs, "config")
    assert config["saeeval"]["task"]["name"] == "toxicity"
    assert config["task"]["_target_"] == doc["config"]["task"]["_target_"] and config["limit"] == 12

    (history,) = [h["item"] for h in records(recs, "history")]
    summary = merged(recs, "summary")
    expected = flat_metrics(doc)
    assert len(expected) > 100
    for key, value in expected.items():
        assert history[key] == pytest.approx(value, abs=1e-6), key
        assert summary[key] == pytest.approx(value, abs=1e-6), key
    assert summary["clean/task/logit_diff"] == pytest.approx(doc["conditions"]["clean"]["task"]["logit_diff"], abs=1e-6)

    (table_file,) = (run_dir / "files" / "media" / "table").glob(f"{SAMPLES_KEY}_*.table.json")
    table = json.loads(table_file.read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(table["data"]) == len(samples) == doc["task"]["n_examples"]
    col = {c: i for i, c in enumerate(table["columns"])}
    for row, s in zip(table["data"], samples, strict=True):
        assert row[col["id"]] == s["id"] and row[col["prompt"]] == s["prompt"]
        assert row[col["correct"]] == s["correct_str"] and row[col["incorrect"]] == s["incorrect_str"]
        assert row[col["fields/identity"]] == s["fields"]["identity"]
        for cond, v in s["logit_diff"].items():
            assert row[col[f"logit_diff/{cond}"]] == pytest.approx(v, abs=1e-6)
    (image,) = (run_dir / "files" / "media" / "images").glob(f"{CHART_KEY}_*.png")
    assert image.read_bytes() == (out / "logit_diff.png").read_bytes()


@pytest.mark.slow
def test_wandb_run_is_finished_and_leaves_no_process_behind(wandb_run):
    out, proc, env = wandb_run
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    exits = records(read_wandb_run(run_dir), "exit")
    assert exits and exits[-1].get("exit_code", 0) == 0
    assert f"wandb sync {run_dir}" in proc.stderr + proc.stdout
    if Path("/proc/self/environ").exists():
        assert processes_with_env(env["WANDB_DIR"]) == []


@pytest.mark.slow
def test_wandb_ddp_logs_one_run_from_rank_zero(tmp_path):
    out = tmp_path / "run"
    run_cli(out, "logger=wandb", "trainer=ddp_cpu", env=offline_env(tmp_path))
    doc = json.loads((out / "results.json").read_text())
    (run_dir,) = (out / "wandb").glob("offline-run-*")  # rank 1 never initialised wandb
    assert not list((tmp_path / "WANDB_DIR").iterdir())
    summary = merged(read_wandb_run(run_dir), "summary")
    assert summary["clean/task/accuracy"] == pytest.approx(doc["conditions"]["clean"]["task"]["accuracy"], abs=1e-6)
    assert len(records(read_wandb_run(run_dir), "history")) == 1


@pytest.mark.slow
def test_wandb_disabled_mode_runs_and_writes_no_wandb_files(tmp_path):
    out = tmp_path / "run"
    run_cli(out, "logger=wandb", "logger.mode=disabled", env=offline_env(tmp_path))
    assert (out / "results.json").exists()
    assert not (out / "wandb").exists()
    assert not [p for d in tmp_path.glob("WANDB_*") for p in d.rglob("*")]


@pytest.mark.slow
def test_wandb_online_without_api_key_stops_before_compute_with_one_error_line(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(out, "logger=wandb", "logger.mode=online", env=offline_env(tmp_path), ok=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("saeeval: error: wandb could not start a run"), proc.stderr
    assert "wandb login" in lines[0] and "logger.mode=offline" in lines[0]
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_csv_logger_writes_every_flat_metric_to_metrics_csv(tmp_path):
    out = tmp_path / "run"
    run_cli(out, "logger=csv", env=offline_env(tmp_path))
    doc = json.loads((out / "results.json").read_text())
    with (out / "csv" / "version_0" / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["clean/task/accuracy"]) == pytest.approx(doc["conditions"]["clean"]["task"]["accuracy"], abs=1e-6)
    for key, value in flat_metrics(doc).items():
        assert float(row[key]) == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert "toxicity" in (out / "csv" / "version_0" / "hparams.yaml").read_text()


@pytest.mark.slow
def test_logger_none_writes_no_logger_files(tmp_path):
    out = tmp_path / "run"
    run_cli(out, env=offline_env(tmp_path))
    assert (out / "results.json").exists()
    assert not (out / "wandb").exists() and not (out / "csv").exists()


def _numbers(node, path=()):
    """Every numeric leaf of a JSON tree with its path (booleans are flags, not metrics)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


@pytest.mark.slow
def test_flat_metrics_of_a_real_run_hold_every_number_at_its_path(real_runs):
    doc = json.loads((real_runs["toxicity"] / "results.json").read_text())
    flat = flat_metrics(doc)
    leaves = [(p, v) for section in ("conditions", "slices", "gaps") for p, v in _numbers(doc[section], (section,))]
    assert len(flat) == len(leaves) > 500
    for path, value in leaves:
        key = "/".join(path[1:]) if path[0] == "conditions" else "/".join(path)
        assert flat[key] == value, key
