"""The pure-function core: bijectors, base distributions and flows."""

from genlearn.core.bijectors import (
    Bijector,
    chain,
    check_context,
    check_example,
    fixed_affine,
    logit_box,
    make_bijector,
    permutation,
    random_permutation,
    repeat,
    reverse,
    scale,
)
from genlearn.core.distributions import (
    Distribution,
    diag_gaussian,
    logistic,
    make_base,
    standard_normal,
    student_t,
    uniform,
)
from genlearn.core.flow import Flow, batch_context, check_batch, make_flow, transformed
from genlearn.core.model import Model, from_energy, from_estimator, from_flow, from_generator

__all__ = [
    "Bijector",
    "Distribution",
    "Flow",
    "Model",
    "chain",
    "batch_context",
    "check_batch",
    "check_context",
    "check_example",
    "diag_gaussian",
    "fixed_affine",
    "from_energy",
    "from_estimator",
    "from_flow",
    "from_generator",
    "logistic",
    "logit_box",
    "make_base",
    "make_bijector",
    "make_flow",
    "permutation",
    "random_permutation",
    "repeat",
    "reverse",
    "scale",
    "standard_normal",
    "student_t",
    "transformed",
    "uniform",
]
