"""``train_gan``: GAN training through the one driver (`genlearn.train.run_trainer`).

A shorthand with the GAN defaults: ``batch_size = algorithm.batch_size`` real
rows per critic step (``critic_steps * batch_size`` rows per step, from the
driver's epoch permutations), ``chunk`` steps per compiled ``lax.scan`` and
between checkpoints, orbax checkpoints of the driver's `FitState`.
"""

from __future__ import annotations

from typing import Any

import jax

from genlearn.gan.minmax import GANState, MinMax
from genlearn.train import FitResult, run_trainer

__all__ = ["train_gan"]


def train_gan(
    algorithm: MinMax,
    state_or_params: Any,
    data: Any,
    *,
    steps: int,
    key: jax.Array,
    chunk: int = 250,
    checkpoint_dir: str | None = None,
    resume: bool = False,
    keep: int = 2,
    max_nonfinite: int = 10,
    progress: bool = True,
    progress_desc: str = "gan",
    max_seconds: float | None = None,
    **kwargs: Any,
) -> FitResult:
    """Runs ``steps`` generator steps of ``algorithm`` on ``data (N, d)``.

    ``run_trainer(algorithm, ..., batch_size=algorithm.batch_size,
    eval_every=chunk, keep_checkpoints=keep, ...)``; further ``kwargs`` go to
    `genlearn.train.run_trainer`.

    Args:
      algorithm: from :func:`~genlearn.gan.minmax.minmax` or ``weak_generator``.
      state_or_params: an initial :class:`~genlearn.gan.minmax.GANState` (e.g.
        ``algorithm.init(key)``), or generator params (None: ``gen.init``)
        for ``algorithm.init``. A resumed run takes the checkpointed state.
      data: ``(N, d)`` training array.
      steps: total generator steps, counting resumed ones.
      key: PRNG key of the driver.
      chunk: steps per compiled ``lax.scan`` (and between checkpoints).
      checkpoint_dir, resume: orbax checkpoints of the driver.
      keep: checkpoints kept.
      max_nonfinite: consecutive rejected steps that stop training.
      progress, progress_desc: the tqdm bar.
      max_seconds: no new chunk starts after this wall-clock budget.

    Returns:
      A `genlearn.train.FitResult`: ``state`` is the final ``GANState``,
      ``params`` the generator's (its EMA when on), ``history`` has every
      ``GANInfo`` field (``train_loss`` is ``loss``).
    """
    if isinstance(state_or_params, GANState):
        algorithm = algorithm._replace(init=lambda key, state: state)
    return run_trainer(algorithm, state_or_params, data, steps=steps, batch_size=algorithm.batch_size, key=key,
                       eval_every=chunk, checkpoint_dir=checkpoint_dir, resume=resume, keep_checkpoints=keep,
                       max_nonfinite=max_nonfinite, progress=progress, progress_desc=progress_desc,
                       max_seconds=max_seconds, **kwargs)
