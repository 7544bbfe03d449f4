"""Flow families built on the core Bijector/Flow protocol."""

from genlearn.flows.coupling import Transformer, affine, coupling, half_mask, parity_mask, shift
from genlearn.flows.nice import nice
from genlearn.flows.realnvp import realnvp

__all__ = [
    "Transformer",
    "affine",
    "coupling",
    "half_mask",
    "nice",
    "parity_mask",
    "realnvp",
    "shift",
]
