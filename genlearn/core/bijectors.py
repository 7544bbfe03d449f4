"""The bijector protocol: a NamedTuple of pure functions on ONE example.

A bijector f maps a point z of shape ``(dim,)`` to x = f(z) of the same shape.
Its primitives compute the value and the log-determinant together (as in
distrax), because every layer of a flow needs both in one pass::

    apply_and_log_det(params, z)   -> (x, log|det df/dz (z)|)
    inverse_and_log_det(params, x) -> (z, log|det df^{-1}/dx (x)|)

``apply``, ``inverse`` and ``log_det`` are derived from them. Batches are
handled with ``jax.vmap`` by the caller (the :mod:`genlearn.core.flow` does it).

Conditional bijectors (``context_dim > 0``) take a context vector of shape
``(context_dim,)`` as a third argument, ``apply_and_log_det(params, z, context)``;
the map is invertible in z for every fixed context. Unconditional bijectors
accept ``context=None`` only. :func:`chain` routes the context to the layers
that are conditional.

A user plugin is any call to :func:`make_bijector` with three pure functions;
no base class and no registry are involved.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Bijector",
    "make_bijector",
    "chain",
    "repeat",
    "permutation",
    "reverse",
    "random_permutation",
    "scale",
    "fixed_affine",
    "logit_box",
    "check_example",
    "check_context",
]

Params = Any
Array = jax.Array


class Bijector(NamedTuple):
    """An invertible map on R^dim as pure functions of ``(params, point)``.

    Attributes:
      init: ``init(key) -> params``, a pytree.
      apply_and_log_det: ``(params, z) -> (x, log|det dx/dz|)`` for z of shape (dim,).
      inverse_and_log_det: ``(params, x) -> (z, log|det dz/dx|)``.
      apply: ``(params, z) -> x``.
      inverse: ``(params, x) -> z``.
      log_det: ``(params, z) -> log|det dx/dz|``.
      dim: the dimension the bijector acts on.
      context_dim: size of the context vector every function takes as a third
        argument ``context``; 0 for an unconditional bijector (context must be None).
    """

    init: Callable[[Array], Params]
    apply_and_log_det: Callable[[Params, Array], tuple[Array, Array]]
    inverse_and_log_det: Callable[[Params, Array], tuple[Array, Array]]
    apply: Callable[[Params, Array], Array]
    inverse: Callable[[Params, Array], Array]
    log_det: Callable[[Params, Array], Array]
    dim: int
    context_dim: int = 0


def check_context(context, context_dim: int, what: str = "context") -> None:
    """Validates a single-example context against ``context_dim`` (static shapes only).

    An unconditional model (``context_dim == 0``) must get ``None``; a
    conditional one a vector of shape ``(context_dim,)``.
    """
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                f"{what}: this model is unconditional (context_dim=0) but a context of shape "
                f"{tuple(jnp.shape(context))} was given"
            )
        return
    if context is None:
        raise ValueError(f"{what}: this model is conditional and needs a context of shape ({context_dim},)")
    shape = jnp.shape(context)
    if len(shape) != 1 or shape[0] != context_dim:
        raise ValueError(
            f"{what}: context must have shape ({context_dim},) for one example, got {tuple(shape)}"
        )


def check_example(x: Array, dim: int, what: str = "input") -> None:
    """Raises a ValueError unless ``x`` is a single example of shape ``(dim,)``.

    Shapes are static under ``jit`` and ``vmap``, so this check costs nothing
    at run time.
    """
    shape = jnp.shape(x)
    if len(shape) != 1 or shape[0] != dim:
        raise ValueError(
            f"{what}: a bijector acts on one example of shape ({dim},), got shape "
            f"{tuple(shape)}; use jax.vmap (or Flow.log_prob / Flow.apply) for a batch"
        )


def _check_dim(dim: int, minimum: int = 1, what: str = "dim") -> int:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {dim!r}")
    return int(dim)


def make_bijector(
    init: Callable[[Array], Params],
    apply_and_log_det: Callable[[Params, Array], tuple[Array, Array]],
    inverse_and_log_det: Callable[[Params, Array], tuple[Array, Array]],
    dim: int,
    *,
    context_dim: int = 0,
) -> Bijector:
    """Builds a :class:`Bijector` from its two primitives.

    The returned functions check that their argument has shape ``(dim,)``.
    With ``context_dim > 0`` the primitives are called as ``f(params, z, context)``
    with a context of shape ``(context_dim,)``; otherwise as ``f(params, z)``.
    """
    dim = _check_dim(dim)
    context_dim = _check_dim(context_dim, 0, "context_dim")

    def _call(f, params, v, context):
        if context_dim:
            return f(params, v, context)
        return f(params, v)

    def _apply_and_log_det(params, z, context=None):
        check_example(z, dim, "apply")
        check_context(context, context_dim, "apply")
        return _call(apply_and_log_det, params, z, context)

    def _inverse_and_log_det(params, x, context=None):
        check_example(x, dim, "inverse")
        check_context(context, context_dim, "inverse")
        return _call(inverse_and_log_det, params, x, context)

    def apply(params, z, context=None):
        return _apply_and_log_det(params, z, context)[0]

    def inverse(params, x, context=None):
        return _inverse_and_log_det(params, x, context)[0]

    def log_det(params, z, context=None):
        return _apply_and_log_det(params, z, context)[1]

    return Bijector(
        init=init,
        apply_and_log_det=_apply_and_log_det,
        inverse_and_log_det=_inverse_and_log_det,
        apply=apply,
        inverse=inverse,
        log_det=log_det,
        dim=dim,
        context_dim=context_dim,
    )


def _no_params(key: Array) -> dict:
    del key
    return {}


def chain(*bijectors: Bijector) -> Bijector:
    """Composes bijectors in flow order: ``chain(f1, ..., fK)`` is fK o ... o f1.

    This is the lecture's z_t = f_t(z_{t-1}), G = f_K o ... o f_1, and the order
    in which ``optax.chain`` applies transforms (note: ``distrax.Chain`` uses the
    opposite, function-composition order). Log-determinants add; the inverse
    runs the layers in reverse. Params are a tuple with one entry per layer.
    Conditional layers must agree on ``context_dim``; the chain passes its
    context to them and none to the unconditional layers.
    """
    if not bijectors:
        raise ValueError("chain needs at least one bijector")
    if len(bijectors) == 1 and isinstance(bijectors[0], (list, tuple)) and not isinstance(
        bijectors[0], Bijector
    ):
        bijectors = tuple(bijectors[0])
    for i, b in enumerate(bijectors):
        if not isinstance(b, Bijector):
            raise TypeError(f"chain: argument {i} is a {type(b).__name__}, not a Bijector")
    dims = {b.dim for b in bijectors}
    if len(dims) != 1:
        raise ValueError(f"chain: all bijectors must act on the same dim, got {[b.dim for b in bijectors]}")
    dim = dims.pop()
    ctx_dims = {b.context_dim for b in bijectors} - {0}
    if len(ctx_dims) > 1:
        raise ValueError(
            f"chain: conditional bijectors disagree on context_dim: {[b.context_dim for b in bijectors]}"
        )
    context_dim = ctx_dims.pop() if ctx_dims else 0

    def init(key):
        keys = jax.random.split(key, len(bijectors))
        return tuple(b.init(k) for b, k in zip(bijectors, keys))

    def _ctx(b, context):
        return context if b.context_dim else None

    def apply_and_log_det(params, z, context=None):
        total = jnp.zeros((), z.dtype)
        for b, p in zip(bijectors, params):
            z, ld = b.apply_and_log_det(p, z, _ctx(b, context))
            total = total + ld
        return z, total

    def inverse_and_log_det(params, x, context=None):
        total = jnp.zeros((), x.dtype)
        for b, p in zip(reversed(bijectors), reversed(tuple(params))):
            x, ld = b.inverse_and_log_det(p, x, _ctx(b, context))
            total = total + ld
        return x, total

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim, context_dim=context_dim)


def repeat(bijector: Bijector, n: int) -> Bijector:
    """``n`` copies of ``bijector``, each with its own parameters, applied under ``lax.scan``.

    The same map as ``chain(*[bijector] * n)`` with independently initialised
    copies, but traced and compiled once rather than ``n`` times, so a deep flow
    compiles in the time of one block (flowjax's ``Scan`` does the same). The
    params are those of ``bijector`` stacked along a new leading axis of length
    ``n`` (``init`` is ``jax.vmap(bijector.init)`` over ``n`` keys), so
    ``bijector.init`` must be traceable. To repeat a pattern of different layers
    (alternating coupling masks), repeat their ``chain``.
    """
    if not isinstance(bijector, Bijector):
        raise TypeError(f"repeat: expected a Bijector, got a {type(bijector).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"repeat: n must be an integer >= 1, got {n!r}")
    n = int(n)
    conditional = bool(bijector.context_dim)

    def init(key):
        return jax.vmap(bijector.init)(jax.random.split(key, n))

    def _scan(f, params, v, context, reverse):
        def body(carry, p):
            v, total = carry
            v, ld = f(p, v, context if conditional else None)
            return (v, total + ld.astype(total.dtype)), None

        # the log-det carry starts as zeros_like(v): under shard_map it is then varying over v's
        # manual axes, as the body's output is (a plain zeros(()) is not, and scan refuses the mismatch)
        (v, total), _ = jax.lax.scan(body, (v, jnp.zeros_like(v, shape=())), params, reverse=reverse)
        return v, total

    def apply_and_log_det(params, z, context=None):
        return _scan(bijector.apply_and_log_det, params, z, context, False)

    def inverse_and_log_det(params, x, context=None):
        return _scan(bijector.inverse_and_log_det, params, x, context, True)

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, bijector.dim,
                         context_dim=bijector.context_dim)


def permutation(perm: Sequence[int]) -> Bijector:
    """A fixed permutation x = z[perm]; volume preserving (log-det 0)."""
    perm = np.asarray(perm)
    dim = perm.shape[0] if perm.ndim == 1 else -1
    if perm.ndim != 1 or dim < 1 or not np.array_equal(np.sort(perm), np.arange(dim)):
        raise ValueError(f"permutation: expected a permutation of 0..d-1, got {perm.tolist()}")
    perm = perm.astype(np.int32)  # int64 indices break under a toggled jax.enable_x64
    inv = np.argsort(perm).astype(np.int32)

    def apply_and_log_det(params, z):
        del params
        return z[perm], jnp.zeros((), z.dtype)

    def inverse_and_log_det(params, x):
        del params
        return x[inv], jnp.zeros((), x.dtype)

    return make_bijector(_no_params, apply_and_log_det, inverse_and_log_det, dim)


def reverse(dim: int) -> Bijector:
    """Reverses the order of the coordinates."""
    dim = _check_dim(dim)
    return permutation(np.arange(dim)[::-1])


def random_permutation(key: Array, dim: int) -> Bijector:
    """A permutation drawn once, at construction, from ``key`` (then fixed)."""
    dim = _check_dim(dim)
    return permutation(np.asarray(jax.random.permutation(key, dim)))


def scale(dim: int) -> Bijector:
    """Learnable diagonal scaling x = z * exp(s), log-det = sum(s).

    The final layer of NICE (Dinh et al. 2014, section 3.3): without it an
    additive-coupling flow is volume preserving. ``s`` starts at 0 (identity).
    """
    dim = _check_dim(dim)

    def init(key):
        del key
        return {"log_scale": jnp.zeros((dim,))}

    def apply_and_log_det(params, z):
        s = params["log_scale"].astype(z.dtype)
        return z * jnp.exp(s), jnp.sum(s)

    def inverse_and_log_det(params, x):
        s = params["log_scale"].astype(x.dtype)
        return x * jnp.exp(-s), -jnp.sum(s)

    return make_bijector(init, apply_and_log_det, inverse_and_log_det, dim)


def fixed_affine(shift: Array, scale_: Array) -> Bijector:
    """A parameter-free affine map x = z * scale + shift with constant log-det.

    Used to undo standardisation: a flow trained on standardised data y =
    (x - mean) / std becomes a density in data space by appending
    ``fixed_affine(mean, std)``. The constants are closed over, so the
    bijector's params are ``{}`` and no optimiser or regulariser touches them.
    """
    shift = np.asarray(shift, dtype=np.float64)
    scale_ = np.asarray(scale_, dtype=np.float64)
    if shift.ndim != 1 or scale_.shape != shift.shape:
        raise ValueError(
            f"fixed_affine: shift and scale must be vectors of the same length, got "
            f"{shift.shape} and {scale_.shape}"
        )
    if not np.all(np.isfinite(scale_)) or np.any(scale_ <= 0) or not np.all(np.isfinite(shift)):
        raise ValueError("fixed_affine: scale must be finite and > 0 and shift finite")
    log_det = float(np.sum(np.log(scale_)))

    def apply_and_log_det(params, z):
        del params
        return z * scale_.astype(z.dtype) + shift.astype(z.dtype), jnp.asarray(log_det, z.dtype)

    def inverse_and_log_det(params, x):
        del params
        return (x - shift.astype(x.dtype)) / scale_.astype(x.dtype), jnp.asarray(-log_det, x.dtype)

    return make_bijector(_no_params, apply_and_log_det, inverse_and_log_det, shift.shape[0])


def logit_box(dim: int, upper: float = 1.0, alpha: float = 0.05) -> Bijector:
    """The RealNVP logit transform, as a bijector from R^dim to a box around (0, upper)^dim.

    x = upper * (sigmoid(y) - alpha) / (1 - 2 alpha), so that
    y = logit(alpha + (1 - 2 alpha) x / upper), as in RealNVP (Dinh et al. 2017,
    section 4.1) with ``upper = 1`` for pixels scaled to [0, 1). A flow in
    logit space followed by this bijector is a density on the box with exact
    log-det bookkeeping. The image of R is the slightly larger open box
    (-c alpha, upper + c alpha) with c = upper / (1 - 2 alpha), so a little
    probability mass lies outside (0, upper); for dequantised data this only
    loosens the bound -log P(x) <= E_u[-log p(x + u)], it never invalidates it.

      log|dx/dy| = sum_i log(upper / (1 - 2 alpha)) + log sigmoid(y_i) + log sigmoid(-y_i).
    """
    dim = _check_dim(dim)
    if not upper > 0:
        raise ValueError(f"logit_box: upper must be > 0, got {upper}")
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"logit_box: alpha must be in [0, 0.5), got {alpha}")
    c = upper / (1.0 - 2.0 * alpha)
    log_c = float(np.log(c))

    def apply_and_log_det(params, y):
        del params
        x = c * (jax.nn.sigmoid(y) - alpha)
        ld = jnp.sum(log_c + jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y))
        return x, ld

    def inverse_and_log_det(params, x):
        del params
        p = alpha + x / c
        y = jnp.log(p) - jnp.log1p(-p)
        ld = -jnp.sum(log_c + jnp.log(p) + jnp.log1p(-p))
        return y, ld

    return make_bijector(_no_params, apply_and_log_det, inverse_and_log_det, dim)
