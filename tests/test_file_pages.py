"""file_pages: the resident pages of a mapped checkpoint are given back, and only those no pending tensor reads."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from saeeval.loading.file_pages import copy_out, file_mappings, release_pages, tensor_span

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
N = 8 * 2**20 // 4  # 8 MiB of float32 per tensor


def resident_kib(path: Path) -> int:
    """Rss of this process's mappings of `path`, summed from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            inside = len(fields) == 6 and fields[5] == str(path.resolve())
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture
def mapped(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    want = {"a": torch.arange(N, dtype=torch.float32), "b": -torch.arange(N, dtype=torch.float32)}
    path = tmp_path / "w.safetensors"
    save_file(want, str(path))
    with safe_open(str(path), framework="pt") as f:
        views = {k: f.get_tensor(k) for k in f.keys()}
    return path, want, views


def test_release_pages_drops_the_resident_pages_and_the_data_reads_back_from_the_file(mapped):
    path, want, views = mapped
    mappings = file_mappings([path])
    assert mappings and all(torch.equal(views[k], want[k]) for k in want)  # reading makes the pages resident
    before = resident_kib(path)
    assert before >= 2 * N * 4 // 1024
    advised = release_pages(tensor_span(views["a"]), mappings, keep=[])
    assert advised >= N * 4 - 2 * mmap.PAGESIZE
    assert resident_kib(path) <= before - advised // 1024
    assert torch.equal(views["a"], want["a"]) and torch.equal(views["b"], want["b"])


def test_release_pages_keeps_pages_a_pending_tensor_reads_and_never_advises_anonymous_memory(mapped):
    path, want, views = mapped
    mappings = file_mappings([path])
    assert torch.equal(views["a"], want["a"])
    assert release_pages(tensor_span(views["a"]), mappings, keep=[tensor_span(views["a"])]) == 0
    anonymous = want["a"].clone()
    assert release_pages(tensor_span(anonymous), mappings, keep=[]) == 0
    assert torch.equal(anonymous, want["a"])


def test_copy_out_copies_and_gives_back_the_source_chunk_by_chunk(mapped):
    path, want, views = mapped
    mappings = file_mappings([path])
    copy = copy_out(views["b"], mappings, keep=[tensor_span(views["a"])])
    assert torch.equal(copy, want["b"]) and copy.untyped_storage().data_ptr() != views["b"].data_ptr()
    assert torch.equal(views["a"], want["a"])
    after = resident_kib(path)
    assert after <= N * 4 // 1024 + 2 * mmap.PAGESIZE // 1024  # "a" stays resident, "b" is given back
