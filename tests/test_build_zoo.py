"""scripts/build_zoo.py: a --fast build has the zoo layout and loads; the committed zoo meets its bars."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sae_lens import SAE, HookedSAETransformer

from saeeval.loading.zoo import load_zoo_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_zoo.py"
ZOO = ROOT / "saeeval" / "zoo" / "tiny"
HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z")
SPECIALS = ["<bos>", "<eos>", "<pad>", "<unk>"]


def run_fast_build(out: Path, seed: int = 0) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--out", str(out), "--seed", str(seed)],
        check=True,
        capture_output=True,
        timeout=120,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_script():
    spec = importlib.util.spec_from_file_location("build_zoo", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_zoo"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fast_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    run_fast_build(out)
    return out


@pytest.mark.slow
def test_fast_build_writes_the_zoo_layout(fast_zoo: Path) -> None:
    expected = [
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "corpus/heldout.txt",
        "card.json",
    ] + [f"saes/{h}/{f}" for h in HOOKS for f in ("cfg.json", "sae_weights.safetensors")]
    assert [p for p in expected if not (fast_zoo / p).is_file()] == []
    card = json.loads((fast_zoo / "card.json").read_text())
    assert card["seed"] == 0 and set(card["saes"]) == set(HOOKS)
    assert {"ioi", "toxicity", "lm_ce_heldout_corpus"} <= set(card["scores"])
    assert len((fast_zoo / "corpus" / "heldout.txt").read_text().splitlines()) == card["data"]["n_corpus_lines"]


@pytest.mark.slow
def test_fast_model_loads_with_word_tokenizer_and_single_bos(fast_zoo: Path) -> None:
    cfg = json.loads((fast_zoo / "model" / "config.json").read_text())
    model = load_zoo_folder(fast_zoo / "model")
    assert cfg["model_name"] == "tiny" and model.cfg.default_prepend_bos and cfg["d_vocab"] == len(model.tokenizer)
    tok_cfg = json.loads((fast_zoo / "model" / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and tok_cfg["model_max_length"] == cfg["n_ctx"]
    words = json.loads((ROOT / "saeeval" / "tasks" / "data" / "ioi.json").read_text())["names"]
    toks = model.to_tokens("Then, Mary and John went to the store. Mary gave a ring to")
    assert toks[0, 0].item() == model.tokenizer.bos_token_id and (toks == model.tokenizer.bos_token_id).sum() == 1
    assert model.tokenizer.unk_token_id not in toks
    assert all(len(model.to_tokens(n, prepend_bos=False)[0]) == 1 for n in words)
    assert torch.isfinite(model(toks)).all()


@pytest.mark.slow
def test_fast_saes_load_at_their_hooks_with_matching_width(fast_zoo: Path) -> None:
    model = load_zoo_folder(fast_zoo / "model")
    archs = set()
    for hook in HOOKS:
        sae = SAE.load_from_disk(fast_zoo / "saes" / hook)
        archs.add(sae.cfg.architecture())
        _, cache = model.run_with_cache("Mary gave a ring to John", names_filter=[hook])
        assert sae.cfg.metadata.hook_name == hook and sae.cfg.metadata.model_name == "tiny"
        assert sae.cfg.d_in == cache[hook][0, 0].numel()
        assert sae(cache[hook]).shape == cache[hook].shape
    assert len(archs) >= 2


@pytest.mark.slow
def test_same_seed_gives_identical_weights(fast_zoo: Path, tmp_path: Path) -> None:
    run_fast_build(tmp_path / "again")
    files = ["model/model.safetensors"] + [f"saes/{h}/sae_weights.safetensors" for h in HOOKS]
    assert [sha(tmp_path / "again" / f) for f in files] == [sha(fast_zoo / f) for f in files]


def test_heldout_pairs_never_appear_in_training() -> None:
    bz = load_script()
    split = bz.make_split(0, bz.FAST)
    names = set(bz.load_words("ioi")["names"])

    def ioi_pair(text: str) -> frozenset[str]:
        return frozenset(w for w in re.findall(r"\w+", text) if w in names)

    def tox_pair(text: str) -> tuple[str, str]:
        adj, identity = re.search(r"Sentence: \S+ is a (\S+) ([^\n]+)\s+Label", text).groups()
        return adj, identity

    train_ioi = {
        ioi_pair(t) for t, task in zip(split.train, split.train_is_task, strict=True) if task and "Label" not in t
    }
    train_tox = {tox_pair(t) for t in split.train if "Label" in t}
    assert len(train_ioi) > 100 and len(train_tox) > 100
    assert not {ioi_pair(p) for p, _, _ in split.ioi_eval} & train_ioi
    assert not {tox_pair(p) for p, _, _ in split.tox_eval} & train_tox


@pytest.fixture(scope="module")
def committed() -> tuple[HookedSAETransformer, dict, list[str]]:
    if not (ZOO / "card.json").is_file():
        pytest.fail("saeeval/zoo/tiny is missing: run `python scripts/build_zoo.py`")
    lines = (ZOO / "corpus" / "heldout.txt").read_text(encoding="utf-8").splitlines()
    return load_zoo_folder(ZOO / "model"), json.loads((ZOO / "card.json").read_text()), lines


def test_committed_card_meets_the_bars(committed) -> None:
    _, card, _ = committed
    assert card["scores"]["ioi"]["accuracy"] >= 0.95 and card["scores"]["toxicity"]["accuracy"] >= 0.95
    assert {h: s["explained_variance"] >= 0.9 for h, s in card["saes"].items()} == {h: True for h in HOOKS}
    assert len({s["architecture"] for s in card["saes"].values()}) >= 2
    assert sum(p.stat().st_size for p in ZOO.rglob("*") if p.is_file()) <= 10 * 2**20


def logit_diffs(model: HookedSAETransformer, items: list[tuple[str, str, str]]) -> torch.Tensor:
    """logit(correct) − logit(incorrect) at the last token, via TL's own left padding + attention mask."""
    tok = model.tokenizer
    with torch.no_grad():
        last = model([p for p, _, _ in items], padding_side="left")[:, -1]
    rows = torch.arange(len(items))
    good = torch.tensor(tok.convert_tokens_to_ids([g for _, g, _ in items]))
    bad = torch.tensor(tok.convert_tokens_to_ids([b for _, _, b in items]))
    return last[rows, good] - last[rows, bad]


def test_committed_model_solves_heldout_ioi_and_toxicity(committed) -> None:
    model, card, lines = committed
    names = set(json.loads((ROOT / "saeeval" / "tasks" / "data" / "ioi.json").read_text())["names"])
    ioi, tox = [], []
    for line in lines:
        prompt, answer = line.rsplit(" ", 1)
        if prompt.startswith("Please assign"):
            tox.append((prompt, answer, {"0": "1", "1": "0"}[answer]))
        elif not line.endswith("."):
            (s,) = [w for w, c in Counter(re.findall(r"\w+", prompt)).items() if c == 2 and w in names]
            ioi.append((prompt, answer, s))
    assert len(ioi) == len(tox) == card["budget"]["n_corpus"]
    assert (logit_diffs(model, ioi) > 0).float().mean() >= 0.95
    assert (logit_diffs(model, tox) > 0).float().mean() >= 0.95


def test_committed_sae_scores_match_sae_lens_splicing(committed) -> None:
    """The card's EV and spliced CE, recomputed through sae_lens' own splicing (special tokens bypassed)."""
    model, card, lines = committed
    tokens = model.to_tokens(lines, padding_side="right")
    specials = model.tokenizer.convert_tokens_to_ids(SPECIALS)
    real = ~torch.isin(tokens, torch.tensor(specials))
    keep = real[:, :-1] & real[:, 1:]
    for hook in HOOKS:
        sae = SAE.load_from_disk(ZOO / "saes" / hook)
        with torch.no_grad():
            logits, cache = model.run_with_cache_with_saes(tokens, saes=[sae], exclude_special_tokens=specials)
        x = cache[f"{hook}.hook_sae_input"][real].double()
        x_hat = cache[f"{hook}.hook_sae_recons"][real].double()
        ev = 1 - (x - x_hat).pow(2).sum(1).mean() / (x.pow(2).sum(1).mean() - x.mean(0).pow(2).sum())
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")[keep].mean()
        assert ev.item() == pytest.approx(card["saes"][hook]["explained_variance"], abs=1e-4), hook
        assert ce.item() == pytest.approx(card["saes"][hook]["ce_spliced"], rel=1e-4), hook
