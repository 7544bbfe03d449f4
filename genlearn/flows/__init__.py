"""Flow families built on the core Bijector/Flow protocol."""

from genlearn.flows.coupling import Transformer, affine, coupling, half_mask, parity_mask, shift
from genlearn.flows.nice import nice
from genlearn.flows.realnvp import realnvp
from genlearn.flows.made import MADE, made
from genlearn.flows.autoregressive import iaf, inverse_autoregressive, maf, masked_autoregressive
from genlearn.flows.spline import rational_quadratic, spline
from genlearn.flows.glow import actnorm, actnorm_data_init, glow, invertible_linear, lu_linear
from genlearn.flows.batchnorm import BatchNorm, batch_norm
from genlearn.flows.cnf import cnf, cnf_flow_matching, cnf_nll

__all__ = [
    "Transformer",
    "affine",
    "coupling",
    "half_mask",
    "nice",
    "parity_mask",
    "realnvp",
    "shift",
    # flows II: autoregressive and spline
    "MADE",
    "iaf",
    "inverse_autoregressive",
    "maf",
    "made",
    "masked_autoregressive",
    "rational_quadratic",
    "spline",
    # flows II: glow, batch norm, cnf
    "BatchNorm",
    "actnorm",
    "actnorm_data_init",
    "batch_norm",
    "cnf",
    "cnf_flow_matching",
    "cnf_nll",
    "glow",
    "invertible_linear",
    "lu_linear",
]
