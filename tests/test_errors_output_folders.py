"""Output folders that cannot take the run (read-only, immutable, a file in the way, a full disk): one line
naming the folder and the fix, exit 2, no traceback, earlier results untouched and no partial files left."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import digest, fill_disk, fill_disk_on_write, mount_tmpfs, run_inprocess, with_prior_results

ROOT = os.geteuid() == 0
FAST = ("+task=ioi", "limit=8", "force=true", "plot=false")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], capture_output=True)


def leftovers(folder: Path) -> list[str]:
    """Files a failed write could leave behind: temp files of the atomic writer, a samples file."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name == "samples.jsonl")


def test_read_only_folder_is_one_line_naming_it(tmp_path, capfd, mounts):
    out = tmp_path / "ro"
    if ROOT:  # root ignores permission bits: make the file system itself read-only
        if not mount_tmpfs(out, "size=1m"):
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(out)
        before = with_prior_results(out)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        needle = "Read-only file system"
    else:
        before = with_prior_results(out)
        out.chmod(0o555)
        needle = "Permission denied"
    try:
        outcome = run_inprocess(*FAST, out=out, capfd=capfd)
    finally:
        if not ROOT:
            out.chmod(0o755)
    outcome.assert_one_line_error(f"cannot write to folder '{out}'", needle, "hydra.run.dir")
    assert digest(out) == before


@pytest.mark.skipif(not ROOT, reason="chattr +i needs root")
def test_immutable_folder_is_one_line_naming_it_and_chattr(tmp_path, capfd):
    out = tmp_path / "frozen"
    before = with_prior_results(out)
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        outcome = run_inprocess(*FAST, out=out, capfd=capfd)
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    outcome.assert_one_line_error(f"'{out}'", "Operation not permitted", "chattr -i")
    assert digest(out) == before


@pytest.mark.parametrize("sub", ["", "inner"])
def test_file_where_the_folder_should_be_is_one_line(tmp_path, capfd, sub):
    blocker = tmp_path / "results_here"
    blocker.write_text("not a folder\n")
    out = blocker / sub if sub else blocker
    outcome = run_inprocess(*FAST, out=out, capfd=capfd)
    outcome.assert_one_line_error(f"cannot write to folder '{blocker if not sub else out}'", "a file stands where")
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(not ROOT, reason="mounting a small tmpfs needs root; see the injected ENOSPC test")
def test_full_disk_is_one_line_and_leaves_earlier_results_whole(tmp_path, capfd, mounts):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "size=256k"):
        pytest.skip("cannot mount a tmpfs here")
    mounts.append(disk)
    out = disk / "run"
    before = with_prior_results(out)
    fill_disk(disk)
    outcome = run_inprocess(*FAST, out=out, capfd=capfd)
    outcome.assert_one_line_error(f"'{out}", "No space left on device", "free disk space")
    assert digest(out) == before and leftovers(out) == []


def test_disk_filling_up_while_results_are_written_leaves_no_partial_file(tmp_path, capfd, monkeypatch):
    """ENOSPC injected into the results writer (where a disk that fills during the run fails)."""
    fill_disk_on_write(monkeypatch)
    out = tmp_path / "run"
    before = with_prior_results(out)
    outcome = run_inprocess(*FAST, out=out, capfd=capfd)
    outcome.assert_one_line_error(f"cannot write to folder '{out}'", "No space left on device")
    assert digest(out) == before and leftovers(out) == []
