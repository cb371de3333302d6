"""What generation-based answers (task.answer_mode=generate|both) cost on the bundled zoo, against the
logit-difference path, in one process with one thread (process CPU time; the README's numbers come from here).

Per task (all examples of its default config, batch 32, every default condition: 4 SAEs and their 4 zero
ablations, plus clean):
  logit_diff   SAEEvalModule.test_step without generation (clean pass, suffix passes, CE/KL/LD states)
  generate     the module's generation step alone (`_generate`: greedy, KV cache, splices, parsing, states),
               stopping once every row wrote EOS, as a run does
  no early stop  greedy_generate for every condition with EOS ignored: max_new_tokens forwards per batch

    python scripts/bench_generation.py                 # both tasks, a few minutes on one core
    python scripts/bench_generation.py --tasks ioi --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import time

import torch
from sae_lens import SAE

from saeeval.engine.conditions import build_conditions
from saeeval.engine.generation import SpliceAt, generated_positions, greedy_generate, stacked_hooks
from saeeval.engine.masks import Masks, special_token_ids
from saeeval.engine.module import SAEEvalModule
from saeeval.loading.models import load_model
from saeeval.loading.zoo import default_zoo_root
from saeeval.tasks.ioi import IOIDataModule
from saeeval.tasks.toxicity import ToxicityDataModule

TASKS = {"toxicity": ToxicityDataModule, "ioi": IOIDataModule}


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def bench(task_name: str, max_new_tokens: int | None) -> str:
    model = load_model("tiny")
    saes = {p.name: SAE.load_from_disk(str(p)) for p in sorted((default_zoo_root() / "tiny" / "saes").iterdir())}
    extra = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    task = TASKS[task_name](answer_mode="both", **extra)
    task.bind(model.tokenizer, model.cfg.default_prepend_bos, model.cfg.n_ctx)
    task.setup("test")
    conditions = build_conditions(saes)
    special = special_token_ids(model.tokenizer)
    masks = Masks()

    def module(generation):
        return SAEEvalModule(
            model,
            saes,
            conditions,
            masks,
            special,
            True,
            len(task.groups),
            answer_position=task.answer_position,
            generation=generation,
        )

    plain, generating = module(None), module(task.generation)
    batches = list(task.make_dataloader())
    ld = cpu_seconds(lambda: [plain.test_step(b, i) for i, b in enumerate(batches)])

    def generate_all() -> None:
        for b in batches:
            m = masks(b["tokens"], b["attention_mask"], b["positions"], special)
            generating._generate(
                b, SpliceAt(m.splice, m.ablate), {k: torch.zeros(len(b["tokens"])) for k in range(1 + len(conditions))}
            )

    gen = cpu_seconds(generate_all)
    n_tokens = task.generation.max_new_tokens
    step_at = generated_positions(masks.splice, special)

    def no_early_stop() -> None:
        for b in batches:
            m = masks(b["tokens"], b["attention_mask"], b["positions"], special)
            for cond in [None, *conditions]:
                greedy_generate(
                    model,
                    b["tokens"],
                    b["attention_mask"],
                    n_tokens,
                    SpliceAt(m.splice, m.ablate),
                    step_at,
                    stacked_hooks(generating.splicer, [cond], None),
                    None,
                )

    full = cpu_seconds(no_early_stop)
    n, k = len(task.examples), 1 + len(conditions)
    per_token = full / (n * k * n_tokens) * 1e3
    return (
        f"{task_name}: {n} examples x {k} conditions, max_new_tokens={n_tokens}: logit_diff {ld:.1f} s, "
        f"generate {gen:.1f} s ({gen / ld:.2f}x), no early stop {full:.1f} s ({per_token:.2f} ms per example, "
        f"condition and token)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        for name in args.tasks:
            print(bench(name, args.max_new_tokens), flush=True)


if __name__ == "__main__":
    main()
