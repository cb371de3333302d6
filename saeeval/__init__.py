"""saeeval: what does splicing a sparse autoencoder into a language model do to it?

`saeeval.evaluate(model, saes, task="ioi")` evaluates a model and SAEs already in memory and returns `Results`;
`python -m saeeval +task=ioi` runs the same evaluation from configs and writes its files.
"""

from __future__ import annotations

from typing import Any

from saeeval.resolvers import register as _register_resolvers

__version__ = "0.1.0"
__all__ = ["Results", "evaluate", "__version__"]

_register_resolvers()


def __getattr__(name: str) -> Any:
    """`saeeval.evaluate` and `saeeval.Results`, imported on first use so `import saeeval` stays light."""
    if name == "evaluate":
        from saeeval.api import evaluate

        return evaluate
    if name == "Results":
        from saeeval.run_results import Results

        return Results
    raise AttributeError(f"module 'saeeval' has no attribute {name!r}")
