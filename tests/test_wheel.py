"""A wheel that works: built from the checkout, installed into a separate virtualenv that cannot see the checkout
(no editable install, no PYTHONPATH to the tree), and used from another folder the way a user would: the CLI
with feature attribution, the `saeeval` command, `saeeval.evaluate` with the public loaders, and the report.

The new virtualenv gets the already-installed dependencies through a path entry to this environment's
site-packages (a plain path: the .pth files there, the editable install's finder among them, are not run), so the
test needs no network and no second copy of torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

API_SCRIPT = """
import sys
import saeeval
assert not any("editable" in type(f).__name__.lower() for f in sys.meta_path), sys.meta_path
model = saeeval.load_model("tiny")
saes = saeeval.load_saes(model, source="zoo", name="tiny", hooks=["blocks.0.hook_resid_post"])
results = saeeval.evaluate(model, saes, "ioi", limit=8)
assert isinstance(results, saeeval.Results)
print(saeeval.__file__)
print(results.conditions["clean"]["task"]["logit_diff"])
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a fresh virtualenv holding only the built wheel, a working folder outside the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    source, dist = base / "source", base / "dist"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):  # the files a clone has, built apart so no build/ lands in the checkout
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("saeeval-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "saeeval/features/callback.py",
        "saeeval/engine/module.py",
        "saeeval/conf/task/ioi.yaml",
        "saeeval/publish/report_template.html",
        "saeeval/tasks/data/ioi.json",
        "saeeval/zoo/tiny/model/model.safetensors",
    ):
        assert needed in names, needed
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    work = base / "elsewhere"
    work.mkdir()
    return python, work


def _run(python: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), *args], capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_wheel_is_what_runs_not_the_checkout(wheel_env):
    python, work = wheel_env
    out = _run(python, work, "-c", "import saeeval; print(saeeval.__file__)").stdout.strip()
    assert str(ROOT) not in out and out.startswith(str(python.parents[1]))


def test_cli_with_feature_attribution_and_the_report_from_the_wheel(wheel_env):
    python, work = wheel_env
    _run(python, work, "-m", "saeeval", "+task=ioi", "features=attribution", "limit=8", "hydra.run.dir=run")
    doc = json.loads((work / "run" / "results.json").read_text())
    assert doc["task"]["n_examples"] == 8 and doc["model"]["name"] == "tiny"
    features = json.loads((work / "run" / "features.json").read_text())
    assert features["config_hash"] == doc["config_hash"] and features["saes"]
    script = python.parent / "saeeval"  # the console command runs the same CLI
    proc = subprocess.run(
        [str(script), "+task=ioi", "features=attribution", "limit=8", "hydra.run.dir=run"],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=600,
    )
    assert proc.returncode == 0 and "skipped" in proc.stdout, proc.stderr[-2000:]
    _run(python, work, "-m", "saeeval.report", "run", "--out", "report.html")
    page = (work / "report.html").read_text()
    assert doc["config_hash"] in page and "<img" in page


def test_evaluate_and_the_public_loaders_from_the_wheel(wheel_env):
    python, work = wheel_env
    lines = _run(python, work, "-c", API_SCRIPT).stdout.strip().splitlines()
    assert str(ROOT) not in lines[-2]
    assert float(lines[-1]) > 0  # the zoo model solves IOI
