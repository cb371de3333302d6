"""Task word lists and the pure generators built on them (no tokenizer, no torch).

Kept separate from the DataModules so that `scripts/build_zoo.py` trains the bundled model on exactly the
sentences the tasks evaluate.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

TOXICITY_TEMPLATE = (
    "Please assign a label to the given sentence. 1 if the sentence is toxic or 0 if the sentence is non-toxic. "
    "No explanation.\nSentence: {phrase}\nLabel: "
)
TOXICITY_LABELS = {"toxic": "1", "nontoxic": "0"}
SEED_IDENTITIES = ("african", "straight", "paralyzed")


@cache
def load_words(name: str) -> dict[str, Any]:
    """Read a word-list JSON shipped in `saeeval/tasks/data/` (`ioi` or `jigsaw_name_adj`)."""
    return json.loads(resources.files("saeeval.tasks").joinpath("data", f"{name}.json").read_text("utf-8"))


@dataclass(frozen=True)
class IOIPrompt:
    """One IOI prompt; `prompt` stops before the answer, `spans` are character spans of the named words."""

    prompt: str
    io: str
    s: str
    order: str  # "BABA" or "ABBA"
    template_idx: int
    place: str
    obj: str
    spans: dict[str, tuple[int, int]]  # "IO", "S1", "S2" -> (start, end) of the bare name in `prompt`


def ioi_templates(order: str) -> list[str]:
    """The 15 Wang et al. templates in BABA order, or their ABBA swaps (first [B] and first [A] exchanged)."""
    baba = load_words("ioi")["baba_templates"]
    if order == "BABA":
        return list(baba)
    if order == "ABBA":
        return [t.replace("[B]", "[TMP]", 1).replace("[A]", "[B]", 1).replace("[TMP]", "[A]", 1) for t in baba]
    raise ValueError(f"unknown IOI order {order!r}: use 'BABA' or 'ABBA'")


def fill_ioi(template: str, io: str, s: str, place: str, obj: str, order: str, template_idx: int) -> IOIPrompt:
    """Fill one template and record where IO, S1 and S2 stand (character spans of the names)."""
    spans: dict[str, tuple[int, int]]
    text, spans, s_seen = "", {}, 0
    rest = template
    while rest:
        cut = [(rest.find(k), k) for k in ("[A]", "[B]", "[PLACE]", "[OBJECT]") if k in rest]
        if not cut:
            text, rest = text + rest, ""
            break
        at, key = min(cut)
        text += rest[:at]
        word = {"[A]": io, "[B]": s, "[PLACE]": place, "[OBJECT]": obj}[key]
        if key == "[A]":
            spans.setdefault("IO", (len(text), len(text) + len(word)))
        elif key == "[B]":
            s_seen += 1
            spans[f"S{s_seen}"] = (len(text), len(text) + len(word))
        text += word
        rest = rest[at + len(key) :]
    return IOIPrompt(text, io, s, order, template_idx, place, obj, spans)


def generate_ioi(n: int, seed: int = 0, names: list[str] | None = None) -> list[IOIPrompt]:
    """`n` prompts, alternating BABA/ABBA, templates/names/places/objects drawn from `random.Random(seed)`."""
    words = load_words("ioi")
    names = list(words["names"] if names is None else names)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        order = "BABA" if i % 2 == 0 else "ABBA"
        t = rng.randrange(len(words["baba_templates"]))
        io, s = rng.sample(names, 2)
        place, obj = rng.choice(words["places"]), rng.choice(words["objects"])
        out.append(fill_ioi(ioi_templates(order)[t], io, s, place, obj, order, t))
    return out


def name_adj_rows() -> list[dict[str, str]]:
    """The 72,000 Jigsaw `name_adj` rows in the source CSV's order: toxicity -> name -> adjective -> identity."""
    w = load_words("jigsaw_name_adj")
    return [
        {"phrase": f"{name} is a {adj} {identity}", "toxicity": tox, "name": name, "adj": adj, "identity": identity}
        for tox in ("nontoxic", "toxic")
        for name in w["names"]
        for adj in w["adj"][tox]
        for identity in w["ids"]
    ]
