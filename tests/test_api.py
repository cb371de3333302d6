"""`saeeval.evaluate` on a model and SAEs built in memory with plain TransformerLens / sae_lens calls: the same
numbers as the CLI on the same config, and the model and SAEs left exactly as they were."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
import torch
from conftest import REAL_RUN
from sae_lens import SAE, HookedSAETransformer
from safetensors.torch import load_file
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

import saeeval
from saeeval.errors import SaeevalError
from saeeval.loading.zoo import default_zoo_root
from saeeval.render.catalog import short_name

pytestmark = pytest.mark.slow
ZOO = default_zoo_root() / "tiny"


def plain_model() -> HookedSAETransformer:
    """The zoo model loaded the way a notebook would, without saeeval's loader."""
    folder = ZOO / "model"
    cfg = HookedTransformerConfig(**json.loads((folder / "config.json").read_text()))
    model = HookedSAETransformer(cfg, tokenizer=PreTrainedTokenizerFast.from_pretrained(str(folder)))
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    return model


def plain_saes() -> list[SAE]:
    return [SAE.load_from_disk(str(p)) for p in sorted((ZOO / "saes").iterdir())]


def snapshot(model: torch.nn.Module, saes: list[SAE]) -> dict[str, Any]:
    """Everything evaluating could change: weights, requires_grad, train/eval modes, hooks, attached SAEs."""
    modules = [model, *saes]
    return {
        "weights": [{k: v.clone() for k, v in m.state_dict().items()} for m in modules],
        "grad": [[p.requires_grad for p in m.parameters()] for m in modules],
        "modes": [[s.training for s in m.modules()] for m in modules],
        "hooks": [
            [(len(s._forward_hooks), len(s._forward_pre_hooks), len(s._backward_hooks)) for s in m.modules()]
            for m in modules
        ],
        "acts_to_saes": dict(model.acts_to_saes),
        "devices": [str(model.cfg.device), *(str(s.device) for s in saes)],
    }


def assert_same_snapshot(a: dict[str, Any], b: dict[str, Any]) -> None:
    for wa, wb in zip(a["weights"], b["weights"], strict=True):
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for key in ("grad", "modes", "hooks", "acts_to_saes", "devices"):
        assert a[key] == b[key], key


def assert_close(a: Any, b: Any, where: str = "") -> int:
    """Same structure, every number equal to 1e-9 (relative or absolute); returns how many numbers compared."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        return sum(assert_close(a[k], b[k], f"{where}/{k}") for k in a)
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        return sum(assert_close(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (where, a, b)
        return 1
    assert a == b, (where, a, b)
    return 0


@pytest.fixture(scope="module")
def in_memory():
    model, saes = plain_model(), plain_saes()
    model.train()  # a notebook's model may be in train mode; evaluating must not leave it in eval mode
    before = snapshot(model, saes)
    options = dict(opt.split("=", 1) for opt in REAL_RUN if not opt.startswith("plot"))
    results = saeeval.evaluate(
        model,
        saes,
        "toxicity",
        limit=int(options["limit"]),
        batch_size=int(options["batch_size"]),
        splice=options["splice"],
    )
    return model, saes, before, results


def test_evaluate_equals_the_cli_on_the_same_config_to_1e9(in_memory, real_runs):
    _, _, _, results = in_memory
    cli = saeeval.Results.load(real_runs["toxicity"])
    for key in ("conditions", "slices", "gaps", "task", "mask", "model"):
        assert_close(results.document[key], cli.document[key], key)
    n = assert_close(results.samples, cli.samples, "samples")
    assert n == 24 * len(cli.conditions)  # one logit diff per example and condition
    assert "blocks.0.hook_resid_post+blocks.1.hook_resid_post" in results.conditions


def test_evaluate_leaves_model_and_saes_exactly_as_they_were(in_memory):
    model, saes, before, _ = in_memory
    assert_same_snapshot(before, snapshot(model, saes))
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_results_save_writes_the_cli_files_and_load_reads_them_back(in_memory, real_runs, tmp_path):
    _, _, _, results = in_memory
    path = results.save(tmp_path / "run")
    assert path == tmp_path / "run" / "results.json"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["results.json", "samples.jsonl"]
    again = saeeval.Results.load(tmp_path / "run")
    assert again.document == json.loads(json.dumps(results.document)) and again.samples == results.samples
    cli_doc = json.loads((real_runs["toxicity"] / "results.json").read_text())
    assert again.document.keys() == cli_doc.keys()


def test_results_views_read_the_document(in_memory):
    _, _, _, r = in_memory
    frame = r.to_pandas()
    assert list(frame.index) == list(r.conditions)
    hook = "blocks.0.hook_resid_post"
    assert frame.loc[hook, "task/logit_diff"] == r.conditions[hook]["task"]["logit_diff"]
    assert frame.loc[hook, f"reconstruction/{hook}/l0"] == r.conditions[hook]["reconstruction"][hook]["l0"]
    assert frame.columns[:4].tolist() == ["saes", "hooks", "ablation", "baseline"]
    assert (
        r.slices["identity=african"]["clean"]["accuracy"]
        == r.document["slices"]["identity=african"]["clean"]["accuracy"]
    )
    fig = r.plot()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [short_name(c) for c in r.conditions]  # the table's abbreviations
    assert labels[1] == "L0.resid_post"


def test_unknown_option_is_one_error_naming_the_known_ones():
    with pytest.raises(SaeevalError, match="unknown option colour=.*batch_size.*limit"):
        saeeval.evaluate(plain_model(), plain_saes()[:1], "ioi", colour="red")


@torch.no_grad()
def test_answer_position_is_the_tasks_declared_position_not_the_last_token(tmp_path):
    """A task whose answer is scored before trailing tokens: the logit diff is read at its declared position."""
    from saeeval.tasks.ioi import IOIDataModule

    class TrailingIOI(IOIDataModule):
        """IOI with two filler tokens after the prompt; the answer is still predicted at END."""

        def _example(self, idx, item):
            ex = super()._example(idx, item)
            return replace(ex, tokens=[*ex.tokens, *self.encode(" and the")])

    model, saes = plain_model().eval(), plain_saes()[:1]
    task = TrailingIOI(n_examples=8, batch_size=4)
    r = saeeval.evaluate(model, saes, task)
    for rec, ex in zip(r.samples, task.examples, strict=True):
        logits = model(torch.tensor([ex.tokens]))[0, ex.positions["END"]]
        assert rec["logit_diff"]["clean"] == pytest.approx(float(logits[ex.correct] - logits[ex.incorrect]), abs=1e-4)
        last = model(torch.tensor([ex.tokens]))[0, -1]
        assert abs(rec["logit_diff"]["clean"] - float(last[ex.correct] - last[ex.incorrect])) > 1e-3


def test_a_trainer_whose_precision_casts_the_weights_still_leaves_them_as_they_were():
    import lightning as L

    model, saes = plain_model(), plain_saes()[:1]
    before = snapshot(model, saes)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="64-true",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
    )
    r = saeeval.evaluate(model, saes, "ioi", trainer=trainer, limit=4)
    assert r.conditions["clean"]["task"]["n"] == 4
    assert_same_snapshot(before, snapshot(model, saes))
    assert model.cfg.dtype == torch.float32 and saes[0].dtype == torch.float32
    assert all(p.dtype == torch.float32 for m in (model, *saes) for p in m.parameters())


def test_evaluate_on_a_bfloat16_model_leaves_it_as_it_was():
    """A notebook's bf16 model (as saeeval.load_model gives it: TransformerLens keeps the attention's `IGNORE`
    buffer in float32): evaluating converts that buffer in Lightning's inference mode, and restoring the caller's
    weights afterwards must still work."""
    model = saeeval.load_model("tiny", device="cpu", dtype="bfloat16")
    saes = list(saeeval.load_saes(model, source="zoo", name="tiny").values())[:1]
    before = snapshot(model, saes)
    r = saeeval.evaluate(model, saes, "ioi", limit=4)
    assert r.conditions["clean"]["task"]["n"] == 4
    assert_same_snapshot(before, snapshot(model, saes))
    assert model.cfg.dtype == torch.bfloat16 and saes[0].dtype == torch.bfloat16
    assert not any(t.is_inference() for m in (model, *saes) for t in m.state_dict().values())


@pytest.mark.parametrize(
    ("device", "trainer", "expected"),
    [
        ("cuda:1", {"accelerator": "gpu", "devices": 1}, {"devices": [1]}),
        ("cuda:3", {"accelerator": "cuda", "devices": 1}, {"devices": [3]}),
        ("cuda:0", {"accelerator": "gpu", "devices": 1}, {}),
        ("cuda", {"accelerator": "gpu", "devices": 1}, {}),
        ("cuda:1", {"accelerator": "gpu", "devices": 2}, {}),  # the user chose several devices
        ("cuda:1", {"accelerator": "cpu", "devices": 1}, {}),
        ("cpu", {"accelerator": "cpu", "devices": 1}, {}),
    ],
)
def test_evaluate_keeps_a_model_on_cuda_k_on_that_gpu(device, trainer, expected):
    """Lightning's `devices=1` is cuda:0: a model on cuda:1 would be moved there and back; `devices=[1]` keeps it."""
    from saeeval.api.evaluate import same_gpu

    assert same_gpu(trainer, device) == expected
