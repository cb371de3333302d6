"""Where task strings land in the token sequence: single-token answers and the tokens under character spans.

Both are resolved per tokenizer when a dataset is built, because the same string tokenizes differently across
tokenizers (GPT-2 reads "Label: 1" as ':' + ' 1', SentencePiece splits digits, word-level vocabularies map unknown
words to one UNK id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from saeeval.errors import SaeevalError

Encode = Callable[[str], list[int]]


def tokenizer_name(tokenizer: Any) -> str:
    """A short name for error messages: the tokenizer's `name_or_path` (attribute or init kwarg), else its class."""
    init = getattr(tokenizer, "init_kwargs", None) or {}
    return str(getattr(tokenizer, "name_or_path", "") or init.get("name_or_path") or type(tokenizer).__name__)


def _splits(prompt: str, answer: str) -> list[tuple[str, str]]:
    """Prompt/answer splits to try: as given, then with the prompt's trailing whitespace moved into the answer."""
    stripped = prompt.rstrip()
    if stripped == prompt:
        return [(prompt, answer)]
    return [(prompt, answer), (stripped, prompt[len(stripped) :] + answer)]


def _single_token(tokenizer: Any, encode: Encode, prompt: str, answer: str) -> tuple[list[int], int] | None:
    """(prompt ids, answer id) when tokens(prompt + answer) == tokens(prompt) + one non-UNK token, else None."""
    p, f = encode(prompt), encode(prompt + answer)
    if len(f) != len(p) + 1 or f[: len(p)] != p:
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and f[-1] == unk:
        return None
    return p, f[-1]


def _not_single(tokenizer: Any, answers: Sequence[str], prompt: str, what: str, fix: str) -> SaeevalError:
    shown = ", ".join(repr(a) for a in answers)
    noun, verb = (what, "is") if len(answers) == 1 else (what + "s", "are")
    return SaeevalError(
        f"{noun} {shown} {verb} not a single token after {prompt[-20:]!r} for tokenizer {tokenizer_name(tokenizer)!r}"
        + (f"; {fix}" if fix else "")
    )


def resolve_answer(
    tokenizer: Any, prompt_ids_fn: Encode, prompt: str, answer: str, *, what: str = "answer", fix: str = ""
) -> tuple[list[int], int]:
    """Prompt ids and the single answer token id for `prompt + answer` (GPT-2 tokenizes "Label: 1"
    as ":" + " 1", so a prompt ending in a space would make the answer "1" a different token).

    Tokenize prompt+answer; if that is not tokens(prompt) + exactly one token, move the prompt's trailing
    whitespace into the answer and retry; if it still is not, raise a SaeevalError naming `what` and `fix`.
    """
    _, prompt_ids, (answer_id,) = resolve_prompt(tokenizer, prompt_ids_fn, prompt, [answer], what=what, fix=fix)
    return prompt_ids, answer_id


def resolve_answers(
    tokenizer: Any, prompt_ids_fn: Encode, prompt: str, answers: Sequence[str], *, what: str = "answer", fix: str = ""
) -> tuple[list[int], list[int]]:
    """`resolve_answer` for answers that must share one prompt tokenization (correct and incorrect)."""
    _, prompt_ids, answer_ids = resolve_prompt(tokenizer, prompt_ids_fn, prompt, answers, what=what, fix=fix)
    return prompt_ids, answer_ids


def resolve_prompt(
    tokenizer: Any, prompt_ids_fn: Encode, prompt: str, answers: Sequence[str], *, what: str = "answer", fix: str = ""
) -> tuple[str, list[int], list[int]]:
    """(prompt text actually tokenized, its ids, one id per answer) under one shared prompt tokenization.

    The first prompt/answer split under which every answer is a single token wins; the answer ids must differ.
    """
    memo: dict[str, list[int]] = {}

    def encode(text: str) -> list[int]:
        if text not in memo:
            memo[text] = list(prompt_ids_fn(text))
        return memo[text]

    for i in range(len(_splits(prompt, ""))):
        hits = [_single_token(tokenizer, encode, *_splits(prompt, a)[i]) for a in answers]
        if all(h is not None for h in hits):
            ids = [h[1] for h in hits if h is not None]
            if len(set(ids)) != len(ids):
                raise SaeevalError(
                    f"{what}s {list(answers)!r} share a token ({ids}) for tokenizer {tokenizer_name(tokenizer)!r}"
                    + (f"; {fix}" if fix else "")
                )
            return _splits(prompt, "")[i][0], hits[0][0], ids  # type: ignore[index]
    bad = [a for a in answers if all(_single_token(tokenizer, encode, p, x) is None for p, x in _splits(prompt, a))]
    if bad:
        raise _not_single(tokenizer, bad, prompt, what, fix)
    raise SaeevalError(
        f"{what}s {list(answers)!r} are single tokens for tokenizer {tokenizer_name(tokenizer)!r} only under different "
        f"splits of the prompt's trailing whitespace" + (f"; {fix}" if fix else "")
    )


def span_token_positions(
    tokenizer: Any, encode: Encode, text: str, spans: dict[str, tuple[int, int]]
) -> dict[str, int]:
    """Index (into encode(text)) of the last token overlapping each character span [start, end).

    For a single-token word that is the word's token. Uses the offset mapping of fast tokenizers, otherwise the
    length of the tokenized prefix `text[:end]`.
    """
    ids = encode(text)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == ids:
            out = {}
            for key, (s, e) in spans.items():
                hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < e and b > s]
                if not hits:
                    raise ValueError(f"no token covers {key} span {(s, e)} of {text!r}")
                out[key] = hits[-1]
            return out
    return {key: len(encode(text[:e])) - 1 for key, (s, e) in spans.items()}
