"""The command-line boundary: every failure a user can cause (bad input, a folder that cannot be written, Ctrl-C)
ends as one line on stderr and an exit status; errors that are not the user's (bugs) keep their traceback, since
hiding them would make them unfixable. Every saeeval command (`python -m saeeval`, `python -m saeeval.report`)
runs inside `run_cli`.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from saeeval.errors import SaeevalError, first_line, print_error

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd program
INTERRUPTED = "interrupted; nothing written, rerun to resume"

_sigint_seen = False
run_folder: Path | None = None  # the run's output folder, once Hydra knows it (saeeval.cli.hydra_callbacks)


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


RUN_FOLDER = "hydra.run.dir (hydra.sweep.dir for -m)"
"""Where a run's files go, named in a write failure's fix ("... or choose another <this>")."""
_WRITE_FIXES = {
    errno.ENOSPC: "free disk space there or choose another {other}",
    errno.EDQUOT: "free space in your quota or choose another {other}",
    errno.EROFS: "that file system is read-only: choose another {other}",
    errno.EACCES: "make it writable (chmod u+w) or choose another {other}",
    errno.EPERM: "it may be immutable (lsattr; chattr -i) or not yours: choose another {other}",
    errno.ENOTDIR: "a file stands where a folder should be: remove it or choose another {other}",
    errno.EEXIST: "a file stands where a folder should be: remove it or choose another {other}",
}


def os_error(err: OSError, out_dir: Path | None = None, other: str = RUN_FOLDER) -> SaeevalError | None:
    """One line for a file-system failure a user can fix (disk full, read-only, a file in the way); a failed
    write() names no file, so it is put on the output folder `out_dir`. `other`: what the user can point
    elsewhere instead (the run folder; the report's --out)."""
    fix = _WRITE_FIXES.get(err.errno or -1)
    if fix is None or not (err.filename or out_dir):
        return None
    path = Path(str(err.filename)) if err.filename else Path(str(out_dir))
    folder = path if path.is_dir() or err.errno in (errno.EEXIST, errno.ENOTDIR) else path.parent
    reason = os.strerror(err.errno) if err.errno else str(err)
    return SaeevalError(f"cannot write to folder '{folder}' ({reason}): {fix.format(other=other)}")


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def known_error(err: BaseException, out_dir: Path | None = None) -> SaeevalError | None:
    """The user-facing line for `err` (or what caused it), or None for a bug that keeps its traceback."""
    chain = _causes(err)
    for cause in chain:
        if isinstance(cause, SaeevalError):
            return cause
    for cause in chain:
        if isinstance(cause, OSError) and (line := os_error(cause, out_dir)) is not None:
            return line
    return hydra_error(err)


def hydra_error(err: BaseException) -> SaeevalError | None:
    """One line for a Hydra/OmegaConf error about the command line (bad override syntax, a missing config)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(err, (HydraException, OmegaConfBaseException)):
        return None
    line = first_line(err)
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and first_line(cause) not in line:
        line = f"{line} {first_line(cause)}"
    return SaeevalError(f"{line} (check the command-line overrides; `python -m saeeval --help` lists the options)")


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
