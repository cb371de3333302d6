"""Device and precision follow the trainer: TransformerLens's cfg and each SAE's bookkeeping track the parameters
Lightning placed, metric states stay float64 whatever the precision, and half precision stays within stated bounds.

The CLI runs start together (one process each) so the module costs about one run's time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf
from run_files import differences

from saeeval.engine.conditions import build_conditions
from saeeval.engine.masks import special_token_ids
from saeeval.engine.module import SAEEvalModule
from saeeval.results.config_hash import config_hash
from saeeval.results.files import flat_numbers

pytestmark = pytest.mark.slow

# features with the mean baseline: the feature callback's mean pass runs forwards before the module's on_test_start
COMMON = [
    "+task=ioi",
    "limit=32",
    "batch_size=16",
    "plot=false",
    "splice.ablation=mean",
    "features=attribution",
    "features.baseline=mean",
]
RUNS = {
    "float32": [],
    "float64": ["dtype=float64"],
    "64-true": ["+trainer.precision=64-true"],
    "bfloat16": ["dtype=bfloat16"],
    "bf16-true": ["+trainer.precision=bf16-true"],
    "bf16-mixed": ["+trainer.precision=bf16-mixed"],
    "16-mixed": ["+trainer.precision=16-mixed"],  # Lightning runs fp16 autocast on a GPU, bf16 on the CPU
}
# bf16 against float32 on the zoo (clean logit diff ~8.5): stated bounds, measured worst cases about a third of them.
BF16_LOGIT_DIFF_ABS = 0.1
BF16_CE_REL = 0.02
BF16_EV_ABS = 0.01


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name, extra in RUNS.items():
        out = tmp_path_factory.mktemp(name.replace("-", "_"))
        cmd = [sys.executable, "-m", "saeeval", *COMMON, *extra, f"hydra.run.dir={out}"]
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out)
    docs = {}
    for name, (proc, out) in procs.items():
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}:\n{stderr[-3000:]}"
        docs[name] = json.loads((out / "results.json").read_text())
        docs[name]["features"] = json.loads((out / "features.json").read_text())
    return docs


def assert_all_close(a: dict, b: dict, rel: float) -> None:
    """Every number of results.json's conditions agrees to `rel`, and features.json (its config hash aside) to
    1e-6 (its top latents, examples and CIs included)."""
    fa, fb = flat_numbers(a["conditions"]), flat_numbers(b["conditions"])
    assert fa.keys() == fb.keys() and len(fa) > 100
    for key, value in fa.items():
        assert math.isclose(fb[key], value, rel_tol=rel, abs_tol=rel * 1e-3), (key, value, fb[key])
    features = [{k: v for k, v in doc["features"].items() if k != "config_hash"} for doc in (a, b)]
    assert features[0]["saes"] and differences(*features) == []


def test_trainer_precision_64_true_equals_dtype_float64(runs):
    assert_all_close(runs["float64"], runs["64-true"], rel=1e-12)
    # and float64 really differs from float32 (so the comparison above can fail)
    f32, f64 = flat_numbers(runs["float32"]["conditions"]), flat_numbers(runs["float64"]["conditions"])
    assert max(abs(f32[k] - f64[k]) / max(abs(f64[k]), 1e-12) for k in f64) > 1e-7


def test_trainer_precision_bf16_true_equals_dtype_bfloat16_with_exact_counts(runs):
    assert_all_close(runs["bfloat16"], runs["bf16-true"], rel=1e-12)
    counts = {k: v for k, v in flat_numbers(runs["float32"]["conditions"]).items() if k.endswith(("/n", "/n_tokens"))}
    bf16 = flat_numbers(runs["bf16-true"]["conditions"])
    assert counts and all(bf16[k] == v for k, v in counts.items())  # float64 states: 638 tokens stay 638


@pytest.mark.parametrize("half", ["bfloat16", "bf16-mixed", "16-mixed"])
def test_half_precision_stays_within_stated_tolerance_of_float32(runs, half):
    ref, got_all = runs["float32"]["conditions"], runs[half]["conditions"]
    for name, cond in ref.items():
        got = got_all[name]
        assert abs(got["task"]["logit_diff"] - cond["task"]["logit_diff"]) <= BF16_LOGIT_DIFF_ABS, name
        assert got["lm"]["ce_loss"] == pytest.approx(cond["lm"]["ce_loss"], rel=BF16_CE_REL), name
        for hook, recon in cond.get("reconstruction", {}).items():
            assert abs(got["reconstruction"][hook]["explained_variance"] - recon["explained_variance"]) <= BF16_EV_ABS
    assert got_all["clean"]["task"]["logit_diff"] != ref["clean"]["task"]["logit_diff"]  # it really ran in half


def test_feature_attribution_in_bfloat16_finds_the_float32_top_latents(runs):
    """The mean pass and attribution ran in bf16 (placement followed before the callback's forwards): its top
    latents are float32's, reordered at most among near-ties."""
    for name, ref in runs["float32"]["features"]["saes"].items():
        got = runs["bf16-true"]["features"]["saes"][name]
        top = [row["feature"] for row in ref["top"][:5]]
        assert len(set(top) & {row["feature"] for row in got["top"][:10]}) >= 4, name


def test_config_hash_tracks_precision_and_accelerator_but_not_placement(runs):
    hashes = {name: doc["config_hash"] for name, doc in runs.items()}
    assert len(set(hashes.values())) == len(hashes)  # a rerun in another precision is never skipped as done
    base = runs["float32"]["config"]
    same = [
        {**base, "device": "cuda"},
        {**base, "trainer": {**base["trainer"], "devices": 4, "strategy": "ddp"}},
    ]
    assert {config_hash(c) for c in same} == {config_hash(base)}
    other = {**base, "trainer": {**base["trainer"], "accelerator": "gpu"}}
    assert config_hash(other) != config_hash(base)


@pytest.mark.parametrize("precision", ["64-true", "bf16-true"])
def test_bookkeeping_follows_trainer_placement(precision):
    """After Lightning converts the module, TL's cfg.dtype/device and each SAE's dtype/device equal the
    parameters', and every metric state is still float64."""
    with initialize_config_module("saeeval.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+task=ioi", "limit=8", "device=cpu"])
    model = instantiate(cfg.model)
    saes = instantiate(cfg.saes)(model)
    task = instantiate(cfg.task)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    module = SAEEvalModule(
        model,
        saes,
        build_conditions(saes, **cfg.splice),
        instantiate(cfg.mask),
        special_token_ids(model.tokenizer),
        task.has_answers,
        len(task.groups),
    )
    trainer = L.Trainer(
        **{k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if k != "_target_"}, precision=precision
    )
    trainer.test(module, datamodule=task, verbose=False)
    param = next(model.parameters())
    assert param.dtype == model.cfg.dtype != torch.float32
    assert torch.device(model.cfg.device) == param.device
    for sae in saes.values():
        sae_param = next(sae.parameters())
        assert sae.dtype == sae_param.dtype == param.dtype and sae.device == sae_param.device
        assert sae.cfg.dtype == str(param.dtype).removeprefix("torch.")
    states = [
        t
        for m in module.metrics.modules()
        if hasattr(m, "_defaults")
        for key in m._defaults
        if isinstance(t := getattr(m, key), torch.Tensor) and t.is_floating_point()
    ]
    assert states and all(t.dtype == torch.float64 for t in states)
