"""The config tree's groups are declared once (saeeval.api.config_tree.GROUPS) and match its folders."""

from __future__ import annotations

from importlib import resources

from saeeval.api.config_tree import GROUPS, REQUIRED_GROUPS, group_options


def test_groups_are_the_config_folders_but_hydras_own():
    folders = {p.name for p in resources.files("saeeval.conf").iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders - {"hydra"} == set(GROUPS)
    assert set(REQUIRED_GROUPS) <= set(GROUPS)
    assert all(group_options(g) for g in GROUPS)
