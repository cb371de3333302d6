"""Command-line group choices are checked before Hydra composes."""

from __future__ import annotations

import re

import pytest

from saeeval.cli.choices import check_choices, group_options
from saeeval.errors import SaeevalError


def test_group_options_list_the_shipped_configs():
    assert group_options("task") == ["ioi", "lm", "toxicity", "toxicity_chat"]
    assert {"default", "none", "positions"} <= set(group_options("mask"))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["+task=foo"], "unknown task 'foo': choose one of ioi, lm, toxicity, toxicity_chat"),
        (["-m", "+task=ioi,tox"], "unknown task 'tox'"),
        (["+task=ioi", "mask=bar"], "unknown mask 'bar'"),
        (["task=ioi"], "write +task=ioi instead of task=ioi"),
    ],
)
def test_unknown_choice_is_one_line_naming_the_options(argv, needle):
    with pytest.raises(SaeevalError, match=re.escape(needle)) as err:
        check_choices(argv)
    assert "\n" not in str(err.value)


def test_valid_choices_sweeps_and_other_overrides_pass():
    check_choices(
        [
            "-m",
            "+task=ioi,toxicity",
            "mask=none",
            "trainer=ddp_cpu",
            "task.limit=3",
            "limit=4",
            "hydra/launcher=submitit_local",
            "splice=glob(*)",
            "~logger",
        ]
    )
