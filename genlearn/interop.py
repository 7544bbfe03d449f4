"""Interoperability with distrax: genlearn flows and bijectors as distrax objects.

    dist = to_distrax(flow, params)            # a distrax.Transformed
    dist.log_prob(x)                           # == flow.log_prob(params, x)
    dist.sample(seed=key, sample_shape=n)      # == flow.sample(params, key, n)

    bij = to_distrax_bijector(bijector, bparams)   # a distrax.Bijector (event_ndims 1)
    bij.forward_and_log_det(z)                     # == bijector.apply_and_log_det, any batch shape

Conventions: a genlearn bijector's ``apply`` (z -> x, the generative
direction) is the distrax ``forward``. genlearn's :func:`genlearn.core.chain`
lists layers in flow order (``chain(f1, f2)`` is f2 o f1) whereas
``distrax.Chain([f2, f1])`` is function composition, so
``chain(f1, ..., fK)`` corresponds to ``distrax.Chain([fK, ..., f1])``.

The base distribution is wrapped as a ``distrax.Distribution`` that samples
with the same key in the same way as genlearn's, so ``to_distrax(flow,
params).sample(seed=key, sample_shape=n)`` returns exactly
``flow.sample(params, key, n)``. A conditional flow is converted for one fixed
context vector (``context`` of shape ``(context_dim,)``).
"""

from __future__ import annotations

from typing import Any

import distrax
import jax
import jax.numpy as jnp

from genlearn.core.bijectors import Bijector, check_context
from genlearn.core.distributions import Distribution
from genlearn.core.flow import Flow

__all__ = ["to_distrax", "to_distrax_bijector", "to_distrax_distribution"]

Array = jax.Array


def _batched(fn, dim: int, value: Array, what: str):
    """Applies a single-example ``fn(v) -> (out, scalar)`` over any leading batch shape."""
    value = jnp.asarray(value)
    if value.ndim < 1 or value.shape[-1] != dim:
        raise ValueError(f"{what}: expected an array of shape (..., {dim}), got {tuple(value.shape)}")
    batch = value.shape[:-1]
    flat = value.reshape((-1, dim))
    out, ld = jax.vmap(fn)(flat)
    return out.reshape(batch + (dim,)), ld.reshape(batch)


class _DistraxBijector(distrax.Bijector):
    """A genlearn :class:`Bijector` with fixed params as a ``distrax.Bijector`` (event_ndims 1)."""

    def __init__(self, bijector: Bijector, params: Any, context: Array | None = None):
        super().__init__(event_ndims_in=1, event_ndims_out=1)
        check_context(context, bijector.context_dim, "to_distrax_bijector")
        self._bij = bijector
        self._params = params
        self._context = context

    def _call(self, f, v):
        if self._bij.context_dim:
            return f(self._params, v, self._context)
        return f(self._params, v)

    def forward_and_log_det(self, x):
        return _batched(lambda v: self._call(self._bij.apply_and_log_det, v), self._bij.dim, x,
                        "distrax forward_and_log_det")

    def inverse_and_log_det(self, y):
        return _batched(lambda v: self._call(self._bij.inverse_and_log_det, v), self._bij.dim, y,
                        "distrax inverse_and_log_det")

    @property
    def name(self) -> str:
        return "GenlearnBijector"


class _DistraxDistribution(distrax.Distribution):
    """A genlearn base :class:`Distribution` with fixed params as a ``distrax.Distribution``."""

    def __init__(self, dist: Distribution, params: Any):
        self._dist = dist
        self._params = params

    @property
    def event_shape(self):
        return (self._dist.dim,)

    def _sample_n(self, key, n):
        return self._dist.sample(self._params, key, n)

    def log_prob(self, value):
        dim = self._dist.dim
        return _batched(lambda v: (v, self._dist.log_prob(self._params, v)), dim, value, "distrax log_prob")[1]


def to_distrax_bijector(bijector: Bijector, params: Any, context: Array | None = None) -> distrax.Bijector:
    """A genlearn :class:`Bijector` and its params as a ``distrax.Bijector``.

    ``forward`` is genlearn's ``apply`` (z -> x); inputs may have any leading
    batch shape ``(..., dim)``. For a conditional bijector pass one ``context``
    vector of shape ``(context_dim,)``.
    """
    if not isinstance(bijector, Bijector):
        raise TypeError(f"to_distrax_bijector: expected a genlearn Bijector, got {type(bijector).__name__}")
    return _DistraxBijector(bijector, params, context)


def to_distrax_distribution(dist: Distribution, params: Any) -> distrax.Distribution:
    """A genlearn base :class:`Distribution` and its params as a ``distrax.Distribution``."""
    if not isinstance(dist, Distribution):
        raise TypeError(f"to_distrax_distribution: expected a genlearn Distribution, got {type(dist).__name__}")
    return _DistraxDistribution(dist, params)


def to_distrax(flow: Flow, params: Any, context: Array | None = None) -> distrax.Distribution:
    """A genlearn :class:`Flow` and its params as a ``distrax.Transformed`` distribution.

    ``log_prob`` equals ``flow.log_prob(params, x)`` (computed by distrax from
    the converted bijector's inverse and log-det) and, for the same key,
    ``sample(seed=key, sample_shape=n)`` equals ``flow.sample(params, key, n)``.
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"to_distrax: expected a genlearn Flow, got {type(flow).__name__}")
    if not isinstance(params, dict) or "base" not in params or "bijector" not in params:
        raise ValueError("to_distrax: params must be the flow's params dict with keys 'base' and 'bijector'")
    base = to_distrax_distribution(flow.base, params["base"])
    return distrax.Transformed(base, to_distrax_bijector(flow.bijector, params["bijector"], context))
