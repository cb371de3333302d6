"""saeeval: what does splicing a sparse autoencoder into a language model do to it?

`saeeval.evaluate(model, saes, task="ioi")` evaluates a model and SAEs already in memory and returns `Results`;
`python -m saeeval +task=ioi` runs the same evaluation from configs and writes its files.
"""

__version__ = "0.1.0"

from saeeval.resolvers import register as _register_resolvers

_register_resolvers()

from saeeval.api import evaluate  # noqa: E402
from saeeval.run_results import Results  # noqa: E402

__all__ = ["Results", "evaluate", "__version__"]
