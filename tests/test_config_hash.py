"""Finished runs stay finished: results written by saeeval 0.1.0 (the flat layout, before the layer move) are
recognised as complete by the same command today, left byte for byte, and a fresh run gives the same numbers.

The fixtures in tests/fixtures/results_0.1.0/ were written by 0.1.0's `python -m saeeval +task=ioi limit=24` and
`+task=toxicity limit=24 task.answer_mode=both`, whose configs named `saeeval.models.load_model`,
`saeeval.masks.Masks`, ... as `_target_`s.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from cli_harness import run_subprocess
from run_files import differences, load

from saeeval.results.config_hash import TARGET_IDS, config_hash

FIXTURES = Path(__file__).parent / "fixtures" / "results_0.1.0"
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"ioi": ["+task=ioi", "limit=24"], "toxicity": ["+task=toxicity", "limit=24", "task.answer_mode=both"]}


def _targets(node: object) -> list[str]:
    if isinstance(node, dict):
        return [t for k, v in node.items() for t in ([v] if k == "_target_" else _targets(v))]
    return [t for v in node for t in _targets(v)] if isinstance(node, list) else []


def test_every_stable_id_names_an_object_that_exists_today():
    for path in TARGET_IDS:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_every_saeeval_target_in_conf_resolves_and_moved_ones_keep_their_id():
    found = {
        t for f in (ROOT / "saeeval" / "conf").rglob("*.yaml") for t in _targets(yaml.safe_load(f.read_text()) or {})
    }
    ours = {t for t in found if t.startswith("saeeval.")}
    assert ours >= set(TARGET_IDS)  # every id is still used by a config
    for target in ours:
        module, _, name = target.rpartition(".")
        assert hasattr(importlib.import_module(module), name), target


@pytest.mark.parametrize("task", sorted(COMMANDS))
def test_the_fixture_hash_is_the_hash_of_its_config_today(task):
    doc = json.loads((FIXTURES / task / "results.json").read_text())
    moved = json.loads(
        json.dumps(doc["config"])
        .replace('"saeeval.models.', '"saeeval.loading.models.')
        .replace('"saeeval.saes.', '"saeeval.loading.saes.')
        .replace('"saeeval.masks.', '"saeeval.engine.masks.')
    )
    assert moved != doc["config"]
    assert config_hash(moved) == config_hash(doc["config"]) == doc["config_hash"]


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(COMMANDS))
def test_results_written_before_the_move_are_skipped_untouched_and_reproduced(task, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(FIXTURES / task, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    res = run_subprocess(*COMMANDS[task], out=old)
    assert res.code == 0, res.stderr[-2000:]
    assert "skipped" in res.stdout and json.loads(before["results.json"])["config_hash"] in res.stdout.replace("\n", "")
    assert {p.name: p.read_bytes() for p in old.iterdir() if p.is_file() and not p.name.endswith(".log")} == before

    fresh = tmp_path / "fresh"
    res = run_subprocess(*COMMANDS[task], "plot=false", out=fresh)
    assert res.code == 0, res.stderr[-2000:]
    (doc, samples), (old_doc, old_samples) = load(fresh), load(old)
    assert doc["config_hash"] == old_doc["config_hash"]
    for d in (doc, old_doc):  # where the code lives and which versions ran are not what was computed
        d.pop("config"), d.pop("versions"), d.pop("saeeval_version")
    assert differences(doc, old_doc) == []
    assert differences(samples, old_samples) == []
