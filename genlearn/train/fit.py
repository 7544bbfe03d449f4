r"""`fit`: the minibatch training loop every model family reuses.

The loop minimises an empirical risk

.. math::

    \hat\theta = \arg\min_\theta \; \frac{1}{|B|} \sum_{x \in B} \ell(\theta, x)

by minibatch gradient steps (`genlearn.train.step.train_step`) with any optax
optimiser. Design, after optax/blackjax:

* all randomness comes from one explicit ``key``; the batch drawn and the key
  handed to the loss at step :math:`t` depend only on :math:`t`, so a resumed run
  repeats an uninterrupted one exactly;
* the data are put on the device once; `eval_every` steps run inside one jitted
  `jax.lax.scan` that draws its minibatches from an epoch permutation it carries;
* non-finite updates are rejected inside the step and reported afterwards;
* the state that must survive a crash is one explicit pytree saved with orbax.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from genlearn.train.checkpoint import (
    CheckpointError,
    _check_writable,
    _open_manager,
    _restore_latest,
    _save_state,
)
from genlearn.train.step import (
    _call_loss,
    epoch_permutation,
    loss_takes_key,
    train_step,
)

__all__ = ["FitResult", "fit"]

PyTree = Any

_KEY_NAMES = ("split", "shuffle", "loss", "val")
_HISTORY_NAMES = ("train_loss", "val_step", "val_loss")


class FitResult(NamedTuple):
    """What `fit` returns.

    Attributes:
      params: the params with the lowest validation loss when validation is
        used (those after ``best_step`` steps), else the params after the last
        step.
      opt_state: the optimiser state after the last step (not at
        ``best_step``), e.g. to continue training.
      step: number of steps done (accepted plus rejected).
      history: dict of numpy arrays. ``"step"`` (int, ``arange(step)``) and
        ``"train_loss"`` (float64): the minibatch loss computed at step ``i``
        from the params before update ``i``, NaN where the update was rejected
        as non-finite. ``"val_step"`` (int): number of steps done at each
        evaluation; ``"val_loss"`` (float64): validation loss then. The
        validation arrays are empty without validation.
      best_step: step of the lowest validation loss (0 if no evaluation was
        finite: the initial params); None without validation.
      best_val_loss: the lowest validation loss (inf if none was finite); None
        without validation.
      stop_reason: ``"steps"`` (ran all steps), ``"early_stopping"`` (patience
        ran out), ``"nonfinite"`` (``max_nonfinite`` consecutive rejected
        updates) or ``"time"`` (``max_seconds`` elapsed).
    """

    params: PyTree
    opt_state: PyTree
    step: int
    history: dict
    best_step: Optional[int]
    best_val_loss: Optional[float]
    stop_reason: str


# ---------------------------------------------------------------------------
# Argument checks.
# ---------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be >= {minimum}{suffix}, got {value}")
    return int(value)


def _describe_value(x) -> str:
    dtype = getattr(x, "dtype", None)
    return f"dtype {dtype}" if dtype is not None else type(x).__name__


def _check_rows(x, name: str) -> jax.Array:
    """A 2-D, non-empty, numeric, finite array ``(n, d)``, moved to the device."""
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {_describe_value(x)}") from err
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n, d), got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(arr.shape)}")
    if jnp.issubdtype(arr.dtype, jnp.inexact):
        bad_rows = int(jnp.sum(~jnp.all(jnp.isfinite(arr), axis=1)))
        if bad_rows:
            raise ValueError(
                f"{name} contains NaN or inf in {bad_rows} "
                f"row{'s' if bad_rows != 1 else ''}"
            )
    return arr


def _check_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not bool(
            jnp.all(jnp.isfinite(leaf))
        ):
            raise ValueError(
                f"initial params contain NaN or inf at {jax.tree_util.keystr(path)}"
            )


def _typed_key(key) -> jax.Array:
    if key is None:
        raise ValueError("key must be a PRNG key (jax.random.key(seed)), got None")
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}")
        return key
    # A legacy uint32 key from jax.random.PRNGKey.
    return jax.random.wrap_key_data(key)


def _val_rows(n: int, val_fraction: float) -> int:
    if val_fraction == 0.0:
        return 0
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise ValueError(
            f"val_fraction={val_fraction} leaves no training rows out of {n}"
        )
    return n_val


# ---------------------------------------------------------------------------
# The jitted chunk.
# ---------------------------------------------------------------------------


def _make_chunk(loss_fn, optimizer, num_rows, batch_size, length, max_nonfinite, loss_dtype,
                mesh=None):
    """``length`` guarded steps in one jitted `lax.scan`.

    Only the first ``num_active`` iterations run (and, with ``max_nonfinite``,
    none after that many consecutive rejections); the rest are skipped by
    `lax.cond`. A fixed scan length means a single compilation, and every chunk,
    whatever its start and length, runs the same program, which is what makes a
    resumed run bit-identical to an uninterrupted one.
    """
    step_fn = train_step(loss_fn, optimizer)
    steps_per_epoch = num_rows // batch_size
    if mesh is not None:  # data parallel: rows of each minibatch split over the mesh
        from genlearn.parallel.mesh import batch_spec

        batch_sharding = jax.sharding.NamedSharding(mesh, batch_spec(mesh))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    nan = jnp.asarray(jnp.nan, loss_dtype)

    def chunk(params, opt_state, train, start, num_active, consecutive, shuffle_key, loss_key):
        def run(carry, step):
            params, opt_state, perm, consecutive = carry
            epoch, position = jnp.divmod(step, steps_per_epoch)
            # One permutation site (it dominates compile time): at an epoch
            # boundary, or for the first step of the chunk, which may start
            # mid-epoch with a placeholder in the carry.
            perm = jax.lax.cond(
                (position == 0) | (step == start),
                # int32 under x64 too, to match the carry.
                lambda: epoch_permutation(shuffle_key, epoch, num_rows).astype(jnp.int32),
                lambda: perm,
            )
            rows = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)
            batch = jnp.take(train, rows, axis=0)
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
                params = jax.lax.with_sharding_constraint(params, replicated)
            key = jax.random.fold_in(loss_key, step)
            params, opt_state, loss, finite = step_fn(params, opt_state, batch, key)
            consecutive = jnp.where(finite, 0, consecutive + 1)
            loss = jnp.where(finite, loss, nan).astype(loss_dtype)
            return (params, opt_state, perm, consecutive), (loss, finite)

        def skip(carry, step):
            return carry, (nan, jnp.asarray(True))

        def body(carry, i):
            active = i < num_active
            if max_nonfinite is not None:
                active &= carry[3] < max_nonfinite
            carry, (loss, finite) = jax.lax.cond(active, run, skip, carry, start + i)
            return carry, (loss, finite, active)

        perm = jnp.zeros(num_rows, jnp.int32)
        carry = (params, opt_state, perm, consecutive)
        (params, opt_state, _, consecutive), (losses, finite, active) = jax.lax.scan(
            body, carry, jnp.arange(length, dtype=jnp.int32)
        )
        return params, opt_state, consecutive, losses, finite, active

    return jax.jit(chunk)


# Repeated fits with the same loss and optimiser objects (resuming, sweeping
# `steps`) reuse the jitted functions and so skip recompilation.
_cached_chunk = functools.lru_cache(maxsize=8)(_make_chunk)


def _make_loss(loss_fn):
    return jax.jit(_call_loss(loss_fn, loss_takes_key(loss_fn)))


_cached_loss = functools.lru_cache(maxsize=8)(_make_loss)


def _jitted(builder, cached_builder, *args):
    try:
        return cached_builder(*args)
    except TypeError:  # an unhashable loss_fn or optimizer
        return builder(*args)


def _format_steps(steps: np.ndarray, limit: int = 20) -> str:
    shown = ", ".join(str(int(s)) for s in steps[:limit])
    return f"[{shown}{', ...' if steps.size > limit else ''}]"


# ---------------------------------------------------------------------------
# fit.
# ---------------------------------------------------------------------------


def fit(
    loss_fn: Callable[..., jax.Array],
    params: PyTree,
    data,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int,
    key: jax.Array,
    val_data=None,
    val_fraction: float = 0.0,
    eval_every: int = 100,
    patience: Optional[int] = None,
    checkpoint_dir: Optional[str | os.PathLike] = None,
    checkpoint_every: Optional[int] = None,
    keep_checkpoints: Optional[int] = 3,
    resume: bool = False,
    max_nonfinite: Optional[int] = 10,
    progress: bool = True,
    progress_desc: str = "fit",
    max_seconds: Optional[float] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
) -> FitResult:
    r"""Minimise ``loss_fn`` over minibatches of ``data`` with ``optimizer``.

    **Loss.** ``loss_fn(params, batch) -> scalar``, or
    ``loss_fn(params, batch, key) -> scalar`` when it has a parameter named
    ``key`` (detected with `inspect.signature`; it is passed as ``key=...``).
    ``batch`` is a ``(batch_size, d)`` array of rows of ``data``. It must be
    jittable. The same function gives the validation loss on the *whole*
    validation set, so it should be a mean over rows, not a sum.

    **Randomness.** ``split_key, k_s, k_l, k_v = jax.random.split(key, 4)``:
    the validation split, the shuffle key :math:`k_s`, the loss key
    :math:`k_\ell` and the validation key :math:`k_v` (a resumed run takes
    them from the checkpoint). Step :math:`t` uses

    .. math::

        B_t = \pi_{e}[p b : (p+1) b], \quad
        \pi_e = \mathrm{permutation}(\mathrm{fold\_in}(k_s, e), n), \quad
        e = \lfloor t/m \rfloor,\; p = t \bmod m,\; m = \lfloor n/b \rfloor,

    (the last :math:`n - m b` rows of each epoch are dropped; see
    `genlearn.train.minibatch_indices`) and the loss key
    :math:`\mathrm{fold\_in}(k_\ell, t)`. Validation losses always use
    :math:`k_v`. Both depend only on the absolute step :math:`t`.

    **Execution.** The training rows live on the device. Steps run in chunks of
    ``L = min(eval_every, checkpoint_every)`` (``L = eval_every`` without
    ``checkpoint_dir``) inside one jitted `lax.scan`; chunk boundaries are the
    absolute multiples of ``L`` (and the last step), so a resumed run executes
    the same computations as an uninterrupted one.

    **Non-finite guard.** An update whose loss, gradient or resulting params
    has a NaN or inf is rejected: params and optimiser state stay as they were,
    ``history["train_loss"]`` holds NaN for that step, and a `RuntimeWarning`
    names the rejected steps after each chunk. After ``max_nonfinite``
    consecutive rejections training stops with ``stop_reason="nonfinite"``,
    returning the last good params (or the best ones with validation).

    **Validation.** With ``val_data`` (explicit rows) or ``val_fraction > 0``
    (``n_val = max(1, round(val_fraction * n))`` rows: with
    ``perm = jax.random.permutation(split_key, n)``, rows ``perm[:n_val]``
    validate and ``perm[n_val:]`` train), the validation loss is computed at every multiple of
    ``eval_every`` steps and once more when training ends (if the last step is
    not such a multiple). The params with the lowest validation loss are kept
    and returned; training stops early after ``patience`` evaluations in a row
    without a strict improvement.

    **Checkpoints.** With ``checkpoint_dir``, the whole training state (params,
    optimiser state, step, keys, best params, best validation loss and step,
    patience and non-finite counters, history) is saved with orbax at every
    multiple of ``checkpoint_every`` (default: ``eval_every``) and when
    training ends, keeping the newest ``keep_checkpoints`` (None: all).
    ``resume=True`` continues from the newest readable checkpoint (a missing or
    empty directory starts fresh; an unreadable newest step falls back to an
    older one with a warning and is renamed ``unreadable_<step>``; if none is
    readable, `CheckpointError` is raised). The result then equals an
    uninterrupted run bit for bit on CPU, provided the hyperparameters are the
    same and the interrupted run was stopped at an evaluation point (a run that
    *finished* at a step that is not a multiple of ``eval_every`` did one extra
    final evaluation). Without ``resume``, a directory that already holds
    checkpoints is an error. A checkpoint of a run that stopped early or on
    non-finite updates resumes to the same stop unless ``patience`` or
    ``max_nonfinite`` is raised.

    Args:
      loss_fn: see above.
      params: initial parameters, any pytree of finite float arrays.
      data: training rows, array ``(n, d)``; must be non-empty and finite.
      optimizer: an `optax.GradientTransformation`.
      steps: total number of steps (including those of a resumed run), >= 0.
      batch_size: rows per step, ``1 <= batch_size <= n_train``.
      key: a PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      val_data: optional validation rows ``(n_val, d)``.
      val_fraction: fraction of ``data`` held out for validation, in
        ``[0, 1)``; exclusive with ``val_data``.
      eval_every: steps per chunk and between evaluations, >= 1.
      patience: evaluations without improvement before stopping; None never
        stops early.
      checkpoint_dir: directory for orbax checkpoints; None disables them.
      checkpoint_every: steps between checkpoints, >= 1.
      keep_checkpoints: checkpoints kept (``max_to_keep``), >= 1 or None.
      resume: continue from the newest checkpoint in ``checkpoint_dir``.
      max_nonfinite: consecutive rejected updates before stopping, >= 1;
        None never stops.
      progress: show a tqdm bar (train loss = mean finite minibatch loss of
        the last chunk, val = latest validation loss).
      progress_desc: the bar's label, also used in warnings.
      max_seconds: a wall-clock budget: no new chunk of ``eval_every`` steps
        starts once this many seconds have passed since `fit` was called
        (compilation included); the run ends with ``stop_reason="time"``.
        None: no limit.
      mesh: a `jax.sharding.Mesh` (e.g. `genlearn.parallel.make_mesh()`) to
        train data-parallel: the data, params and optimiser state are
        replicated on its devices and each minibatch is sharded along its rows
        over all mesh axes, so XLA splits the loss and all-reduces the gradient.
        ``batch_size`` must be a multiple of the number of devices. Under
        `jax.distributed`, every process passes the same data and key; then
        checkpoints are not supported. None: one device, as before.

    Returns:
      A `FitResult`.

    Raises:
      ValueError: bad data or hyperparameters (the message names the problem).
      CheckpointError: ``resume`` found checkpoints but none was readable,
        or ``checkpoint_dir`` is not writable.
      CheckpointMismatchError: the checkpoint was written for params or an
        optimiser state of another structure (a different architecture).
    """
    # ---- arguments --------------------------------------------------------
    steps = _check_int("steps", steps, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    eval_every = _check_int("eval_every", eval_every, 1)
    patience = _check_int("patience", patience, 1, allow_none=True)
    checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1, allow_none=True)
    keep_checkpoints = _check_int("keep_checkpoints", keep_checkpoints, 1, allow_none=True)
    max_nonfinite = _check_int("max_nonfinite", max_nonfinite, 1, allow_none=True)
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError) as err:
        raise ValueError(f"val_fraction must be a number, got {val_fraction!r}") from err
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_data is not None and val_fraction > 0.0:
        raise ValueError("pass either val_data or val_fraction > 0, not both")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )

    data = _check_rows(data, "training data")
    if val_data is not None:
        val_data = _check_rows(val_data, "validation data")
        if val_data.shape[1] != data.shape[1]:
            raise ValueError(
                f"validation data has {val_data.shape[1]} columns but training "
                f"data has {data.shape[1]}"
            )
    n_val = _val_rows(data.shape[0], val_fraction)
    n_train = data.shape[0] - n_val
    if batch_size > n_train:
        raise ValueError(
            f"batch_size ({batch_size}) exceeds the number of training rows ({n_train})"
        )
    has_val = val_data is not None or n_val > 0
    start_time = time.perf_counter()
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    if mesh is not None:
        from genlearn.parallel.mesh import num_batch_shards

        if not isinstance(mesh, jax.sharding.Mesh):
            raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        if batch_size % num_batch_shards(mesh):
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the number of mesh "
                f"devices ({num_batch_shards(mesh)}) to split minibatches over them"
            )
        if checkpoint_dir is not None and not mesh.is_fully_addressable:
            raise ValueError("checkpoint_dir is not supported with a multi-process mesh")
    _check_params(params)
    base_key = _typed_key(key)
    keys = dict(zip(_KEY_NAMES, jax.random.split(base_key, len(_KEY_NAMES))))
    key_impl = jax.random.key_impl(base_key)

    call = _call_loss(loss_fn, loss_takes_key(loss_fn))
    loss_aval = jax.eval_shape(
        call, params, jax.ShapeDtypeStruct((batch_size, data.shape[1]), data.dtype), keys["loss"]
    )
    if getattr(loss_aval, "shape", None) != ():
        raise ValueError(
            f"loss_fn must return a scalar, got {getattr(loss_aval, 'shape', loss_aval)}"
        )

    # ---- state ------------------------------------------------------------
    opt_state = optimizer.init(params)
    step = 0
    best_params = params
    best_val_loss = float("inf")
    best_step = 0
    bad_evals = 0
    consecutive = 0
    train_losses: list[np.ndarray] = []
    val_steps: list[int] = []
    val_losses: list[float] = []
    saved_step: Optional[int] = None

    manager = None
    if checkpoint_dir is not None:
        checkpoint_dir = os.path.abspath(os.fspath(checkpoint_dir))
        _check_writable(checkpoint_dir)  # fail now, not at the first save
        manager = _open_manager(checkpoint_dir, keep_checkpoints)
        if not resume and manager.all_steps():
            found = list(manager.all_steps())
            manager.close()
            raise ValueError(
                f"checkpoint_dir {checkpoint_dir} already holds checkpoints (steps "
                f"{found}); pass resume=True to continue, or use an empty directory"
            )

    def snapshot() -> dict:
        # Orbax cannot store zero-size arrays, so each history array carries
        # one leading pad element, stripped on restore.
        history = {
            "train_loss": np.concatenate([[np.nan], *train_losses]).astype(np.float64),
            "val_step": np.asarray([-1, *val_steps], np.int64),
            "val_loss": np.asarray([np.nan, *val_losses], np.float64),
        }
        state = {
            "params": params,
            "opt_state": opt_state,
            "step": np.asarray(step, np.int64),
            "keys": {name: np.asarray(jax.random.key_data(k)) for name, k in keys.items()},
            "best_val_loss": np.asarray(best_val_loss, np.float64),
            "best_step": np.asarray(best_step, np.int64),
            "bad_evals": np.asarray(bad_evals, np.int64),
            "consecutive_nonfinite": np.asarray(consecutive, np.int64),
            "history": history,
        }
        if has_val:
            state["best_params"] = best_params
        return state

    def make_target(tree_metadata) -> dict:
        target = snapshot()
        target["history"] = {
            name: np.zeros(tree_metadata["history"][name].shape, target["history"][name].dtype)
            for name in _HISTORY_NAMES
        }
        return target

    def check(saved, state) -> None:
        n_losses = state["history"]["train_loss"].shape[0] - 1
        if int(state["step"]) != saved or n_losses != saved:
            raise CheckpointError(
                f"inconsistent state: step {int(state['step'])}, {n_losses} losses"
            )
        if state["history"]["val_step"].shape != state["history"]["val_loss"].shape:
            raise CheckpointError("inconsistent validation history")

    try:
        if manager is not None and resume:
            restored = _restore_latest(
                manager, make_target, check,
                expect={"params": ("model", params), "opt_state": ("optimiser", opt_state)})
            if restored is not None:
                saved_step, state = restored
                params, opt_state = state["params"], state["opt_state"]
                best_params = state.get("best_params", params)
                step = int(state["step"])
                keys = {
                    name: jax.random.wrap_key_data(jnp.asarray(state["keys"][name]), impl=key_impl)
                    for name in _KEY_NAMES
                }
                best_val_loss = float(state["best_val_loss"])
                best_step = int(state["best_step"])
                bad_evals = int(state["bad_evals"])
                consecutive = int(state["consecutive_nonfinite"])
                history = state["history"]
                train_losses = [np.asarray(history["train_loss"][1:], np.float64)]
                val_steps = [int(s) for s in history["val_step"][1:]]
                val_losses = [float(v) for v in history["val_loss"][1:]]

        # The split uses the (possibly restored) key so a resumed run validates
        # on the same rows.
        if n_val > 0:
            perm = jax.random.permutation(keys["split"], data.shape[0])
            val_data = jnp.take(data, perm[:n_val], axis=0)
            train = jnp.take(data, perm[n_val:], axis=0)
        else:
            train = data
        if mesh is not None:
            from genlearn.parallel.mesh import replicate

            params, opt_state, best_params, train, val_data = replicate(
                (params, opt_state, best_params, train, val_data), mesh)

        length = eval_every
        if manager is not None:
            if checkpoint_every is None:
                checkpoint_every = eval_every
            length = min(eval_every, checkpoint_every)
        chunk = _jitted(
            _make_chunk,
            _cached_chunk,
            loss_fn,
            optimizer,
            n_train,
            batch_size,
            length,
            max_nonfinite,
            np.dtype(loss_aval.dtype),
            mesh,
        )
        val_loss_fn = _jitted(_make_loss, _cached_loss, loss_fn)

        def evaluate():
            nonlocal best_params, best_val_loss, best_step, bad_evals
            value = float(val_loss_fn(params, val_data, keys["val"]))
            val_steps.append(step)
            val_losses.append(value)
            if value < best_val_loss:
                best_params, best_val_loss, best_step, bad_evals = params, value, step, 0
            else:
                bad_evals += 1

        def save():
            nonlocal saved_step
            _save_state(manager, step, snapshot(), finite_keys=("params", "best_params"))
            saved_step = step

        bar = tqdm(
            total=steps,
            initial=min(step, steps),
            desc=progress_desc,
            disable=not progress,
            dynamic_ncols=True,
        )
        try:
            first_step = step
            while True:
                if max_nonfinite is not None and consecutive >= max_nonfinite:
                    stop_reason = "nonfinite"
                    break
                if patience is not None and bad_evals >= patience:
                    stop_reason = "early_stopping"
                    break
                if step >= steps:
                    stop_reason = "steps"
                    break
                if (max_seconds is not None and step > first_step
                        and time.perf_counter() - start_time >= max_seconds):
                    stop_reason = "time"
                    break
                end = min((step // length + 1) * length, steps)
                params, opt_state, consecutive_arr, losses, finite, active = chunk(
                    params,
                    opt_state,
                    train,
                    np.int32(step),
                    np.int32(end - step),
                    np.int32(consecutive),
                    keys["shuffle"],
                    keys["loss"],
                )
                losses, finite, active, consecutive = jax.device_get(
                    (losses, finite, active, consecutive_arr)
                )
                consecutive = int(consecutive)
                done = int(active.sum())  # active iterations form a prefix
                chunk_losses = np.asarray(losses[:done], np.float64)
                rejected = step + np.flatnonzero(~finite[:done])
                train_losses.append(chunk_losses)
                step += done
                if rejected.size:
                    warnings.warn(
                        f"{progress_desc}: rejected {rejected.size} non-finite "
                        f"update(s) at step(s) {_format_steps(rejected)}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                if has_val and step % eval_every == 0:
                    evaluate()
                if manager is not None and step % checkpoint_every == 0:
                    save()
                if progress:
                    postfix = {}
                    if np.isfinite(chunk_losses).any():
                        postfix["train"] = f"{np.nanmean(chunk_losses):.4g}"
                    if val_losses:
                        postfix["val"] = f"{val_losses[-1]:.4g}"
                    bar.set_postfix(postfix, refresh=False)
                bar.update(done)

            if has_val and (not val_steps or val_steps[-1] != step):
                evaluate()
            if manager is not None and saved_step != step:
                save()
        finally:
            bar.close()
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()

    history = {
        "step": np.arange(step, dtype=np.int64),
        "train_loss": (
            np.concatenate(train_losses) if train_losses else np.zeros(0, np.float64)
        ),
        "val_step": np.asarray(val_steps, np.int64),
        "val_loss": np.asarray(val_losses, np.float64),
    }
    if has_val:
        return FitResult(best_params, opt_state, step, history, best_step, best_val_loss, stop_reason)
    return FitResult(params, opt_state, step, history, None, None, stop_reason)
