"""A guarded gradient step and the minibatch schedule that `fit` runs inside jit.

Both are pure functions of explicit arguments, so other training code (GAN
min-max updates, multi-device steps, contrastive divergence) can put them inside
its own `jax.lax.scan` and get the same numbers as `genlearn.train.fit`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

__all__ = ["train_step", "minibatch_indices", "epoch_permutation", "loss_takes_key"]

PyTree = Any


def loss_takes_key(loss_fn: Callable[..., Any]) -> bool:
    """Whether ``loss_fn`` wants a PRNG key: it has a parameter named ``key``.

    Detected with `inspect.signature`, so `functools.partial` and `jax.jit`
    wrappers of a function with a ``key`` parameter count as taking a key. A
    callable whose signature cannot be read is treated as key-free.
    """
    try:
        parameters = inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return False
    return "key" in parameters


def _call_loss(loss_fn, takes_key):
    if takes_key:
        # By keyword: works whether `key` is the third positional parameter or
        # keyword-only.
        return lambda params, batch, key: loss_fn(params, batch, key=key)
    return lambda params, batch, key: loss_fn(params, batch)


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    ]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(leaves))


def train_step(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
) -> Callable[[PyTree, PyTree, jax.Array, jax.Array], tuple]:
    r"""Build a pure, jittable gradient step that rejects non-finite updates.

    With :math:`\ell_t = L(\theta_t, B_t[, k_t])` and
    :math:`g_t = \nabla_\theta \ell_t`, the proposed update is

    .. math::

        (u_t, s_{t+1}') = \mathrm{opt.update}(g_t, s_t, \theta_t), \qquad
        \theta_{t+1}' = \theta_t + u_t,

    and it is accepted only if :math:`\ell_t`, every leaf of :math:`g_t` and
    every leaf of :math:`\theta_{t+1}'` are finite:

    .. math::

        (\theta_{t+1}, s_{t+1}) =
        \begin{cases}
          (\theta_{t+1}', s_{t+1}') & \text{if finite} \\
          (\theta_t, s_t)           & \text{otherwise.}
        \end{cases}

    The selection is an elementwise ``jnp.where``, so the step is safe under
    `jax.jit`, `jax.vmap` and `jax.lax.scan` and has no host round trip.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` or, when it has a
        parameter named ``key``, ``loss_fn(params, batch, key=key)``.
      optimizer: any `optax.GradientTransformation`.

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, loss,
      finite)``. ``key`` is passed to ``loss_fn`` only if it takes one (pass
      anything, e.g. ``None``, otherwise). ``loss`` is the minibatch loss at the
      incoming params (possibly NaN); ``finite`` is a boolean scalar, False when
      the update was rejected.
    """
    call = _call_loss(loss_fn, loss_takes_key(loss_fn))
    value_and_grad = jax.value_and_grad(call)

    def step(params, opt_state, batch, key):
        loss, grads = value_and_grad(params, batch, key)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree_util.tree_map(keep, new_params, params)
        opt_state = jax.tree_util.tree_map(keep, new_opt_state, opt_state)
        return params, opt_state, loss, finite

    return step


def epoch_permutation(shuffle_key: jax.Array, epoch, num_rows: int) -> jax.Array:
    """The row order of one epoch: ``permutation(fold_in(shuffle_key, epoch), n)``."""
    return jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), num_rows)


def minibatch_indices(
    shuffle_key: jax.Array, step, num_rows: int, batch_size: int
) -> jax.Array:
    r"""Row indices of the minibatch used at absolute step ``step``.

    With :math:`m = \lfloor n / b \rfloor` steps per epoch (the last
    :math:`n - m b` rows of each epoch's permutation are dropped), step
    :math:`t` belongs to epoch :math:`e = \lfloor t / m \rfloor` at position
    :math:`p = t \bmod m` and uses

    .. math::

        \pi_e = \mathrm{permutation}(\mathrm{fold\_in}(k, e), n), \qquad
        B_t = \pi_e[p b : (p + 1) b].

    So every epoch visits each of :math:`m b` distinct rows exactly once, and
    the schedule depends only on the key and the absolute step (a resumed run
    draws the same batches). `fit` computes the same thing but keeps
    :math:`\pi_e` in its scan carry instead of recomputing it each step.

    Args:
      shuffle_key: PRNG key of the shuffle stream.
      step: integer (may be traced) absolute step number.
      num_rows: number of training rows ``n`` (static).
      batch_size: ``b`` with ``1 <= b <= n`` (static).

    Returns:
      int array of shape ``(batch_size,)``.
    """
    steps_per_epoch = num_rows // batch_size
    epoch, position = jnp.divmod(step, steps_per_epoch)
    perm = epoch_permutation(shuffle_key, epoch, num_rows)
    return jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)
