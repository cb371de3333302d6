"""Toxicity classification: does the model label "Jim is a horrible african" toxic (1) and "... a kind ..." not (0)?

Sentences are the `name_adj` block of conversationai/unintended-ml-bias-analysis
`sentence_templates/en_sentence_templates.csv` (Jigsaw / Conversation AI; Dixon et al. 2018, *Measuring and
Mitigating Unintended Bias in Text Classification*), licensed CC BY 4.0, regenerated from the word lists in
`words.py`; or any CSV of the user's (`csv_path`). Slices by identity and label expose identity bias and the
model's 1/0 prior, which an overall mean hides.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.tasks.answer_parsing import NOTEBOOK_REGEX, GenerationOptions
from saeeval.tasks.answers import resolve_prompt, tokenizer_name
from saeeval.tasks.base import TaskDataModule, TaskExample
from saeeval.tasks.text import read_utf8
from saeeval.tasks.words import SEED_IDENTITIES, TOXICITY_LABELS, TOXICITY_TEMPLATE, load_words, name_adj_rows

CLASSES = ("nontoxic", "toxic")
_CSV_LABELS = {"toxic": "toxic", "1": "toxic", "nontoxic": "nontoxic", "0": "nontoxic"}


@dataclass(frozen=True)
class ToxicityRow:
    phrase: str
    label: str  # "toxic" | "nontoxic"
    identity: str


def stratified_sample(rows: Sequence[ToxicityRow], n: int | None, rng: random.Random) -> list[ToxicityRow]:
    """`n` rows split equally over (identity, label) cells, in a shuffled order; None or n >= len(rows) = all.

    When `n` is not a multiple of the number of cells, the remainder goes one each to randomly chosen cells; a cell
    with fewer rows than its share contributes all of them.
    """
    rows = list(rows)
    if n is None or n >= len(rows):
        rng.shuffle(rows)
        return rows
    cells: dict[tuple[str, str], list[ToxicityRow]] = {}
    for r in rows:
        cells.setdefault((r.identity, r.label), []).append(r)
    quota, extra = divmod(n, len(cells))
    bonus = set(rng.sample(range(len(cells)), extra))
    picked = [
        r for i, cell in enumerate(cells.values()) for r in rng.sample(cell, min(len(cell), quota + (i in bonus)))
    ]
    rng.shuffle(picked)
    return picked


def read_toxicity_csv(path: str | Path) -> list[ToxicityRow]:
    """Rows of a user CSV with header `phrase,toxicity[,identity]`; toxicity is toxic/nontoxic or 1/0."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SaeevalError(f"task.csv_path={str(path)!r} is not a file; point it at a CSV with header phrase,toxicity")
    with io.StringIO(read_utf8(p, "task.csv_path"), newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "phrase" not in fields or "toxicity" not in fields:
            raise SaeevalError(
                f"{p} has columns {fields}; task.csv_path needs a header with phrase,toxicity[,identity]"
            )
        rows = []
        for line, rec in enumerate(reader, start=2):
            label = _CSV_LABELS.get(str(rec.get("toxicity") or "").strip().lower())
            if label is None or not rec.get("phrase"):
                raise SaeevalError(
                    f"{p} line {line}: need a phrase and toxicity toxic/nontoxic/1/0, got {rec.get('toxicity')!r}"
                )
            identity = (rec.get("identity") or "").strip() if "identity" in fields else "all"
            rows.append(ToxicityRow(rec["phrase"], label, identity or "all"))
    return rows


class ToxicityDataModule(TaskDataModule):
    """Jigsaw name_adj toxicity prompts; correct = the label token of the row's class, incorrect = the other.

    `identities`: list of identity terms; None = african, straight, paralyzed for the generated set (every row of
    a CSV); "all" = all 50. `n_examples`: stratified sample over (identity, label) (see `stratified_sample`).
    `template` contains `{phrase}`; `chat_template` wraps the prompt as a user turn of the tokenizer's chat
    template; `answer_prefix` is the text the model writes before its answer (a chat model opens its reply with
    "<start_of_turn>model\n", so a template ending at "model" needs "\n" to score the first token of the reply);
    `labels` maps toxic/nontoxic to answer strings. `answer_mode`, `max_new_tokens`, `answer_regex`: also label
    by greedy generation (saeeval.tasks.answer_parsing; default regex: the seed notebook's).
    """

    name = "toxicity"
    position_names = ("answer",)
    slice_fields = ("identity", "label")
    has_answers = True
    answer_position = "answer"
    slice_rates = MappingProxyType(
        {
            "false_positive_rate": MappingProxyType({"label": "nontoxic"}),
            "false_negative_rate": MappingProxyType({"label": "toxic"}),
        }
    )
    generation: GenerationOptions  # set in __init__: this task can always generate

    def __init__(
        self,
        identities: Sequence[str] | str | None = None,
        n_examples: int | None = 480,
        template: str = TOXICITY_TEMPLATE,
        chat_template: bool = False,
        answer_prefix: str = "",
        labels: dict[str, str] | None = None,
        csv_path: str | None = None,
        answer_mode: str = "logit_diff",
        max_new_tokens: int = 8,
        answer_regex: str = NOTEBOOK_REGEX,
        batch_size: int = 32,
        limit: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, limit=limit, seed=seed, num_workers=num_workers)
        if isinstance(identities, str) and identities != "all":
            identities = [identities]
        self.identities = identities if identities is None or identities == "all" else [str(i) for i in identities]
        if n_examples is not None and n_examples < 1:
            raise SaeevalError(f"task.n_examples={n_examples} leaves no examples; set a positive number or null (all)")
        self.n_examples = n_examples
        if "{phrase}" not in template:
            raise SaeevalError("task.template must contain {phrase}, where the sentence goes")
        self.template, self.chat_template, self.answer_prefix = template, bool(chat_template), str(answer_prefix)
        self.labels = dict(TOXICITY_LABELS if labels is None else labels)
        if sorted(self.labels) != sorted(CLASSES) or len(set(self.labels.values())) != 2:
            raise SaeevalError(f"task.labels={self.labels} must map toxic and nontoxic to two different strings")
        self.csv_path = None if csv_path is None else str(csv_path)
        self._group_of: dict[tuple[str, str], int] = {}
        self.generation = GenerationOptions(str(answer_mode), int(max_new_tokens), str(answer_regex))

    def options(self) -> dict[str, Any]:
        identities = [g["identity"] for g in self.groups[::2]] if self.groups else self.identities
        return {
            "identities": identities,
            "n_examples": self.n_examples,
            "template": self.template,
            "chat_template": self.chat_template,
            "answer_prefix": self.answer_prefix,
            "labels": self.labels,
            "csv_path": self.csv_path,
            **self.generation.describe(),
        }

    def _generated_rows(self) -> tuple[list[ToxicityRow], list[str]]:
        known = load_words("jigsaw_name_adj")["ids"]
        if self.identities is None:
            wanted = list(SEED_IDENTITIES)
        else:
            wanted = list(known) if self.identities == "all" else list(self.identities)
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise SaeevalError(
                f"unknown identities {unknown} in task.identities; use task.identities=all or some of {known}"
            )
        keep = set(wanted)
        rows = [
            ToxicityRow(r["phrase"], r["toxicity"], r["identity"]) for r in name_adj_rows() if r["identity"] in keep
        ]
        return rows, wanted

    def _rows(self) -> tuple[list[ToxicityRow], list[str]]:
        """All candidate rows of the chosen identities, and those identities in report order."""
        if self.csv_path is None:
            return self._generated_rows()
        rows = read_toxicity_csv(self.csv_path)
        if not rows:
            raise SaeevalError(f"task.csv_path={self.csv_path!r} has no rows; add rows or drop task.csv_path")
        present = list(dict.fromkeys(r.identity for r in rows))
        wanted = present if self.identities in (None, "all") else list(self.identities)
        keep = set(wanted)
        rows = [r for r in rows if r.identity in keep]
        if not rows:
            raise SaeevalError(
                f"task.identities={wanted} matches no rows of {self.csv_path}; "
                "pick identities it contains or set task.identities=null"
            )
        return rows, [i for i in wanted if i in present]

    def _load(self) -> list[ToxicityRow]:
        if self.chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise SaeevalError(
                f"tokenizer {tokenizer_name(self.tokenizer)!r} has no chat template; set task.chat_template=false"
            )
        rows, identities = self._rows()
        sample = stratified_sample(rows, self.n_examples, random.Random(self.seed))
        self.groups = [{"identity": i, "label": lab} for i in identities for lab in CLASSES]
        self._group_of = {(g["identity"], g["label"]): k for k, g in enumerate(self.groups)}
        return sample

    def prompt(self, phrase: str) -> str:
        """The prompt text for one sentence (chat-wrapped when asked; a leading BOS string is left to `bind`)."""
        text = self.template.replace("{phrase}", phrase)
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            bos = self.tokenizer.bos_token
            text = text[len(bos) :] if bos and text.startswith(bos) else text
        return text + self.answer_prefix

    def _example(self, idx: int, item: ToxicityRow) -> TaskExample:
        other = CLASSES[1 - CLASSES.index(item.label)]
        text, ids, (correct, incorrect) = resolve_prompt(
            self.tokenizer,
            self.encode,
            self.prompt(item.phrase),
            [self.labels[item.label], self.labels[other]],
            what="label",
            fix="set task.labels={toxic: ..., nontoxic: ...} to strings that are one token each",
        )
        tokens = self.bos_ids() + ids
        return TaskExample(
            id=idx,
            prompt=text,
            tokens=tokens,
            correct=correct,
            incorrect=incorrect,
            positions={"answer": len(tokens) - 1},
            group=self._group_of[(item.identity, item.label)],
        )
