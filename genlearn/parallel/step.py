r"""Data-parallel training steps: any loss, or any hand-written (min-max) step.

Two ways to run one step over a mesh of :math:`D` devices, for a loss that is a
mean over the batch rows, :math:`L(\theta, B) = \frac1b \sum_{x \in B} \ell(\theta, x)`:

* **Compiler-partitioned** (`data_parallel_step`, `parallelize`): one global
  program under `jax.jit`; params are constrained to be replicated and the batch
  to be sharded along its rows, and XLA's sharding propagation splits the
  forward/backward pass by rows and inserts the all-reduce of the gradient.
  The result is the *same* global computation as on one device (only the
  summation order of the reductions changes), random numbers included
  (``jax_threefry_partitionable``).
* **pmap-style** (`pmap_step`): the per-device program written explicitly with
  `jax.shard_map` (the primitive `jax.pmap` itself is now built on): each
  device computes the loss and gradient of its :math:`b/D` rows and
  ``jax.lax.pmean`` averages them, :math:`g = \frac1D \sum_i \nabla L(\theta,
  B_i) = \nabla L(\theta, B)` since the shards have equal size.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genlearn.parallel.mesh import _check_mesh, batch_spec
from genlearn.train.step import guarded_update, train_step

__all__ = ["data_parallel_step", "parallelize", "pmap_step"]

PyTree = Any


def _check_optimizer(optimizer):
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}"
        )


def _constrain(tree, sharding):
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def parallelize(
    step_fn: Callable[..., Any],
    mesh: Mesh,
    *,
    batch_argnums: Sequence[int] = (2,),
    axis_name: Optional[str] = None,
    static_argnums: Sequence[int] = (),
    donate_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
    """Jit any step function so that it runs data-parallel over ``mesh``.

    Inside the jitted function the positional arguments in ``batch_argnums``
    are constrained to be sharded along their leading (row) axis and all the
    others (params, optimiser states, keys) to be replicated; every output is
    replicated. This turns a hand-written step, e.g. a GAN update with two
    optimisers or a contrastive-divergence update with Langevin chains, into a
    data-parallel one without changing it, as long as its losses are means over
    the batch rows. Pass params made by `replicate` and batches made by
    `shard_batch` (in a single process, uncommitted arrays work too).

    Returns:
      The jitted function, with the signature of ``step_fn``.
    """
    _check_mesh(mesh)
    batch_argnums = tuple(int(i) for i in batch_argnums)
    static = tuple(int(i) for i in static_argnums)
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, batch_spec(mesh, axis_name))

    def wrapped(*args):
        args = [
            a if i in static else _constrain(a, sharded if i in batch_argnums else replicated)
            for i, a in enumerate(args)
        ]
        return step_fn(*args)

    return jax.jit(wrapped, out_shardings=replicated, static_argnums=static,
                   donate_argnums=tuple(donate_argnums))


def data_parallel_step(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis_name: Optional[str] = None,
) -> Callable[..., tuple]:
    r"""A jitted, data-parallel optimiser step for ``loss_fn`` over ``mesh``.

    The step is `genlearn.train.train_step` (non-finite updates are rejected)
    run through `parallelize`: batch rows sharded over the mesh, params and
    optimiser state replicated, gradient averaged by the compiler.

    Args:
      loss_fn: ``loss(params, batch, key)``, a mean over the rows of ``batch``.
      optimizer: any `optax.GradientTransformation`.
      mesh: from `make_mesh`.
      axis_name: mesh axis the rows are split over (default: all axes).

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, loss)``
      (``key`` may be None for a loss that ignores it); ``loss`` is the global
      minibatch loss at the incoming params, NaN when the update was rejected
      as non-finite (params and state then unchanged).
    """
    _check_optimizer(optimizer)
    inner = train_step(loss_fn, optimizer)

    def step(params, opt_state, batch, key):
        params, opt_state, loss, finite = inner(params, opt_state, batch, key)
        return params, opt_state, jnp.where(finite, loss, jnp.nan)

    return parallelize(step, mesh, batch_argnums=(2,), axis_name=axis_name)


def pmap_step(
    loss_fn: Callable[..., jax.Array],
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    axis_name: Optional[str] = None,
) -> Callable[..., tuple]:
    r"""The pmap-style step: per-device losses and gradients averaged over the devices.

    Written with `jax.shard_map` (``in_specs``: params, state and key ``P()``,
    batch ``P(axis)``; ``out_specs`` all ``P()``), which is how `jax.pmap` is
    implemented in current JAX. Device :math:`i` computes its loss :math:`L_i` on
    its :math:`b/D` rows; the step uses :math:`L = \mathrm{psum}(L_i / D)` and
    :math:`g = \frac1D \sum_i \nabla L_i`, and every device applies the same
    update. The gradient is taken of :math:`L_i / D` at the replicated params,
    whose transpose under `jax.shard_map` already sums it over the devices (an
    explicit ``pmean`` of per-device gradients on top would give D times the
    mean). A loss that takes a key gets
    ``fold_in(key, i)`` on device :math:`i` (so shards draw independent noise;
    the numbers then differ from a one-device run, unlike `data_parallel_step`).
    ``key=None`` is passed through unchanged (for a loss that ignores its key).

    Returns:
      ``step(params, opt_state, batch, key) -> (params, opt_state, loss)``,
      jitted, with the same non-finite guard as `data_parallel_step`.
    """
    _check_mesh(mesh)
    _check_optimizer(optimizer)
    spec = batch_spec(mesh, axis_name)
    axes = spec[0]

    def local(params, opt_state, batch, key):
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axes))
        # the mean over devices of g_i = grad L_i: differentiate L_i / D at the replicated params, where
        # shard_map's transpose sums the per-device gradients (sum_i g_i / D); a pmean of per-device
        # gradients on top of that sum would be D times the mean
        size = jax.lax.axis_size(axes)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(p, batch, key) / size)(params)
        loss = jax.lax.psum(loss, axes)
        params, opt_state, finite = guarded_update(optimizer, loss, grads, params, opt_state)
        return params, opt_state, jnp.where(finite, loss, jnp.nan)

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), spec, P()),
                                 out_specs=(P(), P(), P())))
