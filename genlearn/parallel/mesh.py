"""Device meshes and the placement of params (replicated) and batches (sharded).

A data-parallel run uses a one-axis `jax.sharding.Mesh` over all devices
(``jax.devices()``: every local device, and under `jax.distributed` every device
of every process). Params and optimiser state are *replicated*
(``NamedSharding(mesh, P())``); each batch is *sharded* along its leading axis
(``NamedSharding(mesh, P("data"))``), so device :math:`i` of :math:`D` holds rows
:math:`[i b/D, (i+1) b/D)` of a batch of :math:`b` rows. No padding is done: a
batch whose size is not a multiple of :math:`D` is a `ValueError`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "replicate", "shard_batch", "batch_spec", "num_batch_shards"]

PyTree = Any


def make_mesh(devices: Optional[Sequence[jax.Device]] = None, axis_name: str = "data") -> Mesh:
    """A one-axis mesh named ``axis_name`` over ``devices`` (default: `jax.devices()`).

    The axis type is ``Auto`` so that `jax.jit` partitions computations by
    sharding propagation (the compiler inserts the gradient all-reduce).

    Raises:
      ValueError: empty ``devices``, repeated devices, or a bad ``axis_name``.
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty string, got {axis_name!r}")
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty: a mesh needs at least one device")
    if len({id(d) for d in devices}) != len(devices):
        raise ValueError(f"devices has repeated entries: {devices}")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,),
                axis_types=(jax.sharding.AxisType.Auto,))


def _check_mesh(mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    return mesh


def batch_spec(mesh: Mesh, axis_name: Optional[str] = None) -> P:
    """The spec of a batch: leading axis over ``axis_name`` (default: all mesh axes)."""
    _check_mesh(mesh)
    if axis_name is None:
        names = tuple(mesh.axis_names)
        return P(names[0] if len(names) == 1 else names)
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {mesh.axis_names}")
    return P(axis_name)


def num_batch_shards(mesh: Mesh, axis_name: Optional[str] = None) -> int:
    """Number of shards a batch's leading axis is cut into."""
    spec = batch_spec(mesh, axis_name)[0]
    names = spec if isinstance(spec, tuple) else (spec,)
    return int(np.prod([mesh.shape[n] for n in names]))


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _place(leaf, sharding: NamedSharding, global_shape=None):
    """Put one leaf under ``sharding``; ``leaf`` is this process's part of it."""
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    if _is_key(leaf):  # typed keys: place their raw data, then wrap it again
        impl = jax.random.key_impl(leaf)
        data = jax.random.key_data(leaf)
        shape = None if global_shape is None else (*global_shape, *data.shape[leaf.ndim:])
        return jax.random.wrap_key_data(_place(data, sharding, shape), impl=impl)
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), global_shape)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy every array leaf of ``tree`` onto every device of ``mesh`` (``P()``).

    Under `jax.distributed` every process must pass the same values (e.g. params
    initialised from the same key). Non-array leaves (None, optax empty states)
    pass through.
    """
    sharding = NamedSharding(_check_mesh(mesh), P())

    def put(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)):
            return _place(leaf, sharding)
        return leaf

    return jax.tree_util.tree_map(put, tree)


def shard_batch(batch: PyTree, mesh: Mesh, axis_name: Optional[str] = None) -> PyTree:
    """Shard the leading (row) axis of every leaf of ``batch`` over ``mesh``.

    ``batch`` is the rows *this process* holds: the whole batch in a
    single-process run; under `jax.distributed`, process :math:`p` of :math:`P`
    passes its own ``b / P`` rows (rows ``[p b/P, (p+1) b/P)`` of the global
    batch when devices are ordered by process, as in `make_mesh`), assembled
    with `jax.make_array_from_process_local_data` into one global array of
    ``b`` rows.

    Raises:
      ValueError: a leaf without a leading axis, leaves with different numbers
        of rows, or a global row count that is not a multiple of the number of
        shards (no padding is done: pick a batch size that divides).
    """
    spec = batch_spec(mesh, axis_name)
    sharding = NamedSharding(mesh, spec)
    shards = num_batch_shards(mesh, axis_name)
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError("batch has no arrays")
    rows = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("every batch leaf needs a leading row axis, got a scalar")
        rows.add(shape[0])
    if len(rows) != 1:
        raise ValueError(f"batch leaves have different numbers of rows: {sorted(rows)}")
    local_rows = rows.pop()
    global_rows = local_rows * jax.process_count()
    if global_rows % shards:
        where = "" if jax.process_count() == 1 else (
            f" ({local_rows} rows in each of {jax.process_count()} processes)")
        raise ValueError(
            f"batch of {global_rows} rows{where} does not split over the {shards} "
            f"devices of the mesh axis {spec[0]!r}: use a batch size that is a "
            f"multiple of {shards} (genlearn.parallel does not pad batches)"
        )

    def put(leaf):
        shape = (global_rows, *np.shape(leaf)[1:])
        return _place(leaf, sharding, shape)

    return jax.tree_util.tree_map(put, batch)
