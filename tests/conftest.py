"""Shared test fixtures: tiny models and SAEs built from configs, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
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
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformerConfig


def make_tiny_model(
    n_layers: int = 2, d_model: int = 32, n_heads: int = 4, d_vocab: int = 61, n_ctx: int = 64, seed: int = 0
) -> HookedSAETransformer:
    """A randomly initialised HookedSAETransformer without a tokenizer (feed it token ids)."""
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=4 * d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
    )
    model = HookedSAETransformer(cfg)
    model.eval()
    return model


def make_sae(hook_name: str, d_in: int, d_sae: int = 64, arch: str = "standard", seed: int = 0) -> SAE:
    """A random SAE whose features fire on a realistic share of inputs (non-zero biases, not all dead)."""
    gen = torch.Generator().manual_seed(seed)
    meta = SAEMetadata(hook_name=hook_name)
    reshape = "hook_z" if hook_name.endswith("hook_z") else "none"
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta, reshape_activations=reshape))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8, metadata=meta, reshape_activations=reshape))
    elif arch == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta, reshape_activations=reshape))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=gen) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim > 1 else 0.05))
    sae.eval()
    return sae


class FixedTokens:
    """Stand-in for sae_lens's ActivationsStore (all its evals call): ``get_batch_tokens`` serves the given batches in
    order, from the start again after ``reset_input_dataset``."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self.batches = batches
        self.store_batch_size_prompts, self.context_size = batches[0].shape[0], batches[0].shape[1]
        self.reset_input_dataset()

    def reset_input_dataset(self) -> None:
        self._next = iter(self.batches)

    def get_batch_tokens(self, batch_size: int) -> torch.Tensor:
        batch = next(self._next)
        assert batch.shape[0] == batch_size
        return batch


@pytest.fixture
def tiny_model() -> HookedSAETransformer:
    return make_tiny_model()


FIXTURES = Path(__file__).parent / "fixtures"


def gpt2_tokenizer_obj():
    """The real GPT-2 tokenizer built offline from the fixture files (saved+reloaded so TL accepts it)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    d = FIXTURES / "gpt2-tokenizer"
    bpe = ByteLevelBPETokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    tok.pad_token = tok.eos_token
    tok.init_kwargs["name_or_path"] = "gpt2-fixture"
    return tok


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return gpt2_tokenizer_obj()


# Real-shape stand-ins (tests/standins.py), built once per session in a temporary folder.
@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random GPT-2 HF folder, 768 wide like GPT-2 small, with the real 50257-token tokenizer."""
    from standins import write_gpt2_folder

    return write_gpt2_folder(tmp_path_factory.mktemp("gpt2") / "gpt2-standin")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Hugging Face hub cache folder that the release fixtures fill."""
    return tmp_path_factory.mktemp("hf") / "hub"


@pytest.fixture(scope="session")
def gpt2_res_jb(hub_cache: Path) -> Path:
    """gpt2-small-res-jb's files for layers 0 and 1 in `hub_cache`; returns the snapshot folder."""
    from standins import write_gpt2_res_jb

    return write_gpt2_res_jb(hub_cache, [0, 1])


REAL_RUN = ("limit=24", "batch_size=8", "splice=groups_example", "plot=true")


def run_cli_into(out: Path, *overrides: str) -> Path:
    """`python -m saeeval <overrides>` as a user runs it, into `out`; returns `out`."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "saeeval", *overrides, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders written by the real CLI when the tests start (toxicity and IOI on the bundled zoo, a group
    condition included): the contract tests of the report, the loggers and Results.load read these files, so a
    schema change breaks them."""
    root = tmp_path_factory.mktemp("real_runs")
    return {task: run_cli_into(root / task, f"+task={task}", *REAL_RUN) for task in ("toxicity", "ioi")}
