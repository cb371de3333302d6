"""saeeval: what does splicing a sparse autoencoder into a language model do to it?"""

__version__ = "0.1.0"

from saeeval.resolvers import register as _register_resolvers

_register_resolvers()
