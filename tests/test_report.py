"""The comparison report: real run folders in (written by the CLI at test start), a self-contained HTML page
(+ PNGs, + wandb report) out."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from saeeval.cli.report import main
from saeeval.publish.html_report import build_report, load_runs
from saeeval.render.catalog import fmt
from saeeval.results.files import write_results

HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
ABL0 = f"zero_ablation@{HOOK0}"
BOTH = f"{HOOK0}+{HOOK1}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def real_doc(folder: Path) -> dict:
    """A results.json the CLI wrote when the tests started (tests/conftest.py `real_runs`)."""
    return json.loads((folder / "results.json").read_text())


def second_toxicity_doc(doc: dict) -> dict:
    """Another sweep job derived from a real one: other SAE hooks in its config, nulls where a run can have them
    (an SAE whose L0 and EV were undefined, a slice without a logit diff)."""
    doc = copy.deepcopy(doc)
    doc["config"]["saes"]["hooks"] = [HOOK0, HOOK1]
    doc["config_hash"] = "9b8a7c6d5e4f3a21"
    doc["conditions"][HOOK1]["reconstruction"][HOOK1].update(l0=None, explained_variance=None)
    doc["conditions"][HOOK1]["task"].update(logit_diff=None, logit_diff_ci_low=None, logit_diff_ci_high=None)
    doc["slices"]["identity=paralyzed"]["clean"]["logit_diff"] = None
    return doc


@pytest.fixture
def run_dirs(tmp_path: Path, real_runs: dict[str, Path]) -> list[Path]:
    """A two-job Hydra multirun for toxicity and a single IOI run, from real CLI runs."""
    multirun = tmp_path / "multirun" / "2024-05-01" / "10-00-00"
    dirs = [multirun / "0", multirun / "1", tmp_path / "outputs" / "ioi_run"]
    tox = real_doc(real_runs["toxicity"])
    for d, doc in zip(dirs, (tox, second_toxicity_doc(tox), real_doc(real_runs["ioi"])), strict=True):
        write_results(d, doc, samples=None)
    (multirun / "multirun.yaml").write_text("hydra: {}\n")
    return dirs


class _Collect(HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html_text: str) -> _Collect:
    parser = _Collect()
    parser.feed(html_text)
    parser.close()
    return parser


def test_runs_are_labelled_by_folder_and_the_config_keys_that_differ(run_dirs: list[Path]) -> None:
    runs = load_runs([run_dirs[0].parents[2], run_dirs[2]])
    assert [r.rid for r in runs] == ["R1", "R2", "R3"]
    assert [r.task for r in runs] == ["toxicity", "toxicity", "ioi"]
    # task options are compared only between runs of the same task: n_examples differs (480 vs 200) only
    # across tasks, so it labels no run
    # the real runs share every option; only the derived job's SAE hooks differ (from the other two runs')
    assert runs[0].label == "R1 · multirun/2024-05-01/10-00-00/0 · saes.hooks=null"
    assert not any(d.startswith("task.") for r in runs for d in r.differs)
    assert len(runs[1].differs) == 1 and runs[1].differs[0].startswith('saes.hooks=["blocks.0.hook_resid_post"')
    assert runs[2].folder == "outputs/ioi_run"


def test_report_html_compares_every_run_and_condition_offline(run_dirs: list[Path], tmp_path: Path) -> None:
    out = build_report([run_dirs[0].parents[2], run_dirs[2] / "results.json"], tmp_path / "site" / "report.html")
    page = _parse(out.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    for run in load_runs([run_dirs[0].parents[2], run_dirs[2]]):
        assert run.label in text
    for cond in ("clean", HOOK0, HOOK1, ABL0, BOTH):
        assert cond in text
    for heading in ("Task: toxicity", "Task: ioi", "Reconstruction", "Identity slices", "CE loss delta against L0"):
        assert heading in text
    doc = real_doc(run_dirs[0])
    assert doc["config_hash"] in text  # summary: config hash and clean accuracy
    assert fmt(doc["conditions"]["clean"]["task"]["accuracy"]) in text

    imgs = [a for tag, a in page.tags if tag == "img"]
    # toxicity: logit diff, recovered, CE vs L0, identity heat-map; ioi: the first three
    assert len(imgs) == 7
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    links = [v for _, a in page.tags for k, v in a.items() if k in ("src", "href") and v]
    assert not [v for v in links if not v.startswith(("data:", "#"))], "page must not reference anything outside it"
    assert not [tag for tag, _ in page.tags if tag in ("link", "iframe", "object", "embed")]

    pngs = sorted((tmp_path / "site" / "report_files").glob("*.png"))
    assert [p.name for p in pngs] == sorted(
        [
            "toxicity_logit_diff.png",
            "toxicity_recovered.png",
            "toxicity_ce_vs_l0.png",
            "toxicity_identity_slices.png",
            "ioi_logit_diff.png",
            "ioi_recovered.png",
            "ioi_ce_vs_l0.png",
        ]
    )
    for p in pngs:
        assert p.read_bytes().startswith(PNG_MAGIC)
        pixels = imread(p)
        assert pixels.shape[0] > 150 and pixels.shape[1] > 500 and pixels[..., :3].std() > 0.05


def test_nulls_render_as_dashes_and_tables_hold_the_numbers(
    run_dirs: list[Path], tmp_path: Path, real_runs: dict[str, Path]
) -> None:
    lm = real_doc(real_runs["toxicity"])  # as the plain LM task would have it: no task metrics, no CE numbers
    lm.update(task={"name": "lm", "n_examples": 10}, slices={}, gaps={})
    for c in lm["conditions"].values():
        c["task"], c["lm"] = {}, {"ce_loss": None, "ce_loss_delta": None}
    write_results(tmp_path / "lm_run", lm, samples=None)
    out = build_report([*run_dirs[:2], tmp_path / "lm_run"], tmp_path / "r.html")
    html_text = out.read_text(encoding="utf-8")
    lm_section = html_text.split('id="task-lm"')[1]
    for note in (
        "No run of this task reports a logit difference.",
        "No condition of this task has a fraction",
        "No SAE condition of this task reports both L0 and a CE loss delta.",
    ):
        assert note in lm_section
    assert "<img" not in lm_section and "Identity slices" not in lm_section
    # R2's second SAE has null EV and L0 (the first two reconstruction columns); its MSE is the real number
    recon = real_doc(run_dirs[1])["conditions"][HOOK1]["reconstruction"][HOOK1]
    row = html_text.split(f"<td>R2</td><td>{HOOK1}</td><td>{HOOK1}</td>")[1].split("</tr>")[0]
    cells = [c.split(">")[1] for c in row.split("</td>")[:-1]]
    assert cells[:3] == ["—", "—", fmt(recon["mse"])]
    task = real_doc(run_dirs[0])["conditions"][HOOK0]["task"]
    half = (task["logit_diff_ci_high"] - task["logit_diff_ci_low"]) / 2
    assert f"<td class=num>{fmt(half)}</td>" in html_text  # the 95% CI column


def test_frontier_points_sum_l0_over_a_conditions_saes_and_skip_nulls(run_dirs: list[Path]) -> None:
    from saeeval.render.charts import frontier_points

    r1, r2 = load_runs(run_dirs[:2])
    both = r1.doc["conditions"][BOTH]
    points = {name: (x, y) for name, x, y in frontier_points(r1)}
    assert points[BOTH] == (
        both["reconstruction"][HOOK0]["l0"] + both["reconstruction"][HOOK1]["l0"],
        both["lm"]["ce_loss_delta"],
    )
    assert HOOK1 in points and HOOK1 not in {name for name, _, _ in frontier_points(r2)}  # null L0 in R2
    assert not any(name.startswith("zero_ablation") for name in points)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not on PATH (apt-get install -y chromium): cannot check the page in a browser")
    return exe


def _chromium_run(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_every_chart_and_no_script_error(
    run_dirs: list[Path], tmp_path: Path
) -> None:
    exe = _chromium()
    out = build_report([run_dirs[0].parents[2], run_dirs[2]], tmp_path / "report.html")
    dom = _chromium_run(exe, tmp_path / "profile", "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = next(a for tag, a in _parse(dom.stdout).tags if tag == "body")
    assert body["data-status"] == "ok"
    assert body["data-images-expected"] == body["data-images-rendered"] == "7"
    assert body["data-errors"] == "0"

    # control: the same check flags a chart that cannot be decoded and a script error
    broken = tmp_path / "broken.html"
    broken.write_text(
        out.read_text(encoding="utf-8")
        .replace("base64,iVBOR", "base64,AAAA", 1)
        .replace("</main>", "<script>noSuchFunction()</script></main>"),
        encoding="utf-8",
    )
    dom = _chromium_run(exe, tmp_path / "profile", "--dump-dom", broken.as_uri())
    body = next(a for tag, a in _parse(dom.stdout).tags if tag == "body")
    assert (body["data-status"], body["data-images-rendered"], body["data-errors"]) == ("error", "6", "3")

    shot = tmp_path / "shot.png"
    res = _chromium_run(exe, tmp_path / "profile", f"--screenshot={shot}", out.as_uri())
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


def test_cli_writes_the_report(run_dirs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "saeeval.report", str(run_dirs[0]), str(run_dirs[2]), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.exists() and (tmp_path / "x_files" / "ioi_logit_diff.png").exists()
    assert str(out) in res.stdout


def test_cli_without_results_prints_one_error_line_and_exits_2(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "saeeval.report", str(tmp_path), "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("saeeval: error: no results.json found under") and res.stderr.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "cannot read"),
        (json.dumps({"schema_version": 1, "hello": 1}), "is not a saeeval results file"),
        (json.dumps({"schema_version": 99, "conditions": {}, "task": {}}), "has schema_version 99"),
    ],
)
def test_unreadable_or_foreign_results_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: str, problem: str
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(content)
    assert main([str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeeval: error: ") and problem in err and err.count("\n") == 1


class _FakeWandbApi:
    """Stands in for wandb.Api's network transport only: answers the report's GraphQL calls and records them."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        self._service_api = self  # wandb_workspaces._graphql routes execute_graphql through this attribute
        self.app_url = "https://wandb.example"

    def projects(self, entity: str) -> list:
        return []

    def create_project(self, project: str, entity: str) -> None:
        self.calls.append(("create_project", {"project": project, "entity": entity}))

    def execute_graphql(self, query: str, variables: dict) -> dict:
        from wandb_workspaces.reports.v2 import gql

        self.calls.append((query, variables))
        if query == gql.projectInternalId:
            return {"project": {"internalId": "UHJvamVjdDox"}}
        assert query == gql.upsert_view
        if self.fail:
            raise ConnectionError("Max retries exceeded with url: /graphql\n(details)")
        view = {
            "id": "rep42",
            "name": variables["name"],
            "displayName": variables["displayName"],
            "description": variables["description"],
            "spec": variables["spec"],
            "project": {"name": variables["projectName"], "entityName": variables["entityName"]},
        }
        return {"upsertView": {"view": view}}


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> _FakeWandbApi:
    interface = pytest.importorskip("wandb_workspaces.reports.v2.interface")
    api = _FakeWandbApi()
    monkeypatch.setattr(interface, "_get_api", lambda: api)
    return api


def test_wandb_report_plots_the_logged_metric_keys_per_task(run_dirs: list[Path], fake_wandb: _FakeWandbApi) -> None:
    import wandb_workspaces.reports.v2 as wr

    from saeeval.publish.loggers import flat_metrics
    from saeeval.publish.wandb_report import wandb_report

    runs = load_runs(run_dirs)
    report = wandb_report(runs, "my-team", "saeeval")
    assert (report.entity, report.project, report.title) == ("my-team", "saeeval", "saeeval comparison: toxicity, ioi")
    per_task = ["H2", "PanelGrid", "H3", "MarkdownBlock"]
    assert [type(b).__name__ for b in report.blocks] == ["H1", "MarkdownBlock", *per_task, *per_task]
    assert [b.text for b in report.blocks if isinstance(b, wr.H2)] == ["Task: toxicity", "Task: ioi"]
    assert all(r.label in report.blocks[1].text for r in runs)

    tox_grid = report.blocks[3]
    assert [(rs.entity, rs.project, rs.name, rs.filters) for rs in tox_grid.runsets] == [
        ("my-team", "saeeval", "toxicity", "Config('task._target_') = 'saeeval.tasks.toxicity.ToxicityDataModule'")
    ]
    logged = set(flat_metrics(runs[0].doc)) | set(flat_metrics(runs[1].doc))
    plotted = [
        m
        for p in tox_grid.panels
        for m in [*getattr(p, "metrics", []), getattr(p, "x", None), getattr(p, "y", None)]
        if m
    ]
    assert set(plotted) <= logged, set(plotted) - logged
    assert {
        f"{HOOK0}/task/logit_diff",
        f"{BOTH}/task/logit_diff",
        f"{HOOK0}/task/logit_diff_recovered",
        f"{HOOK0}/reconstruction/{HOOK0}/l0",
        f"{HOOK0}/lm/ce_loss_delta",
        "slices/identity=paralyzed/clean/accuracy",
    } <= set(plotted)


def test_wandb_report_save_sends_the_built_spec(
    run_dirs: list[Path], fake_wandb: _FakeWandbApi, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    from wandb_workspaces.reports.v2 import gql

    argv = [str(run_dirs[0]), str(run_dirs[2]), "--out", str(tmp_path / "r.html"), "--wandb-report", "my-team/saeeval"]
    assert main(argv) == 0
    assert "saeeval: wandb report saved to https://wandb.example/my-team/saeeval/reports/" in capsys.readouterr().out
    (upsert,) = [v for q, v in fake_wandb.calls if q == gql.upsert_view]
    assert (upsert["entityName"], upsert["projectName"]) == ("my-team", "saeeval")
    assert upsert["displayName"] == "saeeval comparison: toxicity, ioi"
    spec = json.loads(upsert["spec"])
    assert f"{HOOK0}/task/logit_diff" in upsert["spec"] and len(spec["blocks"]) >= 10
    grids = [b for b in spec["blocks"] if b["type"] == "panel-grid"]
    assert [g["metadata"]["runSets"][0]["filters"]["filters"][0]["value"] for g in grids] == [
        "saeeval.tasks.toxicity.ToxicityDataModule",
        "saeeval.tasks.ioi.IOIDataModule",
    ]


def test_wandb_report_failures_are_one_line_errors(
    run_dirs: list[Path], fake_wandb: _FakeWandbApi, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    assert main([str(run_dirs[0]), "--out", str(out), "--wandb-report", "no-project"]) == 2
    assert capsys.readouterr().err == (
        "saeeval: error: --wandb-report wants ENTITY/PROJECT (e.g. my-team/saeeval), got 'no-project'\n"
    )
    fake_wandb.fail = True
    assert main([str(run_dirs[0]), "--out", str(out), "--wandb-report", "my-team/saeeval"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeeval: error: could not save the wandb report to my-team/saeeval: Max retries exceeded")
    assert err.count("\n") == 1 and out.exists()
