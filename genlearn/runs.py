"""Runs: fit any registered family on a dataset, save it, load it back, evaluate it.

This is the one module that writes and reads run directories, for every
family of `genlearn.registry`:

    DIR/config.json      "family", "options" (defaults + overrides), "preprocess", dataset, seeds and
                         "data_source" (a user's file: path, size, sha256, split; None for built-ins)
    DIR/model/           the trained params (genlearn.train.save_pytree, metadata = config)
    DIR/checkpoints/     training-state checkpoints of families that resume (--resume)
    DIR/metrics.json     the metrics below, plus the family's own (its ``report``)
    DIR/samples.png      samples beside the test data (2-D) or a digit grid (pixels)
    DIR/density.png      the model density on a grid (2-D data, families with a density)
    DIR/loss.png         the training loss (iterative families; `genlearn.plotting.plot_loss`)

Metrics of every family with a density, in nats per example of the data as
given (pixel data: the uniform-dequantisation bound): ``train_nll``,
``test_nll``, ``test_zero_density`` (test points of zero density; the NLL is
None then), ``test_nll_standardized`` / ``train_nll_standardized`` (toys: the
NLL of the standardised data, comparable across datasets) and for pixels
``train_bits_per_dim``, ``test_bits_per_dim``, ``test_nll_stderr``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn import registry
from genlearn.core.model import Model
from genlearn.data import (Dataset, check_data, load_dataset, load_source, nats_to_bits_per_dim, quantize,
                           uniform_dequantize)
from genlearn.data.scaling import standardize_stats
from genlearn.data.validation import all_finite

__all__ = ["RunError", "LoadedRun", "resolve_options", "fit", "load", "evaluate_nll", "evaluate_run", "default_num_samples",
           "sample_metrics"]


class RunError(ValueError):
    """A run directory is missing, incomplete or unreadable."""


class LoadedRun(NamedTuple):
    """A saved run of any family.

    Attributes:
      family: the registry name.
      config: the run's config.json.
      model: its :class:`~genlearn.core.model.Model` (data units).
      params: the trained params.
      dim: data dimension.
      sample: ``(key, n) -> (n, dim)`` numpy samples in data units.
      log_prob: ``x -> (n,)`` log-density in data units (a fixed key for
        stochastic estimates), or None for generators.
    """

    family: str
    config: dict
    model: Model
    params: Any
    dim: int
    sample: Callable[[jax.Array, int], np.ndarray]
    log_prob: Callable[[jax.Array], jax.Array] | None


def resolve_options(family: registry.Family, dataset: Dataset, given: dict | None = None) -> dict:
    """The family's defaults for ``dataset`` with ``given`` (None values ignored) applied and checked."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    options = family.defaults(dataset, given)
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise ValueError(f"{family.name} does not take the option(s) {unknown}; it takes {sorted(options)}")
    options.update(given)
    for opt in family.options:
        value = options.get(opt.key)
        if opt.choices is not None and value is not None and value not in opt.choices:
            allowed = ", ".join(map(str, opt.choices[:-1])) + " or " + str(opt.choices[-1])
            raise ValueError(f"{family.name}: {opt.flag} must be {allowed}, got {value}")
    why = family.check(options, dataset) if family.check else None
    if why:
        raise ValueError(why)
    return options


def _finite(tree) -> bool:
    return all(all_finite(p) for p in jax.tree_util.tree_leaves(tree))


_EVAL_CHUNK = 1024


def _log_prob_fn(model: Model, key: jax.Array | None = None, chunk: int = _EVAL_CHUNK):
    """``(params, x) -> (n,)``: the model's log-density, jitted, on ``x`` in chunks of one padded size.

    A jitted function compiles once per input shape. Rows go through in chunks of ``chunk`` rows
    (the next power of two from 64, for smaller sets), the last chunk padded by repeating its
    first row, so a fit's train and test evaluations and its density grid share one program instead of
    compiling one per set size and remainder (a CNF's ODE-solved log-density: ~3.5 s per compilation on 2
    cores). A stochastic log-density (``log_prob_needs_key``) gets ``key`` and sees the whole set at once.
    """
    if model.log_prob_needs_key:
        key = jax.random.PRNGKey(0) if key is None else key
        return jax.jit(lambda p, x: model.log_prob(p, x, key))
    fn = jax.jit(model.log_prob)

    def log_prob(params, x):
        x = np.asarray(x)  # chunks are cut on the host: slicing a device array compiles per offset and size
        n = x.shape[0]
        if n == 0:  # no rows: the model's own answer (a flow names the empty batch), not numpy's about no chunks
            return np.asarray(fn(params, x))
        size = chunk if n >= chunk else max(64, 1 << (n - 1).bit_length())
        parts = []
        for i in range(0, n, size):
            rows = x[i:i + size]
            if rows.shape[0] < size:
                rows = np.concatenate([rows, np.repeat(rows[:1], size - rows.shape[0], axis=0)])
            parts.append(fn(params, rows))  # dispatched asynchronously; fetched together below
        return np.concatenate([np.asarray(p) for p in parts])[:n]

    return log_prob


def evaluate_nll(model: Model, params, x: np.ndarray, *, levels: int | None, key: jax.Array,
                 num_draws: int = 8, batch: int = _EVAL_CHUNK) -> dict:
    """Mean negative log-likelihood in nats per example of ``x`` as given.

    For discrete data (``levels`` not None) this is the dequantisation bound
    E_u[-log p(x + u)], averaged over ``num_draws`` noise draws (one for a
    ``log_prob_is_discrete`` model, where it is exact), with its
    ``nll_stderr`` and ``bits_per_dim`` = nll / (d ln 2). ``zero_density``
    counts points of zero density (``log p = -inf``, e.g. outside a
    histogram's box); ``nll`` is None then. A stochastic log-density
    (``log_prob_needs_key``) is evaluated on the whole set at once; any other
    in chunks of ``batch`` rows (one compiled program whatever the set's size).

    Raises:
      FloatingPointError: the log-density is NaN or +inf somewhere.
    """
    x = np.asarray(check_data(x, "evaluation data", dim=model.dim))
    k_lp, k_deq = jax.random.split(key) if model.log_prob_needs_key else (None, key)
    log_prob = _log_prob_fn(model, k_lp, batch)

    def draw(xs):
        lp = log_prob(params, xs)
        if np.any(np.isnan(lp) | (lp == np.inf)):
            raise FloatingPointError("the model's log-likelihood on the evaluation data is not finite")
        return -float(np.mean(lp, dtype=np.float64)), int(np.sum(lp == -np.inf))

    if levels is None:
        value, zero = draw(x)
        return {"nll": None if zero else value, "zero_density": zero}
    if model.log_prob_is_discrete:  # constant on each pixel bin: one draw is the exact average
        num_draws = 1
    draws, zeros = zip(*[draw(uniform_dequantize(k, x)) for k in jax.random.split(k_deq, num_draws)])
    if max(zeros):
        return {"nll": None, "zero_density": max(zeros)}
    value = float(np.mean(draws))
    return {"nll": value, "nll_stderr": float(np.std(draws) / math.sqrt(num_draws)),
            "bits_per_dim": float(nats_to_bits_per_dim(value, model.dim)), "zero_density": 0}


def sample_metrics(samples: np.ndarray, dataset: Dataset, *, dequantized: bool = False) -> dict:
    """Sample metrics a family's ``report`` adds at fit time, with the keys of README's table.

    Mixtures with known modes (ring8, grid25): ``modes_covered``, ``num_modes``,
    ``high_quality_fraction``, ``mode_kl`` (`genlearn.metrics.mode_coverage`).
    Digits: ``fid_features`` and ``is_samples`` in the digits classifier's
    features of the samples clipped to the pixel range.

    ``dequantized=True`` says the samples are of a density on the dequantised
    pixels ``y = x + u`` (diffusion, flows, the classical estimators): they
    become images by `genlearn.data.quantize` (floor) first, the discrete
    model's own sample. Generators of the pixel values themselves (GANs) and
    discrete likelihoods (the VAE's) pass False.
    """
    if dequantized and dataset.discrete_levels is not None:
        samples = quantize(np.asarray(samples, np.float64), dataset.discrete_levels)
    out: dict[str, Any] = {}
    if dataset.centers is not None:
        from genlearn.metrics import mode_coverage

        mc = mode_coverage(samples, dataset.centers, dataset.std)
        out.update(modes_covered=int(mc.modes_covered), num_modes=int(np.asarray(dataset.centers).shape[0]),
                   high_quality_fraction=float(mc.high_quality_fraction),
                   mode_kl=float(mc.kl_to_uniform) if math.isfinite(mc.kl_to_uniform) else None)
    if dataset.discrete_levels is not None and dataset.name == "digits" and samples.shape[1] == 64:
        from genlearn.metrics import digits_fid, inception_score

        clipped = np.clip(np.asarray(samples, np.float64), 0, dataset.discrete_levels - 1)
        out["fid_features"] = float(digits_fid(clipped, np.asarray(dataset.test, np.float64)))
        out["is_samples"] = float(inception_score(clipped))
    return out


def _nll_metrics(model: Model, params, dataset: Dataset, key: jax.Array) -> dict:
    levels = dataset.discrete_levels
    train = np.asarray(dataset.train)
    tr = evaluate_nll(model, params, train[: min(len(train), 5000)], levels=levels, key=key)
    te = evaluate_nll(model, params, dataset.test, levels=levels, key=key)
    out = {"train_nll": tr["nll"], "test_nll": te["nll"], "num_test": int(dataset.test.shape[0]),
           "test_zero_density": te["zero_density"]}
    if levels is not None:
        if te["nll"] is not None:
            out.update(test_bits_per_dim=te["bits_per_dim"], test_nll_stderr=te["nll_stderr"])
        if tr["nll"] is not None:
            out["train_bits_per_dim"] = tr["bits_per_dim"]
    else:
        log_std = float(np.sum(np.log(np.asarray(standardize_stats(train)[1], np.float64))))
        for split, res in (("test", te), ("train", tr)):
            if res["nll"] is not None:
                out[f"{split}_nll_standardized"] = res["nll"] - log_std
    return out


def _images(model: Model, samples, levels: int):
    """Pixel samples as images: a density model of pixels is a density of the dequantised y = x + u, whose
    images are floor(y) (`genlearn.data.quantize`); other models' samples are returned as they are."""
    return quantize(np.asarray(samples, np.float64), levels) if model.log_prob is not None else samples


def _write_figures(out: str, name: str, model: Model, params, dataset: Dataset, history, seed: int,
                   loss_label: str, resolution: int = 120) -> None:
    from genlearn import plotting

    levels = dataset.discrete_levels
    samples = np.asarray(model.sample(params, jax.random.PRNGKey(seed + 2), 2000))
    if model.dim == 2:
        plotting.plot_sample_panels([(f"{name} samples", samples)], dataset.test, os.path.join(out, "samples.png"))
        if model.log_prob is not None:  # density.npz: the log-densities behind density.png (`genlearn compare`
            # plots them again rather than evaluate the model on the grid twice)
            lp = _log_prob_fn(model, jax.random.PRNGKey(seed + 3))
            grid = plotting.grid_log_density(lambda g: lp(params, jnp.asarray(g)), dataset.test, resolution)
            np.savez(os.path.join(out, "density.npz"), log_density=grid)
            plotting.plot_density_panels([(f"{name} density", grid)], dataset.test, os.path.join(out, "density.png"),
                                         resolution)
    elif levels is not None and math.isqrt(model.dim) ** 2 == model.dim:  # square images
        plotting.plot_digit_grid(_images(model, samples, levels), os.path.join(out, "samples.png"), levels=levels,
                                 title=f"{name} samples")
    if history is not None:
        plotting.plot_loss(history, os.path.join(out, "loss.png"), ylabel=loss_label)


def _train(fam: registry.Family, model: Model, dataset: Dataset, opts: dict, key: jax.Array,
           ctx: registry.Context) -> tuple[Any, dict | None]:
    """``(params, history)``: the family's trainer through the one driver, or a closed-form fit."""
    if fam.trainer is None:  # closed form / EM: the Model's init fits it
        key_fit, key_deq = jax.random.split(key, 4)[:2]
        data = jnp.asarray(dataset.train)
        if dataset.discrete_levels is not None:
            data = uniform_dequantize(key_deq, data)
        return model.init(key_fit, data), None
    from genlearn.train import run_trainer

    t = fam.trainer(model, dataset, opts, key, ctx)
    start = time.perf_counter()
    result = run_trainer(t.trainer, t.params, t.data, steps=t.steps, batch_size=t.batch_size, key=t.key,
                         val_fraction=t.val_fraction, eval_every=t.eval_every, patience=t.patience,
                         max_nonfinite=t.max_nonfinite, checkpoint_dir=ctx.checkpoint_dir, resume=ctx.resume,
                         progress=ctx.progress, progress_desc=ctx.desc, max_seconds=ctx.max_seconds)
    seconds = time.perf_counter() - start
    params, measured = t.finish(result) if t.finish is not None else (result.params, {})
    metrics = {"stop_reason": result.stop_reason, "train_seconds": seconds, **measured}
    return params, {**result.history, "steps": result.step, "stop_reason": result.stop_reason, "metrics": metrics}


def fit(family: str, dataset: Dataset, options: dict | None = None, *, out: str | None = None, seed: int = 0,
        data_seed: int = 0, steps: int | None = None, max_seconds: float | None = None, progress: bool = True,
        resume: bool = False) -> tuple[Any, dict, dict]:
    """Trains the registered ``family`` on ``dataset``, evaluates it and (if ``out``) writes the run.

    Args:
      family: a registry name (``genlearn.registry.names()``).
      dataset: a `genlearn.data.Dataset`.
      options: overrides of the family's defaults (None values ignored).
      out: run directory (created), or None to write nothing.
      seed: model/training seed; ``data_seed``: the seed ``dataset`` was made
        with (recorded, so ``genlearn eval`` reloads the same split; a user's
        file is reloaded from ``dataset.source``, checked by its sha256).
      steps: overrides ``options["steps"]`` of iterative families.
      max_seconds: wall-clock training budget (stops at a chunk boundary).
      progress, resume: progress bar; continue from ``out/checkpoints``.

    Returns:
      ``(params, config, metrics)``.

    Raises:
      ValueError: unknown family or option, bad option values, a family that
        does not apply to the dataset. FloatingPointError: training produced
        a non-finite model.
    """
    fam = registry.get(family)
    why = fam.applies(dataset) if fam.applies else None
    if why:
        raise ValueError(why)
    given = dict(options or {})
    if steps is not None:
        given["steps"] = int(steps)
    opts = resolve_options(fam, dataset, given)
    train = check_data(dataset.train, "training data")
    cfg = {"family": fam.name, "data": dataset.name, "data_source": dataset.source, "data_seed": int(data_seed),
           "seed": int(seed),
           "dim": int(train.shape[1]), "discrete_levels": dataset.discrete_levels,
           "preprocess": fam.preprocess(dataset) if fam.preprocess else {"kind": "none"}, "options": opts}
    model = fam.build(opts, cfg["dim"], cfg["preprocess"])
    ckpt = os.path.join(out, "checkpoints") if out else None
    if ckpt and not resume and os.path.isdir(ckpt):
        shutil.rmtree(ckpt)  # a fresh (non-resumed) run starts from its own first step
    ctx = registry.Context(seed=int(seed), progress=progress, max_seconds=max_seconds, resume=resume,
                           checkpoint_dir=ckpt,
                           desc=f"fit {fam.name} on {dataset.name}")
    key = jax.random.PRNGKey(seed)
    params, history = _train(fam, model, dataset, opts, key, ctx)
    if not _finite(params):
        raise FloatingPointError("training produced non-finite params; nothing was saved")
    metrics: dict[str, Any] = {"family": fam.name, "data": dataset.name}
    if model.log_prob is not None:
        metrics.update(_nll_metrics(model, params, dataset, jax.random.PRNGKey(seed + 1)))
    if history is not None:
        metrics["steps"] = int(history.get("steps", len(history["train_loss"])))
        metrics.update(history.get("metrics", {}))
    if fam.report:
        metrics.update(fam.report(model, params, dataset, opts, history, key))
    if out:
        from genlearn.train import save_pytree

        os.makedirs(out, exist_ok=True)
        save_pytree(os.path.join(out, "model"), params, metadata=cfg, overwrite=True)
        for name, content in (("config.json", cfg), ("metrics.json", metrics)):
            with open(os.path.join(out, name), "w") as fh:
                json.dump(content, fh, indent=2)
        label = fam.loss_label(opts) if callable(fam.loss_label) else fam.loss_label
        res = fam.density_resolution(opts) if callable(fam.density_resolution) else fam.density_resolution
        _write_figures(out, fam.name, model, params, dataset, history, seed, label, int(res))
        if history is not None:
            _write_history(os.path.join(out, "history.npz"), history)
        if fam.figures:
            fam.figures(out, model, params, dataset, opts, jax.random.PRNGKey(seed + 4))
    return params, cfg, metrics


def _write_history(path: str, history: dict) -> None:
    """The per-step curves behind loss.png (``train_loss``, ``clipped``, validation, ...) as arrays."""
    arrays = {}
    for k, v in history.items():
        if k in ("metrics", "stop_reason", "steps"):
            continue
        try:
            a = np.asarray(v)
        except (TypeError, ValueError):
            continue
        if a.dtype.kind in "biuf":
            arrays[k] = a
    np.savez(path, **arrays)


def _read_config(run_dir: str) -> dict:
    if not os.path.isdir(run_dir):
        raise RunError(f"run directory {run_dir!r} does not exist")
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise RunError(f"{run_dir!r} is not a genlearn run: config.json is missing")
    try:
        with open(cfg_path) as fh:
            cfg = json.load(fh)
        for k in ("family", "options", "dim", "preprocess", "data"):
            cfg[k]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise RunError(f"{cfg_path} is corrupt or from an older genlearn (missing {err})") from err
    return cfg


def _tuples(tree):
    """orbax restores tuples as lists and scalars as numpy: back to the params' own containers."""
    if isinstance(tree, (list, tuple)):
        return tuple(_tuples(v) for v in tree)
    if isinstance(tree, dict):
        return {k: _tuples(v) for k, v in tree.items()}
    return jnp.asarray(tree)


def load(run_dir: str) -> LoadedRun:
    """Loads a run written by :func:`fit` (``genlearn fit``) for any family, with clear RunErrors."""
    from genlearn.train import CheckpointError, load_pytree

    cfg = _read_config(run_dir)
    try:
        fam = registry.get(cfg["family"])
    except ValueError as err:
        raise RunError(f"{run_dir!r}: {err}") from err
    try:
        model = fam.build(cfg["options"], int(cfg["dim"]), cfg["preprocess"])
        params = _tuples(load_pytree(os.path.join(run_dir, "model"))[0])
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        raise RunError(f"cannot load the model of run {run_dir!r}: {err}") from err
    if not _finite(params):
        raise RunError(f"the model saved in {run_dir!r} contains non-finite values")
    lp = None
    if model.log_prob is not None:
        fn = _log_prob_fn(model)
        lp = lambda x: fn(params, jnp.asarray(x))  # noqa: E731
    return LoadedRun(fam.name, cfg, model, params, model.dim,
                     lambda key, n: np.asarray(model.sample(params, key, n)), lp)


def default_num_samples(dataset: Dataset) -> int:
    """Samples :func:`evaluate_run` draws when not told: the test size, at most 5000."""
    return min(len(dataset.test), 5000)


def evaluate_run(run_dir: str, *, seed: int = 0, num_samples: int | None = None,
                 run: LoadedRun | None = None, dataset: Dataset | None = None, samples: Any = None,
                 fit_metrics: dict | None = None) -> dict:
    """Every metric that applies to a saved run, against its dataset's test split.

    Draws ``num_samples`` samples (default: the test size, at most 5000; for
    a density model of pixels, the images ``floor(y)`` of its dequantised
    samples, `genlearn.data.quantize`) and runs
    :func:`genlearn.metrics.evaluate` (mode metrics for data with known modes,
    digits-classifier features for digits); adds the test NLL (and bits/dim
    for pixels) when the model has a density. Returns a JSON-ready dict.

    The run's dataset is reloaded (a user's file: from its recorded source, a
    RunError when the file is gone or changed) unless ``dataset`` is given.
    ``samples``: the model's samples, already drawn (``run.sample``), instead of
    drawing ``num_samples``. ``fit_metrics``: the metrics :func:`fit` returned for
    this run (its metrics.json); their test NLL (and bits/dim, stderr) is taken
    instead of evaluated again, the same computation on the same test split.
    """
    from genlearn.metrics import evaluate

    run = run or load(run_dir)
    cfg = run.config
    source = cfg.get("data_source")
    if dataset is None:  # the run's split
        try:
            dataset = load_source(source) if source else load_dataset(cfg["data"], seed=cfg.get("data_seed", 0))
        except ValueError as err:
            raise RunError(f"run {run_dir!r}: cannot reload its data: {err}") from err
    test = np.asarray(dataset.test)
    n = num_samples or default_num_samples(dataset)
    k_sample, k_eval, k_nll = jax.random.split(jax.random.PRNGKey(seed), 3)
    samples = run.sample(k_sample, n) if samples is None else np.asarray(samples)
    if not np.all(np.isfinite(samples)):
        raise FloatingPointError(f"run {run_dir!r} produced non-finite samples")
    levels = cfg.get("discrete_levels")
    rows: dict = {"family": run.family, "data": cfg["data"]}
    if run.model.log_prob is not None:
        if fit_metrics is not None and "test_nll" in fit_metrics:
            te = {"nll": fit_metrics["test_nll"], "bits_per_dim": fit_metrics.get("test_bits_per_dim"),
                  "nll_stderr": fit_metrics.get("test_nll_stderr")}
        else:
            te = evaluate_nll(run.model, run.params, test, levels=levels, key=k_nll)
        rows["test_nll"] = te["nll"]
        if levels is not None and te["nll"] is not None:
            rows["test_bits_per_dim"] = te["bits_per_dim"]
            rows["test_nll_stderr"] = te["nll_stderr"]
    if levels is not None:
        samples = _images(run.model, samples, levels)
    kwargs = {"centers": dataset.centers, "std": dataset.std} if dataset.centers is not None else {}
    digits = cfg["data"] == "digits" and not source
    rows.update(evaluate(samples, test, key=k_eval, feature_net="digits" if digits else None, **kwargs))
    return rows
