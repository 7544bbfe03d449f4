"""``train_gan``: the min-max training loop (jitted ``lax.scan`` chunks).

Step ``t`` uses the key ``fold_in(key, t)``, so a run resumed from a
checkpoint replays exactly the steps it would have taken. Each chunk of
``chunk`` steps is one compiled ``lax.scan`` over ``MinMax.step``; between
chunks the loop updates the tqdm bar, checks the state and saves checkpoints.

NaN guard: ``step`` itself rejects non-finite updates (state unchanged,
``info.nonfinite``); ``max_nonfinite`` consecutive rejections stop training,
and a state that is somehow non-finite after a chunk is discarded (the loop
stops and returns the last finite state). Nothing non-finite is saved.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.gan.minmax import GANInfo, GANState, MinMax
from genlearn.train.checkpoint import CheckpointError, load_pytree, save_pytree

__all__ = ["GANResult", "train_gan", "latest_checkpoint"]


class GANResult(NamedTuple):
    """Result of :func:`train_gan`.

    Attributes:
      state: the final (finite) :class:`~genlearn.gan.minmax.GANState`.
      history: ``GANInfo`` field name -> ``(steps_done,)`` NumPy array.
      step: generator steps completed.
      stop_reason: ``"completed"``, ``"nonfinite"`` or ``"time"`` (``max_seconds`` reached).
    """

    state: GANState
    history: dict[str, np.ndarray]
    step: int
    stop_reason: str


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def latest_checkpoint(directory: str) -> str | None:
    """Path of the newest ``step_XXXXXXXX`` checkpoint under ``directory`` (None if none)."""
    paths = sorted(glob.glob(os.path.join(directory, "step_*")))
    paths = [p for p in paths if not os.path.basename(p).startswith(".")]
    return paths[-1] if paths else None


def _max_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


@partial(jax.jit, static_argnums=(0, 1))
def _run_chunk(algorithm: MinMax, n: int, state: GANState, key: jax.Array, data: jax.Array, t0: jax.Array):
    """``n`` steps ``t0 .. t0 + n - 1`` in one ``lax.scan``; compiled once per (algorithm, n, shapes)."""

    def body(s, t):
        return algorithm.step(jax.random.fold_in(key, t), s, data)

    return jax.lax.scan(body, state, t0 + jnp.arange(n))


def train_gan(
    algorithm: MinMax,
    state: GANState,
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
) -> GANResult:
    """Runs ``steps`` min-max steps of ``algorithm`` from ``state`` on ``data (N, d)``.

    Args:
      algorithm: from :func:`~genlearn.gan.minmax.minmax` or ``weak_generator``.
      state: initial state (``algorithm.init(key)``); replaced by the
        checkpoint when resuming.
      data: ``(N, d)`` training array.
      steps: total generator steps (``>= 1``), counting resumed ones.
      key: PRNG key; step ``t`` uses ``fold_in(key, t)``.
      chunk: steps per compiled ``lax.scan`` (and between checkpoints).
      checkpoint_dir: save ``step_XXXXXXXX`` checkpoints (state + history) here.
      resume: continue from the newest checkpoint in ``checkpoint_dir``.
      keep: checkpoints kept (older ones are deleted).
      max_nonfinite: consecutive rejected steps that stop training.
      progress: show a tqdm bar.
      max_seconds: stop after the first chunk that ends past this wall-clock budget.

    Raises:
      ValueError: bad ``steps``/``chunk``/``max_nonfinite``/data, or a non-finite initial state.
    """
    from tqdm.auto import tqdm

    from genlearn.data import check_data

    for value, name in ((steps, "steps"), (chunk, "chunk"), (max_nonfinite, "max_nonfinite"), (keep, "keep")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    data = jnp.asarray(check_data(data, "data"))
    if max_seconds is not None and not float(max_seconds) > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if not _all_finite(state):
        raise ValueError("the initial GAN state has non-finite values")

    history: dict[str, list] = {f: [] for f in GANInfo._fields}
    done = 0
    if resume:
        path = latest_checkpoint(checkpoint_dir)
        if path is not None:
            try:
                state, meta = load_pytree(path, like=state)
            except CheckpointError:
                raise
            done = int(meta["step"])
            history = {f: list(meta["history"][f]) for f in GANInfo._fields}

    reason = "completed"
    start = time.perf_counter()
    bar = tqdm(total=steps, initial=min(done, steps), desc=progress_desc, disable=not progress, leave=False)
    try:
        while done < steps:
            n = min(chunk, steps - done)
            new_state, info = _run_chunk(algorithm, n, state, key, data, jnp.asarray(done, jnp.int32))
            info = jax.device_get(info)
            if not _all_finite(new_state):
                reason = "nonfinite"
                break
            state = new_state
            for f in GANInfo._fields:
                history[f].extend(np.asarray(getattr(info, f)).tolist())
            done += n
            bar.update(n)
            bar.set_postfix(distance=f"{float(info.distance[-1]):.4g}")
            flags = np.asarray(history["nonfinite"][-(chunk + max_nonfinite):], bool)
            if _max_run(flags) >= max_nonfinite:
                reason = "nonfinite"
                break
            if checkpoint_dir is not None:
                _save(checkpoint_dir, state, history, done, keep)
            if max_seconds is not None and done < steps and time.perf_counter() - start > max_seconds:
                reason = "time"
                break
    finally:
        bar.close()
    if reason == "nonfinite" and progress:
        import warnings

        warnings.warn(f"train_gan: stopped at step {done}: non-finite updates; returning the last finite state")
    hist = {f: np.asarray(v, bool if f == "nonfinite" else np.float64) for f, v in history.items()}
    return GANResult(state, hist, done, reason)


def _save(directory, state, history, step, keep):
    meta = {"step": step, "history": {f: [bool(v) if f == "nonfinite" else float(v) for v in history[f]]
                                      for f in GANInfo._fields}}
    save_pytree(os.path.join(directory, f"step_{step:08d}"), state, metadata=meta, overwrite=True)
    paths = sorted(p for p in glob.glob(os.path.join(directory, "step_*")) if not os.path.basename(p).startswith("."))
    for old in paths[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
