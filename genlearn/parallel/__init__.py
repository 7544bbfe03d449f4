"""Data parallelism over device meshes, multi-process runs, and their helpers.

* `make_mesh`, `replicate`, `shard_batch`: a one-axis mesh over all devices;
  params replicated, batch rows sharded (no padding: the batch size must be a
  multiple of the number of devices).
* `data_parallel_step(loss_fn, optimizer, mesh)`: a jitted step whose gradient
  all-reduce XLA inserts; `parallelize(step_fn, mesh, batch_argnums=...)` does the
  same for any hand-written step (GAN min-max updates, contrastive divergence);
  `pmap_step` is the explicit per-device (shard_map + pmean) form.
* `genlearn.train.fit(..., mesh=mesh)` trains data-parallel with the same loop.
* `initialize` joins a `jax.distributed` run (arguments or ``GENLEARN_*``
  variables); ``python -m genlearn.parallel.launch -n 2 -- cmd`` starts one on
  this machine.
"""

from genlearn.parallel.distributed import DistributedConfig, config_from_env, initialize
from genlearn.parallel.mesh import batch_spec, make_mesh, num_batch_shards, replicate, shard_batch
from genlearn.parallel.step import data_parallel_step, parallelize, pmap_step

__all__ = [
    "DistributedConfig",
    "batch_spec",
    "config_from_env",
    "data_parallel_step",
    "initialize",
    "make_mesh",
    "num_batch_shards",
    "parallelize",
    "pmap_step",
    "replicate",
    "shard_batch",
]
