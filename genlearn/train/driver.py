r"""`run_trainer`: the one training driver, for every trainer (`genlearn.train.Trainer`).

The driver owns what every family needs around its ``step``: argument and data
checks, one batching scheme, the chunked jitted `jax.lax.scan`, validation
with early stopping and best-params selection, the non-finite stop, orbax
checkpoints with bit-identical resume, a wall-clock budget, a tqdm bar and the
history. Its loop carry *is* its checkpoint: one `FitState`, advanced by small
pure functions (`_record`, `_evaluate`, `_stop_reason`).

Design, after optax/blackjax:

* all randomness comes from one explicit ``key``; the batch drawn and the key
  handed to ``step`` at step :math:`t` depend only on :math:`t`, so a resumed
  run repeats an uninterrupted one exactly;
* the data are put on the device once; each chunk of steps runs inside one
  jitted `lax.scan` that draws its minibatches from an epoch permutation it
  carries. Data larger than ``device_data_bytes`` stay on the host (a
  memory-mapped ``.npy`` included): the same batch indices are computed on the
  host, each chunk's batches are gathered there and sent to the device while
  the previous chunk trains, and the scan runs over them (bit-identical);
* non-finite updates are rejected inside the trainer's step (``info.nonfinite``)
  and reported afterwards.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genlearn.data.validation import all_finite
from genlearn.train.checkpoint import (
    CheckpointError,
    _as_arrays,
    _check_writable,
    _open_manager,
    _restore_latest,
    _save_state,
)
from genlearn.train.step import epoch_permutation
from genlearn.train.trainer import Trainer

__all__ = ["FitState", "FitResult", "run_trainer"]

PyTree = Any

_KEY_NAMES = ("split", "shuffle", "step", "val")


class FitState(NamedTuple):
    """The driver's loop carry and checkpoint (saved with orbax as is).

    Attributes:
      trainer_state: the trainer's state.
      step: steps done (accepted plus rejected).
      keys: raw key data of the ``split``, ``shuffle``, ``step`` and ``val`` keys.
      best_params: params at the lowest validation loss (None without validation).
      best_val_loss, best_step: that loss (inf if none was finite) and step.
      bad_evals: evaluations since the last strict improvement.
      consecutive_nonfinite: rejected updates in a row.
      num_evals: evaluations done.
      history: numpy arrays filled in place: ``"train_loss"`` and one per
        other info field (length >= ``step``), ``"val_step"``, ``"val_loss"``
        (length >= ``num_evals``).
    """

    trainer_state: PyTree
    step: int
    keys: np.ndarray
    best_params: PyTree
    best_val_loss: float
    best_step: int
    bad_evals: int
    consecutive_nonfinite: int
    num_evals: int
    history: dict


class FitResult(NamedTuple):
    """What `run_trainer` (and `genlearn.train.fit`) returns.

    Attributes:
      params: ``trainer.params(state)`` at the lowest validation loss when
        validation is used (after ``best_step`` steps), else after the last step.
      opt_state: ``state.opt_state`` after the last step when the trainer
        state has one (not at ``best_step``), else None.
      step: steps done (accepted plus rejected).
      history: dict of numpy arrays. ``"step"`` (``arange(step)``),
        ``"train_loss"`` (float64): ``info.loss`` of step ``i`` (computed from
        the state before update ``i``), NaN where the update was rejected; one
        array per other info field (e.g. ``"nonfinite"``); ``"val_step"``:
        steps done at each evaluation, ``"val_loss"``: the validation loss then
        (empty without validation).
      best_step: step of the lowest validation loss (0 if none was finite);
        None without validation.
      best_val_loss: the lowest validation loss (inf if none was finite); None
        without validation.
      stop_reason: ``"steps"`` (ran all steps), ``"early_stopping"`` (patience
        ran out), ``"nonfinite"`` (``max_nonfinite`` consecutive rejected
        updates) or ``"time"`` (``max_seconds`` elapsed).
      state: the trainer state after the last step.
    """

    params: PyTree
    opt_state: PyTree
    step: int
    history: dict
    best_step: Optional[int]
    best_val_loss: Optional[float]
    stop_reason: str
    state: PyTree = None


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


def _check_rows(x, name: str, device_data_bytes=None):
    """A 2-D, non-empty, numeric, finite array ``(n, d)``.

    Moved to the device unless it takes more than ``device_data_bytes`` there
    (None: no limit); then it is returned as a numpy array (a memory map stays
    one) and checked block by block, so it is never copied whole.
    """
    try:
        arr = x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)
    except (TypeError, ValueError) as err:
        kind = getattr(x, "dtype", None) or type(x).__name__
        raise ValueError(f"{name} must be numeric, got {kind}") from err
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == jnp.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(arr.shape)}")
    nbytes = arr.shape[0] * arr.shape[1] * jax.dtypes.canonicalize_dtype(arr.dtype).itemsize
    on_host = device_data_bytes is not None and nbytes > device_data_bytes
    # data given on the host are checked there (no compilation per data shape), then moved once
    check_on_host = on_host or not isinstance(arr, jax.Array)
    if check_on_host:  # in the dtype it will have on the device (float64 beyond float32's range: inf)
        with np.errstate(over="ignore"):
            arr = np.asarray(arr) if on_host else np.asarray(arr, jax.dtypes.canonicalize_dtype(arr.dtype))
    if jnp.issubdtype(arr.dtype, jnp.inexact):
        block = max(1, (1 << 26) // (arr.shape[1] * arr.dtype.itemsize))  # 64 MB at a time on the host
        bad = sum(int((~np.isfinite(arr[i: i + block]).all(axis=1)).sum()) for i in range(0, arr.shape[0], block)) \
            if check_on_host else int(_bad_rows(arr))
        if bad:
            raise ValueError(f"{name} contains NaN or inf in {bad} row{'s' if bad != 1 else ''}")
    return arr if on_host else jnp.asarray(arr)


@jax.jit
def _bad_rows(arr):
    return jnp.sum(~jnp.all(jnp.isfinite(arr), axis=1))


def _check_params(params: PyTree) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not all_finite(leaf):
            raise ValueError(f"initial params contain NaN or inf at {jax.tree_util.keystr(path)}")


def _typed_key(key) -> jax.Array:
    if key is None:
        raise ValueError("key must be a PRNG key (jax.random.key(seed)), got None")
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape}")
        return key
    return jax.random.wrap_key_data(key)  # a legacy uint32 key from jax.random.PRNGKey


def _val_rows(n: int, val_fraction) -> int:
    try:
        val_fraction = float(val_fraction)
    except (TypeError, ValueError) as err:
        raise ValueError(f"val_fraction must be a number, got {val_fraction!r}") from err
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return 0
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training rows out of {n}")
    return n_val


def _traced(fn, what, *args):
    """``jax.eval_shape(fn, *args)``, with a TypeError (a wrong signature) made clear."""
    try:
        return jax.eval_shape(fn, *args)
    except TypeError as err:
        raise ValueError(
            f"{what} could not be traced: {err}. Losses are called as loss(params, batch, key) "
            f"(take the key even if you do not use it); steps as step(state, batch, key)"
        ) from err


def _check_trainer(trainer, state, batch, key):
    """The validation loss is a scalar; ``step`` returns ``(state, info)`` with
    ``info.loss`` and ``info.nonfinite``. Returns the info's abstract value."""
    if trainer.loss is not None:
        aval = _traced(trainer.loss, "the loss", trainer.params(state), batch, key)
        if getattr(aval, "shape", None) != ():
            raise ValueError(f"loss_fn must return a scalar, got {getattr(aval, 'shape', aval)}")
    out = _traced(trainer.step, "the trainer's step", state, batch, key)
    info = out[1] if isinstance(out, tuple) and len(out) == 2 else None
    if not all(hasattr(info, f) and getattr(info, f).shape == () for f in ("loss", "nonfinite")):
        raise ValueError("step(state, batch, key) must return (state, info) with scalar info.loss "
                         "and info.nonfinite")
    return info


# ---------------------------------------------------------------------------
# The jitted chunk.
# ---------------------------------------------------------------------------


_CONV_PRIMITIVES = ("conv_general_dilated",)


def _uses_conv(trainer, state, batch, key) -> bool:
    """Whether ``trainer.step`` contains a convolution (its jaxpr, sub-jaxprs included)."""

    from jax.extend.core import ClosedJaxpr, Jaxpr

    def walk(jaxpr) -> bool:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in _CONV_PRIMITIVES:
                return True
            for value in eqn.params.values():  # scan / cond / pjit / custom_vjp bodies
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, ClosedJaxpr) and walk(sub.jaxpr) or isinstance(sub, Jaxpr) and walk(sub):
                        return True
        return False

    closed = jax.make_jaxpr(trainer.step)(state, batch, key)
    return walk(closed.jaxpr)


def _chunk_loop(chunk_loop: str, trainer, state, batch, key) -> str:
    """``"scan"`` or ``"host"`` for ``run_trainer(chunk_loop=...)``; "auto": host for convolutions on CPU,
    where XLA runs a convolution's gradient several times slower inside a while loop (a 2-level U-Net
    step on 8x8 images: 1.0 s in a scan, 0.09 s as its own jitted call)."""
    if chunk_loop not in ("auto", "scan", "host"):
        raise ValueError(f"chunk_loop must be 'auto', 'scan' or 'host', got {chunk_loop!r}")
    if chunk_loop != "auto":
        return chunk_loop
    return "host" if jax.default_backend() == "cpu" and _uses_conv(trainer, state, batch, key) else "scan"


def _make_chunk(trainer, info_shape, num_rows, rows, length, max_nonfinite, mesh, host=False, loop="scan"):
    """``length`` steps in one jitted `lax.scan` (``loop="scan"``), or one jitted step per call in a
    Python loop (``loop="host"``, the same step program: used for convolutions on CPU).

    Only the first ``num_active`` iterations run (and, with ``max_nonfinite``,
    none after that many consecutive rejections); the rest are skipped by
    `lax.cond`. A fixed scan length means a single compilation, and every chunk,
    whatever its start and length, runs the same program, which is what makes a
    resumed run bit-identical to an uninterrupted one. The chunk's ``data`` are
    the training rows, from which it draws its minibatches, or with ``host``
    the chunk's minibatches ``(length, rows, d)`` themselves (`_host_batches`).
    """
    steps_per_epoch = num_rows // rows
    if mesh is not None:  # data parallel: rows of each minibatch split over the mesh
        from genlearn.parallel.mesh import batch_spec

        sharded = jax.sharding.NamedSharding(mesh, batch_spec(mesh))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def step_fn(data, shuffle_key, step_key):
        """One training step ``run(carry, step, batch)``: the minibatch (drawn from ``data`` unless ``host``
        hands it in), the trainer's step, the non-finite counter."""

        def run(carry, step, batch):
            state, perm, perm_epoch, consecutive = carry
            if not host:
                epoch, position = jnp.divmod(step, steps_per_epoch)
                # One permutation site (it dominates compile time): at an epoch
                # boundary, or when the permutation handed in from the previous
                # chunk is of another epoch (the first chunk, a resumed run).
                perm = jax.lax.cond((position == 0) | (epoch != perm_epoch),
                                    lambda: epoch_permutation(shuffle_key, epoch, num_rows).astype(jnp.int32),
                                    lambda: perm)
                perm_epoch = epoch
                batch = jnp.take(data, jax.lax.dynamic_slice_in_dim(perm, position * rows, rows), axis=0)
            if mesh is not None:
                batch = jax.lax.with_sharding_constraint(batch, sharded)
                state = jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, replicated), state)
            state, info = trainer.step(state, batch, jax.random.fold_in(step_key, step))
            consecutive = jnp.where(info.nonfinite, consecutive + 1, 0)
            info = info._replace(loss=jnp.where(info.nonfinite, jnp.nan, info.loss))
            return (state, perm, perm_epoch, consecutive), info

        return run

    def skipped():
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

    if loop == "host":
        @jax.jit
        def one(carry, step, batch, data, shuffle_key, step_key):  # the step alone: no lax.cond around it
            return step_fn(data, shuffle_key, step_key)(carry, step, batch)

        def host_chunk(state, consecutive, data, perm, perm_epoch, start, num_active, shuffle_key, step_key):
            carry, outs = (state, perm, perm_epoch, consecutive), []
            for i in range(length):
                if i >= int(num_active) or (max_nonfinite is not None and int(carry[3]) >= max_nonfinite):
                    outs.append((skipped(), jnp.asarray(False)))
                    continue
                carry, info = one(carry, start + np.int32(i), data[i] if host else None, None if host else data,
                                  shuffle_key, step_key)
                outs.append((info, jnp.asarray(True)))
            infos, active = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
            state, perm, perm_epoch, consecutive = carry
            return state, consecutive, infos, active, perm, perm_epoch

        return host_chunk

    def chunk(state, consecutive, data, perm, perm_epoch, start, num_active, shuffle_key, step_key):
        run = step_fn(data, shuffle_key, step_key)

        def body(carry, xs):
            i, batch = xs
            active = i < num_active
            if max_nonfinite is not None:
                active &= carry[3] < max_nonfinite
            carry, info = jax.lax.cond(active, run, lambda carry, step, batch: (carry, skipped()), carry,
                                       start + i, batch)
            return carry, (info, active)

        xs = (jnp.arange(length, dtype=jnp.int32), data if host else None)
        (state, perm, perm_epoch, consecutive), (infos, active) = jax.lax.scan(
            body, (state, perm, perm_epoch, consecutive), xs)
        return state, consecutive, infos, active, perm, perm_epoch

    return jax.jit(chunk)


def _host_batches(data, index, shuffle_key, num_rows, rows, length, mesh):
    """``fetch(start, end)``: the minibatches of steps ``[start, end)`` as one
    device array ``(length, rows, d)`` (zero-padded), gathered on the host.

    Row ``j`` of the training rows is ``data[index[j]]`` (``index`` None: row
    ``j``); the batch of step ``t`` is the one the on-device chunk would draw
    (`epoch_permutation` computed on the device and kept for the current epoch).
    ``jax.device_put`` is asynchronous, so the transfer overlaps the chunk
    running when ``fetch`` is called. With a mesh, the batch axis is sharded.
    """
    steps_per_epoch = num_rows // rows
    permutation = jax.jit(lambda e: epoch_permutation(shuffle_key, e, num_rows).astype(jnp.int32))
    dtype = jax.dtypes.canonicalize_dtype(data.dtype)
    cache = {}

    def fetch(start, end):
        positions = []
        for step in range(start, end):
            epoch, position = divmod(step, steps_per_epoch)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = np.asarray(permutation(np.int32(epoch)))
            positions.append(cache[epoch][position * rows: (position + 1) * rows])
        rows_used = np.concatenate(positions)
        if index is not None:
            rows_used = index[rows_used]
        batches = np.zeros((length, rows, data.shape[1]), dtype)
        batches[: end - start] = data[rows_used].reshape(end - start, rows, data.shape[1])
        if mesh is None:
            return jax.device_put(batches)
        from genlearn.parallel.mesh import batch_spec

        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, *batch_spec(mesh)))
        return jax.make_array_from_callback(batches.shape, sharding, lambda i: batches[i])

    return fetch


# ---------------------------------------------------------------------------
# Pure steps of the loop around FitState.
# ---------------------------------------------------------------------------


def _ensure(history: dict, names, needed: int) -> dict:
    """Grow (by doubling) the arrays ``names`` of ``history`` to length >= ``needed``."""
    out = dict(history)
    for name in names:
        old = out[name]
        if old.shape[0] < needed:
            out[name] = np.concatenate([old, np.zeros(max(needed, 2 * old.shape[0]) - old.shape[0], old.dtype)])
    return out


def _initial_state(trainer_state, keys, info, has_val, best_params, steps, eval_every) -> FitState:
    """History arrays for ``steps`` steps (at most 2^16 at first; they grow) and their evaluations."""
    n, n_evals = max(1, min(steps, 1 << 16)), max(1, min(steps // eval_every + 1, 1 << 12))
    history = {"train_loss" if f == "loss" else f: np.zeros(n, np.result_type(getattr(info, f).dtype, np.float64)
                                                             if jnp.issubdtype(getattr(info, f).dtype, jnp.inexact)
                                                             else getattr(info, f).dtype) for f in info._fields}
    history.update(val_step=np.zeros(n_evals, np.int64), val_loss=np.zeros(n_evals, np.float64))
    return FitState(trainer_state, 0, keys, best_params if has_val else None, float("inf"), 0, 0, 0, 0, history)


def _step_names(fs: FitState):
    return [name for name in fs.history if name not in ("val_step", "val_loss")]


def _record(fs: FitState, trainer_state, consecutive, infos, done: int) -> FitState:
    """Write the first ``done`` steps of a chunk's ``infos`` into the history."""
    history = _ensure(fs.history, _step_names(fs), fs.step + done)
    for field in infos._fields:
        history["train_loss" if field == "loss" else field][fs.step: fs.step + done] = \
            np.asarray(getattr(infos, field))[:done]
    return fs._replace(trainer_state=trainer_state, step=fs.step + done,
                       consecutive_nonfinite=int(consecutive), history=history)


def _evaluate(fs: FitState, params, value: float) -> FitState:
    """Record a validation loss; keep ``params`` if it strictly improved."""
    history = _ensure(fs.history, ("val_step", "val_loss"), fs.num_evals + 1)
    history["val_step"][fs.num_evals] = fs.step
    history["val_loss"][fs.num_evals] = value
    fs = fs._replace(history=history, num_evals=fs.num_evals + 1)
    if value < fs.best_val_loss:
        return fs._replace(best_params=params, best_val_loss=value, best_step=fs.step, bad_evals=0)
    return fs._replace(bad_evals=fs.bad_evals + 1)


def _stop_reason(fs, steps, patience, max_nonfinite, first_step, deadline) -> Optional[str]:
    if max_nonfinite is not None and fs.consecutive_nonfinite >= max_nonfinite:
        return "nonfinite"
    if patience is not None and fs.bad_evals >= patience:
        return "early_stopping"
    if fs.step >= steps:
        return "steps"
    if deadline is not None and fs.step > first_step and time.perf_counter() >= deadline:
        return "time"
    return None


def _result(trainer, fs: FitState, has_val: bool, stop_reason: str) -> FitResult:
    history = {"step": np.arange(fs.step, dtype=np.int64)}
    history.update({name: fs.history[name][: fs.step] for name in _step_names(fs)})
    history.update({name: fs.history[name][: fs.num_evals] for name in ("val_step", "val_loss")})
    state = fs.trainer_state
    params = fs.best_params if has_val else trainer.params(state)
    best = (fs.best_step, fs.best_val_loss) if has_val else (None, None)
    return FitResult(params, getattr(state, "opt_state", None), fs.step, history, *best, stop_reason, state)


def _format_steps(steps: np.ndarray, limit: int = 20) -> str:
    shown = ", ".join(str(int(s)) for s in steps[:limit])
    return f"[{shown}{', ...' if steps.size > limit else ''}]"


# ---------------------------------------------------------------------------
# Checkpoints: FitState as is.
# ---------------------------------------------------------------------------


def _save(manager, fs: FitState) -> None:
    _save_state(manager, fs.step, fs, {"trainer_state": fs.trainer_state, "best_params": fs.best_params})


def _restore(manager, fs: FitState) -> Optional[FitState]:
    def target(metadata):
        shapes = {name: metadata["history"][name].shape for name in fs.history}
        history = {name: np.zeros(shapes[name], arr.dtype) for name, arr in fs.history.items()}
        return _as_arrays(fs._replace(history=history))

    def check(saved, state):
        if int(state.step) != saved or int(state.num_evals) > state.history["val_step"].shape[0] \
                or state.history["train_loss"].shape[0] < saved:
            raise CheckpointError(f"inconsistent state: step {int(state.step)}")

    state = fs.trainer_state
    fields = state._fields if hasattr(state, "_fields") else (None,)
    what = {"params": "model", "opt_state": "optimiser"}
    expect = [(what.get(f, f"trainer state ({f})") if f else "trainer state",
               ("trainer_state",) + ((f,) if f else ()), getattr(state, f) if f else state) for f in fields]
    restored = _restore_latest(manager, target, check, expect=expect)
    if restored is None:
        return None
    s = restored[1]
    return s._replace(step=int(s.step), keys=np.asarray(s.keys), best_val_loss=float(s.best_val_loss),
                      best_step=int(s.best_step), bad_evals=int(s.bad_evals),
                      consecutive_nonfinite=int(s.consecutive_nonfinite), num_evals=int(s.num_evals),
                      history={name: np.array(v) for name, v in s.history.items()})


# ---------------------------------------------------------------------------
# run_trainer.
# ---------------------------------------------------------------------------


def run_trainer(
    trainer: Trainer,
    params: PyTree,
    data,
    *,
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
    device_data_bytes: Optional[int] = 1 << 30,
    chunk_loop: str = "auto",
) -> FitResult:
    r"""Run ``trainer`` for ``steps`` steps on minibatches of ``data``.

    **Randomness.** ``split_key, k_s, k_t, k_v = jax.random.split(key, 4)``
    (a resumed run takes them from the checkpoint): the validation split, the
    shuffle key :math:`k_s`, the step key :math:`k_t` and the validation key
    :math:`k_v`; ``trainer.init`` gets ``fold_in(key, 4)``. With
    :math:`b` = ``batch_size * trainer.batches_per_step`` rows per step, step
    :math:`t` uses

    .. math::

        B_t = \pi_{e}[p b : (p+1) b], \quad
        \pi_e = \mathrm{permutation}(\mathrm{fold\_in}(k_s, e), n), \quad
        e = \lfloor t/m \rfloor,\; p = t \bmod m,\; m = \lfloor n/b \rfloor,

    (the last :math:`n - m b` rows of each epoch are dropped; see
    `genlearn.train.minibatch_indices`) and the key
    :math:`\mathrm{fold\_in}(k_t, t)`. Validation losses always use :math:`k_v`.

    **Execution.** Steps run in chunks of ``L = min(eval_every,
    checkpoint_every)`` (``L = eval_every`` without ``checkpoint_dir``) inside
    one jitted `lax.scan`; chunk boundaries are the absolute multiples of ``L``
    (and the last step), so a resumed run executes the same computations as an
    uninterrupted one. The chunk is compiled once per call. The training rows
    live on the device, unless ``data`` would take more than
    ``device_data_bytes`` there: then they stay on the host (a numpy array or
    a memory-mapped ``.npy``, never copied whole), the batch indices
    :math:`B_t` are computed on the host, and each chunk's ``(L, b, d)``
    batches are gathered there and transferred while the previous chunk
    trains. The result is bit-identical to the on-device path (validation rows
    go to the device).

    **Non-finite guard.** The trainer rejects non-finite updates itself
    (``info.nonfinite``); the history then holds NaN as ``train_loss`` and a
    `RuntimeWarning` names the rejected steps after each chunk. After
    ``max_nonfinite`` consecutive rejections training stops with
    ``stop_reason="nonfinite"``.

    **Validation** (only when ``trainer.loss`` is not None). With ``val_data``
    or ``val_fraction > 0`` (``n_val = max(1, round(val_fraction * n))`` rows:
    with ``perm = jax.random.permutation(split_key, n)``, rows ``perm[:n_val]``
    validate and ``perm[n_val:]`` train), ``trainer.loss(trainer.params(state),
    val_data, k_v)`` is computed at every multiple of ``eval_every`` steps and
    once more when training ends (if the last step is not such a multiple). The
    params with the lowest validation loss are kept and returned; training stops
    early after ``patience`` evaluations in a row without a strict improvement.

    **Checkpoints.** With ``checkpoint_dir``, the `FitState` is saved with
    orbax at every multiple of ``checkpoint_every`` (default: ``eval_every``)
    and when training ends, keeping the newest ``keep_checkpoints`` (None:
    all). ``resume=True`` continues from the newest readable checkpoint (a
    missing or empty directory starts fresh; an unreadable newest step falls
    back to an older one with a warning and is renamed ``unreadable_<step>``;
    if none is readable, `CheckpointError` is raised). The result then equals
    an uninterrupted run bit for bit on CPU, provided the hyperparameters are
    the same (``steps`` may differ). Nothing non-finite is saved.

    Args:
      trainer: a `genlearn.train.Trainer`.
      params: the initial params handed to ``trainer.init`` (their leaves must
        be finite; a trainer may accept None, e.g. a GAN initialising its own).
      data: training rows ``(n, d)``, non-empty and finite.
      steps: total number of steps (including those of a resumed run), >= 0.
      batch_size: rows per minibatch; a step takes ``batch_size *
        trainer.batches_per_step <= n_train`` rows.
      key: a PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      val_data: optional validation rows ``(n_val, d)``.
      val_fraction: fraction of ``data`` held out, in ``[0, 1)``; exclusive
        with ``val_data``.
      eval_every: steps per chunk and between evaluations, >= 1.
      patience: evaluations without improvement before stopping; None never
        stops early.
      checkpoint_dir: directory for orbax checkpoints; None disables them.
      checkpoint_every: steps between checkpoints, >= 1.
      keep_checkpoints: checkpoints kept (``max_to_keep``), >= 1 or None.
      resume: continue from the newest checkpoint in ``checkpoint_dir``.
      max_nonfinite: consecutive rejected updates before stopping, >= 1;
        None never stops.
      progress: show a tqdm bar (train = mean finite ``info.loss`` of the last
        chunk, val = latest validation loss).
      progress_desc: the bar's label, also used in warnings.
      max_seconds: a wall-clock budget: no new chunk starts once this many
        seconds have passed since the call (compilation included); the run
        ends with ``stop_reason="time"``. None: no limit.
      mesh: a `jax.sharding.Mesh` (e.g. `genlearn.parallel.make_mesh()`) to
        train data-parallel: data and trainer state are replicated on its
        devices and each minibatch is sharded along its rows, so XLA splits the
        loss and all-reduces the gradient. ``batch_size`` must be a multiple of
        the number of devices. Under `jax.distributed` every process passes the
        same data and key; checkpoints are then not supported.
      device_data_bytes: the largest ``data`` (in bytes, in the dtype it has
        on the device) put on the device whole; larger data stay on the host
        (see Execution). 0 always trains from the host; None never does.
      chunk_loop: ``"scan"`` runs each chunk as one jitted `lax.scan`;
        ``"host"`` calls the same jitted step once per step from Python (the
        results agree to float rounding; each mode resumes bit-identically);
        ``"auto"`` (default) picks ``"host"`` on CPU when the step contains a
        convolution, whose gradient XLA's CPU backend runs several times
        slower inside a loop, else ``"scan"``.

    Returns:
      A `FitResult`.

    Raises:
      ValueError: bad data, hyperparameters or trainer, or a loss that does not
        take ``(params, batch, key)`` (the message names the problem).
      CheckpointError: ``resume`` found checkpoints but none was readable,
        or ``checkpoint_dir`` is not writable.
      CheckpointMismatchError: the checkpoint was written for a trainer state
        of another structure (a different architecture or optimiser).
    """
    start_time = time.perf_counter()
    if not all(callable(getattr(trainer, f, None)) for f in ("init", "step", "params")):
        raise ValueError(f"trainer must be a genlearn.train.Trainer, got {type(trainer).__name__}")
    steps = _check_int("steps", steps, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    eval_every = _check_int("eval_every", eval_every, 1)
    patience = _check_int("patience", patience, 1, allow_none=True)
    checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1, allow_none=True)
    keep_checkpoints = _check_int("keep_checkpoints", keep_checkpoints, 1, allow_none=True)
    max_nonfinite = _check_int("max_nonfinite", max_nonfinite, 1, allow_none=True)
    per_step = _check_int("trainer.batches_per_step", trainer.batches_per_step, 1)
    if val_data is not None and val_fraction:
        raise ValueError("pass either val_data or val_fraction > 0, not both")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds or None, got {max_seconds!r}")
    device_data_bytes = _check_int("device_data_bytes", device_data_bytes, 0, allow_none=True)
    data = _check_rows(data, "training data", device_data_bytes)
    host = isinstance(data, np.ndarray)
    if val_data is not None:
        val_data = _check_rows(val_data, "validation data")
        if val_data.shape[1] != data.shape[1]:
            raise ValueError(f"validation data has {val_data.shape[1]} columns but training "
                             f"data has {data.shape[1]}")
    n_val = _val_rows(data.shape[0], val_fraction)
    n_train, rows = data.shape[0] - n_val, batch_size * per_step
    if rows > n_train:
        what = f"batch_size ({batch_size})" if per_step == 1 else \
            f"batch_size * batches_per_step ({batch_size} * {per_step} = {rows})"
        raise ValueError(f"{what} exceeds the number of training rows ({n_train})")
    if mesh is not None:
        from genlearn.parallel.mesh import num_batch_shards

        if not isinstance(mesh, jax.sharding.Mesh):
            raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        if batch_size % num_batch_shards(mesh):
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of the number of mesh "
                             f"devices ({num_batch_shards(mesh)}) to split minibatches over them")
        if checkpoint_dir is not None and not mesh.is_fully_addressable:
            raise ValueError("checkpoint_dir is not supported with a multi-process mesh")
    _check_params(params)
    base_key = _typed_key(key)
    impl = jax.random.key_impl(base_key)
    keys = jax.random.split(base_key, len(_KEY_NAMES))
    has_val = trainer.loss is not None and (val_data is not None or n_val > 0)

    state = trainer.init(jax.random.fold_in(base_key, len(_KEY_NAMES)), params)
    batch_shape = jax.ShapeDtypeStruct((rows, data.shape[1]), jax.dtypes.canonicalize_dtype(data.dtype))
    info = _check_trainer(trainer, state, batch_shape, keys[2])
    fs = _initial_state(state, np.asarray(jax.random.key_data(keys)), info, has_val,
                        trainer.params(state), steps, eval_every)

    manager = None
    if checkpoint_dir is not None:
        checkpoint_dir = os.path.abspath(os.fspath(checkpoint_dir))
        _check_writable(checkpoint_dir)  # fail now, not at the first save
        manager = _open_manager(checkpoint_dir, keep_checkpoints)
        if not resume and manager.all_steps():
            found = list(manager.all_steps())
            manager.close()
            raise ValueError(f"checkpoint_dir {checkpoint_dir} already holds checkpoints (steps "
                             f"{found}); pass resume=True to continue, or use an empty directory")
    try:
        restored = _restore(manager, fs) if resume else None
        fs, saved_step = (fs, None) if restored is None else (restored, restored.step)
        split_key, shuffle_key, step_key, val_key = jax.random.wrap_key_data(jnp.asarray(fs.keys), impl=impl)
        train, index = data, None
        if n_val > 0:  # with the (possibly restored) key, so a resumed run validates on the same rows
            perm = jax.random.permutation(split_key, data.shape[0])
            if host:  # the training rows stay where they are: data[index]
                index = np.asarray(perm[n_val:])
                val_data = jnp.asarray(data[np.asarray(perm[:n_val])].astype(batch_shape.dtype))
            else:
                val_data, train = jnp.take(data, perm[:n_val], axis=0), jnp.take(data, perm[n_val:], axis=0)
        if mesh is not None:
            from genlearn.parallel.mesh import replicate

            ts, best, val_data = replicate((fs.trainer_state, fs.best_params, val_data), mesh)
            fs = fs._replace(trainer_state=ts, best_params=best)
            train = train if host else replicate(train, mesh)
        length = eval_every
        if manager is not None:
            checkpoint_every = checkpoint_every or eval_every
            length = min(eval_every, checkpoint_every)
        loop = _chunk_loop(chunk_loop, trainer, fs.trainer_state, batch_shape, keys[2])
        chunk = _make_chunk(trainer, info, n_train, rows, length, max_nonfinite, mesh, host, loop)
        fetch = _host_batches(data, index, shuffle_key, n_train, rows, length, mesh) if host else None
        prefetched = None  # (start, batches) of the next chunk, on their way to the device
        # the epoch permutation the last chunk ended with, kept on the device for the next one
        perm, perm_epoch = jnp.zeros(0 if host else n_train, jnp.int32), np.int32(-1)
        val_loss = jax.jit(lambda state, x, k: trainer.loss(trainer.params(state), x, k))

        def evaluate(fs):
            value = float(val_loss(fs.trainer_state, val_data, val_key))
            return _evaluate(fs, trainer.params(fs.trainer_state), value)

        bar = tqdm(total=steps, initial=min(fs.step, steps), desc=progress_desc, disable=not progress,
                   dynamic_ncols=True)
        first_step = fs.step
        deadline = None if max_seconds is None else start_time + max_seconds
        try:
            while (stop_reason := _stop_reason(fs, steps, patience, max_nonfinite, first_step, deadline)) is None:
                end = min((fs.step // length + 1) * length, steps)
                if host:
                    batches = prefetched[1] if prefetched and prefetched[0] == fs.step else fetch(fs.step, end)
                state, consecutive, infos, active, perm, perm_epoch = chunk(
                    fs.trainer_state, np.int32(fs.consecutive_nonfinite), batches if host else train,
                    perm, perm_epoch, np.int32(fs.step), np.int32(end - fs.step), shuffle_key, step_key)
                if host and end < steps:  # dispatch is asynchronous: gather the next chunk meanwhile
                    prefetched = (end, fetch(end, min((end // length + 1) * length, steps)))
                infos, active, consecutive = jax.device_get((infos, active, consecutive))
                done = int(active.sum())  # active iterations form a prefix
                start, fs = fs.step, _record(fs, state, consecutive, infos, done)
                rejected = start + np.flatnonzero(np.asarray(infos.nonfinite)[:done])
                if rejected.size:
                    warnings.warn(f"{progress_desc}: rejected {rejected.size} non-finite update(s) at "
                                  f"step(s) {_format_steps(rejected)}", RuntimeWarning, stacklevel=2)
                if has_val and fs.step % eval_every == 0:
                    fs = evaluate(fs)
                if manager is not None and fs.step % checkpoint_every == 0:
                    _save(manager, fs)
                    saved_step = fs.step
                if progress:
                    losses = fs.history["train_loss"][start: fs.step]
                    postfix = {"train": f"{np.nanmean(losses):.4g}"} if np.isfinite(losses).any() else {}
                    if fs.num_evals:
                        postfix["val"] = f"{fs.history['val_loss'][fs.num_evals - 1]:.4g}"
                    bar.set_postfix(postfix, refresh=False)
                bar.update(done)
            if has_val and (not fs.num_evals or fs.history["val_step"][fs.num_evals - 1] != fs.step):
                fs = evaluate(fs)
            if manager is not None and saved_step != fs.step:
                _save(manager, fs)
        finally:
            bar.close()
    finally:
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return _result(trainer, fs, has_val, stop_reason)
