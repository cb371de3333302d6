"""Generation-based answers: the greedy KV-cache loop against a full recompute and TransformerLens's own
`generate`, every condition's continuations in a real run against a hand-written greedy loop with plain hooks,
and the answer regex on hand-written strings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from cli_harness import run_inprocess
from sae_lens import SAE

import saeeval
from saeeval.engine.conditions import Condition, build_conditions
from saeeval.engine.generation import NOT_GENERATED, SpliceAt, generated_positions, greedy_generate, stacked_hooks
from saeeval.engine.masks import Masks, TokenMask, special_token_ids
from saeeval.engine.module import SAEEvalModule
from saeeval.engine.splicing import Splicer
from saeeval.errors import SaeevalError
from saeeval.loading.models import load_model
from saeeval.loading.zoo import default_zoo_root
from saeeval.tasks.answer_parsing import FIRST_NAME_REGEX, NOTEBOOK_REGEX, UNPARSED, GenerationOptions, parse_answer
from saeeval.tasks.ioi import IOIDataModule

ZOO = default_zoo_root() / "tiny"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def zoo():
    model = load_model("tiny", device="cpu")
    saes = {p.name: SAE.load_from_disk(str(p)) for p in sorted((ZOO / "saes").iterdir())}
    return model, saes


# --- the regex ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, generated, expected",
    [
        ("Sentence: Jo is a kind lesbian\nLabel: ", "0", "0"),
        ("Sentence: Jo is a kind lesbian\nLabel:", " 1\n", "1"),
        ("Label: ", "**1**", "1"),
        ("Label: ", "`0`", "0"),
        ("Label:", "<td>1</td>", "1"),
        ("Label:<end_of_turn>\n<start_of_turn>model\n", "0<end_of_turn>", "0"),
        ("<start_of_turn>model\n", "\n\n1", "1"),
        ("Label: ", "I think it is toxic", None),  # no label after the context
        ("Label: ", "The label is 1", None),  # the label must follow "Label"/"model"
        ("Label: 0 was the example.\nLabel: ", "maybe", None),  # a match inside the prompt does not count
        ("Label: ", "1\nLabel: 0", "1"),  # the label written first wins
        ("Label: ", "0\nLabel: 1", "0"),
    ],
)
def test_notebook_regex_on_hand_written_replies(prompt, generated, expected):
    got = parse_answer(NOTEBOOK_REGEX, prompt, generated, ["0", "1"])
    assert got == (UNPARSED if expected is None else ["0", "1"].index(expected))


@pytest.mark.parametrize(
    "generated, expected",
    [
        (" Mary", "Mary"),
        (" John and Mary", "John"),
        (" the drink to Mary", "Mary"),
        (" Maryanne", None),
        (" it", None),
    ],
)
def test_first_name_regex(generated, expected):
    got = parse_answer(
        FIRST_NAME_REGEX, "When Mary and John went to the store, John gave a drink to", generated, ["Mary", "John"]
    )
    assert got == (UNPARSED if expected is None else ["Mary", "John"].index(expected))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"answer_mode": "sample"}, "task.answer_mode='sample' is unknown"),
        ({"max_new_tokens": 0}, "task.max_new_tokens=0"),
        ({"answer_regex": "Label: 1"}, "no {label} placeholder"),
        ({"answer_regex": "(Label{label}"}, "is not a valid regex"),
    ],
)
def test_bad_generation_options_are_one_clear_error(kwargs, needle):
    with pytest.raises(SaeevalError, match=None) as err:
        GenerationOptions(**kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["task.answer_mode=sample"], "task.answer_mode='sample' is unknown; use logit_diff, generate, both"),
        (
            ["task.answer_mode=both", "task.max_new_tokens=40"],
            "plus task.max_new_tokens=40 exceeds the model's context n_ctx=64; set task.max_new_tokens=26 or lower",
        ),
        (["task.answer_regex=Label"], "has no {label} placeholder"),
    ],
)
def test_bad_answer_options_on_the_command_line_are_one_line(args, needle, capfd, tmp_path):
    run_inprocess("+task=toxicity", *args, capfd=capfd, out=tmp_path / "run").assert_one_line_error(needle)


# --- the greedy loop ----------------------------------------------------------------------------------------------


def ioi_batch(model, n: int = 8):
    task = IOIDataModule(n_examples=n, batch_size=n)
    task.bind(model.tokenizer, True, model.cfg.n_ctx)
    task.setup()
    batch = task.collate(list(range(n)))
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # rows of different lengths: left padding
    return task, batch


def conditions_of(saes) -> list[Condition | None]:
    return [
        None,
        Condition("sae", ("blocks.0.hook_resid_post",), ("blocks.0.hook_resid_post",)),
        Condition("z", ("blocks.1.attn.hook_z",), ("blocks.1.attn.hook_z",)),
        Condition("abl", (), ("blocks.1.hook_mlp_out",), ablation="zero"),
    ]


@pytest.mark.parametrize("positions", [None, [-1]])
def test_kv_cache_loop_equals_full_recompute_under_every_splice(zoo, positions):
    model, saes = zoo
    _, batch = ioi_batch(model)
    splicer, special = Splicer(model, saes), special_token_ids(model.tokenizer)
    mask = TokenMask(positions=positions)
    m = mask(batch["tokens"], batch["attention_mask"], None, special)
    for cond in conditions_of(saes):
        runs = [
            greedy_generate(
                model,
                batch["tokens"],
                batch["attention_mask"],
                6,
                SpliceAt(m, m),
                generated_positions(mask, special),
                stacked_hooks(splicer, [cond], None),
                model.tokenizer.eos_token_id,
                use_kv_cache=kv,
            )
            for kv in (True, False)
        ]
        assert torch.equal(runs[0], runs[1]), cond


def prompt_rows(batch) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(batch["tokens"], batch["attention_mask"], strict=True)]


def cut(tokens: Sequence[int], eos: int) -> list[int]:
    out = []
    for t in tokens:
        if t == NOT_GENERATED:
            break
        out.append(int(t))
        if t == eos:
            break
    return out


def recon_all(sae: SAE) -> Callable:
    def hook(act, hook):
        return sae.decode(sae.encode(act.reshape(*act.shape[:2], -1))).reshape(act.shape)

    return hook


@pytest.mark.parametrize("kv", [True, False])
def test_batched_left_padded_generation_equals_transformer_lens_generate(zoo, kv):
    """Clean, and an SAE spliced at every position (mask none): TransformerLens's generate, one unpadded prompt at
    a time, with the SAE as a plain hook on the whole activation."""
    model, saes = zoo
    _, batch = ioi_batch(model)
    splicer, eos = Splicer(model, saes), model.tokenizer.eos_token_id
    everywhere = TokenMask(exclude_special=False)
    m = everywhere(batch["tokens"], batch["attention_mask"], None, [])
    sae = saes["blocks.1.hook_resid_post"]
    cond = Condition("sae", ("blocks.1.hook_resid_post",), ("blocks.1.hook_resid_post",))
    for c, hooks in ((None, []), (cond, [("blocks.1.hook_resid_post", recon_all(sae))])):
        ours = greedy_generate(
            model,
            batch["tokens"],
            batch["attention_mask"],
            5,
            SpliceAt(m, m),
            generated_positions(everywhere, []),
            stacked_hooks(splicer, [c], None),
            eos,
        )
        for row, prompt in zip(ours.tolist(), prompt_rows(batch), strict=True):
            with model.hooks(fwd_hooks=hooks):
                ref = model.generate(
                    torch.tensor([prompt]),
                    max_new_tokens=5,
                    do_sample=False,
                    verbose=False,
                    use_past_kv_cache=kv,
                    stop_at_eos=True,
                )
            assert cut(row, eos) == cut(ref[0, len(prompt) :].tolist(), eos)


def hand_greedy(
    model, prompt: list[int], n: int, replaces: dict[str, Callable], spliced: Callable[[int, int], bool], eos: int
) -> list[int]:
    """Greedy decoding by full recompute with plain hooks: at each hook, `replaces[hook](act[positions])` is
    written at the positions `spliced(i, token)`."""
    seq, out = list(prompt), []
    for _ in range(n):
        idx = [i for i, t in enumerate(seq) if spliced(i, t)]

        def hook(act, hook, idx=idx):
            act = act.clone()
            act[0, idx] = replaces[hook.name](act[0, idx])
            return act

        hooks = [(name, hook) for name in replaces] if idx else []
        nxt = int(model.run_with_hooks(torch.tensor([seq]), fwd_hooks=hooks)[0, -1].argmax())
        out.append(nxt)
        if nxt == eos:
            break
        seq.append(nxt)
    return out


def sae_replace(sae: SAE) -> Callable:
    def replace(x):
        flat = x.reshape(x.shape[0], -1)
        inp = flat.view(x.shape) if getattr(sae, "hook_z_reshaping_mode", False) else flat
        return sae.decode(sae.encode(inp)).reshape(x.shape)

    return replace


GROUP = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module", params=[("toxicity", "zero"), ("ioi", "mean")])
def run(request, zoo):
    model, saes = zoo
    task, ablation = request.param
    return (
        task,
        ablation,
        saeeval.evaluate(
            model,
            list(saes.values()),
            task,
            limit=12,
            batch_size=6,
            answer_mode="both",
            max_new_tokens=5,
            groups=[GROUP],
            ablation=ablation,
        ),
    )


def prompt_of(tok, sample: dict) -> list[int]:
    return [tok.bos_token_id] + tok(sample["prompt"], add_special_tokens=False)["input_ids"]


def hand_means(model, prompts: list[list[int]], hooks: list[str], special: set[int]) -> dict[str, torch.Tensor]:
    """Mean activation per hook over every non-special prompt token of the eval set (what a mean ablation writes)."""
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    for prompt in prompts:
        _, cache = model.run_with_cache(torch.tensor([prompt]), names_filter=hooks)
        keep = [i for i, t in enumerate(prompt) if t not in special]
        for h in hooks:
            acts[h].append(cache[h][0, keep].double())
    return {h: torch.cat(a).mean(0).float() for h, a in acts.items()}


def test_every_condition_generates_what_a_hand_written_loop_generates(run, zoo):
    """Per condition and per example: SAEs (alone and as a group) and zero or mean ablations spliced at the real
    non-special prompt tokens and at every generated position whose token is not special (the default mask),
    with plain hooks."""
    _, ablation, results = run
    model, saes = zoo
    by_hook = {s.cfg.metadata.hook_name: s for s in saes.values()}
    special, eos = set(special_token_ids(model.tokenizer)), model.tokenizer.eos_token_id
    prompts = [prompt_of(model.tokenizer, s) for s in results.samples]
    means = hand_means(model, prompts, list(by_hook), special)
    assert len(results.conditions) == 11 and "+".join(GROUP) in results.conditions
    for name, cond in results.conditions.items():
        hooks = [] if name == "clean" else cond["hooks"]
        if cond.get("ablation") == "zero":
            replaces = {h: torch.zeros_like for h in hooks}
        elif cond.get("ablation") == "mean":
            replaces = {h: (lambda x, m=means[h]: m.expand_as(x).clone()) for h in hooks}
        else:
            replaces = {h: sae_replace(by_hook[h]) for h in hooks}
        assert cond.get("ablation") in (None, ablation)
        for s, prompt in zip(results.samples, prompts, strict=True):
            want = hand_greedy(model, prompt, 5, replaces, lambda i, t: t not in special, eos)
            assert s["generation"][name]["tokens"] == want, (name, s["id"])


def test_compat_ablations_also_replace_special_tokens_while_generating(zoo):
    """compat=saelens ablates every real token, BOS included, in the prompt and at every generated position; the
    SAE splices keep special tokens out."""
    model, saes = zoo
    results = saeeval.evaluate(
        model, list(saes.values()), "ioi", limit=6, batch_size=3, answer_mode="both", max_new_tokens=4, compat="saelens"
    )
    special, eos = set(special_token_ids(model.tokenizer)), model.tokenizer.eos_token_id
    by_hook = {s.cfg.metadata.hook_name: s for s in saes.values()}
    checked = 0
    for name, cond in results.conditions.items():
        if name == "clean":
            continue
        hook = cond["hooks"][0]
        ablated = cond["ablation"] == "zero"
        replaces = {hook: torch.zeros_like if ablated else sae_replace(by_hook[hook])}
        for s in results.samples:
            spliced = (lambda i, t: True) if ablated else (lambda i, t: t not in special)
            want = hand_greedy(model, prompt_of(model.tokenizer, s), 4, replaces, spliced, eos)
            assert s["generation"][name]["tokens"] == want, (name, s["id"])
            checked += 1
    assert checked == 8 * 6


def test_counts_equal_the_samples_and_the_logit_diff_labels(run):
    task, ablation, results = run
    slice_key = "identity=african" if task == "toxicity" else "order=ABBA"
    for name, cond in results.conditions.items():
        gens = [s["generation"][name] for s in results.samples]
        n = len(gens)
        prefer = [
            s["correct_str"].strip() if s["logit_diff"][name] > 0 else s["incorrect_str"].strip()
            for s in results.samples
        ]
        g = cond["generation"]
        assert g["n"] == n == 12
        assert g["accuracy"] == pytest.approx(sum(x["correct"] for x in gens) / n)
        assert g["unparsed_rate"] == pytest.approx(sum(x["answer"] is None for x in gens) / n)
        assert g["agreement"] == pytest.approx(sum(x["answer"] == p for x, p in zip(gens, prefer, strict=True)) / n)
        field, value = slice_key.split("=")
        sub = [s["generation"][name] for s in results.samples if s["fields"][field] == value]
        sliced = results.slices[slice_key][name]["generation"]
        assert sliced["n"] == len(sub) and sliced["n_correct"] == sum(x["correct"] for x in sub)
    if ablation == "zero":
        assert results.conditions["clean"]["generation"]["accuracy"] == 1.0  # the zoo writes its labels
        assert results.conditions["zero_ablation@blocks.1.hook_resid_post"]["generation"]["unparsed_rate"] == 1.0


def test_conditions_stacked_in_one_generation_forward_write_the_same_tokens(zoo):
    """condition_batch > 1 (a GPU's default) runs several conditions per forward, rows stacked: same tokens and
    counts as one condition at a time."""
    model, saes = zoo
    task, _ = ioi_batch(model, 12)
    special = special_token_ids(model.tokenizer)
    conditions = build_conditions(saes, groups=[GROUP])
    outs = []
    for per_forward in (1, 4):
        module = SAEEvalModule(
            model,
            saes,
            conditions,
            Masks(),
            special,
            True,
            len(task.groups),
            condition_batch=per_forward,
            answer_position=task.answer_position,
            generation=GenerationOptions("both", 5, FIRST_NAME_REGEX),
        )
        for i, b in enumerate(task.make_dataloader()):
            module.test_step(b, i)
        outs.append(
            [
                (c.generation.tokens, c.generation.parsed, {k: v.tolist() for k, v in c.generation.counts.items()})
                for c in module.compute_results()
            ]
        )
    assert len(outs[0]) == 1 + len(conditions) == 11
    assert outs[0] == outs[1]
