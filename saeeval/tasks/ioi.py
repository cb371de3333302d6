"""Indirect object identification (Wang et al. 2022): "When Mary and John went to the store, John gave a drink to".

The model should prefer the indirect object (IO, Mary) over the subject (S, John) at the last token. Prompts come
from `words.generate_ioi` (Easy-Transformer's 15 templates, BABA and ABBA alternating, seeded); every name must be
one token with its leading space for the tokenizer in use, or the logit difference compares name fragments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saeeval.errors import SaeevalError
from saeeval.tasks.answer_parsing import FIRST_NAME_REGEX, GenerationOptions
from saeeval.tasks.answers import resolve_answer, resolve_prompt, span_token_positions, tokenizer_name
from saeeval.tasks.base import TaskDataModule, TaskExample
from saeeval.tasks.words import IOIPrompt, generate_ioi, load_words

ORDERS = ("BABA", "ABBA")
NAMES_FIX = "set task.names=[...] to names that are one token with a leading space"


class IOIDataModule(TaskDataModule):
    """IOI prompts; correct = IO name token, incorrect = S name token; positions IO, S1, S2 and END (last token).

    `names`: the name pool (default: the 99 Easy-Transformer names); each is checked to be a single token.
    `answer_mode`, `max_new_tokens`, `answer_regex`: also answer by greedy generation, read as the first of the
    two names the model writes (saeeval.tasks.answer_parsing).
    """

    name = "ioi"
    position_names = ("IO", "S1", "S2", "END")
    slice_fields = ("order",)
    has_answers = True
    answer_position = "END"
    generation: GenerationOptions  # set in __init__: this task can always generate

    def __init__(
        self,
        n_examples: int = 400,
        names: Sequence[str] | None = None,
        answer_mode: str = "logit_diff",
        max_new_tokens: int = 4,
        answer_regex: str = FIRST_NAME_REGEX,
        batch_size: int = 32,
        limit: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, limit=limit, seed=seed, num_workers=num_workers)
        if n_examples < 1:
            raise SaeevalError(f"task.n_examples={n_examples} leaves no examples; set it to a positive number")
        self.n_examples = n_examples
        self.names = None if names is None else list(dict.fromkeys(str(n) for n in names))
        if self.names is not None and len(self.names) < 2:
            raise SaeevalError(f"task.names={self.names} needs at least two distinct names")
        self.generation = GenerationOptions(str(answer_mode), int(max_new_tokens), str(answer_regex))

    def options(self) -> dict[str, Any]:
        return {"n_examples": self.n_examples, "names": self.names, **self.generation.describe()}

    def _single_token(self, context: str, word: str) -> bool:
        try:
            resolve_answer(self.tokenizer, self.encode, context, word)
        except SaeevalError:
            return False
        return True

    def _load(self) -> list[IOIPrompt]:
        names = self.names if self.names is not None else list(load_words("ioi")["names"])
        prompts = generate_ioi(self.n_examples, self.seed, names)
        bad = [n for n in names if not self._single_token(prompts[0].prompt, " " + n)]
        if bad:
            shown = ", ".join(bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise SaeevalError(
                f"{len(bad)} of {len(names)} IOI names are not one token for tokenizer "
                f"{tokenizer_name(self.tokenizer)!r} ({shown}); {NAMES_FIX}"
            )
        self.groups = [{"order": o} for o in ORDERS]
        return prompts

    def _example(self, idx: int, item: IOIPrompt) -> TaskExample:
        text, ids, (io, s) = resolve_prompt(
            self.tokenizer, self.encode, item.prompt, [" " + item.io, " " + item.s], what="IOI name", fix=NAMES_FIX
        )
        bos = self.bos_ids()
        spans = span_token_positions(self.tokenizer, self.encode, text, item.spans)
        tokens = bos + ids
        positions = {k: len(bos) + spans[k] for k in ("IO", "S1", "S2")}
        positions["END"] = len(tokens) - 1
        return TaskExample(
            id=idx,
            prompt=text,
            tokens=tokens,
            correct=io,
            incorrect=s,
            positions=positions,
            group=ORDERS.index(item.order),
        )
