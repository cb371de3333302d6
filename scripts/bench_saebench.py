"""SAEBench's core evaluation on the benchmark's model, SAEs and tokens: the third contender of scripts/bench.py.

Why a script of its own: sae-bench 0.6.0 pins numpy < 2 and datasets < 4, so it cannot sit beside saeeval's pins;
it runs with the Python of a separate environment (`bench.py --saebench-python`), which needs only sae-bench and
torch (scripts/bench_models.py builds the same seeded model, SAEs and batches there). Prints one JSON line: per
SAE the metrics bench.py compares (sae_bench.evals.core.main.run_evals, every metric bench.py asks sae_lens for,
every position counted), and the process CPU and wall seconds of the whole evaluation. SAEBench 0.6.0 divides each
token's squared error by the batch's token count (`flattened_mask.sum()`) before it takes the mean over tokens, so its
`mse` is sae_lens's divided by batch × seq: it is reported multiplied back. Its `explained_variance` is another
quantity (1 − E[Σ_d (x − x̂)²] / (E[Σ_d x²] − E[x²]²), the last mean over every element) and is not compared.

    python -m venv /tmp/saebench && /tmp/saebench/bin/pip install torch==2.13.0 sae-bench==0.6.0
    python scripts/bench.py --shape gpt2-small --saebench-python /tmp/saebench/bin/python
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from bench_models import COMPARED, FixedTokens, Setup, make_batches, make_model, make_saes

SAEBENCH_COMPARED = tuple(k for k in COMPARED if k != "explained_variance")
"""Every metric of bench.py's comparison but explained variance (see the module docstring)."""
OWN = ("mse", "explained_variance", "explained_variance_legacy", "relative_reconstruction_bias", "l1")
"""SAEBench's batch-dependent definitions, as it reports them: saeeval's `compat=saebench` gives them as
`<key>_saebench`."""


def sae_lens_5_fields(sae: Any) -> None:
    """sae-bench 0.6.0's core eval reads sae_lens 5's config fields (`cfg.hook_name`, `hook_layer`,
    `hook_head_index`) although it requires sae_lens >= 6.28, where they live in `cfg.metadata`: set them."""
    hook = sae.cfg.metadata.hook_name
    sae.cfg.hook_name = hook
    sae.cfg.hook_layer = int(hook.split(".")[1])
    sae.cfg.hook_head_index = sae.cfg.metadata.hook_head_index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", required=True, help="bench_models.Setup as JSON (bench.py passes its own)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_bench.evals.core.main import run_evals

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s = Setup(**json.loads(args.setup))
    model = make_model(s)
    saes = make_saes(model, s)
    batches = make_batches(s, seed=2)
    config = CoreEvalConfig(
        batch_size_prompts=s.batch,
        n_eval_reconstruction_batches=s.n_batches,
        n_eval_sparsity_variance_batches=s.n_batches,
        context_size=s.seq,
        compute_kl=True,
        compute_ce_loss=True,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=True,
    )
    for sae in saes.values():
        sae_lens_5_fields(sae)
    out: dict[str, dict[str, float]] = {}
    own: dict[str, dict[str, float]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for name, sae in saes.items():
        metrics, _ = run_evals(sae, FixedTokens(batches), model, config)
        flat = {k: v for group in metrics.values() for k, v in group.items()}
        out[name] = {k: float(flat[k]) for k in SAEBENCH_COMPARED}
        out[name]["mse"] *= s.batch * s.seq  # see the module docstring
        own[name] = {f"{k}_saebench": float(flat[k]) for k in OWN}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"metrics": out, "own": own, "wall": wall, "cpu": cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
