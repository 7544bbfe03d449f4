"""The diffusion family of the run registry: ``genlearn fit diffusion --data NAME``.

A score model (`genlearn.diffusion`) is trained by denoising score matching
(`genlearn.diffusion.dsm_loss` through `genlearn.train.gradient_trainer`, with an
EMA of the params, :func:`genlearn.diffusion.training.with_ema`) in a model
space: standardised toys, or pixels dequantised and mapped affinely to
[-1, 1) (y = (x + u - L/2) / (L/2) for L levels). The Model is the density
of data as given:

* ``log_prob``: the probability-flow ODE's exact log-density
  (`genlearn.diffusion.log_prob`) plus the log-determinant of the fixed
  affine map; exact trace for toys (``log_prob_is_exact``), Hutchinson's
  estimate for pixels (``log_prob_needs_key``, flagged as an estimate: the
  d-fold Jacobian of the exact trace costs 64 network passes per ODE stage);
  `genlearn.runs` averages it over dequantisation draws into bits/dim;
* ``sample``: the default sampler (``sampler``, ``sample_nfe``), mapped back;
  a class-conditional digits model (``num_classes=10``) draws uniform labels
  and applies classifier-free guidance ``guidance``.

metrics.json adds the variational bound (``test_nll_bound``, and
``test_bits_per_dim_bound`` for pixels, ``test_nll_bound_standardized`` for
toys: the continuous-time ELBO of `genlearn.diffusion.variational_bound`),
mode coverage for ring8 / grid25, ``fid_features`` / ``is_samples`` for
digits (of the images ``floor(y)`` of the dequantised samples y,
`genlearn.data.quantize`). ``figures`` writes ``trajectory.png``, the denoising trajectory.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn import registry
from genlearn.core.model import Model
from genlearn.data.scaling import standardize_stats
from genlearn.plotting import DENSITY_RESOLUTION

__all__ = ["defaults", "preprocess", "build", "build_diffusion", "trainer", "digits_labels", "model_space"]


def _spacing(options: dict) -> dict:
    """The sampler's ``spacing`` keyword (runs written before the option existed: uniform)."""
    return {"spacing": options.get("sample_spacing", "uniform")}


def defaults(dataset, chosen: dict | None = None) -> dict:
    """Per-data defaults (benchmarks/diffusion_numbers.py measures them).

    Continuous data: a VP SDE, an MLP of 3 residual blocks (width 256),
    epsilon prediction, likelihood weighting with importance-sampled times
    (the probability-flow NLL is the target), 8000 steps, EMA 0.999,
    ancestral sampling with 200 steps. Sharp mixtures (data with known mode
    centres): width 128 with a positional encoding of the input, sigma^2
    weighting, 4000 steps, over a Gaussian-mixture base (``base="mixture"``,
    32 components fitted by EM to the training rows). Pixels: the U-Net, sigma^2
    weighting (sample quality), every training image (no validation split), Hutchinson trace.
    """
    pixels = dataset.discrete_levels is not None
    opts: dict[str, Any] = {
        "sde": "vp", "beta_min": 0.1, "beta_max": 20.0, "sigma_min": 0.01, "sigma_max": None, "t_min": 1e-5,
        "net": "unet" if pixels else "mlp", "hidden": [128, 128, 128], "channels": 32, "emb_dim": 64,
        "input_freqs": 0,
        "parameterization": "eps", "weighting": "likelihood", "time_sampling": "importance",
        "num_classes": 0, "label_dropout": 0.0, "guidance": None,
        "steps": 6000, "batch_size": 512, "learning_rate": 2e-3, "grad_clip": 1.0, "ema_decay": 0.999,
        "val_fraction": 0.0, "eval_every": 500, "patience": None,
        "sampler": "ancestral", "sample_nfe": 200, "sample_spacing": "uniform", "trace": "exact", "rtol": 1e-4,
        "atol": 1e-4, "bound_num_t": 16, "base": "none", "base_components": 32,
    }
    if not pixels and dataset.centers is not None:
        # sharp mixtures (ring8, grid25: modes 0.02 wide): the score near t = 0 is a high-frequency function of
        # x, which a positional encoding of the input resolves; sigma^2 weighting for sample quality. The network
        # corrects the exact score of a 32-component mixture fitted by EM to the training rows (``base``,
        # `genlearn.diffusion.mixture_eps`, stop 37). runs.fit at these defaults, seed 0, gap of the
        # probability-flow NLL to the truth, network alone -> on the mixture: ring8 0.362 -> 0.004, grid25
        # 0.578 -> 0.002. Ancestral sampling then gives 100 % high-quality samples on both (Euler-Maruyama at
        # 200 steps 88 % on grid25: the exact mixture score is stiff near t = 0; without the base Euler-Maruyama
        # gave 96.8 %, ancestral 93 %). On smooth data the base loses (moons 0.016 -> 0.027 nats, unseen
        # checkerboard NLL 1.845 -> 1.982), so it stays off there.
        opts.update(input_freqs=6, weighting="sigma2", time_sampling="uniform", steps=4000, base="mixture")
    elif not pixels:  # likelihood (moons: 1.147 standardised vs the true 1.131 on 1000 test points)
        opts.update(hidden=[256, 256, 256], steps=8000)
    if pixels:
        # every training image (a 10 % validation split for early stopping cost FID: 2.117 -> 1.965 on
        # 10000 samples without it; the validation loss still fell at step 4000, so it stopped nothing)
        opts.update(weighting="sigma2", time_sampling="uniform", steps=4000, batch_size=128, learning_rate=1e-3,
                    val_fraction=0.0, eval_every=200, patience=None, trace="hutchinson", rtol=1e-3, atol=1e-3,
                    bound_num_t=16)
    opts["batch_size"] = min(opts["batch_size"], int(dataset.train.shape[0] * (1 - opts["val_fraction"])))
    return opts


def model_space(pre: dict):
    """``(to_model(x), to_data(y), log_det)``: the fixed affine map y = (x - shift) / scale and log|dy/dx|."""
    shift, scale = np.asarray(pre["shift"], np.float32), np.asarray(pre["scale"], np.float32)
    log_det = float(-np.sum(np.log(np.broadcast_to(scale, (int(pre["dim"]),)).astype(np.float64))))
    return (lambda x: (x - shift) / scale), (lambda y: y * scale + shift), log_det


def preprocess(dataset) -> dict:
    """Pixels to [-1, 1) (after dequantisation); continuous data standardised."""
    dim = int(dataset.train.shape[1])
    if dataset.discrete_levels is not None:
        half = dataset.discrete_levels / 2.0
        return {"kind": "scale", "shift": half, "scale": half, "dim": dim, "levels": int(dataset.discrete_levels)}
    mean, std = standardize_stats(dataset.train)
    return {"kind": "standardize", "shift": np.asarray(mean, float).tolist(), "scale": np.asarray(std, float).tolist(),
            "dim": dim}


def build_diffusion(options: dict, dim: int):
    """The `genlearn.diffusion.Diffusion` model (in model space) of the options."""
    from genlearn.diffusion import diffusion_model, make_sde, mlp_net, unet_net

    o = options
    if o["sde"] == "ve":
        kw = {"sigma_min": o["sigma_min"], "sigma_max": o["sigma_max"] or 50.0}
    elif o["sde"] == "vp-cosine":
        kw = {}
    else:
        kw = {"beta_min": o["beta_min"], "beta_max": o["beta_max"]}
    sde = make_sde(o["sde"], t_min=o["t_min"], **kw)
    if o["net"] == "unet":
        side = math.isqrt(dim)
        if side * side != dim:
            raise ValueError(f"the U-Net needs square images; {dim} values per example are not one")
        net = unet_net((side, side), o["channels"], emb_dim=o["emb_dim"], num_classes=o["num_classes"])
    else:
        net = mlp_net(dim, tuple(o["hidden"]), emb_dim=o["emb_dim"], num_classes=o["num_classes"],
                      input_freqs=o.get("input_freqs", 0))
    base = None
    if o.get("base", "none") == "mixture":  # runs saved before the option existed: the network alone
        from genlearn.core import gaussian_mixture

        base = gaussian_mixture(dim, int(o["base_components"]))
    return diffusion_model(sde, net, o["parameterization"], base=base)


def build(options: dict, dim: int, pre: dict) -> Model:
    """The data-space Model (module docstring)."""
    from genlearn.diffusion import likelihood, samplers

    o = options
    model = build_diffusion(o, dim)
    to_model, to_data, log_det = model_space({**pre, "dim": dim})
    exact = o["trace"] == "exact"
    ode = dict(trace=o["trace"], rtol=o["rtol"], atol=o["atol"])

    def init(key, data=None):
        return model.init(key)

    def _lp(params, x, key=None):
        return likelihood.log_prob(model, params, to_model(x), key=key, **ode) + log_det

    def sample(params, key, n):
        k_label, k_sample = jax.random.split(key)
        label = None
        if model.num_classes:
            label = jax.random.randint(k_label, (int(n),), 0, model.num_classes)
        y = samplers.sample(model, params, k_sample, n, method=o["sampler"], nfe=o["sample_nfe"], label=label,
                            guidance=o["guidance"] if model.num_classes else None, **_spacing(o))
        return to_data(y)

    if exact:
        return Model(dim, init, lambda params, x: _lp(params, x), sample, True, False)
    return Model(dim, init, _lp, sample, False, True)


def digits_labels(images: np.ndarray) -> np.ndarray:
    """The class of each row of ``images`` (8x8 digits, 0..16), looked up in scikit-learn's digits."""
    from sklearn.datasets import load_digits

    ref = load_digits()
    table = {}
    for row, label in zip(np.asarray(ref.data, np.uint8), ref.target):
        table.setdefault(row.tobytes(), int(label))
    out = []
    for row in np.asarray(np.round(images), np.uint8):
        if row.tobytes() not in table:
            raise ValueError("class-conditional training needs the scikit-learn digits; an image is not among them")
        out.append(table[row.tobytes()])
    return np.asarray(out)


def trainer(model, dataset, options: dict, key, ctx: registry.Context) -> registry.Training:
    """DSM with Adam, cosine decay, global-norm clipping and an EMA, in model space."""
    from genlearn.diffusion import dsm_loss
    from genlearn.diffusion.training import with_ema
    from genlearn.train import gradient_trainer

    o = options
    diff = build_diffusion(o, model.dim)
    pre = preprocess(dataset)
    to_model, _, _ = model_space(pre)
    pixels = dataset.discrete_levels is not None
    x = np.asarray(dataset.train, np.float32)
    k_init, k_fit = jax.random.split(key)
    loss = dsm_loss(diff, weighting=o["weighting"], time_sampling=o["time_sampling"], label_dropout=o["label_dropout"])
    if pixels:  # fresh dequantisation noise each step, then the fixed map to [-1, 1)
        dim = model.dim
        base_loss = loss

        def loss(params, batch, k):  # noqa: F811 - the dequantising wrapper of the DSM loss
            k_u, k_l = jax.random.split(k)
            y = to_model(batch[:, :dim] + jax.random.uniform(k_u, batch[:, :dim].shape, batch.dtype))
            return base_loss(params, jnp.concatenate([y, batch[:, dim:]], 1), k_l)

        data = x
    else:
        data = np.asarray(to_model(x), np.float32)
    if diff.num_classes:
        data = np.concatenate([data, digits_labels(x)[:, None].astype(np.float32)], 1)
    steps = max(o["steps"], 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, o["learning_rate"], min(200, steps // 10 + 1), steps,
                                                  o["learning_rate"] * 0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(o["grad_clip"]), optax.adam(schedule)) if o["grad_clip"] \
        else optax.adam(schedule)
    inner = gradient_trainer(loss, optimizer)
    tr = with_ema(inner, o["ema_decay"]) if o["ema_decay"] else inner
    # a mixture base starts at its EM fit to every training row (model space); nothing trains it afterwards
    params = diff.init(k_init, np.asarray(to_model(x), np.float64)) if diff.base is not None else diff.init(k_init)
    return registry.Training(tr, params, data, k_fit, o["steps"], o["batch_size"],
                             val_fraction=o["val_fraction"], eval_every=o["eval_every"], patience=o["patience"])


def _check(options: dict, dataset) -> str | None:
    from genlearn.diffusion import PARAMETERIZATIONS, SAMPLERS, SDES, SPACINGS, TIME_SAMPLINGS, WEIGHTINGS

    for key, allowed in (("sde", SDES), ("parameterization", PARAMETERIZATIONS), ("weighting", WEIGHTINGS),
                         ("time_sampling", TIME_SAMPLINGS), ("sampler", SAMPLERS), ("net", ("mlp", "unet")),
                         ("trace", ("exact", "hutchinson")), ("sample_spacing", SPACINGS)):
        if options.get(key, "uniform") not in allowed:
            return f"diffusion: {key} must be one of {allowed}, got {options[key]!r}"
    if options["sample_nfe"] is not None and (not isinstance(options["sample_nfe"], int) or options["sample_nfe"] < 1):
        return f"diffusion: sample_nfe (NFE) must be an integer >= 1, got {options['sample_nfe']!r}"
    if options.get("base", "none") not in ("none", "mixture"):
        return f"diffusion: base must be none or mixture, got {options['base']!r}"
    if options.get("base", "none") == "mixture":
        if dataset.discrete_levels is not None:
            return "diffusion: --base mixture is for continuous data (pixels take the U-Net alone)"
        if options["base_components"] > dataset.train.shape[0]:
            return (f"diffusion: --components {options['base_components']} exceeds the {dataset.train.shape[0]} "
                    "training rows the mixture base is fitted to")
    if options["guidance"] is not None and not options["num_classes"]:
        return "diffusion: a guidance scale was given for an unconditional model (set num_classes, e.g. 10 for digits)"
    if options["num_classes"] and dataset.name != "digits":
        return "diffusion: class-conditional training (num_classes > 0) needs labelled data: only digits has labels"
    n_fit = dataset.train.shape[0] - (max(1, round(options["val_fraction"] * dataset.train.shape[0]))
                                      if options["val_fraction"] > 0 else 0)
    if options["batch_size"] > n_fit:
        return f"--batch-size {options['batch_size']} exceeds the {n_fit} training rows of {dataset.name}"
    return None


def _eval_samples(model: Model, params, dataset, key) -> np.ndarray:
    n = 5000 if dataset.discrete_levels is None else 2000
    return np.asarray(jax.jit(model.sample, static_argnums=2)(params, key, n), np.float64)


def _report(model: Model, params, dataset, options: dict, history, key) -> dict:
    """The variational bound on the test set, and sample metrics (module docstring)."""
    from genlearn.data import nats_to_bits_per_dim
    from genlearn.diffusion import variational_bound

    out: dict[str, Any] = {}
    diff = build_diffusion(options, model.dim)
    pre = preprocess(dataset)
    to_model, _, log_det = model_space(pre)
    test = jnp.asarray(dataset.test, jnp.float32)
    k_bound, k_deq, k_sample = jax.random.split(jax.random.fold_in(key, 7), 3)
    bound_fn = jax.jit(lambda p, y, k: variational_bound(diff, p, y, k, num_t=options["bound_num_t"]))
    draws = 8 if dataset.discrete_levels is not None else 1
    values = []
    for i, k in enumerate(jax.random.split(k_deq, draws)):
        x = test if dataset.discrete_levels is None else test + jax.random.uniform(k, test.shape)
        kb = jax.random.fold_in(k_bound, i)
        values.append(np.concatenate([np.asarray(bound_fn(params, to_model(x[j:j + 1024]), jax.random.fold_in(kb, j)))
                                      for j in range(0, x.shape[0], 1024)]))
    bound = float(np.mean(values)) - log_det
    out["test_nll_bound"] = bound
    if dataset.discrete_levels is not None:
        out["test_bits_per_dim_bound"] = float(nats_to_bits_per_dim(bound, model.dim))
    else:
        log_std = float(np.sum(np.log(np.asarray(standardize_stats(np.asarray(dataset.train))[1], np.float64))))
        out["test_nll_bound_standardized"] = bound - log_std
    samples = _eval_samples(model, params, dataset, k_sample)
    if not np.all(np.isfinite(samples)):
        out["nonfinite_samples"] = int(np.sum(~np.isfinite(samples).all(1)))
        return out
    from genlearn.runs import sample_metrics

    out.update(sample_metrics(samples, dataset, dequantized=True))  # pixels: the images are floor(y)
    return out


def _figures(out_dir: str, model: Model, params, dataset, options: dict, key) -> None:
    """trajectory.png: samples along the reverse process at t = 1, 0.3, 0.1, 0.05, 0.02 and 0, prior to data."""
    from genlearn import plotting
    from genlearn.diffusion import samplers, time_grid

    diff = build_diffusion(options, model.dim)
    _, to_data, _ = model_space(preprocess(dataset))
    pixels = dataset.discrete_levels is not None
    n = 16 if pixels else 2000
    method = options["sampler"] if options["sampler"] != "ode" else "ddim"
    nfe = options["sample_nfe"] or 200
    label = jnp.arange(n) % diff.num_classes if diff.num_classes else None
    guidance = options["guidance"] if diff.num_classes else None
    _, traj = jax.jit(lambda p, k: samplers.sample(diff, p, k, n, method=method, nfe=nfe, label=label,
                                                   guidance=guidance, return_trajectory=True,
                                                   **_spacing(options)))(params, key)
    steps = traj.shape[0] - 1
    times = time_grid(diff.sde, steps, options.get("sample_spacing", "uniform"))[::-1]
    # the structure appears late in the reverse process (t < 0.1 for the VP SDE): panels at roughly geometric times
    shown = np.array([1.0, 0.3, 0.1, 0.05, 0.02, 0.0])
    picks = np.unique(np.abs(times[None, :] - np.maximum(shown, diff.sde.t_min)[:, None]).argmin(1))
    panels = [(f"t = {times[i]:.2f}", np.asarray(to_data(traj[i]))) for i in picks]
    path = os.path.join(out_dir, "trajectory.png")
    if pixels:
        plotting.plot_digit_panels(panels, path, levels=dataset.discrete_levels, per_side=4)
    elif model.dim == 2:
        plotting.plot_sample_panels(panels, np.asarray(dataset.test), path)


OPTIONS = (
    registry.STEPS, registry.BATCH_SIZE, registry.LEARNING_RATE, registry.HIDDEN,
    registry.Option("--sde", "sde", str, "diffusion: forward SDE", ("vp", "vp-cosine", "subvp", "ve")),
    registry.Option("--net", "net", str, "diffusion: noise-conditional network", ("mlp", "unet")),
    registry.Option("--channels", "channels", registry.positive_int, "diffusion: U-Net channels"),
    registry.Option("--input-freqs", "input_freqs", registry.nonneg_int,
                    "diffusion: MLP input positional-encoding frequencies"),
    registry.Option("--parameterization", "parameterization", str, "diffusion: network output",
                    ("eps", "v", "score")),
    registry.Option("--weighting", "weighting", str, "diffusion: DSM weighting lambda(t)", ("sigma2", "likelihood")),
    registry.Option("--time-sampling", "time_sampling", str, "diffusion: training times",
                    ("uniform", "antithetic", "stratified", "importance")),
    registry.Option("--sampler", "sampler", str, "diffusion: default sampler",
                    ("ancestral", "ddim", "euler_maruyama", "predictor_corrector", "ode")),
    registry.Option("--nfe", "sample_nfe", registry.positive_int, "diffusion: network evaluations per sample"),
    registry.Option("--spacing", "sample_spacing", str, "diffusion: the sampler's time grid: uniform in t, or edm "
                    "(Karras et al., dense at low noise: better at NFE <= 50; benchmarks/results/diffusion.md)",
                    ("uniform", "edm")),
    registry.Option("--trace", "trace", str, "diffusion: probability-flow log-det trace", ("exact", "hutchinson")),
    registry.Option("--num-classes", "num_classes", registry.nonneg_int,
                    "diffusion: class-conditional with this many classes (digits: 10)"),
    registry.Option("--label-dropout", "label_dropout", registry.fraction,
                    "diffusion: probability of the null label in training (classifier-free guidance)"),
    registry.Option("--guidance", "guidance", registry.nonneg_float, "diffusion: classifier-free guidance scale w"),
    registry.Option("--base", "base", str, "diffusion: none, or mixture (the network corrects the exact score of a "
                    "Gaussian mixture fitted by EM to the training rows)", ("none", "mixture")),
    registry.Option("--components", "base_components", registry.positive_int,
                    "diffusion --base mixture: its Gaussian components"),
    registry.Option("--ema-decay", "ema_decay", registry.fraction, "diffusion: EMA decay of the params"),
    registry.Option("--val-fraction", "val_fraction", registry.fraction, "validation split for early stopping"),
    registry.Option("--patience", "patience", registry.positive_int, "evaluations without improvement before stopping"),
    registry.RESUME,
)

FAMILY = registry.register(registry.Family(
    name="diffusion",
    defaults=defaults,
    build=build, trainer=trainer, options=OPTIONS, check=_check, preprocess=preprocess, report=_report,
    loss_label="DSM loss (model space)", figures=_figures,
    # the exact score of a sharp mixture base makes the probability-flow ODE stiff between and beyond the modes
    # (the forward flow slides along the boundaries of the components' regions): ring8's 120 x 120 grid took
    # over 8 minutes at the default tolerance against ~1 s per 1000 test points, so its density.png is 60 x 60
    # (drawn as the log-density: 60 pixels per axis miss the peaks of modes 0.05 wide; ring8's and grid25's
    # figures took 169 s and 133 s with training, 63 s and 57 s for the network alone at 120 x 120)
    density_resolution=lambda o: 60 if o.get("base", "none") == "mixture" else DENSITY_RESOLUTION,
))
