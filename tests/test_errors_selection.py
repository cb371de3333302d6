"""Inputs that select nothing (no token position, token ids the model lacks, no SAE condition): one line each,
before any forward pass, instead of a run that "succeeds" with empty metrics."""

from __future__ import annotations

import pytest
from cli_harness import digest, run_inprocess, with_prior_results


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["mask=positions", "mask.positions=[200]"],
            ["the mask selects no token", "positions=[200]", "longest prompt"],
        ),
        (["mask=positions", "mask.positions=[-300,250]"], ["the mask selects no token", "mask.positions=[-1]"]),
        (["mask.exclude_token_ids=[100000]"], ["exclude_token_ids holds 100000", "outside the model's vocabulary"]),
        (["mask.exclude_token_ids=[-1]"], ["exclude_token_ids holds -1", "outside the model's vocabulary"]),
        (["saes.hooks=[]"], ["no SAE selected", "saes.hooks"]),
        (["splice.singles=false"], ["no SAE condition", "splice.groups"]),
    ],
)
def test_selecting_nothing_is_one_line(tmp_path, capfd, overrides, needles):
    before = with_prior_results(tmp_path)
    outcome = run_inprocess("+task=ioi", "limit=8", "force=true", *overrides, out=tmp_path, capfd=capfd)
    outcome.assert_one_line_error(*needles)
    assert digest(tmp_path) == before
