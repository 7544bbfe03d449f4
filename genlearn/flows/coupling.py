"""Coupling layers: one implementation serves NICE and RealNVP.

Split z into a conditioning part z_c and a transformed part z_t (a boolean
mask says which coordinates are transformed). A conditioner network h(z_c)
parametrises an elementwise, invertible *transformer* tau applied to z_t:

    x_c = z_c,   x_t = tau(z_t; h(z_c)).

The Jacobian is triangular, so log|det| is the sum of the transformer's
elementwise log-derivatives, an O(d) cost (lecture: "NICE and real-NVP").

- NICE (Dinh et al. 2014): additive, tau(z; v) = z + v, log-det 0.
- RealNVP (Dinh et al. 2017): affine; by default written in the normalizing
  direction z = x * s + t with a softplus scale s >= min_scale, or the paper's
  x = z * exp(u) + v with u soft-clamped to (-B, B) (``affine("exp")``).

A new transformer (e.g. a spline) is another :class:`Transformer`; the
coupling does not change.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import Bijector, _check_dim, make_bijector
from genlearn.nn import MLP, check_hidden_init

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


def affine(scale: str = "softplus", *, min_scale: float = 1e-2, max_log_scale: float = 5.0) -> Transformer:
    """RealNVP's affine transformer, in one of two parameterisations of the scale.

    - ``scale="softplus"`` (default): written in the normalizing direction,
      z = x * s + t with s = softplus(raw + c) + min_scale (c puts s = 1 at raw = 0),
      so x = (z - t) / s when sampling. The scale grows linearly, not exponentially,
      in the conditioner's output and never falls below ``min_scale``; this is the
      parameterisation of flowjax and nflows, and it learns measurably more per step
      (benchmarks/results/learning_curves.md). Above 1 its log-scale is soft-bounded,
      log s -> B tanh(log s / B) (unchanged to first and second order at s = 1, so
      below e^B in every layer; s = 10 becomes 8.6 at B = 5). Without the bound a
      point the flow has pushed far out feeds a ReLU conditioner that answers with
      a scale proportional to it, so |z| squares from layer to layer, overflows
      float32 within a few layers, and every minibatch's loss is then non-finite
      (a trained 16-layer MAF on ring8 lost 1.5 % of the training points this way,
      log-density -579 in float64, and training stopped).
    - ``scale="exp"``: the paper's x = z * exp(u) + v with u = B tanh(raw / B), the
      log-scale soft-clamped to (-B, B), B = ``max_log_scale``.

    Both are the identity at raw = 0 (a zero-initialised conditioner).
    """
    if scale not in ("softplus", "exp"):
        raise ValueError(f"affine: scale must be 'softplus' or 'exp', got {scale!r}")
    if not 0.0 < min_scale < 1.0:
        raise ValueError(f"affine: min_scale must be in (0, 1), got {min_scale}")
    if not max_log_scale > 0:
        raise ValueError(f"affine: max_log_scale must be > 0, got {max_log_scale}")
    bound = float(max_log_scale)

    def _clamp(u):  # soft clamp of a log-scale to (-B, B)
        return bound * jnp.tanh(u / bound)

    if scale == "softplus":
        floor = float(min_scale)
        offset = float(np.log(np.expm1(1.0 - floor)))  # softplus(offset) + floor = 1

        def _log_scale(raw):  # log s, soft-bounded above only
            u = jnp.log(jax.nn.softplus(raw + offset) + floor)
            return jnp.where(u > 0, _clamp(u), u)

        def forward(h, z):
            u = _log_scale(h[:, 0])
            return (z - h[:, 1]) * jnp.exp(-u), -jnp.sum(u)

        def inverse(h, x):
            u = _log_scale(h[:, 0])
            return x * jnp.exp(u) + h[:, 1], jnp.sum(u)

        return Transformer(2, forward, inverse)

    def forward(h, z):
        u = _clamp(h[:, 0])
        return z * jnp.exp(u) + h[:, 1], jnp.sum(u)

    def inverse(h, x):
        u = _clamp(h[:, 0])
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


def _stride(idx: np.ndarray) -> int | None:
    """The step of an arithmetic progression of indices (1 for one index), else None."""
    if idx.size == 1:
        return 1
    steps = np.diff(idx)
    return int(steps[0]) if steps[0] > 0 and np.all(steps == steps[0]) else None


def _taker(idx: np.ndarray) -> Callable[[Array], Array]:
    """``x -> x[idx]`` as a (strided) slice when the indices allow: a gather, and
    the scatter in its gradient, cost far more than a slice and its pad."""
    step = _stride(idx)
    if step is None:
        return lambda x: x[idx]
    start, stop = int(idx[0]), int(idx[-1]) + 1
    return lambda x: x[start:stop:step]


def _assembler(cond_idx: np.ndarray, trans_idx: np.ndarray) -> Callable[[Array, Array], Array]:
    """``(x_c, x_t) -> x`` with ``x[cond_idx] = x_c``, ``x[trans_idx] = x_t``.

    Two contiguous blocks are concatenated in data order and two interleaved
    halves (a parity mask) are stacked and reshaped, so only irregular masks
    need a gather.
    """
    if _stride(cond_idx) == 1 and _stride(trans_idx) == 1:
        if cond_idx[0] < trans_idx[0]:
            return lambda x_c, x_t: jnp.concatenate([x_c, x_t])
        return lambda x_c, x_t: jnp.concatenate([x_t, x_c])
    if (cond_idx.size == trans_idx.size and _stride(cond_idx) == 2 and _stride(trans_idx) == 2
            and abs(int(cond_idx[0]) - int(trans_idx[0])) == 1):
        first_is_cond = cond_idx[0] == 0
        return lambda x_c, x_t: jnp.stack([x_c, x_t] if first_is_cond else [x_t, x_c], -1).reshape(-1)
    order = np.argsort(np.concatenate([cond_idx, trans_idx])).astype(np.int32)
    return lambda x_c, x_t: jnp.concatenate([x_c, x_t])[order]


def coupling(
    dim: int,
    transformer: Transformer,
    *,
    mask: np.ndarray | None = None,
    hidden: tuple[int, ...] = (128, 128),
    activation: str | Callable = "relu",
    context_dim: int = 0,
    hidden_init: str = "uniform",
    last_init_scale: float = 0.0,
    residual: bool = False,
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
      hidden_init: the conditioner's hidden layers start from U(+-1/sqrt(fan_in))
        weights and biases ("uniform", the default: nonzero biases spread the ReLU
        kinks instead of passing them all through the origin) or from flax's
        lecun-normal kernels and zero biases ("lecun").
      last_init_scale: 0 (the default) zeroes the conditioner's last layer, so the
        coupling starts as the identity; > 0 draws its kernel from N(0, scale^2), a
        coupling near the identity (NICE's default, see :func:`genlearn.flows.nice`).
      residual: skip connections between the conditioner's equal-width hidden layers
        (:class:`genlearn.nn.MLP`'s ``residual``). Off by default: in
        benchmarks/results/flow_ablation.md (stop 41) they help the spline on the 8- and
        16-D targets and digits but cost it on a 64-D mixture, and cost RealNVP on two
        moons and the 8-D mixture.

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
    check_hidden_init(hidden_init, "coupling")
    if not isinstance(residual, (bool, np.bool_)):
        raise ValueError(f"coupling: residual must be True or False, got {residual!r}")
    if isinstance(last_init_scale, bool) or not (isinstance(last_init_scale, (int, float, np.floating))
                                                  and np.isfinite(last_init_scale) and last_init_scale >= 0):
        raise ValueError(f"coupling: last_init_scale must be a finite number >= 0, got {last_init_scale!r}")
    # int32 indices: int64 numpy indices break under a toggled jax.enable_x64.
    cond_idx = np.flatnonzero(~mask).astype(np.int32)
    trans_idx = np.flatnonzero(mask).astype(np.int32)
    k = trans_idx.size
    take_cond, take_trans = _taker(cond_idx), _taker(trans_idx)
    assemble = _assembler(cond_idx, trans_idx)
    net = MLP(hidden=tuple(int(w) for w in hidden), out=k * transformer.params_per_dim,
              activation=activation, zero_init_last=True,
              hidden_init=hidden_init, last_init_scale=float(last_init_scale), residual=bool(residual))

    def init(key):
        return net.init(key, jnp.zeros((cond_idx.size + context_dim,)))

    def _h(params, x_c, context):
        inp = x_c if context is None else jnp.concatenate([x_c, context.astype(x_c.dtype)])
        return net.apply(params, inp).reshape(k, transformer.params_per_dim)

    def apply_and_log_det(params, z, context=None):
        z_c = take_cond(z)
        x_t, ld = transformer.forward(_h(params, z_c, context).astype(z.dtype), take_trans(z))
        return assemble(z_c, x_t), ld

    def inverse_and_log_det(params, x, context=None):
        x_c = take_cond(x)
        z_t, ld = transformer.inverse(_h(params, x_c, context).astype(x.dtype), take_trans(x))
        return assemble(x_c, z_t), ld

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim, context_dim=context_dim)
