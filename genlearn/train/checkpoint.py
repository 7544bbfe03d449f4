"""Checkpoints with orbax: the driver's training state, and whole trained models.

Two layers:

* `save_pytree` / `load_pytree` store one pytree (e.g. a trained model's
  params) together with a JSON metadata dict; the CLI uses them to ship a model.
  Layout of ``directory``::

      directory/
        tree/            orbax StandardCheckpointer data (tensorstore, no pickle)
        metadata.json    the metadata dict, as JSON

  The directory is written under a temporary name and renamed into place, so a
  reader never sees a half-written model.

* `_open_manager`, `_save_state` and `_restore_latest` wrap an
  `orbax.checkpoint.CheckpointManager` for `genlearn.train.run_trainer`: numbered step
  directories, ``max_to_keep`` rotation, atomic saves, and fallback to an older
  step when the newest one cannot be read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from genlearn.data.validation import all_finite

__all__ = ["CheckpointError", "CheckpointMismatchError", "save_pytree", "load_pytree"]

PyTree = Any

_TREE = "tree"
_METADATA = "metadata.json"


class CheckpointError(ValueError):
    """A checkpoint or saved pytree is missing, unreadable or inconsistent."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint that was written for another model or optimiser.

    Unlike damage, this is never "fixed" by falling back to an older step:
    every step of the run has the same structure, so it is raised at once.
    """


def _describe(err: BaseException, limit: int = 300) -> str:
    # tensorstore errors embed a full JSON spec; the first lines are enough.
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(err).__name__}: {text}"


def _as_arrays(tree: PyTree) -> PyTree:
    """Python and numpy scalars -> 0-d numpy arrays (orbax rejects np.generic)."""

    def convert(leaf):
        if isinstance(leaf, (np.generic, bool, int, float, complex)):
            return np.asarray(leaf)
        return leaf

    return jax.tree_util.tree_map(convert, tree)


def _check_no_empty_leaves(tree: PyTree) -> None:
    # orbax refuses zero-size arrays with an obscure message; say it plainly.
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if hasattr(leaf, "shape") and int(np.prod(leaf.shape)) == 0:
            raise ValueError(
                f"cannot save the zero-size array at {jax.tree_util.keystr(path)} "
                f"(shape {tuple(leaf.shape)}): orbax does not store empty arrays"
            )


def _check_finite(tree: PyTree, what: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not all_finite(leaf):
            raise FloatingPointError(
                f"refusing to checkpoint non-finite values in {what}"
                f"{jax.tree_util.keystr(path)}"
            )


# ---------------------------------------------------------------------------
# A single pytree with metadata.
# ---------------------------------------------------------------------------


def save_pytree(
    directory: str | os.PathLike,
    tree: PyTree,
    *,
    metadata: dict,
    overwrite: bool = False,
) -> None:
    """Save ``tree`` with orbax and ``metadata`` as JSON beside it.

    Args:
      directory: target directory; its parent is created if needed.
      tree: a pytree of arrays (jax or numpy) and scalars; containers may be
        dicts, lists, tuples, NamedTuples, ``None``. Zero-size arrays are not
        supported by orbax and raise ValueError.
      metadata: a JSON-serialisable dict (model family, hyperparameters,
        versions, ...). NaN and inf floats are written as JSON ``NaN`` /
        ``Infinity``, which Python's `json` reads back.
      overwrite: replace an existing ``directory``; otherwise it is an error.

    Raises:
      TypeError: ``metadata`` is not a dict or not JSON-serialisable.
      FileExistsError: ``directory`` exists and ``overwrite`` is False.
      ValueError: ``tree`` has a zero-size array.
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        metadata_text = json.dumps(metadata, indent=2, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata is not JSON-serialisable: {err}") from err
    tree = _as_arrays(tree)
    _check_no_empty_leaves(tree)

    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory) and not overwrite:
        raise FileExistsError(
            f"{directory} already exists; pass overwrite=True to replace it"
        )
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        checkpointer = ocp.StandardCheckpointer()
        try:
            checkpointer.save(os.path.join(staging, _TREE), tree)
            checkpointer.wait_until_finished()
        finally:
            checkpointer.close()
        with open(os.path.join(staging, _METADATA), "w", encoding="utf-8") as f:
            f.write(metadata_text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.lexists(directory):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
            os.rename(directory, os.path.join(old, "replaced"))
            os.rename(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_pytree(
    directory: str | os.PathLike, like: Optional[PyTree] = None
) -> tuple[PyTree, dict]:
    """Load a pytree saved by `save_pytree`.

    Args:
      directory: the directory given to `save_pytree`.
      like: optional pytree with the expected structure (arrays or
        `jax.ShapeDtypeStruct` leaves). With it, containers such as NamedTuples
        and tuples are rebuilt exactly and leaves come back as the same kind
        (jax or numpy) of array. Without it, orbax returns its own view:
        NamedTuples become dicts keyed by field name, tuples become lists,
        and scalars come back as 0-d arrays.

    Returns:
      ``(tree, metadata)``.

    Raises:
      CheckpointError: the directory is missing, is not a saved pytree, its
        metadata is unreadable, or orbax cannot restore the tree (including a
        ``like`` whose structure or shapes do not match).
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise CheckpointError(f"no saved pytree at {directory}: directory does not exist")
    tree_dir = os.path.join(directory, _TREE)
    metadata_path = os.path.join(directory, _METADATA)
    if not os.path.isdir(tree_dir) or not os.path.isfile(metadata_path):
        raise CheckpointError(
            f"{directory} is not a saved pytree: expected {_TREE}/ and {_METADATA} in it"
        )
    try:
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{_METADATA} in {directory} is unreadable: {_describe(err)}"
        ) from err
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{_METADATA} in {directory} does not hold a JSON object")

    checkpointer = ocp.StandardCheckpointer()
    try:
        if like is None:
            tree = checkpointer.restore(tree_dir)
        else:
            tree = checkpointer.restore(tree_dir, _as_arrays(like))
    # orbax and tensorstore raise many unrelated types (even bare Exception)
    # for damaged files; all of them mean "this checkpoint is unusable".
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"could not restore the pytree in {directory}: {_describe(err)}"
        ) from err
    finally:
        checkpointer.close()
    return tree, metadata


# ---------------------------------------------------------------------------
# Training-state checkpoints for the driver.
# ---------------------------------------------------------------------------


def _check_writable(directory: str) -> None:
    """Create ``directory`` and write a probe file in it, before any training.

    Raises:
      CheckpointError: naming the directory and the OS error (a path under a
        regular file, a read-only file system, missing permissions, ...).
    """
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise CheckpointError(
            f"checkpoint_dir {directory} is not writable: {_describe(err)}"
        ) from err


def _leaf_specs(tree: PyTree) -> dict[str, tuple]:
    # "/"-joined key names, so a dict and a NamedTuple with the same field
    # names (orbax stores NamedTuples as dicts) describe the same leaf.
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): (
            tuple(np.shape(leaf)), np.dtype(getattr(leaf, "dtype", None) or np.result_type(leaf)).name
        )
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _check_same_structure(stored: PyTree, current: PyTree, what: str, where: str) -> None:
    """Raise `CheckpointMismatchError` unless ``stored`` (orbax metadata) has
    the leaf names, shapes and dtypes of ``current``."""
    old, new = _leaf_specs(stored), _leaf_specs(current)
    problems = [f"{name}: missing from the model" for name in sorted(set(old) - set(new))]
    problems += [f"{name}: not in the checkpoint" for name in sorted(set(new) - set(old))]
    problems += [
        f"{name}: shape {old[name][0]} {old[name][1]} in the checkpoint, "
        f"{new[name][0]} {new[name][1]} in the model"
        for name in sorted(set(old) & set(new))
        if old[name] != new[name]
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} in all)" if len(problems) > 4 else "")
        raise CheckpointMismatchError(
            f"the checkpoint {where} was written for a different {what} "
            f"architecture: {shown}. Use the configuration it was trained with, "
            f"or a new checkpoint directory"
        )


def _open_manager(
    directory: str, max_to_keep: Optional[int]
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    # Naming the handler lets a fresh manager read item metadata before it has
    # saved anything (needed to size the restore target).
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def _save_state(manager: ocp.CheckpointManager, step: int, state: PyTree, finite: dict) -> None:
    """Save ``state`` as step ``step``; the trees in ``finite`` (name -> tree) must be finite."""
    for name, tree in finite.items():
        _check_finite(tree, name)
    manager.save(step, args=ocp.args.StandardSave(_as_arrays(state)), force=True)


def _quarantine(directory: str, step: int) -> str:
    # A name orbax does not parse as a step, so the step number is free again
    # and the damaged files stay around for inspection.
    target = os.path.join(directory, f"unreadable_{step}")
    suffix = 1
    while os.path.lexists(target):
        target = os.path.join(directory, f"unreadable_{step}_{suffix}")
        suffix += 1
    os.rename(os.path.join(directory, str(step)), target)
    return target


def _restore_latest(
    manager: ocp.CheckpointManager,
    make_target: Callable[[Any], PyTree],
    check: Optional[Callable[[int, PyTree], None]] = None,
    expect: Sequence[tuple[str, tuple, PyTree]] = (),
) -> Optional[tuple[int, PyTree]]:
    """Restore the newest readable step, falling back to older ones.

    Args:
      manager: an open CheckpointManager.
      make_target: ``metadata_tree -> target`` builds the restore target from
        the stored tree metadata (so leaves whose shape varies between steps,
        like loss histories, can take the stored shape).
      check: optional ``check(step, state)`` raising on an inconsistent state;
        such a step counts as unreadable.
      expect: ``(what, path, tree)`` triples: the stored entry at ``path`` (a
        tuple of keys) must have the leaf names, shapes and dtypes of ``tree``
        (e.g. the model's params, described as ``what="model"``), else
        `CheckpointMismatchError` is raised at once (no fallback).

    Returns:
      ``(step, state)``, or None when the directory holds no checkpoint.
      Unreadable steps newer than the one restored are renamed to
      ``unreadable_<step>`` (with a warning) so that training can write them
      again.

    Raises:
      CheckpointMismatchError: see ``expect``.
      CheckpointError: there are checkpoints but none can be read. Nothing is
        renamed in either case.
    """
    directory = os.fspath(manager.directory)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        return None
    unreadable = []
    for step in steps:
        try:
            metadata = manager.item_metadata(step)
            tree_metadata = getattr(metadata, "tree", metadata)
            for what, path, tree in expect:
                stored = tree_metadata
                for name in path:
                    stored = stored[name]
                _check_same_structure(stored, tree, what, f"step {step} in {directory}")
            state = manager.restore(
                step, args=ocp.args.StandardRestore(make_target(tree_metadata))
            )
            if check is not None:
                check(step, state)
        except CheckpointMismatchError:
            raise
        # See load_pytree: any other failure here means the step is unusable.
        except Exception as err:  # noqa: BLE001
            unreadable.append((step, _describe(err)))
            warnings.warn(
                f"checkpoint step {step} in {directory} is unreadable "
                f"({_describe(err)}); falling back to an earlier checkpoint",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        for bad_step, _ in unreadable:
            moved = _quarantine(directory, bad_step)
            warnings.warn(
                f"moved unreadable checkpoint step {bad_step} to {moved}; "
                f"resuming from step {step}",
                RuntimeWarning,
                stacklevel=3,
            )
        if unreadable:
            manager.reload()
        return step, state
    details = "; ".join(f"step {s}: {msg}" for s, msg in unreadable)
    raise CheckpointError(
        f"no readable checkpoint in {directory} (tried steps "
        f"{[s for s, _ in unreadable]}; if the model, optimiser or validation "
        f"setup changed since the checkpoint was written, the state no longer "
        f"matches): {details}"
    )
