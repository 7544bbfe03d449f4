"""Training helpers of diffusion models: an exponential moving average of the params around any trainer.

Diffusion samples are markedly better from an EMA of the weights (Song &
Ermon 2020; Ho et al. 2020 use decay 0.9999). :func:`with_ema` wraps a
`genlearn.train.Trainer` (e.g. ``gradient_trainer(dsm_loss(...), opt)``) so the
one driver (`genlearn.train.run_trainer`) trains it unchanged: the state is
``EMAState(inner, ema)``, checkpointed and resumed like any other, and the
trainer's ``params(state)`` (what is validated and saved) is the average.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from genlearn.train.trainer import Trainer

__all__ = ["EMAState", "with_ema"]


class EMAState(NamedTuple):
    """The wrapped trainer's state and the moving average of its params."""

    inner: Any
    ema: Any


def with_ema(trainer: Trainer, decay: float) -> Trainer:
    """``trainer`` with ema <- decay ema + (1 - decay) params after each accepted step; 0 <= decay < 1.

    A step the inner trainer rejects as non-finite (``info.nonfinite``) leaves
    the average unchanged. ``decay = 0`` makes the average the params.
    """
    decay = float(decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema decay must lie in [0, 1), got {decay!r}")

    def init(key, params):
        inner = trainer.init(key, params)
        return EMAState(inner, trainer.params(inner))

    def step(state, batch, key):
        inner, info = trainer.step(state.inner, batch, key)
        new = optax.incremental_update(trainer.params(inner), state.ema, 1.0 - decay)
        keep = jnp.asarray(info.nonfinite)
        ema = jax.tree_util.tree_map(lambda old, upd: jnp.where(keep, old, upd), state.ema, new)
        return EMAState(inner, ema), info

    return Trainer(init, step, lambda state: state.ema, trainer.loss, trainer.batches_per_step)
