"""Training: the trainer protocol, the one driver, the shared guard, and checkpoints.

A `Trainer` is ``init(key, params) -> state`` and ``step(state, batch, key) ->
(state, info)`` (blackjax style). `run_trainer` runs any trainer (batching,
chunked `lax.scan`, validation, early stopping, non-finite stop, orbax
checkpoints with bit-identical resume, time budget, progress, history);
`fit` is `run_trainer` on `gradient_trainer`; `annealed_trainer` weights a loss
term on a schedule (KL warm-up). `guarded_update` is the one
non-finite guard every trainer uses; `train_step` and `minibatch_indices` serve
hand-written loops (`genlearn.parallel`). `save_pytree` / `load_pytree` store a
trained model with JSON metadata.
"""

from genlearn.train.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    load_pytree,
    save_pytree,
)
from genlearn.train.driver import FitResult, FitState, run_trainer
from genlearn.train.fit import fit
from genlearn.train.step import (
    all_finite,
    epoch_permutation,
    guarded_update,
    keep_if,
    minibatch_indices,
    train_step,
)
from genlearn.train.trainer import AnnealedState, StepInfo, Trainer, TrainState, annealed_trainer, gradient_trainer

__all__ = [
    "AnnealedState", "annealed_trainer", "CheckpointError", "CheckpointMismatchError", "FitResult", "FitState", "StepInfo", "TrainState",
    "Trainer", "all_finite", "epoch_permutation", "fit", "gradient_trainer", "guarded_update",
    "keep_if", "load_pytree", "minibatch_indices", "run_trainer", "save_pytree", "train_step",
]
