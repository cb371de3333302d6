"""The evaluation core in-process: its numbers against direct HookedSAETransformer computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from saeeval.cli.job import run_config
from saeeval.engine.splicing import encode_decode
from saeeval.metrics.reconstruction import Reconstruction

pytestmark = pytest.mark.slow


def run(tmp_path: Path, *overrides: str) -> tuple[dict, list[dict], object]:
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        cfg = compose("config", overrides=["plot=false", *overrides])
    doc = run_config(cfg, tmp_path).document
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    return doc, samples, cfg


@pytest.fixture(scope="module")
def zoo():
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+task=ioi"])
    model = instantiate(cfg.model)
    return model, instantiate(cfg.saes)(model)


def task_tokens(cfg, model) -> dict[int, list[int]]:
    task = instantiate(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    return {ex.id: ex for ex in task.examples}


@pytest.mark.parametrize("task", ["ioi", "toxicity"])
@torch.no_grad()
def test_logit_diffs_equal_direct_run_with_saes(tmp_path, zoo, task):
    model, saes = zoo
    doc, samples, cfg = run(tmp_path, f"+task={task}", "limit=24", "batch_size=8")
    examples = task_tokens(cfg, model)
    for rec in samples[:12]:
        ex = examples[rec["id"]]
        tokens = torch.tensor([ex.tokens])
        clean = model(tokens)[0, -1]
        assert rec["logit_diff"]["clean"] == pytest.approx(float(clean[ex.correct] - clean[ex.incorrect]), abs=1e-4)
        for name, sae in saes.items():
            logits = model.run_with_saes(tokens, saes=[sae], exclude_special_tokens=True)[0, -1]
            direct = float(logits[ex.correct] - logits[ex.incorrect])
            assert rec["logit_diff"][name] == pytest.approx(direct, abs=1e-4), name
    lds = [r["logit_diff"]["blocks.1.hook_resid_post"] for r in samples]
    assert doc["conditions"]["blocks.1.hook_resid_post"]["task"]["logit_diff"] == pytest.approx(sum(lds) / len(lds))
    assert model.acts_to_saes == {}  # splicing left no SAE attached


@torch.no_grad()
def test_excluding_bos_changes_reconstruction_as_expected(tmp_path, zoo):
    """With BOS included (mask=none) each prompt adds exactly one token, and both runs' metrics equal a reference
    built by hand over exactly the positions each mask keeps (BOS activations included or not)."""
    model, saes = zoo
    hook = "blocks.0.hook_resid_post"
    with_bos, _, cfg = run(tmp_path / "none", "+task=ioi", "limit=16", "mask=none", f"saes.hooks=[{hook}]")
    without, _, _ = run(tmp_path / "default", "+task=ioi", "limit=16", f"saes.hooks=[{hook}]")
    r_with = with_bos["conditions"][hook]["reconstruction"][hook]
    r_without = without["conditions"][hook]["reconstruction"][hook]
    assert r_with["n_tokens"] == r_without["n_tokens"] + 16
    assert r_with["mse"] != pytest.approx(r_without["mse"], rel=1e-3)

    examples = task_tokens(cfg, model)
    for drop_bos, expected in ((False, r_with), (True, r_without)):
        ref = Reconstruction(saes[hook].cfg.d_in, saes[hook].cfg.d_sae)
        for ex in examples.values():
            _, cache = model.run_with_cache(torch.tensor([ex.tokens]), names_filter=[hook])
            acts = cache[hook][0, 1:] if drop_bos else cache[hook][0]
            ref.update(*encode_decode(saes[hook], acts))
        for key, value in ref.compute().items():
            assert expected[key] == pytest.approx(float(value), rel=1e-5, abs=1e-6), key
