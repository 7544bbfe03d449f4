"""Critics (discriminators, test functions) ``f_phi: R^d -> R`` and spectral normalisation.

A critic is the test function of a weak metric ``sup_f E_P f - E_P' f``; the
objective decides how its output is read (a logit for the JS / non-saturating
GAN, a potential for WGAN, a margin for the hinge loss).

Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for GANs")
replaces every kernel ``W`` by ``W / sigma(W)`` with ``sigma`` the largest
singular value, estimated by power iteration whose vectors ``u`` are explicit
state (a pytree beside the params, updated once per critic step):

    v <- W u / ||W u||,   u <- W^T v / ||W^T v||,   sigma = v^T W u,

with ``u, v`` treated as constants for the gradient. Each layer is then
1-Lipschitz (for 1-Lipschitz activations), which bounds the critic's
Lipschitz constant by 1: the W1 test class of the lecture.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from genlearn.nn import MLP

__all__ = ["Critic", "critic", "spectral_normalize", "init_spectral_state", "clip_params"]


class Critic(NamedTuple):
    """A critic ``f_phi`` with optional spectral normalisation.

    Attributes:
      init: ``init(key) -> params``.
      init_state: ``init_state(key) -> state``: the power-iteration vectors
        (an empty dict without spectral normalisation).
      normalize: ``normalize(params, state) -> (effective_params, new_state)``;
        one power-iteration step and ``W -> W / sigma`` for every kernel (the
        identity without spectral normalisation). Differentiable in ``params``.
      apply: ``apply(effective_params, x) -> (n,)`` for ``x (n, dim)``.
      dim: input dimension ``d``.
      spectral_norm: whether ``normalize`` divides by ``sigma``.
    """

    init: Callable[[jax.Array], Any]
    init_state: Callable[[jax.Array], Any]
    normalize: Callable[[Any, Any], tuple[Any, Any]]
    apply: Callable[[Any, jax.Array], jax.Array]
    dim: int
    spectral_norm: bool


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def init_spectral_state(params: Any, key: jax.Array) -> Any:
    """One random unit vector ``u`` (length = output width) per ``kernel`` leaf of ``params``."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    state = {}
    for i, (path, leaf) in enumerate(leaves):
        if _is_kernel(path):
            u = jax.random.normal(jax.random.fold_in(key, i), (leaf.shape[-1],))
            state[jax.tree_util.keystr(path)] = u / jnp.linalg.norm(u)
    return state


def _l2n(v):
    return v / (jnp.linalg.norm(v) + 1e-12)


def spectral_normalize(params: Any, state: Any, num_iters: int = 1) -> tuple[Any, Any, dict]:
    """``W -> W / sigma(W)`` for every ``kernel`` leaf, by power iteration from ``state``.

    Args:
      params: a flax params tree whose ``kernel`` leaves are ``(in, out)`` matrices.
      state: from :func:`init_spectral_state` (or a previous call).
      num_iters: power-iteration steps this call (>= 1).

    Returns:
      ``(normalized_params, new_state, sigmas)`` with ``sigmas`` the estimates
      keyed like ``state``.
    """
    sigmas = {}
    new_state = {}

    def fix(path, leaf):
        name = jax.tree_util.keystr(path)
        if not _is_kernel(path):
            return leaf
        w = leaf.reshape(-1, leaf.shape[-1])
        wd = jax.lax.stop_gradient(w)
        u = state[name]
        for _ in range(num_iters):
            v = _l2n(wd @ u)
            u = _l2n(wd.T @ v)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = v @ w @ u
        sigmas[name] = sigma
        new_state[name] = u
        return leaf / sigma

    out = jax.tree_util.tree_map_with_path(fix, params)
    return out, new_state, sigmas


def clip_params(params: Any, delta: float) -> Any:
    """WGAN weight clipping (Arjovsky et al. 2017): every leaf to ``[-delta, delta]``."""
    return jax.tree_util.tree_map(lambda p: jnp.clip(p, -delta, delta), params)


def critic(
    data_dim: int,
    hidden: Sequence[int] = (128, 128, 128),
    *,
    activation: str | Callable = "relu",
    spectral_norm: bool = False,
    power_iters: int = 1,
) -> Critic:
    """An MLP critic ``f_phi: R^data_dim -> R`` (``flax.linen``).

    Raises:
      ValueError: ``data_dim < 1``, bad hidden widths, ``power_iters < 1``.
    """
    if isinstance(data_dim, bool) or not isinstance(data_dim, int) or data_dim < 1:
        raise ValueError(f"data_dim must be an integer >= 1, got {data_dim!r}")
    hidden = tuple(hidden)
    if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty sequence of integers >= 1, got {hidden!r}")
    if not isinstance(power_iters, int) or power_iters < 1:
        raise ValueError(f"power_iters must be an integer >= 1, got {power_iters!r}")
    net = MLP(hidden, 1, activation)

    def init(key):
        return net.init(key, jnp.zeros((1, data_dim)))

    def init_state(key):
        if not spectral_norm:
            return {}
        return init_spectral_state(init(key), key)

    def normalize(params, state):
        if not spectral_norm:
            return params, state
        out, new_state, _ = spectral_normalize(params, state, power_iters)
        return out, new_state

    def apply(params, x):
        if x.ndim != 2 or x.shape[1] != data_dim:
            raise ValueError(f"critic: inputs must have shape (n, {data_dim}), got {x.shape}")
        return net.apply(params, x)[:, 0]

    return Critic(init, init_state, normalize, apply, data_dim, bool(spectral_norm))
