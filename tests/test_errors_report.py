"""`python -m saeeval.report` at the error boundary: Ctrl-C while it renders and a disk that is (or fills up) full
end as one line, no traceback, and leave no half-written report."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_harness import fill_disk, fill_disk_on_write, mount_tmpfs

RUNS = Path(__file__).parent / "fixtures" / "results_0.1.0"  # two finished runs, as 0.1.0 wrote them
ROOT = os.geteuid() == 0
PNG_END = b"IEND\xaeB`\x82"

# Loaded by the child through PYTHONPATH: marks the start of rendering and holds it there, so the test knows
# the Ctrl-C lands mid-report.
SITECUSTOMIZE = """
import os, pathlib, time
import saeeval.publish.html_report as report

_render = report.render

def render(*args, **kwargs):
    pathlib.Path(os.environ["SAEEVAL_TEST_MARKER"]).touch()
    time.sleep(30)
    return _render(*args, **kwargs)

report.render = render
"""


def _report(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "saeeval.report", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
def test_ctrl_c_while_the_report_renders_is_one_line_and_exit_130(tmp_path):
    hook, marker, out = tmp_path / "hook", tmp_path / "rendering", tmp_path / "report.html"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        "SAEEVAL_TEST_MARKER": str(marker),
    }
    proc = _report(str(RUNS), "--out", str(out), env=env)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert _one_line(stderr) == "saeeval: interrupted; nothing written, rerun to resume"
    assert not out.exists()


@pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root; see the injected ENOSPC test")
def test_report_onto_a_full_disk_is_one_line_naming_the_folder(tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "size=64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        fill_disk(disk)
        proc = _report(str(RUNS), "--out", str(disk / "report.html"))
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2
        line = _one_line(stderr)
        assert f"cannot write to folder '{disk}" in line and "No space left on device" in line
        assert "--out" in line
        left = [p for p in disk.rglob("*") if p.is_file() and p.name != "filler"]
        assert not [p for p in left if p.suffix in (".html", ".tmp")]  # no page, no temp file left behind
        assert all(p.read_bytes().endswith(PNG_END) for p in left)  # and any chart written before is whole
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_disk_filling_up_while_the_page_is_written_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC injected into the page's writer (where a disk that fills during the report fails)."""
    from saeeval.cli.report import main

    runs = tmp_path / "runs"
    shutil.copytree(RUNS, runs)
    fill_disk_on_write(monkeypatch)
    assert main([str(runs), "--out", str(tmp_path / "out" / "report.html")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write to folder '{tmp_path / 'out'}'" in line and "No space left on device" in line
    assert [p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".html", ".tmp")] == []
