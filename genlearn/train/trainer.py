r"""The trainer protocol (blackjax's ``init`` / ``step``) and the gradient trainer.

A trainer is a NamedTuple of pure functions; its state is an explicit pytree:

* ``init(key, params) -> state``;
* ``step(state, batch, key) -> (state, info)``, ``batch`` holding
  ``batch_size * batches_per_step`` rows; ``info`` is a NamedTuple of scalars
  with at least ``loss`` (the monitored value) and ``nonfinite`` (True when the
  update was rejected by `genlearn.train.guarded_update`);
* ``params(state)``: the model params to evaluate and save;
* ``loss(params, batch, key) -> scalar``: the validation loss, or None.

One driver, `genlearn.train.run_trainer`, runs every trainer: maximum
likelihood and score matching (`gradient_trainer`), persistent contrastive
divergence (`genlearn.energy.persistent_contrastive_divergence`), GAN min-max
updates and weak-loss generators (`genlearn.gan.minmax`,
`genlearn.gan.weak_generator`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from genlearn.train.step import guarded_update

__all__ = ["Trainer", "TrainState", "StepInfo", "gradient_trainer", "AnnealedState", "annealed_trainer"]

PyTree = Any


class Trainer(NamedTuple):
    """``init(key, params) -> state``; ``step(state, batch, key) -> (state, info)``.

    Attributes:
      init: builds the training state from a key and the initial params.
      step: one update on ``batch`` (``batch_size * batches_per_step`` rows).
      params: ``params(state)``, the params to evaluate and save.
      loss: ``loss(params, batch, key) -> scalar``, the validation loss (a
        mean over rows); None: no validation.
      batches_per_step: minibatches consumed by one step (e.g. the ``m``
        critic steps of a GAN).
    """

    init: Callable[[jax.Array, PyTree], PyTree]
    step: Callable[[PyTree, jax.Array, jax.Array], tuple]
    params: Callable[[PyTree], PyTree]
    loss: Optional[Callable[[PyTree, jax.Array, jax.Array], jax.Array]] = None
    batches_per_step: int = 1


class TrainState(NamedTuple):
    """State of `gradient_trainer`: params and optimiser state."""

    params: PyTree
    opt_state: PyTree


class StepInfo(NamedTuple):
    """Info of `gradient_trainer`: the minibatch loss at the incoming params, whether
    the update was rejected as non-finite, and whether the gradient was clipped."""

    loss: jax.Array
    nonfinite: jax.Array
    clipped: jax.Array


def gradient_trainer(
    loss_fn: Callable[[PyTree, jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    *,
    max_grad_norm: Optional[float] = None,
) -> Trainer:
    r"""Minibatch gradient descent on ``loss_fn(params, batch, key)`` with ``optimizer``.

    :math:`\theta_{t+1} = \theta_t + \mathrm{opt}(\mathrm{clip}(\nabla_\theta L(\theta_t, B_t, k_t)))`,
    rejected when non-finite (`genlearn.train.guarded_update`). This is maximum
    likelihood (`genlearn.losses.nll`, with dequantisation), the CNF's NLL,
    CD-k, denoising and sliced score matching, or any user loss. ``loss_fn``
    is also the validation loss, so it should be a mean over the rows.

    Args:
      loss_fn: ``(params, batch, key) -> scalar``.
      optimizer: any optax transformation.
      max_grad_norm: when set (> 0), a gradient whose global norm exceeds it is
        rescaled to that norm before ``optimizer`` sees it
        (``optax.clip_by_global_norm``), and ``info.clipped`` records the step.
        None: no clipping (``info.clipped`` is always False).
    """
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be a number > 0 or None, got {max_grad_norm!r}")
    value_and_grad = jax.value_and_grad(loss_fn)

    def init(key, params):
        return TrainState(params, optimizer.init(params))

    def step(state, batch, key):
        loss, grads = value_and_grad(state.params, batch, key)
        if max_grad_norm is None:
            clipped = jnp.zeros((), bool)
        else:
            norm = optax.tree.norm(grads)
            clipped = norm > max_grad_norm
            factor = jnp.where(clipped, max_grad_norm / jnp.where(clipped, norm, 1.0), 1.0)
            grads = jax.tree_util.tree_map(lambda g: g * factor.astype(g.dtype), grads)
        params, opt_state, finite = guarded_update(optimizer, loss, grads, state.params, state.opt_state)
        return TrainState(params, opt_state), StepInfo(loss, ~finite, clipped & finite)

    return Trainer(init, step, lambda state: state.params, loss_fn)


class AnnealedState(NamedTuple):
    """State of `annealed_trainer`: params, optimiser state and the number of steps taken."""

    params: PyTree
    opt_state: PyTree
    step: jax.Array


def annealed_trainer(
    loss_fn: Callable[[PyTree, jax.Array, jax.Array, jax.Array], jax.Array],
    optimizer: optax.GradientTransformation,
    weight: Callable[[jax.Array], jax.Array],
    *,
    final_weight: float = 1.0,
    max_grad_norm: Optional[float] = None,
) -> Trainer:
    r"""`gradient_trainer` on ``loss_fn(params, batch, key, weight(step))``: a loss term on a schedule.

    The step count lives in the state (:class:`AnnealedState`), so a resumed
    run continues the schedule where it stopped. The classic use is KL
    annealing, a warm-up of a VAE's prior term from 0 to 1 over the first
    steps (Bowman et al. 2016; Sønderby et al. 2016), with
    ``weight = optax.linear_schedule(0.0, 1.0, n)`` and
    `genlearn.vae.annealed_loss`: the encoder and decoder first learn to
    reconstruct, before the prior term pulls the posteriors together.

    Args:
      loss_fn: ``(params, batch, key, weight) -> scalar``.
      optimizer: any optax transformation.
      weight: ``step -> weight``, e.g. an optax schedule.
      final_weight: the weight of the validation loss (the objective the
        schedule ends at).
      max_grad_norm: as `gradient_trainer`'s.
    """
    if not callable(weight):
        raise TypeError(f"weight must be a schedule step -> weight (e.g. optax.linear_schedule), got "
                        f"{type(weight).__name__}")
    final_weight = float(final_weight)

    def inner(w):
        return gradient_trainer(lambda p, b, k: loss_fn(p, b, k, w), optimizer, max_grad_norm=max_grad_norm)

    def init(key, params):
        return AnnealedState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(state, batch, key):
        new, info = inner(weight(state.step)).step(TrainState(state.params, state.opt_state), batch, key)
        return AnnealedState(new.params, new.opt_state, state.step + 1), info

    def val_loss(params, batch, key):
        return loss_fn(params, batch, key, jnp.asarray(final_weight))

    return Trainer(init, step, lambda state: state.params, val_loss)
