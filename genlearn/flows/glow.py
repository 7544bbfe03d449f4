"""Glow building blocks (Kingma & Dhariwal 2018): ActNorm, an LU-parametrised
invertible linear map, and the Glow flow built from them.

Conventions. A bijector maps z -> x (the generative direction, flow order);
its inverse x -> z is the *normalizing* direction used for densities. Glow's
step, written in the normalizing direction, is

    actnorm -> invertible linear (LU) -> affine coupling,

so in flow order (what :func:`genlearn.core.chain` takes) one step is
``chain(coupling, lu_linear, actnorm)`` and the inverse pass on data meets the
ActNorm first.

ActNorm's data-dependent initialisation sets, for a batch of its inputs in the
normalizing direction, ``shift = mean`` and ``log_scale = log std`` per
coordinate, so its inverse output is zero-mean, unit-variance on that batch.
It is an explicit, one-off function of a batch: :func:`actnorm_data_init`
for one layer, and ``glow(...).init(key, x_batch)`` for a whole Glow (the
batch is pushed through the layers in the normalizing direction and each
ActNorm is initialised on the batch it actually receives). The *bijector*
level ``init(key)`` of every piece is the identity initialisation (so the
Bijector protocol, ``transformed`` and ``genlearn.runs.load`` keep working);
``glow(..., data_init=True).init(key)`` without a batch raises a ValueError,
so an un-initialised ActNorm cannot be used by accident through the Flow API.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from genlearn.core.bijectors import Bijector, _check_dim, chain, make_bijector
from genlearn.core.distributions import Distribution, make_base, student_t
from genlearn.core.flow import Flow, make_flow
from genlearn.flows._common import alternating_masks, check_hidden, check_layers
from genlearn.flows.coupling import affine, coupling

__all__ = ["actnorm", "actnorm_data_init", "lu_linear", "invertible_linear", "glow"]

Array = jax.Array


# ---------------------------------------------------------------------------
# ActNorm
# ---------------------------------------------------------------------------


def actnorm(dim: int) -> Bijector:
    """ActNorm: a per-coordinate affine map x = z * exp(log_scale) + shift.

    log|det dx/dz| = sum(log_scale). ``init(key)`` is the identity
    (shift 0, log_scale 0); use :func:`actnorm_data_init` (or
    ``glow(...).init(key, x_batch)``) for Glow's data-dependent initialisation.
    Params: ``{"shift": (dim,), "log_scale": (dim,)}``.
    """
    dim = _check_dim(dim, 1, "actnorm: dim")

    def init(key):
        del key
        return {"shift": jnp.zeros((dim,)), "log_scale": jnp.zeros((dim,))}

    def apply_and_log_det(params, z):
        s = params["log_scale"].astype(z.dtype)
        return z * jnp.exp(s) + params["shift"].astype(z.dtype), jnp.sum(s)

    def inverse_and_log_det(params, x):
        s = params["log_scale"].astype(x.dtype)
        return (x - params["shift"].astype(x.dtype)) * jnp.exp(-s), -jnp.sum(s)

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim)


def _check_batch(x_batch, dim: int | None, what: str) -> Array:
    x = jnp.asarray(x_batch)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = "d" if dim is None else dim
        raise ValueError(f"{what}: expected a data batch of shape (n, {want}), got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{what}: a data-dependent initialisation needs at least 2 examples, got {x.shape[0]}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{what}: the data batch contains NaN or inf")
    return x


def actnorm_data_init(x_batch: Array, eps: float = 1e-6) -> dict:
    """ActNorm params from a batch of the layer's inputs (normalizing direction).

    Returns ``{"shift": mean, "log_scale": log(std + eps)}`` per coordinate, so
    that ``actnorm(d).inverse`` maps the batch to zero mean and unit variance
    (up to ``eps``). Raises ValueError for a batch that is not (n >= 2, d),
    contains NaN/inf.
    """
    if not eps >= 0:
        raise ValueError(f"actnorm_data_init: eps must be >= 0, got {eps}")
    x = _check_batch(x_batch, None, "actnorm_data_init")
    return _actnorm_stats(x, eps)


def _actnorm_stats(x: Array, eps: float = 1e-6) -> dict:
    return {"shift": jnp.mean(x, axis=0), "log_scale": jnp.log(jnp.std(x, axis=0) + eps)}


# ---------------------------------------------------------------------------
# Invertible linear map, LU parametrisation
# ---------------------------------------------------------------------------


def lu_linear(dim: int, *, key: Array | None = None) -> Bijector:
    """Glow's invertible linear map x = W z with W = P L (U + diag(sign * exp(log_scale))).

    P is a fixed permutation, L unit lower-triangular, U strictly upper
    triangular, ``sign`` fixed: log|det W| = sum(log_scale) costs O(d) and the
    inverse is two triangular solves, O(d^2). W starts as a random rotation
    drawn from ``key`` (default ``PRNGKey(0)``) at construction; P and the
    signs are constants of the bijector, never trained. ``init(key)`` returns
    the LU factors of that rotation (the init key is not used).

    Params: ``{"lower": (d, d), "upper": (d, d), "log_scale": (d,)}``; only the
    strictly lower / strictly upper parts of ``lower`` / ``upper`` are used.
    """
    dim = _check_dim(dim, 1, "lu_linear: dim")
    key = jax.random.PRNGKey(0) if key is None else key
    w = np.asarray(jax.random.orthogonal(key, dim), dtype=np.float64) if dim > 1 else np.ones((1, 1))
    perm_mat, lower, upper = scipy.linalg.lu(w)
    diag = np.diag(upper)
    sign = np.sign(diag)
    # P v == v[row] with P[i, row[i]] = 1, and P^T v == v[inv_row].
    row = np.argmax(perm_mat, axis=1).astype(np.int32)
    inv_row = np.argsort(row).astype(np.int32)
    l0 = np.tril(lower, -1)
    u0 = np.triu(upper, 1)
    log_s0 = np.log(np.abs(diag))
    tril_mask = np.tril(np.ones((dim, dim), bool), -1)
    triu_mask = np.triu(np.ones((dim, dim), bool), 1)

    def init(k):
        del k
        return {"lower": jnp.asarray(l0, jnp.float32), "upper": jnp.asarray(u0, jnp.float32),
                "log_scale": jnp.asarray(log_s0, jnp.float32)}

    def _factors(params, dtype):
        eye = jnp.eye(dim, dtype=dtype)
        low = jnp.where(tril_mask, params["lower"].astype(dtype), 0.0) + eye
        s = params["log_scale"].astype(dtype)
        up = jnp.where(triu_mask, params["upper"].astype(dtype), 0.0) + jnp.diag(sign.astype(dtype) * jnp.exp(s))
        return low, up, s

    def apply_and_log_det(params, z):
        low, up, s = _factors(params, z.dtype)
        y = low @ (up @ z)
        return y[row], jnp.sum(s)  # P y

    def inverse_and_log_det(params, x):
        low, up, s = _factors(params, x.dtype)
        y = x[inv_row]  # P^T x
        v = jax.scipy.linalg.solve_triangular(low, y, lower=True, unit_diagonal=True)
        z = jax.scipy.linalg.solve_triangular(up, v, lower=False)
        return z, -jnp.sum(s)

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim)


invertible_linear = lu_linear


# ---------------------------------------------------------------------------
# Glow
# ---------------------------------------------------------------------------


def glow(
    dim: int,
    num_layers: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    *,
    data_init: bool = True,
    scale: str = "softplus",
    min_scale: float = 1e-2,
    max_log_scale: float = 5.0,
    base: str | Distribution = "student_t",
    mask: str = "half",
    activation: str | Callable = "relu",
    context_dim: int = 0,
    seed: int = 0,
) -> Flow:
    """Glow: ``num_layers`` steps of actnorm -> LU linear -> affine coupling (normalizing direction).

    Args:
      dim: data dimension, >= 2.
      num_layers: number of Glow steps, >= 1.
      hidden: hidden widths of each coupling's MLP conditioner (zero-initialised last layer).
      data_init: when True (Glow's recipe) ``init(key, x_batch)`` needs a batch
        of data; ``init(key)`` alone raises a ValueError. When False the
        ActNorms start at the identity and ``x_batch`` is optional.
      scale, min_scale, max_log_scale: the couplings' affine parameterisation
        (see :func:`genlearn.flows.affine`).
      base: "student_t" (the default: a multivariate t with df = max(2.5 d, 5), half the
        usual df of :func:`genlearn.core.student_t`; it keeps training free of loss spikes), "normal",
        "diag_gaussian", "logistic", or a Distribution.
      mask: coupling masks, "half" or "parity" alternating between steps, or "random"
        (a random half per step drawn from ``seed``).
      activation: conditioner activation.
      context_dim: > 0 for a conditional flow p(x | c) (the couplings read c).
      seed: seeds the fixed random rotations that initialise the LU layers.

    Returns a :class:`Flow` whose ``init(key, x_batch=None)`` performs the
    data-dependent ActNorm initialisation; ``flow.bijector.init(key, x_batch=None)``
    does the same at the bijector level (x_batch in the bijector's space).
    """
    dim = _check_dim(dim, 2, "glow: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"glow: seed must be an int, got {seed!r}")
    transformer = affine(scale, min_scale=min_scale, max_log_scale=max_log_scale)
    rot_keys = jax.random.split(jax.random.PRNGKey(int(seed)), num_layers)
    layers: list[tuple[str, Bijector]] = []
    for i, m in enumerate(alternating_masks(dim, num_layers, mask, seed)):
        layers.append(("coupling", coupling(dim, transformer, mask=m, hidden=hidden, activation=activation,
                                            context_dim=context_dim)))
        layers.append(("lu", lu_linear(dim, key=rot_keys[i])))
        layers.append(("actnorm", actnorm(dim)))
    inner = chain(*[b for _, b in layers])
    cdim = inner.context_dim

    @jax.jit
    def _data_init(params, x, context):
        params = list(params)
        for i in reversed(range(len(layers))):  # the normalizing direction, as in Glow
            kind, b = layers[i]
            if kind == "actnorm":
                params[i] = _actnorm_stats(x)
            if b.context_dim:
                x = jax.vmap(b.inverse, (None, 0, 0))(params[i], x, context)
            else:
                x = jax.vmap(b.inverse, (None, 0))(params[i], x)
        return tuple(params)

    def bijector_init(key, x_batch=None, context=None):
        params = inner.init(key)
        if x_batch is None:
            return params
        x = _check_batch(x_batch, dim, "glow init: x_batch")
        if cdim:
            if context is None:
                raise ValueError(f"glow init: this Glow is conditional; pass context of shape (n, {cdim})")
            context = jnp.broadcast_to(jnp.asarray(context, x.dtype), (x.shape[0], cdim))
        return _data_init(params, x, context)

    bijector = inner._replace(init=bijector_init)
    if isinstance(base, str) and base == "student_t":
        # half the t's usual df: Glow's LU and ActNorm layers move its tails faster than a coupling flow's,
        # and df = 10 in 2-D still left a 3x loss spike on ring8 (issue 17, benchmarks/stability.py)
        base_dist = student_t(dim, df=max(2.5 * dim, 5.0))
    else:
        base_dist = make_base(base, dim)
    flow = make_flow(base_dist, bijector)

    def init(key, x_batch=None, context=None):
        if data_init and x_batch is None:
            raise ValueError(
                "glow(data_init=True): the ActNorm layers need Glow's data-dependent initialisation; "
                "call init(key, x_batch) with a batch of training data of shape (n, "
                f"{dim}), or build glow(..., data_init=False) to start them at the identity"
            )
        kb, kg = jax.random.split(key)
        return {"base": flow.base.init(kb), "bijector": bijector_init(kg, x_batch, context)}

    return flow._replace(init=init)
