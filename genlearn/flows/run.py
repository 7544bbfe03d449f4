"""The flow families of the run registry: ``genlearn fit realnvp|nice|maf|iaf|spline|glow|cnf``.

Flows are trained by maximum likelihood (`genlearn.train.gradient_trainer` on
`genlearn.losses.nll`, run by the one driver) as data-space densities: the flow acts in a
preprocessed space (standardised toys; logit of dequantised pixels) and the
preprocessing is appended as a fixed bijector (`genlearn.core.transformed`),
so every likelihood is in units of the data as given. Glow's ActNorms get
their data-dependent initialisation from a batch of training data.
"""

from __future__ import annotations

import numpy as np
import optax

from genlearn import core, flows, registry
from genlearn.core.model import from_flow
from genlearn.data import uniform_dequantize
from genlearn.data.scaling import standardize_stats

__all__ = ["FACTORIES", "LOGIT_ALPHA", "defaults", "preprocess", "outer_bijector", "build", "trainer"]

LOGIT_ALPHA = 0.05

# name -> (factory(dim, num_layers, hidden, **kw), the factory keywords its options may hold)
FACTORIES = {
    "realnvp": (flows.realnvp, ("mask", "base")),
    "nice": (flows.nice, ("mask", "base")),
    "maf": (flows.maf, ("order", "base")),  # flows II: autoregressive and spline
    "iaf": (flows.iaf, ("order", "base")),
    "spline": (flows.spline, ("mask", "bound", "base")),
    "glow": (flows.glow, ("mask", "base")),  # flows II: glow, cnf
    "cnf": (flows.cnf, ("rtol", "atol", "base")),
}
BASES = ("normal", "student_t", "logistic", "diag_gaussian")


def _train_cfg(steps, batch_size, learning_rate, weight_decay, num_layers, hidden, val_fraction, eval_every,
               patience, **factory) -> dict:
    return {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "weight_decay": weight_decay,
            "num_layers": num_layers, "hidden": list(hidden), "val_fraction": val_fraction,
            "eval_every": eval_every, "patience": patience, "grad_clip": 1.0, **factory}


def _default_base(name: str) -> str:
    import inspect

    return inspect.signature(FACTORIES[name][0]).parameters["base"].default


def defaults(name: str, dataset) -> dict:
    """Defaults per data kind, chosen on held-out data (see benchmarks/foundation_numbers.py).

    Toys: 8 layers of 2x128 (RealNVP; 4 for NICE), Adam 1e-3 with cosine decay,
    batch 256, 20k steps. Digits (1400 examples in 64-D) overfit quickly, so
    the flows are smaller and regularised, with early stopping on a split.
    """
    return {"base": _default_base(name), **_defaults(name, dataset)}


def _defaults(name: str, dataset) -> dict:
    pixels = dataset.discrete_levels is not None
    small = dict(steps=3000, batch_size=128, learning_rate=1e-3, weight_decay=1e-2, val_fraction=0.15,
                 eval_every=100, patience=10)
    big = dict(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0, val_fraction=0.1,
               eval_every=500, patience=None)
    if name == "cnf":  # flows II: ODE solves are costly; a small exact-trace field, loose tolerances, few steps
        return _train_cfg(2000, 256, 3e-3, 0.0, 1, (64, 64), 0.15 if pixels else 0.0, 250, None,
                          rtol=1e-3, atol=1e-3)
    if name in ("maf", "iaf", "spline"):  # flows II (benchmarks/flows2_numbers.py)
        if pixels:  # MADE widths must be >= 64; random orders regularise
            if name == "spline":
                return _train_cfg(num_layers=8, hidden=(32, 32), mask="parity", **small)
            return _train_cfg(num_layers=5, hidden=(64, 64), order="random", **small)
        if name == "maf":  # 16 MADE layers, 20k steps: 1.167 standardised on moons vs 1.208 with 8 layers, 10k steps
            return _train_cfg(num_layers=16, hidden=(128, 128), **big)
        if name == "spline":  # bins out to +-4 standardised units; a little weight decay against overfitting
            return _train_cfg(num_layers=8, hidden=(128, 128), mask="half", bound=4.0,
                              **{**big, "weight_decay": 1e-4})
        return _train_cfg(num_layers=8, hidden=(128, 128), **{**big, "steps": 10_000})
    if pixels:  # glow: actnorm -> LU linear -> affine coupling steps
        return _train_cfg(num_layers=8, hidden=(32, 32) if name == "nice" else (16, 16), mask="parity", **small)
    return _train_cfg(num_layers=4 if name == "nice" else 8, hidden=(128, 128), mask="half", **big)


def preprocess(dataset) -> dict:
    """Logit of dequantised pixels, or standardisation of continuous data."""
    if dataset.discrete_levels is not None:
        return {"kind": "logit", "levels": int(dataset.discrete_levels), "alpha": LOGIT_ALPHA}
    mean, std = standardize_stats(dataset.train)
    return {"kind": "standardize", "mean": np.asarray(mean, float).tolist(), "std": np.asarray(std, float).tolist()}


def outer_bijector(pre: dict, dim: int) -> core.Bijector:
    """The fixed bijector from the flow's space to data units."""
    if pre["kind"] == "logit":
        return core.logit_box(dim, upper=float(pre["levels"]), alpha=float(pre["alpha"]))
    if pre["kind"] == "standardize":
        return core.fixed_affine(np.asarray(pre["mean"]), np.asarray(pre["std"]))
    raise ValueError(f"unknown preprocessing {pre['kind']!r} in run config")


def build(name: str, options: dict, dim: int, pre: dict):
    """The data-space Model of flow ``name``."""
    factory, keys = FACTORIES[name]
    kwargs = {k: options[k] for k in keys if k in options}
    kwargs.setdefault("base", "normal")  # runs saved before the base was recorded in their config used N(0, I)
    flow = factory(dim, options["num_layers"], tuple(options["hidden"]), **kwargs)
    return from_flow(flow, outer_bijector(pre, dim), data_init=name == "glow")


def trainer(model, dataset, options: dict, key, ctx: registry.Context) -> registry.Training:
    """Adam(W) with cosine decay and global-norm clipping on the NLL (`genlearn.train.gradient_trainer`)."""
    import jax
    import jax.numpy as jnp

    from genlearn.losses import nll
    from genlearn.train import gradient_trainer

    o = options
    k_init, k_fit = jax.random.split(key)
    dequant = uniform_dequantize if dataset.discrete_levels is not None else None
    x0 = jnp.asarray(dataset.train[:1024])
    params = model.init(k_init, x0 if dequant is None else dequant(k_init, x0))
    schedule = optax.cosine_decay_schedule(o["learning_rate"], max(o["steps"], 1))
    optimizer = optax.adamw(schedule, weight_decay=o["weight_decay"]) if o["weight_decay"] > 0 else optax.adam(schedule)
    # the same global-norm clipping as the library's `fit` (history["clipped"] marks the steps in loss.png)
    return registry.Training(gradient_trainer(nll(model, dequantize=dequant), optimizer,
                                              max_grad_norm=o["grad_clip"] or None), params, dataset.train,
                             k_fit, o["steps"], o["batch_size"], val_fraction=o["val_fraction"],
                             eval_every=o["eval_every"], patience=o["patience"])


def _check(options: dict, dataset) -> str | None:
    n_train = dataset.train.shape[0]
    n_fit = n_train - max(1, round(options["val_fraction"] * n_train)) if options["val_fraction"] > 0 else n_train
    if options["batch_size"] > n_fit:
        return f"--batch-size {options['batch_size']} exceeds the {n_fit} training rows of {dataset.name}"
    return None


OPTIONS = (
    registry.STEPS, registry.BATCH_SIZE, registry.LEARNING_RATE,
    registry.Option("--weight-decay", "weight_decay", registry.nonneg_float, "AdamW weight decay"),
    registry.Option("--layers", "num_layers", registry.positive_int, "number of flow layers"),
    registry.HIDDEN,
    registry.Option("--base", "base", str, "base distribution (default: the family's own; see genlearn.core.make_base)",
                    choices=BASES),
    registry.Option("--val-fraction", "val_fraction", registry.fraction, "validation split for early stopping"),
    registry.Option("--patience", "patience", registry.positive_int,
                    "evaluations without improvement before stopping"),
    registry.Option("--eval-every", "eval_every", registry.positive_int, "steps between validation evaluations"),
    registry.RESUME,
)

for _name in FACTORIES:
    registry.register(registry.Family(
        name=_name,
        defaults=lambda dataset, chosen, _n=_name: defaults(_n, dataset),
        build=lambda options, dim, pre, _n=_name: build(_n, options, dim, pre),
        trainer=trainer, options=OPTIONS, check=_check, preprocess=preprocess,
        loss_label="NLL (nats per example)",
    ))
