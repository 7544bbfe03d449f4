"""Training: a general minibatch loop (`fit`), its guarded step, and checkpoints.

Every model family trains through `fit`; code that needs its own loop (GAN
min-max updates, multi-device steps) reuses `train_step` and
`minibatch_indices` so it draws the same batches and rejects non-finite updates
the same way. `save_pytree` / `load_pytree` store a trained model with JSON
metadata.
"""

from genlearn.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_pytree,
    save_pytree,
)
from genlearn.train.fit import FitResult, fit
from genlearn.train.step import (
    epoch_permutation,
    loss_takes_key,
    minibatch_indices,
    train_step,
)

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "FitResult",
    "epoch_permutation",
    "fit",
    "load_pytree",
    "loss_takes_key",
    "minibatch_indices",
    "save_pytree",
    "train_step",
]
