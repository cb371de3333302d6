"""Real two-process gloo sync: every metric's compute() after all_gather equals the single-process result."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from saeeval.metrics.lm_loss import KLDivergence, NextTokenCrossEntropy
from saeeval.metrics.logit_diff import GroupedLogitDiff, LogitDiff, PerExample
from saeeval.metrics.non_finite import NonFinite, bad_rows
from saeeval.metrics.reconstruction import Reconstruction

WORLD = 2


def make_data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(23, 8, generator=gen) + 1
    hot = x.clone()
    hot[[1, 16, 17, 22], [0, 3, 3, 7]] = torch.tensor([float("inf"), float("nan"), -float("inf"), float("nan")])
    hot_ld = torch.randn(31, generator=gen, dtype=torch.float64)
    hot_ld[[3, 20, 30]] = float("nan")
    return {
        "hot": hot,
        "hot_ld": hot_ld,
        "ld": torch.randn(31, generator=gen, dtype=torch.float64),
        "group": torch.randint(0, 5, (31,), generator=gen),
        "ids": torch.randperm(31, generator=gen),
        "logits": torch.randn(5, 7, 11, generator=gen),
        "clean": torch.randn(5, 7, 11, generator=gen),
        "tokens": torch.randint(0, 11, (5, 7), generator=gen),
        "mask": torch.rand(5, 7, generator=gen) > 0.2,
        "x": x,
        "x_hat": x + 0.2 * torch.randn(23, 8, generator=gen),
        "feats": torch.relu(torch.randn(23, 16, generator=gen) - 0.5),
    }


def evaluate(data: dict[str, torch.Tensor], ex: slice, seq: slice, tok: slice, pe: slice) -> dict[str, object]:
    """Feed each metric its share (examples / sequences / tokens / per-example ids) and compute (syncs under DDP)."""
    ld, gld, per = LogitDiff(), GroupedLogitDiff(5), PerExample()
    ce, kl, rec = NextTokenCrossEntropy(), KLDivergence(), Reconstruction(8, 16)
    ld.update(data["ld"][ex])
    gld.update(data["ld"][ex], data["group"][ex])
    per.update(data["ids"][pe], data["ld"][pe])
    ce.update(data["logits"][seq], data["tokens"][seq], data["mask"][seq])
    kl.update(data["clean"][seq], data["logits"][seq], data["mask"][seq])
    rec.update(data["x"][tok], data["x_hat"][tok], data["feats"][tok])
    nf = NonFinite(["rows", "values", "never"])
    nf.update("rows", bad_rows(data["hot"][tok]))
    nf.update("values", data["hot_ld"][ex])
    return {
        "nf": nf.compute(),
        "ld": ld.compute(),
        "gld": gld.compute(),
        "pooled": gld.summarize([0, 2, 4]),
        "per": per.compute(),
        "ce": ce.compute(),
        "kl": kl.compute(),
        "rec": rec.compute(),
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    bounds = {"ex": (0, 12, 31), "seq": (0, 2, 5), "tok": (0, 17, 23), "pe": (0, 31, 31)}  # rank 1: no ids at all
    shares = {k: slice(b[rank], b[rank + 1]) for k, b in bounds.items()}
    result = evaluate(make_data(), **shares)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _assert_close(got: object, want: object) -> None:
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _assert_close(got[key], want[key])
    elif isinstance(want, tuple):
        for g, w in zip(got, want, strict=True):
            _assert_close(g, w)
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15, equal_nan=True)
    else:
        assert got == pytest.approx(want, rel=1e-12, nan_ok=True)


@pytest.mark.slow
def test_gloo_two_ranks_with_uneven_and_empty_shares_match_one_process() -> None:
    torch.set_num_threads(1)
    everything = slice(None)
    want = evaluate(make_data(), everything, everything, everything, everything)
    assert want["nf"] == {"rows": 4, "values": 3}  # positions 1, 16, 17, 22; logit diffs 3, 20, 30
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        for rank in range(WORLD):
            _assert_close(torch.load(os.path.join(tmp, f"rank{rank}.pt"), weights_only=True), want)
