"""A batch-normalisation bijector with explicit running statistics (RealNVP / MAF).

Batch norm is used in the normalizing direction x -> z (data to latent):

    z = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta,
    log|det dz/dx| = sum(log_gamma - 0.5 log(var + eps)).

In **train mode** (mu, var) are the statistics of the current batch (the
log-det treats them as constants, as in Dinh et al. 2017 and Papamakarios et
al. 2017) and the running statistics are updated with momentum m:

    mean' = m * mean + (1 - m) * batch_mean,   var' = m * var + (1 - m) * batch_var

(batch_var is the biased, 1/n, variance). In **eval mode** the running
statistics are used and the layer is an ordinary :class:`Bijector`.

Design: the running statistics are explicit *state*, never params the
optimiser updates::

    bn = batch_norm(dim, momentum=0.9, eps=1e-5)
    params = bn.init(key)                  # learnable {"log_gamma", "beta"}
    state = bn.init_state()                # {"mean": 0, "var": 1}
    z, log_det, state = bn.train_inverse(params, state, x_batch)   # train mode, batched
    b = bn.bijector                        # eval mode, one example
    b.inverse(bn.eval_params(params, state), x)

The eval-mode bijector's params are ``{"params": params, "state": state}``
(``bn.eval_params`` builds them; ``bn.bijector.init(key)`` gives the initial
pair). Following the flow-order convention, the bijector's ``apply`` is the
generative direction z -> x and its ``inverse`` the normalizing one above.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from genlearn.core.bijectors import Bijector, _check_dim, make_bijector

__all__ = ["BatchNorm", "batch_norm"]

Array = jax.Array


class BatchNorm(NamedTuple):
    """Batch norm as pure functions; see the module docstring.

    Attributes:
      init: ``init(key) -> params`` ``{"log_gamma": (d,), "beta": (d,)}`` (zeros).
      init_state: ``init_state() -> state`` ``{"mean": zeros, "var": ones}``.
      train_inverse: ``(params, state, x_batch (n, d)) -> (z (n, d), log|det dz/dx| (n,), new_state)``.
        (a train-mode pass is inverted by the eval-mode bijector with the batch's
        own statistics as state: ``eval_params(params, {"mean": m, "var": v})``).
      eval_params: ``(params, state) -> bijector params``.
      bijector: the eval-mode :class:`Bijector` (running statistics).
      dim, momentum, eps: the hyperparameters.
    """

    init: Callable
    init_state: Callable
    train_inverse: Callable
    eval_params: Callable
    bijector: Bijector
    dim: int
    momentum: float
    eps: float


def batch_norm(dim: int, momentum: float = 0.9, eps: float = 1e-5) -> BatchNorm:
    """Batch-norm bijector with explicit running statistics (see module docstring).

    Args:
      dim: dimension, >= 1.
      momentum: in [0, 1): weight of the old running statistics per update.
      eps: > 0, added to the variance.
    """
    dim = _check_dim(dim, 1, "batch_norm: dim")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"batch_norm: momentum must be in [0, 1), got {momentum!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"batch_norm: eps must be > 0, got {eps!r}")
    momentum, eps = float(momentum), float(eps)

    def init(key):
        del key
        return {"log_gamma": jnp.zeros((dim,)), "beta": jnp.zeros((dim,))}

    def init_state():
        return {"mean": jnp.zeros((dim,)), "var": jnp.ones((dim,))}

    def _normalize(params, x, mean, var):
        lg = params["log_gamma"].astype(x.dtype)
        log_scale = lg - 0.5 * jnp.log(var.astype(x.dtype) + eps)
        z = (x - mean.astype(x.dtype)) * jnp.exp(log_scale) + params["beta"].astype(x.dtype)
        return z, jnp.sum(log_scale)

    def train_inverse(params, state, x_batch):
        x = jnp.asarray(x_batch)
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"batch_norm train_inverse: expected a batch of shape (n, {dim}), got {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"batch_norm train_inverse: batch statistics need n >= 2 examples, got {x.shape[0]}")
        mean = jnp.mean(x, axis=0)
        var = jnp.mean(jnp.square(x - mean), axis=0)
        z, ld = jax.vmap(_normalize, (None, 0, None, None))(params, x, mean, var)
        new_state = {
            "mean": momentum * state["mean"] + (1.0 - momentum) * mean.astype(state["mean"].dtype),
            "var": momentum * state["var"] + (1.0 - momentum) * var.astype(state["var"].dtype),
        }
        return z, ld, new_state

    def eval_params(params, state):
        return {"params": params, "state": state}

    def b_init(key):
        return eval_params(init(key), init_state())

    def inverse_and_log_det(p, x):  # normalizing direction
        return _normalize(p["params"], x, p["state"]["mean"], p["state"]["var"])

    def apply_and_log_det(p, z):  # generative direction
        lg = p["params"]["log_gamma"].astype(z.dtype)
        log_scale = lg - 0.5 * jnp.log(p["state"]["var"].astype(z.dtype) + eps)
        x = (z - p["params"]["beta"].astype(z.dtype)) * jnp.exp(-log_scale) + p["state"]["mean"].astype(z.dtype)
        return x, -jnp.sum(log_scale)

    bijector = make_bijector(b_init, apply_and_log_det, inverse_and_log_det, dim)
    return BatchNorm(init, init_state, train_inverse, eval_params, bijector, dim, momentum, eps)
