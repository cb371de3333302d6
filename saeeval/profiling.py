"""Peak tensor memory of one call, from torch's profiler allocation records: exact and repeatable, unlike RSS.

Used by scripts/bench.py and the tests that pin how memory grows (glibc's caching makes RSS wander by 30%).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any


def peak_tensor_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak bytes of CPU tensor memory that `fn()` allocates above what was live when it started.

    profile_memory=True records every allocation with the allocator's running total. Returns None if this torch's
    profiler does not expose them.
    """
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        gc.collect()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        records, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            if event.tag == _EventType.Allocation:
                f = event.extra_fields
                records.append((event.start_time_ns, f.total_allocated, f.alloc_size))
            stack.extend(event.children)
    except (AttributeError, ImportError, RuntimeError):
        return None
    if not records:
        return 0
    records.sort()
    start = records[0][1] - records[0][2]
    return max(total for _, total, _ in records) - start
