"""The one exception type that reaches the user as a single line, and the command-line boundary that turns
every failure a user can cause (bad input, a folder that cannot be written, Ctrl-C) into that line.

Errors that are not the user's (bugs) keep their traceback: hiding them would make them unfixable.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd program
INTERRUPTED = "interrupted; nothing written, rerun to resume"


class SaeevalError(Exception):
    """A problem with the user's input; the message is one line that names the problem and the fix."""


def print_error(err: SaeevalError) -> None:
    """Show a user error the one way every saeeval command does: one line on stderr, no traceback."""
    print(f"saeeval: error: {' '.join(str(err).split())}", file=sys.stderr)


_sigint_seen = False
run_folder: Path | None = None  # the run's output folder, once Hydra knows it (output_folder.py)


def _on_sigint(signum: int, frame: object) -> None:
    """Remember the Ctrl-C, then behave as Python does: Lightning turns a KeyboardInterrupt into sys.exit(1),
    and the flag lets the boundary still report it as an interrupt."""
    global _sigint_seen
    _sigint_seen = True
    raise KeyboardInterrupt


def _is_rank_zero() -> bool:
    """DDP ranks > 0 receive the same Ctrl-C from the terminal; only rank 0 speaks for the run."""
    return all(os.environ.get(var, "0") in ("", "0") for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def interrupted() -> NoReturn:
    """Exit as an interrupted run: results are only ever written complete, so a rerun starts over cleanly."""
    if _is_rank_zero():
        print(f"saeeval: {INTERRUPTED}", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def fail(err: SaeevalError) -> NoReturn:
    """The user-facing end of a bad input: the error line and exit status 2."""
    print_error(err)
    sys.exit(EXIT_ERROR)


_WRITE_FIXES = {
    errno.ENOSPC: "free disk space there or choose another hydra.run.dir (hydra.sweep.dir for -m)",
    errno.EDQUOT: "free space in your quota or choose another hydra.run.dir (hydra.sweep.dir for -m)",
    errno.EROFS: "that file system is read-only: choose another hydra.run.dir (hydra.sweep.dir for -m)",
    errno.EACCES: "make it writable (chmod u+w) or choose another hydra.run.dir (hydra.sweep.dir for -m)",
    errno.EPERM: "it may be immutable (lsattr; chattr -i) or not yours: choose another hydra.run.dir",
    errno.ENOTDIR: "a file stands where a folder should be: remove it or choose another hydra.run.dir",
    errno.EEXIST: "a file stands where a folder should be: remove it or choose another hydra.run.dir",
}


def os_error(err: OSError, out_dir: Path | None = None) -> SaeevalError | None:
    """One line for a file-system failure a user can fix (disk full, read-only, a file in the way); a failed
    write() names no file, so it is put on the run's output folder `out_dir`."""
    fix = _WRITE_FIXES.get(err.errno or -1)
    if fix is None or not (err.filename or out_dir):
        return None
    path = Path(str(err.filename)) if err.filename else Path(str(out_dir))
    folder = path if path.is_dir() or err.errno in (errno.EEXIST, errno.ENOTDIR) else path.parent
    reason = os.strerror(err.errno) if err.errno else str(err)
    return SaeevalError(f"cannot write to folder '{folder}' ({reason}): {fix}")


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def known_error(err: BaseException, out_dir: Path | None = None) -> SaeevalError | None:
    """The user-facing line for `err` (or what caused it), or None for a bug that keeps its traceback."""
    from saeeval.config_check import hydra_error

    chain = _causes(err)
    for cause in chain:
        if isinstance(cause, SaeevalError):
            return cause
    for cause in chain:
        if isinstance(cause, OSError) and (line := os_error(cause, out_dir)) is not None:
            return line
    return hydra_error(err)


def run_cli(main: Callable[[], object]) -> NoReturn:
    """Run a command so that every failure ends in one stderr line: a user error exits 2, Ctrl-C exits 130.

    Hydra would print its own multi-line reports; HYDRA_FULL_ERROR makes it re-raise them here instead.
    """
    signal.signal(signal.SIGINT, _on_sigint)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    import logging

    logging.raiseExceptions = False  # a log line that cannot be written (full disk) must not print a traceback
    try:
        main()
    except KeyboardInterrupt:
        interrupted()
    except SystemExit as exit_:
        if _sigint_seen and exit_.code not in (0, None):
            interrupted()
        raise
    except Exception as err:  # noqa: BLE001 -- triage: user errors become one line, bugs re-raise
        line = known_error(err, run_folder)
        if line is None:
            raise
        fail(line)
    sys.exit(0)
