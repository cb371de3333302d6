"""The cluster path on a real SLURM cluster: `hydra/launcher=submitit_slurm` sweeps, their resume, and a
2-task DDP job, each checked against the same configs run locally without SLURM.

The cluster is the single node `scripts/slurm_local.sh` starts on this machine (CI runs it before pytest). Without
it these tests skip, saying so; under CI=true they fail instead, as CI must exercise them. Jobs ask for one CPU
per task and 2 GB per job (the node has `nproc` CPUs), and no GPU: asking a GPU-less node for one
(`--gpus-per-node`) makes sbatch refuse the whole array, as the launcher config did before it sized GPUs from
the trainer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf.errors import InterpolationResolutionError
from run_files import differences, load

ROOT = Path(__file__).resolve().parents[1]
POINTS = ["+task=ioi,toxicity", "limit=9", "batch_size=4"]  # 9 examples: DDP ranks get 5 and 4, in uneven batches
SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]
RESULT_FILES = ("results.json", "samples.jsonl", "logit_diff.png")


def launcher(*overrides: str) -> Any:
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        full = compose(
            "config", overrides=["+task=ioi", "hydra/launcher=submitit_slurm", *overrides], return_hydra_config=True
        )
    return full.hydra.launcher


@pytest.mark.parametrize(
    ("trainer", "tasks", "gpus"),
    [
        (["trainer=cpu"], 1, None),
        (["trainer=ddp_cpu"], 2, None),
        (["trainer=cpu", "trainer.accelerator=auto"], 1, None),
        (["trainer=gpu"], 1, 1),
        (["trainer=ddp", "trainer.devices=4"], 4, 4),
        (["trainer=cpu", "trainer.accelerator=cuda", "trainer.devices=2"], 2, 2),
    ],
)
def test_slurm_job_asks_for_gpus_only_when_the_trainer_runs_on_them(trainer, tasks, gpus):
    """None leaves `--gpus-per-node` out of the sbatch script (submitit drops unset parameters)."""
    cfg = launcher(*trainer)
    assert (cfg.tasks_per_node, cfg.gpus_per_node) == (tasks, gpus)


def test_slurm_job_with_a_non_integer_device_count_names_the_setting_to_fix():
    with pytest.raises(InterpolationResolutionError, match=r"integer trainer.devices >= 1 \(got 'auto'\)"):
        _ = launcher("trainer=gpu", "trainer.devices=auto").tasks_per_node


def cluster_problem() -> str | None:
    """Why no local SLURM cluster takes jobs here, or None when one does."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "SLURM is not installed"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if states.returncode != 0:
        return f"sinfo failed: {states.stderr.strip()[:200]}"
    if not re.search(r"^(idle|mixed|allocated|completing)", states.stdout, re.M):
        return f"no node takes jobs (states: {states.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    message = f"no local SLURM cluster ({problem}): start one with `sudo scripts/slurm_local.sh`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def start(*overrides: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}  # SLURM jobs inherit this environment
    return subprocess.Popen(
        [sys.executable, "-m", "saeeval", "-m", *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{stderr[-4000:]}"
    return stdout


def computed(doc: dict[str, Any]) -> dict[str, Any]:
    """What a run measured: the results document without the config it records."""
    return {k: v for k, v in doc.items() if k not in ("config", "config_hash")}


def array_jobs(sweep_dir: Path) -> dict[str, Path]:
    """The submitit folders of the sweep's array jobs, by array index: `.submitit/<array id>_<index>/`."""
    found = [p for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir()]
    latest = max(int(p.name.split("_")[0]) for p in found)
    return {p.name.split("_")[1]: p for p in found if int(p.name.split("_")[0]) == latest}


def job_stdout(job: Path) -> str:
    return "".join(p.read_text() for p in sorted(job.glob("*_log.out")))


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> dict[str, Path]:
    """The 2-point sweep as a SLURM array, and the same sweep run locally (Hydra's basic launcher), together."""
    base = tmp_path_factory.mktemp("slurm")
    dirs = {"slurm": base / "slurm", "local": base / "local"}
    procs = [
        start(*POINTS, *SLURM, f"hydra.sweep.dir={dirs['slurm']}", cwd=base),
        start(*POINTS, f"hydra.sweep.dir={dirs['local']}", cwd=base),
    ]
    for proc in procs:
        finish(proc)
    return dirs


@pytest.mark.slow
def test_slurm_array_sweep_results_equal_the_same_configs_run_locally(runs):
    jobs = array_jobs(runs["slurm"])
    assert sorted(jobs) == ["0", "1"]  # one SLURM array, one task per sweep point
    script = next((runs["slurm"] / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --cpus-per-task=1" in script
    assert "gpu" not in script and "gres" not in script  # a CPU trainer asks the scheduler for no GPU
    for job in jobs.values():  # submitit read SLURM's array environment: job_id=<array id>_<index>
        assert f"job_id={job.name}," in job_stdout(job) and "Job completed successfully" in job_stdout(job)
    for num, task in (("0", "ioi"), ("1", "toxicity")):
        (slurm, slurm_samples), (local, local_samples) = load(runs["slurm"] / num), load(runs["local"] / num)
        assert slurm["task"]["name"] == task and slurm["task"]["n_examples"] == 9
        assert slurm["config_hash"] == local["config_hash"]  # the launcher is not part of a job's config
        assert computed(slurm) == computed(local)  # same config, same single process: the same numbers
        assert slurm_samples == local_samples and len(slurm_samples) == 9


@pytest.mark.slow
def test_slurm_sweep_rerun_recomputes_only_the_job_whose_results_are_gone(runs, cluster):
    sweep = runs["slurm"]
    kept = {name: ((sweep / "0" / name).read_bytes(), (sweep / "0" / name).stat().st_mtime_ns) for name in RESULT_FILES}
    lost, _ = load(sweep / "1")
    (sweep / "1" / "results.json").unlink()

    finish(start(*POINTS, *SLURM, f"hydra.sweep.dir={sweep}", cwd=sweep.parent))

    jobs = array_jobs(sweep)
    assert "skipped" in job_stdout(jobs["0"]) and "skipped" not in job_stdout(jobs["1"])
    for name, (content, mtime) in kept.items():
        assert (sweep / "0" / name).read_bytes() == content, name
        assert (sweep / "0" / name).stat().st_mtime_ns == mtime, name
    redone, _ = load(sweep / "1")
    local, _ = load(runs["local"] / "1")
    assert redone["config_hash"] == lost["config_hash"] == local["config_hash"]
    assert computed(redone) == computed(local)


@pytest.mark.slow
def test_slurm_two_task_ddp_job_equals_the_single_process_run(runs, cluster):
    """One sweep point with trainer=ddp_cpu: SLURM starts 2 tasks, Lightning joins them as ranks 0 and 1."""
    sweep = runs["slurm"].parent / "ddp"
    finish(start("+task=ioi", *POINTS[1:], "trainer=ddp_cpu", *SLURM, f"hydra.sweep.dir={sweep}", cwd=sweep.parent))

    (job,) = [p for p in (sweep / ".submitit").iterdir() if p.is_dir()]  # a single point is a plain job
    logs = sorted(job.glob("*_log.out"))
    assert len(logs) == 2  # one log per SLURM task
    assert {m for log in logs for m in re.findall(r"global_rank=(\d\(\d\))", log.read_text())} == {"0(2)", "1(2)"}
    assert "#SBATCH --ntasks-per-node=2" in next(job.glob("*_submission.sh")).read_text()
    (ddp, ddp_samples), (single, single_samples) = load(sweep / "0"), load(runs["local"] / "0")
    assert ddp["config"]["trainer"]["strategy"] == "ddp" and ddp["config"]["trainer"]["devices"] == 2
    assert ddp["conditions"]["clean"]["task"]["n"] == 9  # every example counted once across the two ranks
    assert differences(computed(single), computed(ddp)) == []
    assert differences(single_samples, ddp_samples) == []
    assert [s["id"] for s in ddp_samples] == list(range(9))
