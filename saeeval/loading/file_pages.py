"""Give back the resident pages of a memory-mapped checkpoint once the tensors read from it have been copied.

Why: safetensors maps the checkpoint file and Hugging Face hands out tensors that view the mapping. Copying them
into parameters leaves the file's pages resident (they count in the process's RSS) until the last view is gone,
so loading held the whole checkpoint twice at its peak. `madvise(MADV_DONTNEED)` on a page range of a private
file mapping drops those pages at once; should anything read them again the kernel re-reads the file. Only ranges
of the named files' mappings are ever advised, never anonymous memory; without `/proc/self/maps` or libc nothing
is done (the pages then go when the mapping is unmapped).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
from collections.abc import Iterable
from pathlib import Path

import torch

_MADV_DONTNEED = 4
_CHUNK_BYTES = 64 * 2**20
Span = tuple[int, int]


def file_mappings(paths: Iterable[Path]) -> list[Span]:
    """Address ranges `[start, end)` at which this process maps any of `paths` (empty where unknown)."""
    names = {str(Path(p).resolve()) for p in paths}
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in names:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            spans.append((start, end))
    return spans


def tensor_span(tensor: torch.Tensor) -> Span:
    """The bytes `tensor` reads: from its first element to one past its last (strides taken as non-negative)."""
    if tensor.numel() == 0:
        return tensor.data_ptr(), tensor.data_ptr()
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
    return tensor.data_ptr(), tensor.data_ptr() + (last + 1) * tensor.element_size()


def overlaps(span: Span, spans: Iterable[Span]) -> bool:
    return any(start < span[1] and span[0] < end for start, end in spans)


def _minus(span: Span, holes: Iterable[Span]) -> list[Span]:
    pieces = [span]
    for h_start, h_end in holes:
        pieces = [
            part
            for start, end in pieces
            for part in ((start, min(end, h_start)), (max(start, h_end), end))
            if part[0] < part[1]
        ]
    return pieces


def release_pages(span: Span, mappings: list[Span], keep: Iterable[Span]) -> int:
    """Drop the resident pages of `span` that lie in `mappings` and in none of `keep`; returns bytes advised.

    `keep` holds the storages still to be read, so a page shared with a tensor not yet copied stays resident;
    partial pages at the edges are left alone.
    """
    libc = _libc()
    if libc is None:
        return 0
    page = mmap.PAGESIZE
    keep = list(keep)
    advised = 0
    for m_start, m_end in mappings:
        inside = (max(span[0], m_start), min(span[1], m_end))
        for start, end in _minus(inside, keep):
            start, end = -(-start // page) * page, end // page * page
            if start < end and libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED) == 0:
                advised += end - start
    return advised


def copy_out(tensor: torch.Tensor, mappings: list[Span], keep: Iterable[Span]) -> torch.Tensor:
    """A contiguous copy of the contiguous `tensor`, giving back the mapped pages it read chunk by chunk, so a
    large tensor (Gemma-2's 256k×2304 embedding) is never resident twice."""
    owned = torch.empty_like(tensor, memory_format=torch.contiguous_format)
    source, target = tensor.reshape(-1), owned.view(-1)
    step = max(1, _CHUNK_BYTES // tensor.element_size())
    keep = list(keep)
    for start in range(0, source.numel(), step):
        chunk = source[start : start + step]
        target[start : start + step].copy_(chunk)
        release_pages(tensor_span(chunk), mappings, keep)
    return owned


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """libc with `madvise` typed, looked up once (`find_library` runs `ldconfig`: ~1 ms a call)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
