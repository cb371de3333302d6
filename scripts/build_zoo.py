"""Rebuild the bundled tiny zoo (saeeval/zoo/tiny) deterministically from a seed, offline, on CPU.

Trains a word-level 2-layer HookedTransformer on the exact sentences the IOI and toxicity tasks evaluate
(plus filler text so LM loss means something), then sparse autoencoders in sae_lens format on four hooks,
and writes the measured held-out scores to card.json. Run: `python scripts/build_zoo.py [--out DIR] [--seed 0]
[--fast]` (`--fast` = a few steps, for the tests; its scores are meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import (
    SAE,
    HookedSAETransformer,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.saes.jumprelu_sae import JumpReLU, Step
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from saeeval.loading.zoo import load_zoo_folder
from saeeval.tasks.words import TOXICITY_LABELS, TOXICITY_TEMPLATE, fill_ioi, ioi_templates, load_words, name_adj_rows

SPECIALS = ("<bos>", "<eos>", "<pad>", "<unk>")
N_CTX = 64
SAE_ARCH = {  # hook -> sae_lens architecture
    "blocks.0.hook_resid_post": "standard",
    "blocks.1.hook_resid_post": "topk",
    "blocks.1.hook_mlp_out": "jumprelu",
    "blocks.1.attn.hook_z": "standard",
}
FILLER_FRAMES = (
    "{n} went to the {p}.",
    "{n} saw a {o} at the {p}.",
    "The {o} was in the {p}.",
    "{n} and {m} walked to the {p}.",
    "{n} likes the {o}.",
    "It was a {a} day at the {p}.",
    "{n} bought a {o} and a {q}.",
    "We met {n} near the {p}.",
    "She found the {o} in the {p}.",
    "He said that the {p} was {a}.",
    "They talked about the {o} all day.",
    "The {p} is {a} today.",
    "{n} waited for {m} at the {p}.",
    "My friend {n} lost a {o} at home.",
)
FILLER_ADJ = ("big", "small", "quiet", "busy", "new", "cold", "warm", "empty", "full", "bright")


@dataclass(frozen=True)
class Budget:
    """How much data and how many optimiser steps one build uses."""

    n_ioi: int = 40_000
    n_tox: int = 30_000
    n_filler: int = 20_000
    model_steps: int = 1_500
    batch: int = 64
    lr: float = 3e-3
    answer_weight: float = 5.0
    sae_seqs: int = 3_000
    sae_steps: int = 2_000
    sae_batch: int = 1_024
    d_sae: int = 512
    n_eval: int = 500
    n_corpus: int = 100  # lines per kind (IOI, toxicity, filler) in corpus/heldout.txt
    threads: int = 1  # 2 threads ran 17-100x slower on the shared 2-core box (OpenMP waits on a busy core)


FAST = Budget(
    n_ioi=600,
    n_tox=600,
    n_filler=300,
    model_steps=20,
    batch=32,
    sae_seqs=100,
    sae_steps=10,
    sae_batch=256,
    d_sae=64,
    n_eval=40,
    n_corpus=10,
)


@dataclass(frozen=True)
class Split:
    """Training texts (+ which carry a task answer) and held-out evaluation material."""

    train: list[str]
    train_is_task: list[bool]
    ioi_eval: list[tuple[str, str, str]]  # (prompt, correct, incorrect)
    tox_eval: list[tuple[str, str, str]]
    corpus: list[str]


def ioi_items(rng: random.Random, pairs: list[tuple[str, str]], n: int) -> list[tuple[str, str, str]]:
    """`n` IOI (prompt, IO, S) drawn from the given unordered name pairs, alternating BABA/ABBA."""
    words = load_words("ioi")
    tmpl = {o: ioi_templates(o) for o in ("BABA", "ABBA")}
    out = []
    for i in range(n):
        order = "BABA" if i % 2 == 0 else "ABBA"
        t = rng.randrange(len(tmpl[order]))
        a, b = rng.choice(pairs)
        io, s = (a, b) if rng.random() < 0.5 else (b, a)
        p = fill_ioi(tmpl[order][t], io, s, rng.choice(words["places"]), rng.choice(words["objects"]), order, t)
        out.append((p.prompt, io, s))
    return out


def tox_items(rng: random.Random, rows: list[dict[str, str]], n: int) -> list[tuple[str, str, str]]:
    """`n` toxicity (prompt, correct label, incorrect label) drawn from `rows`."""
    other = {"toxic": "nontoxic", "nontoxic": "toxic"}
    picked = [rng.choice(rows) for _ in range(n)]
    return [
        (
            TOXICITY_TEMPLATE.format(phrase=r["phrase"]),
            TOXICITY_LABELS[r["toxicity"]],
            TOXICITY_LABELS[other[r["toxicity"]]],
        )
        for r in picked
    ]


def filler_lines(rng: random.Random, n: int) -> list[str]:
    """`n` lines of two simple sentences each over the task vocabulary."""
    ioi = load_words("ioi")
    out = []
    for _ in range(n):
        sents = []
        for _ in range(2):
            m, k = rng.sample(ioi["names"], 2)
            o, q = rng.sample(ioi["objects"], 2)
            sents.append(
                rng.choice(FILLER_FRAMES).format(
                    n=m, m=k, p=rng.choice(ioi["places"]), o=o, q=q, a=rng.choice(FILLER_ADJ)
                )
            )
        out.append(" ".join(sents))
    return out


def make_split(seed: int, b: Budget) -> Split:
    """Hold out 10% of IOI name pairs and 10% of (adjective, identity) pairs per label; never iterate sets."""
    rng = random.Random(seed)
    names = load_words("ioi")["names"]
    pairs = [(x, y) for i, x in enumerate(names) for y in names[i + 1 :]]
    rng.shuffle(pairs)
    n_hold = len(pairs) // 10
    ioi_held, ioi_train = pairs[:n_hold], pairs[n_hold:]
    w = load_words("jigsaw_name_adj")
    held_tox: set[tuple[str, str]] = set()
    for tox in ("nontoxic", "toxic"):
        combos = [(a, i) for a in w["adj"][tox] for i in w["ids"]]
        rng.shuffle(combos)
        held_tox.update(combos[: len(combos) // 10])
    rows = name_adj_rows()
    tox_held = [r for r in rows if (r["adj"], r["identity"]) in held_tox]
    tox_train = [r for r in rows if (r["adj"], r["identity"]) not in held_tox]
    ioi_tr = [f"{p} {io}" for p, io, _ in ioi_items(rng, ioi_train, b.n_ioi)]
    tox_tr = [p + c for p, c, _ in tox_items(rng, tox_train, b.n_tox)]
    fill_tr = filler_lines(rng, b.n_filler)
    train = ioi_tr + tox_tr + fill_tr
    is_task = [True] * (len(ioi_tr) + len(tox_tr)) + [False] * len(fill_tr)
    order = list(range(len(train)))
    rng.shuffle(order)
    ioi_ev = ioi_items(rng, ioi_held, b.n_eval)
    tox_ev = tox_items(rng, tox_held, b.n_eval)
    seen = set(fill_tr)
    fresh = [f for f in filler_lines(rng, 4 * b.n_corpus) if f not in seen][: b.n_corpus]
    # one text per line: the toxicity prompt's newlines become spaces (the word tokenizer drops both alike)
    corpus = (
        [f"{p} {c}" for p, c, _ in ioi_items(rng, ioi_held, b.n_corpus)]
        + [(p + c).replace("\n", " ") for p, c, _ in tox_items(rng, tox_held, b.n_corpus)]
        + fresh
    )
    return Split([train[i] for i in order], [is_task[i] for i in order], ioi_ev, tox_ev, corpus)


def build_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every task and filler word; saved and reloaded (an in-memory one crashes TL)."""
    ioi, jig = load_words("ioi"), load_words("jigsaw_name_adj")
    texts = [t for o in ("BABA", "ABBA") for t in ioi_templates(o)] + list(FILLER_FRAMES)
    texts += ioi["names"] + ioi["places"] + ioi["objects"] + jig["names"] + jig["ids"] + list(FILLER_ADJ)
    texts += jig["adj"]["toxic"] + jig["adj"]["nontoxic"] + [TOXICITY_TEMPLATE.format(phrase=""), "0 1"]
    pre = pre_tokenizers.Whitespace()
    bare = [re.sub(r"\[[A-Z]+\]|\{[a-z]\}", " ", t) for t in texts]  # drop template slots
    words = sorted({piece for t in bare for piece, _ in pre.pre_tokenize_str(t)})
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(list(SPECIALS) + words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    tk.add_special_tokens(list(SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(out_dir)
    cfg_path = out_dir / "tokenizer_config.json"  # v5 writes "TokenizersBackend", which transformers 4.x lacks
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=N_CTX)
    cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    tok = PreTrainedTokenizerFast.from_pretrained(out_dir)
    for name in ioi["names"]:
        assert len(tok(name)["input_ids"]) == 1, f"IOI name {name!r} is not a single token"
    return tok


def encode_corpus(tok: PreTrainedTokenizerFast, texts: list[str], eos: bool) -> torch.Tensor:
    """Right-padded `[n, pos]` ids: <bos> + words (+ <eos>); fails on any unknown word."""
    ids = tok(texts, add_special_tokens=False)["input_ids"]  # TL's copy of the tokenizer adds <bos> itself
    tail = [tok.eos_token_id] if eos else []
    seqs = [[tok.bos_token_id, *s, *tail] for s in ids]
    assert all(tok.unk_token_id not in s for s in seqs), "a training text has a word outside the vocabulary"
    out = torch.full((len(seqs), max(map(len, seqs))), tok.pad_token_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out


def model_config(d_vocab: int, seed: int) -> dict[str, Any]:
    """HookedTransformerConfig kwargs, written verbatim to model/config.json."""
    return dict(
        model_name="tiny",
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=256,
        d_vocab=d_vocab,
        n_ctx=N_CTX,
        act_fn="gelu",
        normalization_type="LN",
        default_prepend_bos=True,
        seed=seed,
    )


def train_model(
    model: HookedSAETransformer, toks: torch.Tensor, is_task: list[bool], b: Budget, pad: int, seed: int
) -> list[float]:
    """Next-token loss with the answer (last word of each task text) upweighted; returns mean loss per 5% of steps."""
    real = toks != pad
    weight = real[:, 1:].float()
    last = real.sum(1) - 3  # index into targets of the answer word (before <eos>)
    task_rows = torch.tensor(is_task).nonzero().squeeze(1)
    weight[task_rows, last[task_rows]] = b.answer_weight
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr, weight_decay=0.01)
    warm = max(1, b.model_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / b.model_steps)
    )
    gen = torch.Generator().manual_seed(seed)
    lengths = real.sum(1)
    batches: list[torch.Tensor] = []
    curve, window = [], []
    model.train()
    for step in range(b.model_steps):
        if not batches:  # new epoch: shuffle, group similar lengths (less padding), shuffle the batches
            perm = torch.randperm(len(toks), generator=gen)
            perm = perm[torch.sort(lengths[perm], stable=True).indices]
            batches = [perm[i : i + b.batch] for i in range(0, len(perm) - b.batch + 1, b.batch)]
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen)]
        idx = batches.pop()
        width = int(lengths[idx].max())
        x, w = toks[idx, :width], weight[idx, : width - 1]
        logits = model(x)[:, :-1]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        loss = (ce * w.reshape(-1)).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(loss.item())
        if len(window) == max(1, b.model_steps // 20) or step == b.model_steps - 1:
            curve.append(round(sum(window) / len(window), 4))
            window = []
    model.eval()
    return curve


@torch.no_grad()
def answer_scores(model: HookedSAETransformer, items: list[tuple[str, str, str]]) -> dict[str, float]:
    """Accuracy and mean of logit(correct) − logit(incorrect) at each prompt's last token (right padding)."""
    tok = model.tokenizer
    toks = model.to_tokens([p for p, _, _ in items], padding_side="right")
    last = (toks != tok.pad_token_id).sum(1) - 1
    diffs = []
    for i in range(0, len(items), 256):
        logits = model(toks[i : i + 256])
        rows = torch.arange(logits.shape[0])
        lg = logits[rows, last[i : i + 256]]
        good = torch.tensor(tok.convert_tokens_to_ids([c for _, c, _ in items[i : i + 256]]))
        bad = torch.tensor(tok.convert_tokens_to_ids([x for _, _, x in items[i : i + 256]]))
        diffs.append(lg[rows, good] - lg[rows, bad])
    d = torch.cat(diffs)
    return {"n": len(items), "accuracy": (d > 0).float().mean().item(), "logit_diff": d.mean().item()}


def real_mask(tok: PreTrainedTokenizerFast, toks: torch.Tensor) -> torch.Tensor:
    """True at positions holding a word (not <bos>/<eos>/<pad>/<unk>)."""
    return ~torch.isin(toks, torch.tensor(tok.convert_tokens_to_ids(list(SPECIALS))))


@torch.no_grad()
def corpus_ce(model: HookedSAETransformer, toks: torch.Tensor, hooks: list[tuple[str, Any]] | None = None) -> float:
    """Mean next-token CE over positions whose input and target are both words, optionally with hooks."""
    m = real_mask(model.tokenizer, toks)
    logits = model.run_with_hooks(toks, fwd_hooks=hooks or [])[:, :-1]
    ce = F.cross_entropy(logits.transpose(1, 2), toks[:, 1:], reduction="none")
    keep = m[:, :-1] & m[:, 1:]
    return (ce[keep].sum() / keep.sum()).item()


@torch.no_grad()
def hook_acts(model: HookedSAETransformer, toks: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
    """Activations at word positions only: `[n_words, d]` (or `[n_words, n_heads, d_head]` for hook_z)."""
    m = real_mask(model.tokenizer, toks)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for i in range(0, len(toks), 256):
        _, cache = model.run_with_cache(toks[i : i + 256], names_filter=hooks)
        for h in hooks:
            out[h].append(cache[h][m[i : i + 256]])
    return {h: torch.cat(v) for h, v in out.items()}


def new_sae(arch: str, hook: str, d_in: int, d_sae: int, context_size: int) -> SAE:
    """An sae_lens inference SAE for `hook` (hook_z SAEs read the flattened heads)."""
    meta = SAEMetadata(hook_name=hook, model_name="tiny", prepend_bos=True, context_size=context_size)
    reshape = "hook_z" if hook.endswith("hook_z") else "none"
    kw = dict(d_in=d_in, d_sae=d_sae, metadata=meta, reshape_activations=reshape)
    if arch == "standard":
        return StandardSAE(StandardSAEConfig(**kw))
    if arch == "topk":
        return TopKSAE(TopKSAEConfig(k=16, **kw))
    return JumpReLUSAE(JumpReLUSAEConfig(**kw))


def sae_features(sae: SAE, x: torch.Tensor, bandwidth: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature activations and the sparsity term (L1 for ReLU, L0 through the straight-through step for JumpReLU)."""
    if isinstance(sae, JumpReLUSAE):
        pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
        return JumpReLU.apply(pre, sae.threshold, bandwidth, False), Step.apply(pre, sae.threshold, bandwidth, False)
    f = sae.encode(x)
    return f, f * sae.W_dec.norm(dim=1)


def train_sae(sae: SAE, acts: torch.Tensor, b: Budget, seed: int) -> None:
    """Adam on MSE + λ·sparsity in units where the activations have total variance 1, then fold the scale back."""
    scale = (acts.flatten(1).var(0).sum() ** -0.5).item()
    x_all = acts * scale
    coef = {"standard": 0.08, "topk": 0.0, "jumprelu": 3e-3}[sae.cfg.architecture()]  # tuned for EV ≈ 0.93-0.96
    with torch.no_grad():
        sae.b_dec.copy_(x_all.flatten(1).mean(0))
        if isinstance(sae, JumpReLUSAE):
            sae.threshold.fill_(0.05)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(b.sae_steps):
        x = x_all[torch.randint(len(x_all), (b.sae_batch,), generator=gen)]
        f, sparsity = sae_features(sae, x)
        mse = (sae.decode(f) - x).pow(2).flatten(1).sum(1).mean()
        loss = mse + coef * min(1.0, 5 * step / b.sae_steps) * sparsity.sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(sae, JumpReLUSAE):
            with torch.no_grad():
                sae.threshold.clamp_(min=1e-3)
    with torch.no_grad():
        sae.fold_activation_norm_scaling_factor(scale)
        for p in sae.parameters():
            p.data = p.data.contiguous()


@torch.no_grad()
def sae_scores(model: HookedSAETransformer, sae: SAE, toks: torch.Tensor, ce_clean: float) -> dict[str, Any]:
    """EV/MSE/L0 (the definitions in docs/results.md) over held-out word positions; CE with the SAE (or zeros)
    spliced there."""
    name = sae.cfg.metadata.hook_name
    x = hook_acts(model, toks, [name])[name]
    f = sae.encode(x)
    flat, rec = x.flatten(1).double(), sae.decode(f).flatten(1).double()
    mse = (flat - rec).pow(2).sum(1).mean()
    var = flat.pow(2).sum(1).mean() - flat.mean(0).pow(2).sum()
    m = real_mask(model.tokenizer, toks)

    def at_words(replace_fn: Any) -> list[tuple[str, Any]]:
        def hook_fn(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return torch.where(m.view(*m.shape, *([1] * (act.ndim - 2))), replace_fn(act), act)

        return [(name, hook_fn)]

    return {
        "architecture": sae.cfg.architecture(),
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "explained_variance": (1 - mse / var).item(),
        "mse": mse.item(),
        "l0": (f != 0).float().sum(1).mean().item(),
        "ce_clean": ce_clean,
        "ce_spliced": corpus_ce(model, toks, at_words(sae)),
        "ce_zero_ablation": corpus_ce(model, toks, at_words(torch.zeros_like)),
    }


def versions() -> dict[str, str]:
    """Library versions recorded in the card."""
    pkgs = ("torch", "transformer-lens", "sae-lens", "transformers", "tokenizers", "safetensors")
    return {p: metadata.version(p) for p in pkgs}


def log(msg: str) -> None:
    """Progress on stderr, so stdout stays the JSON summary."""
    print(f"[build_zoo] {msg}", file=sys.stderr, flush=True)


def build(out: Path, seed: int, b: Budget) -> dict[str, Any]:
    """Train and write the whole zoo into `out`; returns the card."""
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    torch.set_num_threads(b.threads)
    torch.use_deterministic_algorithms(True)
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "corpus").mkdir(exist_ok=True)
    split = make_split(seed, b)
    (out / "corpus" / "heldout.txt").write_text("\n".join(split.corpus) + "\n", encoding="utf-8")
    tok = build_tokenizer(out / "model")
    cfg_kwargs = model_config(len(tok), seed)
    (out / "model" / "config.json").write_text(json.dumps(cfg_kwargs, indent=2) + "\n")
    toks = encode_corpus(tok, split.train, eos=True)
    assert toks.shape[1] <= cfg_kwargs["n_ctx"], "a training sequence is longer than n_ctx"
    log(f"training the model on {len(toks)} texts for {b.model_steps} steps")
    torch.manual_seed(seed)
    model = HookedSAETransformer(HookedTransformerConfig(**cfg_kwargs), tokenizer=tok)
    curve = train_model(model, toks, split.train_is_task, b, tok.pad_token_id, seed)
    t_model = time.perf_counter() - t0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model" / "model.safetensors")
    heldout = encode_corpus(tok, split.corpus, eos=False)
    with torch.no_grad():
        trained_logits = model(heldout)
        model = load_zoo_folder(out / "model").eval()
        assert torch.equal(model(heldout), trained_logits), "the saved model does not reproduce the trained logits"
    ce_clean = corpus_ce(model, heldout)
    acts = hook_acts(model, toks[: b.sae_seqs], list(SAE_ARCH))
    sae_cards = {}
    for i, (hook, arch) in enumerate(SAE_ARCH.items()):
        log(f"training the {arch} SAE on {hook} ({len(acts[hook])} tokens, {b.sae_steps} steps)")
        torch.manual_seed(seed + 1 + i)
        sae = new_sae(arch, hook, acts[hook].flatten(1).shape[1], b.d_sae, cfg_kwargs["n_ctx"])
        train_sae(sae, acts[hook], b, seed + 1 + i)
        sae.save_model(out / "saes" / hook)
        sae_cards[hook] = sae_scores(model, SAE.load_from_disk(out / "saes" / hook), heldout, ce_clean)
    tox_by_label = {
        lab: answer_scores(model, [t for t in split.tox_eval if t[1] == TOXICITY_LABELS[lab]])
        for lab in ("toxic", "nontoxic")
    }
    card = {
        "model_name": "tiny",
        "seed": seed,
        "budget": asdict(b),
        "torch_threads": b.threads,
        "versions": versions(),
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "model_train_time_s": round(t_model, 1),
        "load_avg_1min": {"start": load0, "end": os.getloadavg()[0]},  # CPU contention from other processes
        "model": {k: cfg_kwargs[k] for k in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx")}
        | {"n_params": sum(p.numel() for p in model.parameters())},
        "data": {
            "n_train_ioi": b.n_ioi,
            "n_train_toxicity": b.n_tox,
            "n_train_filler": b.n_filler,
            "n_train_tokens": int((toks != tok.pad_token_id).sum()),
            "n_sae_train_tokens": len(acts[hook]),
            "heldout": "IOI name pairs (10% of unordered pairs) and toxicity (adjective, identity) pairs "
            "(10% per label) never seen in training",
            "n_corpus_lines": len(split.corpus),
        },
        "train_loss_curve": curve,
        "scores": {
            "ioi": answer_scores(model, split.ioi_eval),
            "toxicity": answer_scores(model, split.tox_eval),
            "toxicity_by_label": tox_by_label,
            "lm_ce_heldout_corpus": ce_clean,
        },
        "saes": sae_cards,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    log(f"done in {card['wall_time_s']} s")
    return card


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "saeeval" / "zoo" / "tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="a few steps only (tests); scores are meaningless")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 1: faster than 2 here)")
    args = ap.parse_args(argv)
    budget = FAST if args.fast else Budget()
    if args.threads is not None:
        budget = replace(budget, threads=args.threads)
    card = build(args.out, args.seed, budget)
    print(json.dumps({k: card[k] for k in ("wall_time_s", "scores", "saes")}, indent=1))


if __name__ == "__main__":
    main()
