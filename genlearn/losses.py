"""Losses. Strong form (lecture eq. 3): the empirical KL(P_n || P_theta) up to a
constant is the negative log-likelihood -(1/n) sum_i log p_theta(x_i); with a
regulariser it becomes eq. (2): L(P_theta, P_n) + lambda R(theta).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["nll", "l2_penalty"]

Array = jax.Array


def l2_penalty(params: Any) -> Array:
    """R(theta) = sum of squared entries of every array in the params pytree."""
    leaves = jax.tree_util.tree_leaves(params)
    return sum((jnp.sum(jnp.square(p)) for p in leaves), jnp.zeros(()))


def nll(
    model: Any,
    *,
    weight_decay: float = 0.0,
    regularizer: Callable[[Any], Array] = l2_penalty,
    dequantize: Callable[[Array, Array], Array] | None = None,
    context_dim: int = 0,
) -> Callable:
    """Negative log-likelihood loss for any model with ``log_prob(params, x) -> (n,)``.

    loss(params, batch, key) = -(1/B) sum_i log p_theta(x_i) + weight_decay * R(theta)

    Args:
      model: anything exposing ``log_prob(params, x)`` for a batch (a Flow, a
        Gaussian mixture, ...).
      weight_decay: lambda >= 0 in front of the regulariser.
      regularizer: R(theta); defaults to :func:`l2_penalty`.
      dequantize: optional ``(key, batch) -> batch`` applied first (e.g.
        ``genlearn.data.uniform_dequantize``), drawing fresh noise from the
        loss's key each call.
      context_dim: for a conditional model p(x | c): each batch row is
        ``[x, c]`` with the context in its last ``context_dim`` columns (so the
        data stay one array for :func:`genlearn.train.fit`); the loss is
        -(1/B) sum_i log p(x_i | c_i). Dequantisation applies to x only.

    Returns:
      ``loss(params, batch, key=None)`` (the key is used only by ``dequantize``).
    """
    if not weight_decay >= 0:
        raise ValueError(f"nll: weight_decay must be >= 0, got {weight_decay}")
    if not isinstance(context_dim, int) or isinstance(context_dim, bool) or context_dim < 0:
        raise ValueError(f"nll: context_dim must be an int >= 0, got {context_dim!r}")
    model_cdim = getattr(model, "context_dim", 0)
    if context_dim != model_cdim:
        raise ValueError(f"nll: context_dim={context_dim} but the model has context_dim={model_cdim}")

    def loss(params, batch, key=None):
        x, c = (batch, ()) if context_dim == 0 else (batch[:, :-context_dim], (batch[:, -context_dim:],))
        if dequantize is not None:
            x = dequantize(key, x)
        lp = model.log_prob(params, x, *c)
        return -jnp.mean(lp) + (weight_decay * regularizer(params) if weight_decay > 0 else 0.0)

    return loss
