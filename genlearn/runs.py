"""Runs: train a named model on a named dataset, save it, load it back, evaluate it.

A run directory holds everything needed to rebuild the model without the data:

    DIR/config.json      model name and hyperparameters, dataset, preprocessing
    DIR/model/           the trained params (orbax) + metadata (genlearn.train.save_pytree)
    DIR/checkpoints/     training-state checkpoints (resume with --resume)
    DIR/metrics.json     train_nll / test_nll in nats per example of the data as given
                         (and test_bits_per_dim for pixel data)
    DIR/samples.png, DIR/density.png (2-D data), DIR/loss.png

Models are trained in a preprocessed space (standardised toys; logit of
dequantised pixels) but the saved model is the *data-space* density: the
preprocessing is appended as a fixed bijector (`genlearn.core.transformed`),
so every likelihood is reported in units of the data as given.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn import core, flows
from genlearn.data import Dataset, check_data, load_dataset, nats_to_bits_per_dim, uniform_dequantize
from genlearn.data.scaling import standardize_stats
from genlearn.losses import nll
from genlearn.train import CheckpointError, fit, load_pytree, save_pytree

__all__ = [
    "FLOW_MODELS",
    "TrainConfig",
    "build_model",
    "default_train_config",
    "train_run",
    "load_run",
    "evaluate_nll",
    "RunError",
    "dataset_for_run",
    "LoadedRun",
    "load_any",
    "evaluate_run",
]

# Model name -> factory(dim, num_layers, hidden, **kw) returning a Flow.
FLOW_MODELS: dict[str, Callable[..., core.Flow]] = {
    "realnvp": flows.realnvp,
    "nice": flows.nice,
    "maf": flows.maf,  # flows II: autoregressive and spline
    "iaf": flows.iaf,
    "spline": flows.spline,
    "glow": flows.glow,  # flows II: glow, cnf
    "cnf": flows.cnf,
}

LOGIT_ALPHA = 0.05


class RunError(ValueError):
    """A run directory is missing, incomplete or unreadable."""


class TrainConfig(NamedTuple):
    """Training hyperparameters of a run (all JSON-serialisable)."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    num_layers: int
    hidden: tuple[int, ...]
    val_fraction: float
    eval_every: int
    patience: int | None
    seed: int
    mask: str
    grad_clip: float | None = 1.0
    options: dict | None = None  # family-specific factory keywords (e.g. num_bins for splines)


def default_train_config(model: str, dataset: Dataset) -> TrainConfig:
    """Defaults per data kind, chosen on held-out data (see benchmarks/foundation_numbers.py).

    Toys: 8 layers of 2x128 (RealNVP; 4 for NICE), Adam 1e-3 with cosine decay,
    batch 256, 20k steps. Digits (1400 examples in 64-D) overfit quickly, so
    the flows are smaller and regularised, with early stopping on a split.
    """
    if model == "cnf":  # flows II: ODE solves are costly; a small exact-trace field, loose tolerances, few steps
        return TrainConfig(steps=2000, batch_size=256, learning_rate=3e-3, weight_decay=0.0, num_layers=1,
                           hidden=(64, 64), val_fraction=0.0 if dataset.discrete_levels is None else 0.15,
                           eval_every=250, patience=None, seed=0, mask="half", options={"rtol": 1e-3, "atol": 1e-3})
    if model in ("maf", "iaf", "spline"):  # flows II (benchmarks/flows2_numbers.py)
        if dataset.discrete_levels is not None:  # MADE widths must be >= 64; random orders regularise
            return TrainConfig(steps=3000, batch_size=128, learning_rate=1e-3, weight_decay=1e-2,
                               num_layers=8 if model == "spline" else 5,
                               hidden=(32, 32) if model == "spline" else (64, 64), val_fraction=0.15,
                               eval_every=100, patience=10, seed=0, mask="parity",
                               options=None if model == "spline" else {"order": "random"})
        if model == "maf":  # 16 MADE layers, 20k steps: 1.167 standardised on moons vs 1.208 with 8 layers, 10k steps
            return TrainConfig(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0, num_layers=16,
                               hidden=(128, 128), val_fraction=0.1, eval_every=500, patience=None, seed=0,
                               mask="half")
        if model == "spline":  # bins out to +-4 standardised units; a little weight decay against overfitting
            return TrainConfig(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=1e-4, num_layers=8,
                               hidden=(128, 128), val_fraction=0.1, eval_every=500, patience=None, seed=0,
                               mask="half", options={"bound": 4.0})
        return TrainConfig(steps=10_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0,
                           num_layers=8, hidden=(128, 128), val_fraction=0.1,
                           eval_every=500, patience=None, seed=0, mask="half")
    if model == "glow":  # flows II: actnorm -> LU linear -> affine coupling steps
        if dataset.discrete_levels is not None:
            return TrainConfig(steps=3000, batch_size=128, learning_rate=1e-3, weight_decay=1e-2, num_layers=8,
                               hidden=(16, 16), val_fraction=0.15, eval_every=100, patience=10, seed=0, mask="parity")
        return TrainConfig(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0, num_layers=8,
                           hidden=(128, 128), val_fraction=0.1, eval_every=500, patience=None, seed=0, mask="half")
    if dataset.discrete_levels is not None:
        return TrainConfig(steps=3000, batch_size=128, learning_rate=1e-3, weight_decay=1e-2,
                           num_layers=8, hidden=(16, 16) if model == "realnvp" else (32, 32),
                           val_fraction=0.15, eval_every=100, patience=10, seed=0, mask="parity")
    return TrainConfig(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0,
                       num_layers=8 if model == "realnvp" else 4, hidden=(128, 128), val_fraction=0.1,
                       eval_every=500, patience=None, seed=0, mask="half")


def _preprocess_config(dataset: Dataset, train: np.ndarray) -> dict:
    if dataset.discrete_levels is not None:
        return {"kind": "logit", "levels": int(dataset.discrete_levels), "alpha": LOGIT_ALPHA}
    mean, std = standardize_stats(train)
    return {"kind": "standardize", "mean": np.asarray(mean, float).tolist(), "std": np.asarray(std, float).tolist()}


def _outer_bijector(pre: dict, dim: int) -> core.Bijector:
    if pre["kind"] == "logit":
        return core.logit_box(dim, upper=float(pre["levels"]), alpha=float(pre["alpha"]))
    if pre["kind"] == "standardize":
        return core.fixed_affine(np.asarray(pre["mean"]), np.asarray(pre["std"]))
    raise RunError(f"unknown preprocessing {pre['kind']!r} in run config")


def build_model(config: dict) -> core.Flow:
    """Rebuilds the data-space model of a run from its config dict."""
    name = config["model"]
    if name not in FLOW_MODELS:
        raise RunError(f"run config names unknown model {name!r}; known: {sorted(FLOW_MODELS)}")
    t = config["train"]
    factory = FLOW_MODELS[name]
    accepted = inspect.signature(factory).parameters
    kwargs = {"mask": t["mask"]} if "mask" in accepted else {}
    kwargs.update(t.get("options") or {})
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise RunError(f"model {name!r} does not take the option(s) {unknown}")
    flow = factory(config["dim"], t["num_layers"], tuple(t["hidden"]), **kwargs)
    return core.transformed(flow, _outer_bijector(config["preprocess"], config["dim"]))


def evaluate_nll(model, params, x: np.ndarray, *, levels: int | None, key: jax.Array,
                 num_draws: int = 8, batch: int = 4096) -> dict[str, float]:
    """Mean negative log-likelihood in nats per example of ``x`` as given.

    For discrete data (``levels`` not None) this is the dequantisation bound
    E_u[-log p(x + u)], averaged over ``num_draws`` noise draws, and the dict
    also holds ``bits_per_dim`` = nll / (d ln 2).
    """
    x = jnp.asarray(check_data(x, "evaluation data", dim=model.dim))
    log_prob = jax.jit(model.log_prob)

    def mean_lp(xs):
        parts = [log_prob(params, xs[i : i + batch]) for i in range(0, xs.shape[0], batch)]
        return float(jnp.mean(jnp.concatenate(parts)))

    if levels is None:
        value = -mean_lp(x)
        out = {"nll": value}
    else:
        draws = [-mean_lp(uniform_dequantize(k, x)) for k in jax.random.split(key, num_draws)]
        value = float(np.mean(draws))
        out = {"nll": value, "nll_stderr": float(np.std(draws) / math.sqrt(num_draws)),
               "bits_per_dim": float(nats_to_bits_per_dim(value, model.dim))}
    if not math.isfinite(value):
        raise FloatingPointError("the model's log-likelihood on the evaluation data is not finite")
    return out


def train_run(model_name: str, dataset: Dataset, config: TrainConfig, *, out: str | None = None,
              progress: bool = True, resume: bool = False, data_seed: int = 0,
              max_seconds: float | None = None) -> tuple[Any, dict, Any]:
    """Trains ``model_name`` on ``dataset`` and (if ``out``) saves the run.

    ``max_seconds`` stops training on the clock (see `genlearn.train.fit`).

    Returns ``(params, config_dict, fit_result)``; raises ValueError on bad
    input and FloatingPointError if training produced no finite model.
    """
    if model_name not in FLOW_MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {sorted(FLOW_MODELS)}")
    train = check_data(dataset.train, "training data")
    dim = train.shape[1]
    cfg = {
        "model": model_name,
        "data": dataset.name,
        "data_seed": int(data_seed),
        "dim": dim,
        "discrete_levels": dataset.discrete_levels,
        "preprocess": _preprocess_config(dataset, train),
        "train": {**config._asdict(), "hidden": list(config.hidden)},
    }
    model = build_model(cfg)
    key = jax.random.PRNGKey(config.seed)
    k_init, k_fit = jax.random.split(key)
    params = model.init(k_init)
    dequant = uniform_dequantize if dataset.discrete_levels is not None else None
    if "x_batch" in inspect.signature(model.bijector.init).parameters:
        # Data-dependent initialisation (glow's ActNorm) on a batch in the model's preprocessed space.
        outer = _outer_bijector(cfg["preprocess"], dim)
        x0 = jnp.asarray(train[:1024]) if dequant is None else dequant(k_init, jnp.asarray(train[:1024]))
        x0 = jax.vmap(outer.inverse, (None, 0))(outer.init(k_init), x0)
        params = {**params, "bijector": model.bijector.init(jax.random.split(k_init)[1], x0)}
    loss = nll(model, dequantize=dequant)
    schedule = optax.cosine_decay_schedule(config.learning_rate, max(config.steps, 1))
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay) if config.weight_decay > 0 else optax.adam(schedule)
    if config.grad_clip:
        # Clipping the global gradient norm removes the loss spikes of affine couplings.
        optimizer = optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer)
    ckpt = os.path.join(out, "checkpoints") if out else None
    if ckpt and not resume and os.path.isdir(ckpt):
        import shutil

        shutil.rmtree(ckpt)  # a fresh (non-resumed) run starts from its own first step
    result = fit(loss, params, train, optimizer=optimizer, steps=config.steps, batch_size=config.batch_size,
                 key=k_fit, val_fraction=config.val_fraction, eval_every=config.eval_every,
                 patience=config.patience, checkpoint_dir=ckpt, resume=resume, progress=progress,
                 progress_desc=f"fit {model_name} on {dataset.name}", max_seconds=max_seconds)
    params = result.params
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params)):
        raise FloatingPointError("training produced non-finite params; nothing was saved")
    if out:
        save_pytree(os.path.join(out, "model"), params, metadata=cfg, overwrite=True)
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2)
    return params, cfg, result


def load_run(run_dir: str) -> tuple[core.Flow, Any, dict]:
    """Loads ``(model, params, config)`` from a run directory, with clear errors."""
    if not os.path.isdir(run_dir):
        raise RunError(f"run directory {run_dir!r} does not exist")
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise RunError(f"{run_dir!r} is not a genlearn run: config.json is missing")
    try:
        with open(cfg_path) as fh:
            cfg = json.load(fh)
        for k in ("model", "dim", "preprocess", "train"):
            cfg[k]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{cfg_path} is corrupt: {err}") from err
    model = build_model(cfg)
    like = model.init(jax.random.PRNGKey(0))
    try:
        params, _ = load_pytree(os.path.join(run_dir, "model"), like=like)
    except CheckpointError as err:
        raise RunError(f"cannot load the model of run {run_dir!r}: {err}") from err
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params)):
        raise RunError(f"the model saved in {run_dir!r} contains non-finite values")
    return model, params, cfg


def dataset_for_run(cfg: dict) -> Dataset:
    """The dataset a run was trained on (same seed, same split)."""
    return load_dataset(cfg["data"], seed=cfg.get("data_seed", 0))


class LoadedRun(NamedTuple):
    """A saved run of any family, reduced to what evaluation needs.

    Attributes:
      family: ``"flow"``, ``"classical"``, ``"ebm"`` or ``"gan"``.
      config: the run's config.json.
      dim: data dimension.
      sample: ``(key, n) -> (n, dim)`` numpy samples in data units.
      log_prob: batched exact log-density in data units, or None (EBMs report
        their AIS likelihood at fit time; generators have no density).
    """

    family: str
    config: dict
    dim: int
    sample: Callable[[jax.Array, int], np.ndarray]
    log_prob: Callable[[jax.Array], jax.Array] | None


def _read_config(run_dir: str) -> dict:
    if not os.path.isdir(run_dir):
        raise RunError(f"run directory {run_dir!r} does not exist")
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise RunError(f"{run_dir!r} is not a genlearn run: config.json is missing")
    try:
        with open(cfg_path) as fh:
            cfg = json.load(fh)
        cfg["model"], cfg["dim"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{cfg_path} is corrupt: {err}") from err
    return cfg


def load_any(run_dir: str) -> LoadedRun:
    """Loads a run written by ``genlearn fit`` for any model family."""
    cfg = _read_config(run_dir)
    family = cfg.get("family", "flow")
    if family == "flow":
        model, params, cfg = load_run(run_dir)
        lp = jax.jit(model.log_prob)
        return LoadedRun(family, cfg, model.dim, lambda key, n: np.asarray(model.sample(params, key, n)),
                         lambda x: lp(params, x))
    if family == "classical":
        from genlearn.classical.run import load_classical_run

        try:
            estimator, params = load_classical_run(run_dir, cfg)
        except (CheckpointError, KeyError, ValueError) as err:
            raise RunError(f"cannot load the model of run {run_dir!r}: {err}") from err
        return LoadedRun(family, cfg, int(cfg["dim"]),
                         lambda key, n: np.asarray(estimator.sample(params, key, n)),
                         lambda x: estimator.log_prob(params, x))
    if family in ("ebm", "gan"):
        import importlib

        module = importlib.import_module("genlearn.energy.run" if family == "ebm" else "genlearn.gan.run")
        return LoadedRun(family, cfg, int(cfg["dim"]),
                         lambda key, n: np.asarray(module.sample_run(run_dir, key, n)), None)
    raise RunError(f"{run_dir!r}: unknown model family {family!r} in config.json")


def evaluate_run(run_dir: str, *, seed: int = 0, num_samples: int | None = None,
                 run: LoadedRun | None = None) -> dict:
    """Every metric that applies to a saved run, against its dataset's test split.

    Draws ``num_samples`` samples (default: the test size, at most 5000) and
    runs :func:`genlearn.metrics.evaluate` (mode metrics for data with known
    modes, digits-classifier features for digits); adds the test NLL (and
    bits/dim for pixels) when the model has a density, or the one its run
    recorded (an EBM's AIS estimate). Returns a JSON-ready dict.
    """
    from genlearn.metrics import evaluate

    run = run or load_any(run_dir)
    cfg = run.config
    dataset = dataset_for_run(cfg)
    test = np.asarray(dataset.test)
    n = num_samples or min(len(test), 5000)
    k_sample, k_eval, k_nll = jax.random.split(jax.random.PRNGKey(seed), 3)
    samples = np.asarray(run.sample(k_sample, n))
    if not np.all(np.isfinite(samples)):
        raise FloatingPointError(f"run {run_dir!r} produced non-finite samples")
    levels = cfg.get("discrete_levels")
    rows: dict = {"model": cfg["model"], "family": run.family, "data": cfg["data"]}
    if run.log_prob is not None:

        class _Model(NamedTuple):
            log_prob: Callable
            dim: int

        te = evaluate_nll(_Model(lambda _p, x: run.log_prob(x), run.dim), None, test, levels=levels, key=k_nll)
        rows["test_nll"] = te["nll"]
        if levels is not None:
            rows["test_bits_per_dim"] = te["bits_per_dim"]
            rows["test_nll_stderr"] = te["nll_stderr"]
    else:
        # No closed-form density (an energy model's likelihood needs AIS, done once at fit time): report the
        # held-out likelihood its run recorded, if any.
        try:
            with open(os.path.join(run_dir, "metrics.json")) as fh:
                recorded = json.load(fh)
        except (OSError, json.JSONDecodeError):
            recorded = {}
        for key in ("test_nll", "test_nll_stderr", "test_bits_per_dim"):
            if isinstance(recorded.get(key), (int, float)):
                rows[key] = recorded[key]
    kwargs = {"centers": dataset.centers, "std": dataset.std} if dataset.centers is not None else {}
    rows.update(evaluate(samples, test, key=k_eval, feature_net="digits" if cfg["data"] == "digits" else None,
                         **kwargs))
    return rows
