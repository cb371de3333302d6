"""Run `python -m saeeval ...` for the error tests: in this process (imports paid once) or as a real subprocess.

In-process runs go through the same `run_cli(cli)` boundary that `python -m saeeval` runs, so exit code and
stderr are what a user sees; Hydra's global state, the root logger, SIGINT and sys.argv are restored after.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PRIOR = '{"schema_version": 1, "config_hash": "0123456789abcdef", "conditions": {"clean": {}}}\n'


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str = ""

    def assert_one_line_error(self, *needles: str, code: int = 2) -> str:
        """Exit `code`, no traceback, exactly one non-empty stderr line, holding every needle."""
        assert self.code == code, (self.code, self.stderr[-2000:])
        assert "Traceback" not in self.stderr, self.stderr
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, self.stderr
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]


def run_inprocess(*argv: str, capfd: pytest.CaptureFixture, out: Path | None = None) -> Outcome:
    """`python -m saeeval *argv` (plus hydra.run.dir=out) inside this process."""
    from hydra.core.global_hydra import GlobalHydra

    import saeeval.cli.main as entry
    from saeeval.cli import boundary

    args = [*argv, *([f"hydra.run.dir={out}"] if out is not None else [])]
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_sigint = signal.getsignal(signal.SIGINT)
    capfd.readouterr()
    sys.argv = ["saeeval", *args]
    GlobalHydra.instance().clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            entry.run_cli(entry.cli)
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        GlobalHydra.instance().clear()
        for handler in root.handlers[:]:
            if handler not in saved_handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in saved_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved_level)
        signal.signal(signal.SIGINT, saved_sigint)
        boundary._sigint_seen = False
        boundary.run_folder = None
        logging.raiseExceptions = True
    captured = capfd.readouterr()
    code = exit_.value.code
    return Outcome(0 if code is None else int(code), captured.err, captured.out)


def run_subprocess(
    *argv: str, out: Path | None = None, env: dict[str, str] | None = None, timeout: int = 300
) -> Outcome:
    """`python -m saeeval *argv` as a user runs it."""
    args = [*argv, *([f"hydra.run.dir={out}"] if out is not None else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    return Outcome(proc.returncode, proc.stderr, proc.stdout)


def with_prior_results(folder: Path) -> str:
    """Put a finished run's results.json (of another config) into `folder`; returns its digest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(PRIOR)
    return digest(folder)


def digest(folder: Path) -> str:
    """A digest of results.json, to assert that a failed run left earlier results untouched."""
    return hashlib.sha256((folder / "results.json").read_bytes()).hexdigest()


def fill_disk_on_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every write through saeeval's atomic writer fail as a disk that fills up does (ENOSPC): where a run or
    a report meets a full disk after it started."""
    real_fdopen = os.fdopen

    def full_disk_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)

        def write(_data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        f.write = write
        return f

    monkeypatch.setattr(os, "fdopen", full_disk_fdopen)


def mount_tmpfs(where: Path, options: str) -> bool:
    """Mount a small tmpfs at `where` (root only); False when this machine does not allow it."""
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode
        == 0
    )


def fill_disk(disk: Path) -> None:
    """Fill the file system holding `disk` to the last byte (a file `filler` in it)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
