"""The layering is checked by the project: the import-linter contract in pyproject.toml holds on the package, fails
when a lower layer imports a higher one (planted in a copy), and no import cycle exists, function-level imports
included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAT_MAX = 10
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")  # installed by the dev extra beside python


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contract, importing saeeval from `package_parent`."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=package_parent,
        timeout=300,
    )


def test_no_import_cycle_between_any_two_modules():
    graph = grimp.build_graph("saeeval", cache_dir=None)
    cycles = [
        (a, b)
        for a in sorted(graph.modules)
        for b in graph.find_modules_directly_imported_by(a)
        if graph.find_shortest_chain(importer=b, imported=a)
    ]
    assert cycles == []


def test_at_most_a_handful_of_modules_stay_flat():
    flat = sorted(p.name for p in (ROOT / "saeeval").glob("*.py"))
    assert len(flat) <= FLAT_MAX, flat


def test_the_layer_contract_holds():
    res = _lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "1 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    ("lower", "upward"),
    [
        ("engine/splicing.py", "from saeeval.loading.models import load_model"),
        ("results/document.py", "from saeeval.render.table import print_results"),
        ("metrics/stats.py", "import saeeval.cli.main"),
    ],
)
def test_a_planted_upward_import_breaks_the_contract(tmp_path, lower, upward):
    shutil.copytree(ROOT / "saeeval", tmp_path / "saeeval", ignore=shutil.ignore_patterns("__pycache__", "zoo"))
    target = tmp_path / "saeeval" / lower
    text = target.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    target.write_text(f"{head}{sep}\n{upward}\n{rest}")
    res = _lint_imports(tmp_path)
    assert res.returncode == 1, res.stdout[-3000:]
    assert "BROKEN" in res.stdout and "0 kept, 1 broken" in res.stdout
    assert f"saeeval.{lower[:-3].replace('/', '.')} -> " in res.stdout
