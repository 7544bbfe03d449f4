"""Flows: a base distribution Q pushed forward by a bijector G, x = G(z), z ~ Q.

The density follows the lecture's change of variables:

    log p(x) = log q(G^{-1}(x)) + log|det dG^{-1}/dx (x)|.

Flow-level functions take BATCHES: x of shape (n, dim); they vmap the
single-example bijector functions. Params are ``{"base": ..., "bijector": ...}``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from genlearn.core.bijectors import Bijector, make_bijector
from genlearn.core.distributions import Distribution

__all__ = ["Flow", "make_flow", "transformed", "check_batch"]

Params = Any
Array = jax.Array


class Flow(NamedTuple):
    """A normalizing flow as pure functions.

    Attributes:
      init: ``init(key) -> params`` with keys ``"base"`` and ``"bijector"``.
      apply: ``(params, z) -> x``, batched: z of shape (n, dim).
      inverse: ``(params, x) -> z``, batched.
      log_det: ``(params, z) -> (n,)`` log|det dG/dz| per example.
      log_prob: ``(params, x) -> (n,)`` log-density per example.
      sample: ``(params, key, n) -> (n, dim)``.
      sample_and_log_prob: ``(params, key, n) -> ((n, dim), (n,))`` in one pass.
      base: the base :class:`Distribution`.
      bijector: the :class:`Bijector` G (single-example functions).
      dim: the dimension.
    """

    init: Callable[[Array], Params]
    apply: Callable[[Params, Array], Array]
    inverse: Callable[[Params, Array], Array]
    log_det: Callable[[Params, Array], Array]
    log_prob: Callable[[Params, Array], Array]
    sample: Callable[[Params, Array, int], Array]
    sample_and_log_prob: Callable[[Params, Array, int], tuple[Array, Array]]
    base: Distribution
    bijector: Bijector
    dim: int


def check_batch(x: Array, dim: int, what: str = "x") -> None:
    """Raises ValueError unless ``x`` has shape (n, dim) with n >= 1 (static check)."""
    shape = jnp.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{what}: expected a batch of shape (n, {dim}), got shape {tuple(shape)}")
    if shape[1] != dim:
        raise ValueError(f"{what}: model has dim {dim} but data has dim {shape[1]} (shape {tuple(shape)})")
    if shape[0] == 0:
        raise ValueError(f"{what}: empty batch (shape {tuple(shape)})")


def _check_n(n) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"sample: n must be a positive int, got {n!r}")
    return n


def make_flow(base: Distribution, bijector: Bijector) -> Flow:
    """Builds a :class:`Flow` x = G(z), z ~ Q from a base Q and a bijector G."""
    if base.dim != bijector.dim:
        raise ValueError(f"base has dim {base.dim} but bijector has dim {bijector.dim}")
    dim = bijector.dim

    def init(key):
        kb, kg = jax.random.split(key)
        return {"base": base.init(kb), "bijector": bijector.init(kg)}

    def apply(params, z):
        check_batch(z, dim, "apply")
        return jax.vmap(bijector.apply, (None, 0))(params["bijector"], z)

    def inverse(params, x):
        check_batch(x, dim, "inverse")
        return jax.vmap(bijector.inverse, (None, 0))(params["bijector"], x)

    def log_det(params, z):
        check_batch(z, dim, "log_det")
        return jax.vmap(bijector.log_det, (None, 0))(params["bijector"], z)

    def _log_prob_one(params, x):
        z, ld = bijector.inverse_and_log_det(params["bijector"], x)
        return base.log_prob(params["base"], z) + ld

    def log_prob(params, x):
        check_batch(x, dim, "log_prob")
        return jax.vmap(_log_prob_one, (None, 0))(params, x)

    def sample_and_log_prob(params, key, n):
        z = base.sample(params["base"], key, _check_n(n))
        log_q = jax.vmap(base.log_prob, (None, 0))(params["base"], z)
        x, ld = jax.vmap(bijector.apply_and_log_det, (None, 0))(params["bijector"], z)
        return x, log_q - ld

    def sample(params, key, n):
        z = base.sample(params["base"], key, _check_n(n))
        return jax.vmap(bijector.apply, (None, 0))(params["bijector"], z)

    return Flow(init, apply, inverse, log_det, log_prob, sample, sample_and_log_prob, base, bijector, dim)


def transformed(flow: Flow, outer: Bijector, outer_params: Params | None = None) -> Flow:
    """Appends a FIXED bijector after a flow: x = outer(G(z)).

    The result has the same params structure as ``flow`` (``outer``'s params are
    closed over), so a model trained in a preprocessed space (standardised, or
    logit of dequantised pixels) becomes a density in data space with exact
    log-det bookkeeping, while optimisers and regularisers never see ``outer``.
    """
    if outer.dim != flow.dim:
        raise ValueError(f"outer bijector has dim {outer.dim}, flow has dim {flow.dim}")
    if outer_params is None:
        outer_params = outer.init(jax.random.PRNGKey(0))
    inner = flow.bijector

    def apply_and_log_det(params, z):
        y, ld1 = inner.apply_and_log_det(params, z)
        x, ld2 = outer.apply_and_log_det(outer_params, y)
        return x, ld1 + ld2

    def inverse_and_log_det(params, x):
        y, ld2 = outer.inverse_and_log_det(outer_params, x)
        z, ld1 = inner.inverse_and_log_det(params, y)
        return z, ld1 + ld2

    return make_flow(flow.base, make_bijector(inner.init, apply_and_log_det, inverse_and_log_det, flow.dim))
