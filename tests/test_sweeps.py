"""Sweeps: the submitit launcher configs compose as intended, finished jobs are skipped, an interrupted sweep
resumes into the same folders without touching finished ones, and Lightning-launched DDP is refused in a multirun.

Job folders are Hydra's `<hydra.sweep.dir>/<hydra.job.num>`: the same command line numbers its jobs the same way,
so a rerun finds each job's results.json where it left it. No SLURM here: the slurm launcher is checked by
composition and instantiation only; submitit_local really runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from saeeval.cli.job import run_config
from saeeval.errors import SaeevalError
from saeeval.results.config_hash import config_hash
from saeeval.results.files import write_results
from saeeval.results.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "+task=ioi,toxicity", "limit=24"]


def compose_full(*overrides: str) -> DictConfig:
    """The config a job sees, with its `hydra` node (as `python -m saeeval <overrides>` composes it)."""
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def job_config(full: DictConfig) -> DictConfig:
    """What the task function receives: the composed config without its `hydra` node."""
    cfg = full.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def hydra_job() -> Iterator[Callable[..., DictConfig]]:
    """Install a composed config as the running Hydra job (HydraConfig), and clear it afterwards."""

    def install(*overrides: str) -> DictConfig:
        full = compose_full(*overrides)
        HydraConfig.instance().set_config(full)
        return job_config(full)

    yield install
    HydraConfig.instance().cfg = None


def test_submitit_slurm_config_is_the_slurm_launcher_with_one_task_and_gpu_per_device():
    full = compose_full("+task=ioi", "hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4")
    launcher = full.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert (launcher.timeout_min, launcher.mem_gb, launcher.cpus_per_task) == (120, 32, 4)
    # the plugin's own keys come from its ConfigStore entry of the same name, merged under ours
    assert launcher.partition is None and launcher.array_parallelism == 256 and launcher.max_num_timeout == 0
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    built = instantiate(launcher)  # what Hydra builds for a multirun (it only talks to SLURM on launch)
    assert type(built).__name__ == "SlurmLauncher" and built.params["tasks_per_node"] == 4


def test_submitit_local_config_runs_one_process_per_job_with_the_trainer_devices_visible():
    full = compose_full("+task=ioi", "hydra/launcher=submitit_local", "trainer=gpu")
    launcher = full.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert launcher.tasks_per_node == 1 and launcher.gpus_per_node == 1 and launcher.timeout_min == 60
    built = instantiate(launcher)
    assert type(built).__name__ == "LocalLauncher" and built.params["gpus_per_node"] == 1


def test_sweep_jobs_go_to_numbered_folders_under_a_timestamped_sweep_dir():
    sweep = compose_full("+task=ioi").hydra.sweep
    assert OmegaConf.to_container(sweep) == {
        "dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}",
        "subdir": "${hydra.job.num}",
    }


def finished(folder: Path, cfg: DictConfig, chash: str | None = None) -> Path:
    """A complete results.json for `cfg` (or for the hash `chash`) in `folder`."""
    config = OmegaConf.to_container(cfg, resolve=True)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "config_hash": chash or config_hash(config),
        "config": config,
        "task": {},
        "conditions": {"clean": {}},
    }
    return write_results(folder, doc, None)


def test_job_whose_config_has_complete_results_is_skipped_before_building_anything(tmp_path, capsys):
    cfg = job_config(compose_full("+task=ioi", "model.name=/nonexistent/model"))
    path = finished(tmp_path, cfg)
    before = path.stat().st_mtime_ns
    assert run_config(cfg, tmp_path) is None
    assert "skipped" in capsys.readouterr().out and path.stat().st_mtime_ns == before


def test_folder_holding_another_configs_results_is_refused_not_overwritten(tmp_path):
    cfg = job_config(compose_full("+task=ioi", "model.name=/nonexistent/model"))
    path = finished(tmp_path, cfg, chash="0123456789abcdef")
    with pytest.raises(SaeevalError, match="another config.*force=true"):
        run_config(cfg, tmp_path)
    assert json.loads(path.read_text())["config_hash"] == "0123456789abcdef"
    assert config_hash(OmegaConf.to_container(cfg, resolve=True)) != "0123456789abcdef"


@pytest.mark.slow
def test_lightning_launched_ddp_inside_a_multirun_is_refused(tmp_path, hydra_job, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = hydra_job("+task=ioi", "limit=4", "trainer=ddp_cpu", "hydra.mode=MULTIRUN")
    with pytest.raises(SaeevalError, match="local multirun"):
        run_config(cfg, tmp_path)
    assert not (tmp_path / "results.json").exists()


def run_sweep(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}  # wide: rich must not wrap the paths printed
    return subprocess.run(
        [sys.executable, "-m", "saeeval", *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, list[str]]:
    """The 2-job sweep run by submitit_local (two local processes) into a tmp sweep dir."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    args = [*SWEEP, f"hydra.sweep.dir={sweep_dir}"]
    proc = run_sweep(*args, "hydra/launcher=submitit_local", cwd=sweep_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, args


@pytest.mark.slow
def test_submitit_local_sweep_writes_results_for_both_jobs(sweep):
    sweep_dir, _ = sweep
    docs = {n: json.loads((sweep_dir / n / "results.json").read_text()) for n in ("0", "1")}
    assert {n: d["task"]["name"] for n, d in docs.items()} == {"0": "ioi", "1": "toxicity"}
    assert all(d["task"]["n_examples"] == 24 for d in docs.values())
    assert all(len((sweep_dir / n / "samples.jsonl").read_text().splitlines()) == 24 for n in docs)
    assert (sweep_dir / "multirun.yaml").exists()
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2  # two submitit jobs, one per point


@pytest.mark.slow
def test_rerun_of_interrupted_sweep_computes_the_missing_job_and_skips_the_finished_one(sweep):
    """Job 1 "was interrupted" (its results.json is gone); rerunning the same sweep into the same dir recomputes
    exactly that job. The rerun uses the basic launcher: the launcher is a hydra/ override, not part of a job's
    config, so a sweep started on submitit resumes with the same folders and hashes."""
    sweep_dir, args = sweep
    done, lost = sweep_dir / "0", sweep_dir / "1"
    kept = {
        name: ((done / name).read_bytes(), (done / name).stat().st_mtime_ns)
        for name in ("results.json", "samples.jsonl", "logit_diff.png")
    }
    lost_doc = json.loads((lost / "results.json").read_text())
    (lost / "results.json").unlink()

    proc = run_sweep(*args, cwd=sweep_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for name, (content, mtime) in kept.items():
        assert (done / name).read_bytes() == content and (done / name).stat().st_mtime_ns == mtime, name
    skipped = [line for line in proc.stdout.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and str(done) in skipped[0], proc.stdout[-2000:]
    redone = json.loads((lost / "results.json").read_text())
    assert redone["config_hash"] == lost_doc["config_hash"]
    assert redone["conditions"] == lost_doc["conditions"]
