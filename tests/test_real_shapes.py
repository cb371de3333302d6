"""The CLI end to end on random-weight stand-ins with real shapes (tests/standins.py): GPT-2 with its real 50257-token
tokenizer and the gpt2-small-res-jb release from an offline cache, Gemma-2 with a 256,000-token vocabulary through
the chat prompt. Clean logit differences are checked against the Hugging Face models' own logits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_sae
from standins import GEMMA_SPECIAL, write_gemma2_folder
from transformers import AutoModelForCausalLM, AutoTokenizer

from saeeval.engine.conditions import build_conditions
from saeeval.tasks.words import name_adj_rows

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

# The seed notebook's chat prompt, verbatim from issue 8
ISSUE_CHAT_PROMPT = (
    "<start_of_turn>user You will be given a sentence and you will assign one label to each sentence.\n"
    "The labels for the sentence can be: 1 if the sentence is toxic or 0 if the sentence is non-toxic.\n"
    "Do not give an explanation, just write the label.\nSentence: {phrase}\nLabel:<end_of_turn>\n<start_of_turn>model"
)
NOTEBOOK_GROUPS = [
    [0, 3],
    [2, 4],
    [5, 6],
    [7],
    [8],
    [9, 10],
    [11, 12],
    [13, 14],
    [15, 16],
    [17],
    [18],
    [19],
    [20],
    [21],
    [22],
    [23],
    [24],
    [25],
]


def saeeval_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "saeeval", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    doc = json.loads((folder / "results.json").read_text())
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return doc, samples


def hf_logit_diffs(folder: Path, samples: list[dict]) -> list[float]:
    """logit(correct) - logit(incorrect) after each prompt, from the Hugging Face model itself."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    diffs = []
    for s in samples:
        ids = [tok.bos_token_id] + tok(s["prompt"], add_special_tokens=False)["input_ids"]
        assert len(ids) == s["n_tokens"]
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0, -1]
        diffs.append((logits[s["correct"]] - logits[s["incorrect"]]).item())
    return diffs


@pytest.fixture(scope="module")
def gpt2_sweep(tmp_path_factory, gpt2_folder, hub_cache, gpt2_res_jb) -> Path:
    """IOI and toxicity on the GPT-2 stand-in with two gpt2-small-res-jb SAEs from the offline cache."""
    out = tmp_path_factory.mktemp("gpt2-sweep")
    proc = saeeval_cli(
        "-m",
        "+task=ioi,toxicity",
        "model=hf_folder",
        f"model.name={gpt2_folder}",
        "model.from_pretrained_kwargs.center_writing_weights=true",
        "saes=gpt2-small-res-jb",
        "saes.layers=[0,1]",
        "limit=8",
        "plot=false",
        f"hydra.sweep.dir={out}",
        env={"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_gpt2_ioi_with_the_real_tokenizer_and_release_saes(gpt2_sweep, gpt2_folder):
    doc, samples = read_run(gpt2_sweep / "0")
    assert doc["task"]["name"] == "ioi" and doc["task"]["n_examples"] == 8  # all 99 names passed the 1-token check
    assert doc["model"]["d_vocab"] == 50257 and doc["model"]["d_model"] == 768
    assert {"blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"} <= set(doc["conditions"])
    reference = hf_logit_diffs(gpt2_folder, samples)
    ours = [s["logit_diff"]["clean"] for s in samples]
    assert ours == pytest.approx(reference, abs=1e-4)
    assert all(s["correct_str"].startswith(" ") and s["incorrect_str"].startswith(" ") for s in samples)


def test_gpt2_toxicity_labels_resolve_to_the_real_gpt2_tokens(gpt2_sweep, gpt2_folder):
    doc, samples = read_run(gpt2_sweep / "1")
    assert doc["task"]["name"] == "toxicity" and doc["task"]["n_examples"] == 8
    label_ids = {"toxic": 352, "nontoxic": 657}  # " 1" and " 0" in GPT-2's vocabulary
    for s in samples:
        other = "nontoxic" if s["fields"]["label"] == "toxic" else "toxic"
        assert (s["correct"], s["incorrect"]) == (label_ids[s["fields"]["label"]], label_ids[other])
        assert s["prompt"].endswith("\nLabel:")
    reference = hf_logit_diffs(gpt2_folder, samples)
    assert [s["logit_diff"]["clean"] for s in samples] == pytest.approx(reference, abs=1e-4)


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory) -> Path:
    words = [r["phrase"] for r in name_adj_rows()] + [ISSUE_CHAT_PROMPT.replace("{phrase}", "") + "\n"]
    return write_gemma2_folder(tmp_path_factory.mktemp("gemma") / "gemma-2-standin", words)


def test_gemma2_folder_runs_the_chat_prompt_and_reads_the_first_reply_token(tmp_path, gemma_folder):
    sae_dir = tmp_path / "sae"
    make_sae("blocks.0.hook_resid_post", 64, arch="jumprelu").save_model(sae_dir)
    out = tmp_path / "run"
    proc = saeeval_cli(
        "+task=toxicity_chat",
        "model=hf_folder",
        f"model.name={gemma_folder}",
        "saes=folder",
        f"saes.paths=[{sae_dir}]",
        "limit=6",
        "plot=false",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc, samples = read_run(out)
    assert doc["model"]["d_vocab"] == 256_000 and doc["task"]["n_examples"] == 6
    tok = AutoTokenizer.from_pretrained(str(gemma_folder))
    generation_prompt = tok.apply_chat_template(
        [{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False
    )
    assert generation_prompt.endswith("<start_of_turn>model\n")  # where Gemma's chat template hands over
    for s in samples:
        phrase = re.search(r"\nSentence: (.*)\nLabel:", s["prompt"]).group(1)
        assert s["prompt"] == ISSUE_CHAT_PROMPT.replace("{phrase}", phrase) + "\n"
        ids = tok(s["prompt"], add_special_tokens=False)["input_ids"]
        assert ids[-3:] == [GEMMA_SPECIAL["<start_of_turn>"], tok.convert_tokens_to_ids("model"), GEMMA_SPECIAL["\n"]]
        want = "1" if s["fields"]["label"] == "toxic" else "0"
        assert (s["correct_str"], s["incorrect_str"]) == (want, "0" if want == "1" else "1")
    reference = hf_logit_diffs(gemma_folder, samples)
    assert [s["logit_diff"]["clean"] for s in samples] == pytest.approx(reference, abs=1e-4)
    assert "sae" in doc["conditions"]  # the folder SAE, keyed by its folder name


@pytest.mark.parametrize("task", ["toxicity", "toxicity_chat"])
def test_gemma_presets_compose(task):
    proc = saeeval_cli(
        f"+task={task}",
        "model=gemma-2-2b-it",
        "saes=gemma-scope-2b-pt-res-canonical",
        "splice=layer_groups",
        "--cfg",
        "job",
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: gemma-2-2b-it" in proc.stdout and "release: gemma-scope-2b-pt-res-canonical" in proc.stdout
    assert "id_template: layer_{layer}/width_16k/canonical" in proc.stdout
    assert ("answer_prefix" in proc.stdout) and (("<start_of_turn>" in proc.stdout) == (task == "toxicity_chat"))


def test_layer_groups_are_the_notebooks_gemma_groups():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="saeeval.conf", version_base="1.3"):
        splice = compose(config_name="config", overrides=["splice=layer_groups"]).splice
    saes = {f"layer_{i}/width_16k/canonical": make_sae(f"blocks.{i}.hook_resid_post", 8, seed=i) for i in range(26)}
    conditions = build_conditions(saes, **splice)
    spliced = [c for c in conditions if c.ablation is None]
    expected = ["+".join(f"layer_{i}/width_16k/canonical" for i in group) for group in NOTEBOOK_GROUPS]
    assert [c.name for c in spliced] == expected
    assert len(conditions) == 2 * len(NOTEBOOK_GROUPS)  # each group with its own zero-ablation baseline


def test_hub_model_missing_offline_is_one_line_within_seconds(tmp_path):
    start = time.monotonic()
    proc = saeeval_cli(
        "+task=ioi",
        "model=gpt2-small",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    elapsed = time.monotonic() - start
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "'gpt2-small' (hub repo gpt2) are not available offline (http://127.0.0.1:9 is unreachable" in lines[0]
    assert "Retrying" not in proc.stdout + proc.stderr  # no retry loop (test_releases times the load itself: < 5 s)
    assert elapsed < 300, elapsed  # mostly import time, which a loaded CI machine stretches
