r"""`fit`: minibatch gradient descent on a loss, through the one driver.

The loop minimises an empirical risk

.. math::

    \hat\theta = \arg\min_\theta \; \frac{1}{|B|} \sum_{x \in B} \ell(\theta, x)

by guarded minibatch gradient steps (`genlearn.train.gradient_trainer`) with any
optax optimiser, run by `genlearn.train.run_trainer`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from genlearn.train.driver import FitResult, run_trainer
from genlearn.train.trainer import gradient_trainer

__all__ = ["fit"]


def fit(
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    params: Any,
    data,
    *,
    optimizer: optax.GradientTransformation,
    max_grad_norm: float | None = 1.0,
    **kwargs,
) -> FitResult:
    """Minimise ``loss_fn(params, batch, key)`` over minibatches of ``data`` with ``optimizer``.

    ``run_trainer(gradient_trainer(loss_fn, optimizer, max_grad_norm=max_grad_norm),
    params, data, **kwargs)``. Gradients are clipped to global norm
    ``max_grad_norm`` (1.0, as ``genlearn fit`` does; None turns it off) before
    the optimiser sees them; ``result.history["clipped"]`` marks the clipped steps.
    The other keyword arguments (``steps``, ``batch_size``, ``key`` required;
    ``val_data``, ``val_fraction``, ``eval_every``, ``patience``,
    ``checkpoint_dir``, ``checkpoint_every``, ``keep_checkpoints``, ``resume``,
    ``max_nonfinite``, ``progress``, ``progress_desc``, ``max_seconds``,
    ``mesh``) and their defaults are those of `genlearn.train.run_trainer`.

    ``loss_fn`` is jittable, takes ``(params, batch, key)`` (``batch``: a
    ``(batch_size, d)`` array of rows; the key may be ignored) and returns a
    scalar. It is also the validation loss on the *whole* validation set, so it
    should be a mean over rows, not a sum. An update whose loss, gradient or
    new params has a NaN or inf is rejected (params and optimiser state kept).

    Returns:
      A `genlearn.train.FitResult`; ``opt_state`` is the optimiser state after
      the last step.

    Raises:
      ValueError: bad data or hyperparameters, or a loss that does not take
        ``(params, batch, key)``.
      TypeError: ``optimizer`` is not an optax transformation.
      CheckpointError, CheckpointMismatchError: see `run_trainer`.
    """
    return run_trainer(gradient_trainer(loss_fn, optimizer, max_grad_norm=max_grad_norm), params, data, **kwargs)
