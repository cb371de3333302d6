"""saeeval: what does splicing a sparse autoencoder into a language model do to it?

`saeeval.evaluate(model, saes, task="ioi")` evaluates a model and SAEs already in memory and returns `Results`;
`saeeval.load_model("gpt2-small")` and `saeeval.load_saes(model, source="release", ...)` load them the way the
command line does; `python -m saeeval +task=ioi` runs the same evaluation from configs and writes its files.
The layers behind these are mapped in ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saeeval._version import __version__
from saeeval.cli.resolvers import register as _register_resolvers

if TYPE_CHECKING:
    from saeeval.api.evaluate import evaluate
    from saeeval.api.results import Results
    from saeeval.loading.models import load_model
    from saeeval.loading.saes import load_saes

__all__ = ["Results", "__version__", "evaluate", "load_model", "load_saes"]

_register_resolvers()

_LAZY = {
    "evaluate": "saeeval.api.evaluate",
    "Results": "saeeval.api.results",
    "load_model": "saeeval.loading.models",
    "load_saes": "saeeval.loading.saes",
}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use so `import saeeval` stays light (no torch, no Lightning)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saeeval' has no attribute {name!r}")
