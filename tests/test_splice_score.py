"""Splice mask vs score mask: a splice at IOI S2 only, scored at every real position, against plain
TransformerLens `run_with_hooks` with a hand-written hook (CLI and notebook API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import saeeval

pytestmark = pytest.mark.slow

HOOK = "blocks.0.hook_resid_post"
N = 16


@pytest.fixture(scope="module")
def zoo():
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+task=ioi", f"limit={N}"])
    model = instantiate(cfg.model)
    saes = instantiate(cfg.saes)(model)
    task = instantiate(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    return model, saes[HOOK], task.examples


@torch.no_grad()
def hand_reference(model, sae, examples) -> dict[str, float]:
    """CE/KL over every real non-BOS position of each unpadded prompt, the SAE (or zeros) written at S2 alone by
    a hand-written hook; CE counts a prediction when its input and target are both real non-BOS tokens."""
    bos = model.tokenizer.bos_token_id
    sums = {k: 0.0 for k in ("ce_clean", "ce_sae", "ce_abl", "kl_sae", "kl_abl")}
    n_ce = n_kl = 0
    for ex in examples:
        tokens = torch.tensor([ex.tokens])
        s2 = ex.positions["S2"]

        def splice_sae(act, hook, s2=s2):
            act = act.clone()
            act[0, s2] = sae.decode(sae.encode(act[0, s2]))
            return act

        def zero(act, hook, s2=s2):
            act = act.clone()
            act[0, s2] = 0
            return act

        clean = model(tokens)[0].double()
        runs = {
            "sae": model.run_with_hooks(tokens, fwd_hooks=[(HOOK, splice_sae)])[0].double(),
            "abl": model.run_with_hooks(tokens, fwd_hooks=[(HOOK, zero)])[0].double(),
        }
        keep = tokens[0] != bos
        ce_pos = (keep[:-1] & keep[1:]).nonzero()[:, 0]
        kl_pos = keep.nonzero()[:, 0]
        targets = tokens[0, ce_pos + 1]
        p_clean = F.log_softmax(clean, -1)
        sums["ce_clean"] += float(F.cross_entropy(clean[ce_pos], targets, reduction="sum"))
        for name, logits in runs.items():
            sums[f"ce_{name}"] += float(F.cross_entropy(logits[ce_pos], targets, reduction="sum"))
            log_q = F.log_softmax(logits, -1)
            sums[f"kl_{name}"] += float((p_clean.exp() * (p_clean - log_q)).sum(-1)[kl_pos].sum())
        n_ce += len(ce_pos)
        n_kl += len(kl_pos)
    ref = {k: v / (n_ce if k.startswith("ce") else n_kl) for k, v in sums.items()}
    ref["ce_loss_score"] = (ref["ce_abl"] - ref["ce_sae"]) / (ref["ce_abl"] - ref["ce_clean"])
    ref["kl_div_score"] = (ref["kl_abl"] - ref["kl_sae"]) / ref["kl_abl"]
    return ref


def assert_matches(conditions: dict, ref: dict[str, float]) -> None:
    spliced, ablated = conditions[HOOK]["lm"], conditions[f"zero_ablation@{HOOK}"]["lm"]
    for key in ("ce_loss", "kl_div", "ce_loss_score", "kl_div_score"):
        assert spliced[key] is not None, key
    assert conditions["clean"]["lm"]["ce_loss"] == pytest.approx(ref["ce_clean"], rel=1e-5, abs=1e-5)
    assert spliced["ce_loss"] == pytest.approx(ref["ce_sae"], rel=1e-5, abs=1e-5)
    assert ablated["ce_loss"] == pytest.approx(ref["ce_abl"], rel=1e-5, abs=1e-5)
    assert spliced["kl_div"] == pytest.approx(ref["kl_sae"], rel=1e-5, abs=1e-5)
    assert ablated["kl_div"] == pytest.approx(ref["kl_abl"], rel=1e-5, abs=1e-5)
    assert spliced["ce_loss_score"] == pytest.approx(ref["ce_loss_score"], rel=1e-5, abs=1e-5)
    assert spliced["kl_div_score"] == pytest.approx(ref["kl_div_score"], rel=1e-5, abs=1e-5)


def test_cli_splice_at_s2_scores_every_real_position_like_a_hand_written_hook(tmp_path: Path, zoo) -> None:
    model, sae, examples = zoo
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "saeeval",
            "+task=ioi",
            "mask=positions",
            "mask.positions=[S2]",
            f"limit={N}",
            "batch_size=8",
            f"saes.hooks=[{HOOK}]",
            "plot=false",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["mask"]["splice"]["positions"] == ["S2"] and doc["mask"]["score"]["positions"] is None
    ref = hand_reference(model, sae, examples)
    assert ref["kl_sae"] > 1e-4 and ref["ce_abl"] > ref["ce_clean"]  # the splice at S2 moves later positions
    assert_matches(doc["conditions"], ref)
    n_tokens = doc["conditions"][HOOK]["reconstruction"][HOOK]["n_tokens"]
    assert n_tokens == N  # reconstruction is counted where the SAE is spliced: one S2 per prompt


def test_notebook_api_takes_the_splice_and_score_masks(zoo) -> None:
    model, sae, examples = zoo
    results = saeeval.evaluate(
        model, {HOOK: sae}, task="ioi", limit=N, batch_size=8, mask={"splice": {"positions": ["S2"]}}
    )
    assert results.document["mask"]["splice"]["positions"] == ["S2"]
    assert_matches(results.conditions, hand_reference(model, sae, examples))
    shorthand = saeeval.evaluate(
        model, {HOOK: sae}, task="ioi", limit=N, batch_size=8, mask="positions", positions=["S2"]
    )
    assert shorthand.conditions[HOOK]["lm"] == results.conditions[HOOK]["lm"]
