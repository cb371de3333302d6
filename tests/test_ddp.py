"""Multi-process evaluation: `trainer=ddp_cpu` (2 processes over gloo) must reproduce `trainer=cpu` exactly.

Lightning's `ddp` strategy re-launches `python -m saeeval ...` for rank 1, so this runs the real CLI in
subprocesses (never DDP inside pytest's own process). 101 examples in batches of 16 give each rank four uneven
batches (51 + 50 examples); a sample counted twice or missed would move every mean and count below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from run_files import differences, load

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N = 101
COMMON = [f"limit={N}", "batch_size=16", "plot=true"]
RUNS = {  # task -> extra overrides; ioi also carries mean-ablation baselines (their means are summed across ranks)
    # both also generate under every condition: the label counts are summed and the texts gathered across ranks
    "toxicity": ["+task=toxicity", "task.answer_mode=both", "task.max_new_tokens=3"],
    "ioi": ["+task=ioi", "splice.ablation=mean", "task.answer_mode=both", "task.max_new_tokens=3"],
}


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "saeeval", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Each task once with trainer=cpu and once with trainer=ddp_cpu, all four processes started together.

    The ddp runs use Hydra's default run dir (outputs/<date>/<time> under their own cwd) so that a rank which
    resolved its own folder would show up as a second folder there.
    """
    procs: dict[tuple[str, str], tuple[subprocess.Popen, Path]] = {}
    for task, extra in RUNS.items():
        cpu_dir = tmp_path_factory.mktemp(f"{task}_cpu") / "run"
        procs[task, "cpu"] = start([*extra, *COMMON, f"hydra.run.dir={cpu_dir}"], ROOT), cpu_dir
        ddp_cwd = tmp_path_factory.mktemp(f"{task}_ddp")
        procs[task, "ddp"] = start([*extra, *COMMON, "trainer=ddp_cpu"], ddp_cwd), ddp_cwd
    out: dict[str, dict[str, Path]] = {task: {} for task in RUNS}
    for (task, kind), (proc, path) in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{task} {kind}:\n{stderr[-3000:]}"
        if kind == "ddp":
            folders = [p for p in (path / "outputs").glob("*/*") if p.is_dir()]
            assert len(folders) == 1, f"rank 1 made its own output folder: {folders}"
            path = folders[0]
        out[task][kind] = path
        out[task][f"{kind}_stdout"] = stdout
    return out


def leaves(tree: Any) -> int:
    if isinstance(tree, dict):
        return sum(leaves(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(leaves(v) for v in tree)
    return 1


@pytest.mark.parametrize("task", list(RUNS))
def test_ddp_cpu_results_equal_single_process_results(runs, task):
    (cpu, _), (ddp, _) = load(runs[task]["cpu"]), load(runs[task]["ddp"])
    assert ddp["task"]["n_examples"] == cpu["task"]["n_examples"] == N
    assert ddp["config_hash"] == cpu["config_hash"]  # the trainer is not part of what a run computes
    assert ddp["config"]["trainer"]["strategy"] == "ddp" and ddp["config"]["trainer"]["devices"] == 2
    for section in ("conditions", "slices", "gaps", "task", "model", "mask"):
        assert differences(cpu[section], ddp[section]) == [], section
    assert leaves(cpu["conditions"]) > 200 and leaves(cpu["slices"]) > 50
    assert ddp["conditions"]["clean"]["task"]["n"] == N  # every example counted once across the two ranks
    assert all(c["generation"]["n"] == N for c in ddp["conditions"].values())
    per_field: dict[str, float] = {}
    for key, per_cond in ddp["slices"].items():
        field = key.split("=")[0]
        per_field[field] = per_field.get(field, 0) + per_cond["clean"]["n"]
    assert per_field and all(n == N for n in per_field.values()), per_field


@pytest.mark.parametrize("task", list(RUNS))
def test_ddp_cpu_samples_are_complete_ordered_and_equal_line_by_line(runs, task):
    (_, cpu_samples), (_, ddp_samples) = load(runs[task]["cpu"]), load(runs[task]["ddp"])
    assert [s["id"] for s in ddp_samples] == list(range(N))
    for cpu_line, ddp_line in zip(cpu_samples, ddp_samples, strict=True):
        assert differences(cpu_line, ddp_line) == [], cpu_line["id"]


def test_ddp_mean_ablation_baselines_use_means_over_both_ranks(runs):
    cpu, _ = load(runs["ioi"]["cpu"])
    ddp, _ = load(runs["ioi"]["ddp"])
    mean_conds = [n for n, c in ddp["conditions"].items() if c.get("ablation") == "mean"]
    assert mean_conds and all(n.startswith("mean_ablation@") for n in mean_conds)
    for name in mean_conds:
        # a mean taken over one rank's half would change the ablated model's CE and logit diff
        assert ddp["conditions"][name]["lm"]["ce_loss"] == pytest.approx(
            cpu["conditions"][name]["lm"]["ce_loss"], rel=1e-6
        )
    spliced = [c for c in ddp["conditions"].values() if c.get("baseline", "") and c["baseline"] in mean_conds]
    assert spliced and all(c["task"]["logit_diff_recovered"] is not None for c in spliced)


@pytest.mark.parametrize("task", list(RUNS))
def test_ddp_cpu_writes_the_same_files_as_cpu_and_nothing_from_rank_one(runs, task):
    def files(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*")}

    assert files(runs[task]["ddp"]) == files(runs[task]["cpu"])
    assert not [f for f in files(runs[task]["ddp"]) if "train_ddp_process" in f]
    stdout = runs[task]["ddp_stdout"]
    assert stdout.count("results: ") == 1 and stdout.count("saeeval · ") == 1  # one table, from rank 0


def test_every_rank_leaves_the_process_group_after_evaluating(tmp_path):
    """After the test loop each rank meets the others once more and destroys its process group, instead of
    leaving NCCL's teardown to interpreter exit; without a group it does nothing."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from saeeval.api.evaluator import leave_process_group

    met: list[str] = []
    trainer = SimpleNamespace(strategy=SimpleNamespace(barrier=lambda name: (met.append(name), dist.barrier())))
    leave_process_group(trainer)
    assert met == []
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        leave_process_group(trainer)
        assert met == ["saeeval: evaluated"] and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
