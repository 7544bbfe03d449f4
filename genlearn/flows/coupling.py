"""Coupling layers: one implementation serves NICE and RealNVP.

Split z into a conditioning part z_c and a transformed part z_t (a boolean
mask says which coordinates are transformed). A conditioner network h(z_c)
parametrises an elementwise, invertible *transformer* tau applied to z_t:

    x_c = z_c,   x_t = tau(z_t; h(z_c)).

The Jacobian is triangular, so log|det| is the sum of the transformer's
elementwise log-derivatives, an O(d) cost (lecture: "NICE and real-NVP").

- NICE (Dinh et al. 2014): additive, tau(z; v) = z + v, log-det 0.
- RealNVP (Dinh et al. 2017): affine, tau(z; u, v) = z * exp(u) + v,
  log-det = sum u, with u soft-clamped to (-B, B) by B tanh(u / B).

A new transformer (e.g. a spline) is another :class:`Transformer`; the
coupling does not change.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import Bijector, _check_dim, make_bijector
from genlearn.nn import MLP

__all__ = ["Transformer", "shift", "affine", "coupling", "half_mask", "parity_mask"]

Array = jax.Array


class Transformer(NamedTuple):
    """An elementwise invertible map conditioned on ``params_per_dim`` numbers per coordinate.

    Attributes:
      params_per_dim: how many conditioner outputs each transformed coordinate needs.
      forward: ``(h, z) -> (x, log_det)`` with h of shape (k, params_per_dim),
        z of shape (k,), log_det the scalar sum over coordinates.
      inverse: ``(h, x) -> (z, log_det)`` (log|det dz/dx|).
    """

    params_per_dim: int
    forward: Callable[[Array, Array], tuple[Array, Array]]
    inverse: Callable[[Array, Array], tuple[Array, Array]]


def shift() -> Transformer:
    """NICE's additive transformer x = z + v (volume preserving)."""

    def forward(h, z):
        return z + h[:, 0], jnp.zeros((), z.dtype)

    def inverse(h, x):
        return x - h[:, 0], jnp.zeros((), x.dtype)

    return Transformer(1, forward, inverse)


def affine(max_log_scale: float = 5.0) -> Transformer:
    """RealNVP's affine transformer x = z * exp(u) + v with u = B tanh(raw / B).

    The soft clamp bounds the per-layer log-scale to (-B, B) for stability,
    keeping u ~ raw near 0 so an identity-initialised layer stays the identity.
    """
    if not max_log_scale > 0:
        raise ValueError(f"affine: max_log_scale must be > 0, got {max_log_scale}")
    bound = float(max_log_scale)

    def _log_scale(raw):
        return bound * jnp.tanh(raw / bound)

    def forward(h, z):
        u = _log_scale(h[:, 0])
        return z * jnp.exp(u) + h[:, 1], jnp.sum(u)

    def inverse(h, x):
        u = _log_scale(h[:, 0])
        return (x - h[:, 1]) * jnp.exp(-u), -jnp.sum(u)

    return Transformer(2, forward, inverse)


def half_mask(dim: int, swap: bool = False) -> np.ndarray:
    """True on the second half (the transformed coordinates); ``swap`` exchanges the roles."""
    mask = np.arange(dim) >= dim // 2
    return ~mask if swap else mask


def parity_mask(dim: int, swap: bool = False) -> np.ndarray:
    """True on odd coordinates (a 1-D checkerboard); ``swap`` exchanges the roles."""
    mask = np.arange(dim) % 2 == 1
    return ~mask if swap else mask


def coupling(
    dim: int,
    transformer: Transformer,
    *,
    mask: np.ndarray | None = None,
    hidden: tuple[int, ...] = (128, 128),
    activation: str | Callable = "relu",
    context_dim: int = 0,
) -> Bijector:
    """A coupling bijector on R^dim.

    Args:
      dim: dimension, >= 2.
      transformer: the elementwise inner transform (:func:`shift`, :func:`affine`, ...).
      mask: boolean (dim,), True where coordinates are transformed; default
        :func:`half_mask`. Needs at least one True and one False.
      hidden: hidden widths of the flax MLP conditioner. Its last layer is
        zero-initialised, so the layer starts as the identity.
      activation: the conditioner's activation.
      context_dim: > 0 makes a conditional coupling: the conditioner reads
        ``concat(z_c, context)`` and every function takes a context (c,).

    Params are the conditioner's flax params.
    """
    dim = _check_dim(dim, 2, "coupling dim")
    context_dim = _check_dim(context_dim, 0, "coupling context_dim")
    mask = half_mask(dim) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != (dim,):
        raise ValueError(f"coupling: mask must have shape ({dim},), got {mask.shape}")
    if mask.all() or not mask.any():
        raise ValueError("coupling: mask must transform some coordinates and condition on the others")
    if any(int(w) < 1 for w in hidden):
        raise ValueError(f"coupling: hidden widths must be >= 1, got {tuple(hidden)}")
    # int32 indices: int64 numpy indices break under a toggled jax.enable_x64.
    cond_idx = np.flatnonzero(~mask).astype(np.int32)
    trans_idx = np.flatnonzero(mask).astype(np.int32)
    k = trans_idx.size
    # Output order [cond, trans] -> data order; identity for a contiguous split.
    order = np.argsort(np.concatenate([cond_idx, trans_idx])).astype(np.int32)
    identity_order = np.array_equal(order, np.arange(dim))
    net = MLP(hidden=tuple(int(w) for w in hidden), out=k * transformer.params_per_dim,
              activation=activation, zero_init_last=True)

    def _take(x, idx):
        # Contiguous index ranges become slices: cheaper than a gather.
        if idx[-1] - idx[0] + 1 == idx.size:
            return x[int(idx[0]) : int(idx[-1]) + 1]
        return x[idx]

    def _assemble(x_c, x_t):
        out = jnp.concatenate([x_c, x_t])
        return out if identity_order else out[order]

    def init(key):
        return net.init(key, jnp.zeros((cond_idx.size + context_dim,)))

    def _h(params, x_c, context):
        inp = x_c if context is None else jnp.concatenate([x_c, context.astype(x_c.dtype)])
        return net.apply(params, inp).reshape(k, transformer.params_per_dim)

    def apply_and_log_det(params, z, context=None):
        z_c = _take(z, cond_idx)
        x_t, ld = transformer.forward(_h(params, z_c, context).astype(z.dtype), _take(z, trans_idx))
        return _assemble(z_c, x_t), ld

    def inverse_and_log_det(params, x, context=None):
        x_c = _take(x, cond_idx)
        z_t, ld = transformer.inverse(_h(params, x_c, context).astype(x.dtype), _take(x, trans_idx))
        return _assemble(x_c, z_t), ld

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim, context_dim=context_dim)
