"""Ctrl-C (SIGINT) during start-up or mid-run: one line "interrupted; nothing written, rerun to resume",
exit 130, no traceback, earlier results untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_harness import digest, with_prior_results

pytestmark = pytest.mark.slow
LINE = "saeeval: interrupted; nothing written, rerun to resume"


# Loaded by the child through PYTHONPATH: marks where the run is, so the test knows when to press Ctrl-C.
SITECUSTOMIZE_BATCH = """
import os, pathlib
import saeeval.engine.module

def on_test_batch_start(self, *args, **kwargs):
    pathlib.Path(os.environ["SAEEVAL_TEST_MARKER"]).touch()

saeeval.engine.module.SAEEvalModule.on_test_batch_start = on_test_batch_start
"""
# Marks that the command's boundary is in place (Python's own start-up and `import saeeval` come before it, about
# 0.2 s; a fixed sleep fell inside them on a loaded machine). Hydra, torch and Lightning are imported after it.
SITECUSTOMIZE_BOUNDARY = """
import os, pathlib
import saeeval.cli.boundary as boundary

run_cli = boundary.run_cli

def marked(main):
    pathlib.Path(os.environ["SAEEVAL_TEST_MARKER"]).touch()
    return run_cli(main)

boundary.run_cli = marked
"""


def start(
    out: Path, *overrides: str, marker: Path | None = None, hook_code: str = SITECUSTOMIZE_BATCH
) -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ)
    if marker is not None:
        hook = marker.parent / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(hook_code)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
            SAEEVAL_TEST_MARKER=str(marker),
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "saeeval", "+task=toxicity", "force=true", *overrides, f"hydra.run.dir={out}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    chunks: list[str] = []

    def read() -> None:  # chunks, not lines: a progress bar redraws with \r and no newline
        while data := os.read(proc.stderr.fileno(), 4096):
            chunks.append(data.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return proc, chunks


def finish(proc: subprocess.Popen, lines: list[str]) -> list[str]:
    proc.wait(timeout=120)
    time.sleep(0.2)  # let the reader thread drain the pipe
    return [ln.strip() for ln in "".join(lines).replace("\r", "\n").splitlines() if ln.strip()]


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "started"
    before = with_prior_results(out)
    proc, lines = start(out, marker=marker, hook_code=SITECUSTOMIZE_BOUNDARY)
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and marker.exists(), "the command never reached its boundary"
    time.sleep(0.3)  # inside the imports of Hydra, torch and Lightning / config composition
    proc.send_signal(signal.SIGINT)
    printed = finish(proc, lines)
    assert proc.returncode == 130, printed
    assert printed == [LINE]
    assert digest(out) == before


def test_ctrl_c_mid_run_is_one_line_and_exit_130(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "scoring"
    before = with_prior_results(out)
    proc, lines = start(out, "batch_size=1", marker=marker)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and marker.exists(), "the run never reached its first batch"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    lines = finish(proc, lines)
    assert proc.returncode == 130, lines
    assert lines == [LINE]
    assert digest(out) == before and not (out / "samples.jsonl").exists()
