"""Generation-based answers: the task options (`answer_mode`, `max_new_tokens`, `answer_regex`) and the parser that
reads a label out of what the model wrote.

Why: the logit difference at one position and what the model actually writes can disagree (the seed notebook
labels toxicity by generating and parsing the reply). The regex is a template: `{label}` stands for each
candidate answer (the task's correct and incorrect answer strings, e.g. "1"/"0" or the two IOI names), so one
pattern serves every example and tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saeeval.errors import SaeevalError

ANSWER_MODES = ("logit_diff", "generate", "both")
LABEL = "{label}"
NOTEBOOK_REGEX = r"(model|Label)[(<td>:'`\*\s\n]*{label}"
"""The seed notebook's toxicity pattern `(model|Label)[(<td>:'`\\*\\s\\n]*0` (-> 0) / `...1` (-> 1), with the
label as a placeholder."""
FIRST_NAME_REGEX = r"\b{label}\b"
"""IOI: the first of the two names the model writes."""
UNPARSED = -1


@dataclass(frozen=True)
class GenerationOptions:
    """How a task's answers are read: `logit_diff` (the logit difference only), `generate` or `both` (also greedy
    generation of `max_new_tokens` tokens under every condition, parsed with `answer_regex`)."""

    answer_mode: str = "logit_diff"
    max_new_tokens: int = 8
    answer_regex: str = NOTEBOOK_REGEX

    def __post_init__(self) -> None:
        if self.answer_mode not in ANSWER_MODES:
            raise SaeevalError(f"task.answer_mode={self.answer_mode!r} is unknown; use {', '.join(ANSWER_MODES)}")
        if isinstance(self.max_new_tokens, bool) or int(self.max_new_tokens) < 1:
            raise SaeevalError(f"task.max_new_tokens={self.max_new_tokens} must be a positive number, e.g. 8")
        if LABEL not in self.answer_regex:
            raise SaeevalError(
                f"task.answer_regex={self.answer_regex!r} has no {LABEL} placeholder; write the pattern with "
                f"{LABEL} where the answer goes, e.g. {NOTEBOOK_REGEX}"
            )
        try:
            re.compile(self.answer_regex.replace(LABEL, "0"))
        except re.error as err:
            raise SaeevalError(
                f"task.answer_regex={self.answer_regex!r} is not a valid regex ({err}); fix it"
            ) from None

    @property
    def generates(self) -> bool:
        return self.answer_mode != "logit_diff"

    def describe(self) -> dict[str, Any]:
        """The options as recorded in results.json (task.options)."""
        return {
            "answer_mode": self.answer_mode,
            "max_new_tokens": int(self.max_new_tokens),
            "answer_regex": self.answer_regex,
        }


def parse_answer(regex: str, prompt: str, generated: str, candidates: Sequence[str]) -> int:
    """Index into `candidates` of the answer the model wrote, or UNPARSED (-1).

    The pattern (`{label}` replaced by each escaped candidate) is searched in `prompt + generated`, so its context
    ("Label:", "model") may come from the prompt, but only a match whose last character the model generated
    counts. Among the candidates that match, the one whose first such match ends earliest wins (the label the model
    wrote first); for the notebook's pattern that is its 0-then-1 check whenever the reply holds one label.
    """
    text, start = prompt + generated, len(prompt)
    best, best_end = UNPARSED, None
    for i, cand in enumerate(candidates):
        pattern = re.compile(regex.replace(LABEL, re.escape(cand)))
        end = next((m.end() for m in pattern.finditer(text) if m.end() > start), None)
        if end is not None and (best_end is None or end < best_end):
            best, best_end = i, end
    return best


def generated_text(tokenizer: Any, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> tuple[str, str]:
    """(prompt text, generated text) as the tokenizer decodes them, the generated ids cut at the first id < 0.

    The generated text is what decoding prompt + generation adds to the decoded prompt (a lone token's decoding can
    lose the space a SentencePiece or word-level tokenizer puts between tokens), special tokens kept as text.
    """
    kept = []
    for t in new_ids:
        if t < 0:
            break
        kept.append(int(t))
    prompt = tokenizer.decode(list(prompt_ids))
    full = tokenizer.decode([*prompt_ids, *kept])
    return prompt, full[len(prompt) :] if full.startswith(prompt) else tokenizer.decode(kept)
