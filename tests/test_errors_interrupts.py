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


# Loaded by the child through PYTHONPATH: marks the first scored batch, so the test knows the run is mid-way.
SITECUSTOMIZE = """
import os, pathlib
import saeeval.engine.module

def on_test_batch_start(self, *args, **kwargs):
    pathlib.Path(os.environ["SAEEVAL_TEST_BATCH_MARKER"]).touch()

saeeval.engine.module.SAEEvalModule.on_test_batch_start = on_test_batch_start
"""


def start(out: Path, *overrides: str, marker: Path | None = None) -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ)
    if marker is not None:
        hook = marker.parent / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")])),
            SAEEVAL_TEST_BATCH_MARKER=str(marker),
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
    before = with_prior_results(tmp_path)
    proc, lines = start(tmp_path)
    time.sleep(1.0)  # inside imports / config composition
    proc.send_signal(signal.SIGINT)
    out = finish(proc, lines)
    assert proc.returncode == 130, out
    assert out == [LINE]
    assert digest(tmp_path) == before


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
