"""`task.answer_mode` through the real CLI: results.json's generation blocks and samples.jsonl's texts, read back
from disk and checked against the samples, hand-written greedy loops with plain hooks, and (on the Gemma-2-shaped
stand-in, chat template) Hugging Face's own `generate`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_sae
from rich.console import Console
from sae_lens import SAE
from standins import write_gemma2_folder
from test_generation import hand_greedy, sae_replace
from transformers import AutoModelForCausalLM, AutoTokenizer

from saeeval.api.results import Results
from saeeval.engine.masks import special_token_ids
from saeeval.loading.models import load_model
from saeeval.loading.zoo import default_zoo_root
from saeeval.publish.html_report import build_report
from saeeval.publish.loggers import flat_metrics, samples_table
from saeeval.tasks.words import name_adj_rows

pytestmark = pytest.mark.slow
torch.set_num_threads(1)
ZOO = default_zoo_root() / "tiny"


def cli(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", *args, "plot=false", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    doc = json.loads((folder / "results.json").read_text())
    return doc, [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def prompt_ids(tok, sample: dict) -> list[int]:
    return [tok.bos_token_id] + tok(sample["prompt"], add_special_tokens=False)["input_ids"]


def test_toxicity_both_writes_generation_blocks_and_texts(tmp_path):
    proc = cli(tmp_path, "+task=toxicity", "task.answer_mode=both", "task.max_new_tokens=4", "limit=12", "batch_size=6")
    assert "generated answers · 4 new tokens" in proc.stdout and "saeeval · toxicity" in proc.stdout  # both tables
    doc, samples = read_run(tmp_path)
    assert doc["task"]["options"]["answer_mode"] == "both" and doc["task"]["options"]["max_new_tokens"] == 4
    tok = load_model("tiny").tokenizer
    assert len(samples) == 12
    for name, cond in doc["conditions"].items():
        gens = [s["generation"][name] for s in samples]
        g = cond["generation"]
        assert g["n"] == 12 and g["n_parsed"] == sum(x["answer"] is not None for x in gens)
        assert g["n_correct"] == sum(x["correct"] for x in gens)
        assert g["accuracy"] == pytest.approx(g["n_correct"] / 12)
        for s, x in zip(samples, gens, strict=True):
            assert 1 <= len(x["tokens"]) <= 4
            full = tok.decode(prompt_ids(tok, s) + x["tokens"])
            assert full == tok.decode(prompt_ids(tok, s)) + x["text"]  # the text is what the tokens add
            assert x["correct"] == (x["answer"] == s["correct_str"].strip())
        for key, per in doc["slices"].items():
            field, value = key.split("=")
            sub = [s["generation"][name] for s in samples if s["fields"][field] == value]
            assert per[name]["generation"]["n"] == len(sub)
            assert per[name]["generation"]["n_correct"] == sum(x["correct"] for x in sub)
    assert doc["conditions"]["clean"]["generation"]["accuracy"] == 1.0
    assert {s["generation"]["clean"]["text"] for s in samples} <= {" 0 <eos>", " 1 <eos>"}

    # the one results model: Results API, loggers' flat metrics, the HTML report
    frame = Results.load(tmp_path).to_pandas()
    for name, cond in doc["conditions"].items():
        for key in ("accuracy", "unparsed_rate", "agreement", "n"):
            assert frame.loc[name, f"generation/{key}"] == cond["generation"][key]
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(Results.load(tmp_path).table(80))
    text = console.export_text()
    assert "gen acc" in text and "unparsed" in text and max(len(line) for line in text.splitlines()) <= 80
    flat = flat_metrics(doc)
    assert flat["clean/generation/accuracy"] == 1.0
    assert flat["slices/identity=african/clean/generation/n"] == doc["slices"]["identity=african"]["clean"]["n"]
    columns, rows = samples_table(doc, tmp_path)
    col = columns.index("generated/clean")
    assert [row[col] for row in rows] == [s["generation"]["clean"]["text"] for s in samples]
    page = build_report([tmp_path], tmp_path / "report.html").read_text()
    assert "<h3>Generated answers</h3>" in page and "agrees with LD label" in page and "identity=african" in page


def test_ioi_generate_with_a_splice_at_s2_only(tmp_path):
    """mask=positions [S2]: the prompt is spliced at S2 only and no generated position is (a named position is a
    prompt position); answer_mode=generate shows the generated answers instead of the logit-difference table."""
    proc = cli(
        tmp_path,
        "+task=ioi",
        "task.answer_mode=generate",
        "mask=positions",
        "mask.positions=[S2]",
        "limit=8",
        "batch_size=4",
    )
    assert "generated answers" in proc.stdout and "saeeval · ioi" not in proc.stdout  # no logit-diff table
    doc, samples = read_run(tmp_path)
    model = load_model("tiny")
    saes = {
        SAE.load_from_disk(str(p)).cfg.metadata.hook_name: SAE.load_from_disk(str(p))
        for p in sorted((ZOO / "saes").iterdir())
    }
    eos, n = model.tokenizer.eos_token_id, doc["task"]["options"]["max_new_tokens"]
    for name, cond in doc["conditions"].items():
        hooks = [] if name == "clean" else cond["hooks"]
        replaces = {h: torch.zeros_like if cond["ablation"] == "zero" else sae_replace(saes[h]) for h in hooks}
        for s in samples:
            s2 = s["positions"]["S2"]
            want = hand_greedy(model, prompt_ids(model.tokenizer, s), n, replaces, lambda i, t, s2=s2: i == s2, eos)
            assert s["generation"][name]["tokens"] == want, (name, s["id"])
    assert doc["conditions"]["clean"]["generation"]["accuracy"] == 1.0
    assert all(s["generation"]["clean"]["answer"] == s["correct_str"].strip() for s in samples)


CHAT_WORDS = (
    "<start_of_turn>user You will be given a sentence and you will assign one label to each sentence.\n"
    "The labels for the sentence can be: 1 if the sentence is toxic or 0 if the sentence is non-toxic.\n"
    "Do not give an explanation, just write the label.\nSentence: \nLabel:<end_of_turn>\n"
    "<start_of_turn>model\n"
)


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory) -> Path:
    words = [r["phrase"] for r in name_adj_rows()] + [CHAT_WORDS]
    return write_gemma2_folder(tmp_path_factory.mktemp("gemma") / "gemma-2-standin", words)


def test_chat_template_path_generates_what_hugging_face_and_plain_hooks_generate(tmp_path, gemma_folder):
    sae_dir = tmp_path / "sae"
    make_sae("blocks.0.hook_resid_post", 64, arch="jumprelu").save_model(sae_dir)
    out = tmp_path / "run"
    cli(
        out,
        "+task=toxicity_chat",
        "task.answer_mode=both",
        "task.max_new_tokens=4",
        "model=hf_folder",
        f"model.name={gemma_folder}",
        "saes=folder",
        f"saes.paths=[{sae_dir}]",
        "limit=4",
        "batch_size=4",
    )
    doc, samples = read_run(out)
    assert set(doc["conditions"]) == {"clean", "sae", "zero_ablation@blocks.0.hook_resid_post"}
    tok = AutoTokenizer.from_pretrained(str(gemma_folder))
    hf = AutoModelForCausalLM.from_pretrained(str(gemma_folder)).eval()
    model = load_model(str(gemma_folder), source="folder")
    special, eos = set(special_token_ids(model.tokenizer)), tok.eos_token_id
    sae = SAE.load_from_disk(str(sae_dir))
    for s in samples:
        ids = prompt_ids(tok, s)
        assert ids[-1] == tok.convert_tokens_to_ids("\n")  # generation starts after "<start_of_turn>model\n"
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor([ids]), max_new_tokens=4, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id
            )[0, len(ids) :].tolist()
        ref = ref[: ref.index(eos) + 1] if eos in ref else ref
        assert s["generation"]["clean"]["tokens"] == ref
        for name, replace in (("sae", sae_replace(sae)), ("zero_ablation@blocks.0.hook_resid_post", torch.zeros_like)):
            want = hand_greedy(model, ids, 4, {"blocks.0.hook_resid_post": replace}, lambda i, t: t not in special, eos)
            assert s["generation"][name]["tokens"] == want, (name, s["id"])
    for name, cond in doc["conditions"].items():
        assert cond["generation"]["n"] == 4
        assert cond["generation"]["n_parsed"] == sum(s["generation"][name]["answer"] is not None for s in samples)
