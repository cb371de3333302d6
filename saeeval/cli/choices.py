"""Check config-group choices on the command line before Hydra composes, so a typo is one clear line."""

from __future__ import annotations

import re
from collections.abc import Sequence

from saeeval.api.config_tree import GROUPS, group_options
from saeeval.errors import SaeevalError

_CHOICE = re.compile(rf"([+~]?)({'|'.join(GROUPS)})=(.*)")


def check_choices(argv: Sequence[str]) -> None:
    """Raise SaeevalError for `group=value` overrides naming a config that does not exist, or `task=` without `+`.

    Sweep lists (`+task=ioi,toxicity`) are checked value by value; Hydra sweep functions (`glob(...)`) are left
    to Hydra.
    """
    for arg in argv:
        m = _CHOICE.fullmatch(arg)
        if not m:
            continue
        prefix, group, values = m.groups()
        if group == "task" and prefix != "+":
            raise SaeevalError(f"the task is appended to the defaults: write +{arg.lstrip('~')} instead of {arg}")
        if "(" in values or prefix == "~":
            continue
        options = group_options(group)
        for value in values.split(","):
            if value not in options:
                example = f"{'+' if group == 'task' else ''}{group}={options[0]}"
                raise SaeevalError(f"unknown {group} {value!r}: choose one of {', '.join(options)} (e.g. {example})")
