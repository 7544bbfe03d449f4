"""genlearn: learning high-dimensional distributions from samples, in pure JAX functions."""

from genlearn import core, flows, losses, nn
from genlearn.core import Bijector, Distribution, Flow, chain, make_bijector, make_flow

__version__ = "0.1.0"

__all__ = [
    "Bijector",
    "Distribution",
    "Flow",
    "chain",
    "core",
    "flows",
    "losses",
    "make_bijector",
    "make_flow",
    "nn",
]
