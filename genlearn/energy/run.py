"""End-to-end EBM runs: train on a genlearn Dataset, save, sample, evaluate (``genlearn fit ebm``).

A run directory holds

    DIR/config.json    "family": "ebm", the energy architecture, the standardisation,
                       the sampler settings and the proposal centres (everything
                       `sample_run` needs, without the data)
    DIR/model/         params (genlearn.train.save_pytree, metadata = config)
    DIR/metrics.json   test_nll / test_nll_stderr (nats per example in data units,
                       log Z by AIS), the 2-D quadrature check, mode coverage
    DIR/samples.png    MCMC samples beside the data
    DIR/density.png    exp(-V) / Z_AIS on a grid (2-D)
    DIR/loss.png       the PCD surrogate loss

Training: persistent contrastive divergence with a replay buffer, negatives
from MALA + independent Metropolis-Hastings jumps (a KDE proposal on the data
batch, `genlearn.energy.kde_proposal`), on standardised data; the saved model
is the data-space energy (`genlearn.energy.standardized`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn.data import Dataset, check_data
from genlearn.data.scaling import standardize_stats
from genlearn.energy.ais import gaussian_base, grid_log_z, log_likelihood
from genlearn.energy.models import mlp_energy, standardized
from genlearn.energy.samplers import independent_mh, kde_proposal, mala
from genlearn.energy.training import fit_pcd, persistent_contrastive_divergence
from genlearn.train import load_pytree, save_pytree

__all__ = ["DEFAULTS", "default_options", "fit_run", "sample_run", "load_ebm_run"]

DEFAULTS: dict[str, Any] = {
    "steps": 4000,
    "hidden": [128, 128, 128],
    "activation": "silu",
    "confinement": 4.0,
    "learning_rate": 1e-3,
    "batch_size": 256,
    "k": 10,
    "step_size": None,          # 0.5 * proposal_bandwidth^2 (standardised units)
    "sampler": "mala_jump",
    "proposal_bandwidth": None,  # mixture std / data std for mixtures, else 0.1
    "proposal_wide_weight": 0.1,
    "buffer_size": 10_000,
    "reinit_prob": 0.05,
    "alpha": 0.0,
    "ais_chains": 1000,
    "ais_temperatures": 500,
    "sample_steps": 200,
    "num_proposal_centers": 1024,
}
"""Options of `fit_run` (the CLI exposes them as --steps, --hidden, --lr, --k, ...)."""


def default_options(dataset: Dataset, std: np.ndarray) -> dict:
    """DEFAULTS with the data-dependent ones filled in."""
    opts = dict(DEFAULTS)
    if dataset.std is not None:
        # Sharp mixtures: the proposal and MALA must resolve one component.
        opts["proposal_bandwidth"] = float(dataset.std / np.max(std))
    else:
        opts["proposal_bandwidth"] = 0.1
    opts["step_size"] = 0.5 * opts["proposal_bandwidth"] ** 2
    return opts


def _model(cfg: dict):
    base = mlp_energy(cfg["dim"], tuple(cfg["hidden"]), activation=cfg["activation"],
                      confinement=cfg["confinement"])
    return base, standardized(base, np.asarray(cfg["mean"]), np.asarray(cfg["std"]))


def _mcmc_samples(cfg: dict, data_model, params, key, n: int) -> np.ndarray:
    """``n`` chains of MALA + independent-MH (data-space KDE proposal), last state of each."""
    centers = jnp.asarray(cfg["proposal_centers"], jnp.float32) * jnp.asarray(cfg["std"]) + jnp.asarray(cfg["mean"])
    scale = float(np.max(cfg["std"]))
    mean, cov = gaussian_base(centers)
    k0, k1 = jax.random.split(key)
    x0 = mean + jax.random.normal(k0, (n, cfg["dim"])) @ jnp.linalg.cholesky(cov).T
    run = _sampling_program(data_model, cfg["step_size"] * scale**2, cfg["proposal_bandwidth"] * scale,
                            cfg["proposal_wide_weight"], cfg["sample_steps"])
    return np.asarray(run(params, centers, jax.random.split(k1, n), x0))


def _sampling_program(data_model, eps: float, h: float, wide_weight: float, steps: int):
    # params and centres are arguments, not closed-over constants: XLA would constant-fold
    # through them and spend most of the compile time there
    @jax.jit
    def run(params, centers, keys, x0):
        logdens = lambda x: data_model.unnormalized_log_prob(params, x)  # noqa: E731
        local = mala(logdens, eps)
        jump = independent_mh(logdens, *kde_proposal(centers, h, wide_weight=wide_weight))

        def chain(k, x):
            def body(x, kt):
                s, _ = local.step(kt, local.init(x))
                j, _ = jump.step(jax.random.fold_in(kt, 1), jump.init(s.position))
                return j.position, None

            x, _ = jax.lax.scan(body, x, jax.random.split(k, steps))
            return x

        return jax.vmap(chain)(keys, x0)

    return run


def fit_run(dataset: Dataset, out: str | None, *, steps: int | None = None, seed: int = 0,
            data_seed: int = 0, progress: bool = True, max_seconds: float | None = None, **options) -> dict:
    """Trains an EBM on ``dataset`` (PCD, module docstring), evaluates it and writes the run.

    Args:
      dataset: a `genlearn.data.Dataset` (continuous data).
      out: run directory (created), or None to only return the metrics.
      steps: PCD steps (default ``DEFAULTS["steps"]``).
      seed: model/training seed.
      data_seed: the seed ``dataset`` was generated with (recorded in config.json, so
        ``genlearn eval`` reloads the same split).
      progress: tqdm bar.
      max_seconds: wall-clock training budget (PCD stops at the first chunk
        boundary past it; the cosine schedule still spans ``steps``).
      **options: any key of `DEFAULTS` (unknown keys raise ValueError).

    Returns:
      the metrics dict (also written to ``out/metrics.json``).
    """
    if dataset.discrete_levels is not None:
        raise ValueError("the EBM run supports continuous data only (got a discrete dataset)")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown EBM option(s) {unknown}; known: {sorted(DEFAULTS)}")
    train = check_data(dataset.train, "training data")
    test = check_data(dataset.test, "test data", dim=train.shape[1])
    mean, std = (np.asarray(a, np.float64) for a in standardize_stats(train))
    opts = default_options(dataset, std)
    opts.update({k: v for k, v in options.items() if v is not None})
    if steps is not None:
        opts["steps"] = steps
    if isinstance(opts["steps"], bool) or not isinstance(opts["steps"], (int, np.integer)) or opts["steps"] < 0:
        raise ValueError(f"steps must be a non-negative integer, got {opts['steps']!r}")
    u = ((train - mean) / std).astype(np.float32)
    rng = np.random.default_rng(seed)
    centers = u[rng.choice(u.shape[0], min(opts["num_proposal_centers"], u.shape[0]), replace=False)]
    cfg = {"family": "ebm", "model": "ebm", "data": dataset.name, "data_seed": int(data_seed), "dim": int(train.shape[1]), "seed": int(seed),
           "mean": mean.tolist(), "std": std.tolist(), "proposal_centers": centers.tolist(),
           **{k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}}
    model, data_model = _model(cfg)
    key = jax.random.PRNGKey(seed)
    k_init, k_buf, k_fit, k_ais, k_samp = jax.random.split(key, 5)
    params = model.init(k_init)
    optimizer = optax.adam(optax.cosine_decay_schedule(opts["learning_rate"], max(opts["steps"], 1)), b1=0.5)
    trainer = persistent_contrastive_divergence(
        model, optimizer, buffer_size=opts["buffer_size"], k=opts["k"], step_size=opts["step_size"],
        alpha=opts["alpha"], reinit_prob=opts["reinit_prob"], sampler=opts["sampler"],
        proposal_bandwidth=opts["proposal_bandwidth"], proposal_wide_weight=opts["proposal_wide_weight"],
        init_range=3.0,
    )
    state = trainer.init(params, k_buf)
    t0 = time.time()
    state, history = fit_pcd(trainer, state, u, key=k_fit, steps=opts["steps"],
                             batch_size=min(opts["batch_size"], u.shape[0]), progress=progress,
                             progress_desc=f"fit ebm on {dataset.name}", max_seconds=max_seconds)
    train_seconds = time.time() - t0
    params = state.params
    if not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params)):
        raise FloatingPointError("training produced non-finite params; nothing was saved")

    ll = log_likelihood(data_model, params, test, k_ais, num_chains=opts["ais_chains"],
                        num_temperatures=opts["ais_temperatures"])
    metrics = {"model": "ebm", "family": "ebm", "data": dataset.name, "test_nll": ll.nll, "test_nll_stderr": ll.nll_stderr,
               "test_nll_standardized": ll.nll - float(np.sum(np.log(std))),
               "test_nll_sample_stderr": ll.sample_stderr, "log_z": ll.log_z, "ais_ess": ll.ais.ess,
               "ais_acceptance_rate": ll.ais.acceptance_rate, "num_test": int(test.shape[0]),
               "steps": int(len(history["loss"])), "train_seconds": train_seconds}
    f = jax.jit(lambda x: data_model.unnormalized_log_prob(params, x))
    if cfg["dim"] == 2:
        lo, hi = train.min(0) - 3 * std / 4, train.max(0) + 3 * std / 4
        res = int(min(2000, max(400, 8 * np.max(hi - lo) / (opts["proposal_bandwidth"] * np.max(std)))))
        log_z_grid = grid_log_z(f, lo, hi, res)
        metrics["log_z_quadrature"] = log_z_grid
        metrics["test_nll_quadrature"] = float(-np.mean(np.asarray(f(jnp.asarray(test)))) + log_z_grid)
    samples = _mcmc_samples(cfg, data_model, params, k_samp, 2000)
    if dataset.centers is not None:
        from genlearn.metrics import mode_coverage

        mc = mode_coverage(samples, dataset.centers, dataset.std)
        metrics.update(modes_covered=int(mc.modes_covered), num_modes=int(len(dataset.centers)),
                       high_quality_fraction=float(mc.high_quality_fraction))
    if out:
        os.makedirs(out, exist_ok=True)
        save_pytree(os.path.join(out, "model"), params, metadata=cfg, overwrite=True)
        for name, content in (("config.json", cfg), ("metrics.json", metrics)):
            with open(os.path.join(out, name), "w") as fh:
                json.dump(content, fh, indent=2)
        from genlearn import plotting

        plotting.plot_loss({"train_loss": history["loss"]}, os.path.join(out, "loss.png"),
                           ylabel="PCD surrogate E[V(data)] - E[V(samples)]")
        if cfg["dim"] == 2:
            plotting.plot_samples_2d(samples, train[:2000], os.path.join(out, "samples.png"),
                                     title="EBM MCMC samples")
            log_z = ll.log_z
            plotting.plot_density_2d(lambda x: np.asarray(f(jnp.asarray(x))) - log_z, train,
                                     os.path.join(out, "density.png"),
                                     title="exp(-V) / Z (Z by AIS)")
    return metrics


def load_ebm_run(out: str):
    """``(data_model, params, config)`` of a run directory written by `fit_run`."""
    path = os.path.join(out, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{out!r} is not an EBM run: config.json is missing")
    with open(path) as fh:
        cfg = json.load(fh)
    if cfg.get("family") != "ebm":
        raise ValueError(f"{out!r} is not an EBM run (family {cfg.get('family')!r})")
    model, data_model = _model(cfg)
    like = model.init(jax.random.PRNGKey(0))
    params, _ = load_pytree(os.path.join(out, "model"), like=like)
    return data_model, params, cfg


def sample_run(out: str, key: jax.Array, n: int) -> np.ndarray:
    """``(n, dim)`` MCMC samples (data units) from the EBM saved in ``out``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    data_model, params, cfg = load_ebm_run(out)
    return _mcmc_samples(cfg, data_model, params, key, int(n))
