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
from genlearn.flows._common import default_mask, default_order
from genlearn.data import uniform_dequantize
from genlearn.data.scaling import standardize_stats

__all__ = ["FACTORIES", "LOGIT_ALPHA", "defaults", "preprocess", "outer_bijector", "build", "trainer"]

LOGIT_ALPHA = 0.05

# name -> (factory(dim, num_layers, hidden, **kw), the factory keywords its options may hold)
FACTORIES = {
    "realnvp": (flows.realnvp, ("mask", "base", "scan")),
    "nice": (flows.nice, ("mask", "base", "scale_at")),
    "maf": (flows.maf, ("order", "base", "scan", "max_log_scale")),  # flows II: autoregressive and spline
    "iaf": (flows.iaf, ("order", "base", "scan")),
    "spline": (flows.spline, ("mask", "bound", "num_bins", "tails", "base", "scan")),
    "glow": (flows.glow, ("mask", "base")),  # flows II: glow, cnf
    "cnf": (flows.cnf, ("rtol", "atol", "base", "activation")),
}
BASES = ("normal", "student_t", "logistic", "diag_gaussian", "mixture")
MIXTURE_COMPONENTS = 32  # --base mixture's components (K), unless --components says otherwise
INIT_ROWS = 1024  # the training rows the trainer initialises on (Glow's ActNorm, the mixture base's EM fit)
# On 2-D continuous data RealNVP, MAF, IAF, Glow and the spline start from a 32-component mixture base fitted by
# EM to a batch of the data (`core.gaussian_mixture`'s fit, called by the Model's init(key, data)): a connected
# base stretched over separated modes leaves filaments between them (stop 34's grid25 pictures); a mixture base
# needs no such stretch. runs.fit at the CLI defaults, gap to the truth, the family's base at seed 0 -> the
# mixture at seeds 0/1/2 (stop 35): RealNVP grid25 1.626 -> 0.0035/0.0018/0.0031, ring8 0.134 ->
# 0.0026/0.0039/0.0021; MAF grid25 1.722 -> 0.0032/0.0023/0.0032, ring8 0.145 -> 0.0025/0.0028/0.0020; IAF grid25
# 2.072 -> 0.0027/0.0016/0.0030, ring8 0.273 -> 0.0020/0.0030/0.0018; Glow grid25 1.691 -> 0.0027/0.0031/0.0029,
# ring8 0.590 -> 0.0021/0.0028/0.0013; spline (before its warmup) grid25 0.034 -> 0.0171/0.0127/0.0239, ring8
# 0.019 -> 0.0024/0.0065/0.0065; moons (seed 0) RealNVP 0.015 -> 0.0079, MAF 0.014 -> 0.0068, IAF 0.020 ->
# 0.0080, Glow 0.018 -> 0.0077, spline 0.026 -> 0.0118. On toys not used to choose (RealNVP, seed 0, held-out
# NLL): circles 1.827 -> 1.782 (truth 1.772), pinwheel 1.556 -> 1.538, but checkerboard 1.847 -> 1.983 (truth
# 1.792; MAF 1.836 -> 1.992): uniform boxes should take --base student_t.
# A base fitted to the data is sharp (grid25's components: std ~0.05 standardised), so Adam's first full-size
# steps on the flow can cost whole nats (tests/test_stability.py's 400-step CLI run on grid25, from -1.67 nats):
# the spline reached 11.0 at step 94, so it warms its learning rate up linearly over the first 5 % of the steps
# (--warmup; none after that). NICE reached 154 at step 61 (peak 3e-3), 260 at step 104 with a quarter of the
# steps warming up, 11.1 at step 116 at a peak of 1e-3, so in stop 35 NICE kept its own base (with the mixture
# at 3e-3, seeds 0/1/2: grid25 0.946 -> 0.0518/0.0602/0.0052, ring8 0.218 -> 0.0018/0.0024/0.0042; moons, seed 0,
# 0.062 -> 0.0090); below, how it takes it now.
# RealNVP, MAF, IAF and Glow rise by none of that without warmup.
# The CNF trained by flow matching (its default) takes the mixture on 2-D continuous data too (``defaults``), but
# flow matching never moves the base: the base is fitted to every training row, not INIT_ROWS (fitted to 1024 it
# sat 0.134 nats above the truth on moons), and each data row is paired with a draw from its own component,
# chosen by its responsibility (``--coupling component``, `flows.cnf_flow_matching`), so the field only carries
# each Gaussian onto its share of the data. runs.fit at the CLI defaults, seed 0, gap to the truth, N(0, I) ->
# mixture and component coupling: grid25 0.676 -> 0.0034, ring8 0.075 -> 0.0053, moons 0.041 -> 0.025; with
# independent pairs from the same base grid25 was 11.04 (paths crossing the whole grid), with N(0, I) and
# minibatch OT pairs (--coupling ot) 0.168 at ~30 ms of Sinkhorn a step; with the base fitted to 1024 rows
# 0.049, 0.059, 0.106 (the base's own gaps: 0.080, 0.062, 0.134).
# NICE takes the mixture too, at a peak rate of 1e-4 (3e-3 with N(0, I)) warmed up over 5 % of the steps (stop 36):
# its spikes came from the first updates, not its scale layer (400-step runs on grid25 from -1.67 nats: without
# the scale layer 217 at step 90; a zero last conditioner layer 160 at step 52; 24 couplings at 1e-3 7.3 at step
# 50; 3e-4 147 after one update): Adam's first steps are sign-sized on every weight of 48 additive couplings, and
# their shifts add up against components 0.05 wide. At 1e-4 with the warmup the 400-step run stays below -1.2.
# Gap to the truth, seed 0, N(0, I) at 3e-3 -> mixture at 1e-4: grid25 0.946 -> 0.0046, ring8 0.218 -> 0.0058,
# moons 0.062 -> 0.018; unseen toys, held-out NLL: checkerboard 2.108 -> 2.003, pinwheel 1.559 -> 1.555.
MIXTURE_BASE_2D = ("realnvp", "nice", "maf", "iaf", "glow", "spline")
WARMUP = {"spline": 0.05, "nice": 0.05}
NICE_MIXTURE_LR = 1e-4  # NICE's peak learning rate on the fitted mixture base
# the factories whose alternating layers are one scanned pair (`scan=True`); runs saved before it rebuild unrolled
SCANNED = ("realnvp", "maf", "iaf", "spline")
SPLINE_BINS_2D = 32  # `genlearn fit spline`'s bins on 2-D data (defaults table: grid25 +0.956 -> +0.033 nats)


def _train_cfg(steps, batch_size, learning_rate, weight_decay, num_layers, hidden, val_fraction, eval_every,
               patience, **factory) -> dict:
    return {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "weight_decay": weight_decay,
            "num_layers": num_layers, "hidden": list(hidden), "val_fraction": val_fraction,
            "eval_every": eval_every, "patience": patience, "grad_clip": 1.0, **factory}


def _default_of(name: str, keyword: str):
    import inspect

    return inspect.signature(FACTORIES[name][0]).parameters[keyword].default



def defaults(name: str, dataset, chosen: dict | None = None) -> dict:
    """Defaults per data kind, chosen on held-out data (see benchmarks/foundation_numbers.py).

    Continuous data: 8 layers of 2x128 (RealNVP, MAF and IAF 24 layers of 2x64 on 2-D data; NICE 24
    of 2x64 at a peak rate of 3e-3, 48 on 2-D data; MAF 16 elsewhere; the spline 32 bins and 10k steps on 2-D data),
    Adam 1e-3 with cosine decay, batch 256, 20k steps (see ``_defaults`` for each). On 2-D continuous data
    every flow starts from a mixture base fitted by EM to the data (``MIXTURE_BASE_2D``, NICE at a peak rate of 1e-4;
    the CNF trained by flow matching pairs data rows with their components, ``coupling="component"``). Digits
    (1400 examples in 64-D) overfit quickly, so the flows are smaller and regularised, with
    early stopping on a split. The CNF's defaults depend on its ``objective`` (``chosen``, the options the
    user gave): flow matching by default, maximum likelihood on request.
    """
    # K = 32, or fewer on small data: at least 8 rows of the initialisation batch per component
    n_init = min(int(np.shape(dataset.train)[0]), INIT_ROWS)
    recorded = {"base": _default_of(name, "base"), "base_components": min(MIXTURE_COMPONENTS, max(1, n_init // 8))}
    recorded["warmup"] = 0.0
    if name in MIXTURE_BASE_2D and dataset.discrete_levels is None and int(np.shape(dataset.train)[1]) == 2:
        recorded["base"] = "mixture"
        recorded["warmup"] = WARMUP.get(name, 0.0)
    if name == "spline":
        recorded["tails"] = _default_of(name, "tails")
    if name in SCANNED:
        recorded["scan"] = True
    if name == "nice":
        recorded["scale_at"] = _default_of(name, "scale_at")
    if name == "maf":
        recorded["max_log_scale"] = _default_of(name, "max_log_scale")
    chosen = chosen or {}
    if (name == "cnf" and chosen.get("objective") != "mle" and dataset.discrete_levels is None
            and int(np.shape(dataset.train)[1]) == 2):
        recorded["base"] = "mixture"  # trained by flow matching, each data row paired with a draw from its component
    out = {**recorded, **_defaults(name, dataset, chosen)}
    if name == "cnf":  # flow matching from a mixture base pairs by components (the comment at MIXTURE_BASE_2D)
        fm_mixture = out["objective"] == "flow-matching" and chosen.get("base", out["base"]) == "mixture"
        out["coupling"] = "component" if fm_mixture else "independent"
    return out


def _defaults(name: str, dataset, chosen: dict) -> dict:
    pixels = dataset.discrete_levels is not None
    # the factories' own defaults, recorded: random halves/orders above 2-D, alternating ones on 2-D
    dim = int(np.shape(dataset.train)[1])
    mask, order = default_mask(dim, None), default_order(dim, None)
    small = dict(steps=3000, batch_size=128, learning_rate=1e-3, weight_decay=1e-2, val_fraction=0.15,
                 eval_every=100, patience=10)
    big = dict(steps=20_000, batch_size=256, learning_rate=1e-3, weight_decay=0.0, val_fraction=0.1,
               eval_every=500, patience=None)
    if name == "cnf":
        if chosen.get("objective") == "mle":  # flows II: an ODE solve and its backward pass per step: a small
            # exact-trace field, loose tolerances, few steps
            return _train_cfg(2000, 256, 3e-3, 0.0, 1, (64, 64), 0.15 if pixels else 0.0, 250, None,
                              rtol=1e-3, atol=1e-3, objective="mle", activation="tanh")
        # flow matching: one field evaluation per row and step, so a wider field and many steps; the
        # tolerances are those of the likelihood evaluation and sampling (no solve in training)
        return _train_cfg(20_000, 256, 1e-3, 0.0, 1, (256, 256, 256), 0.15 if pixels else 0.0, 1000, None,
                          rtol=1e-5, atol=1e-5, objective="flow-matching", activation="silu")
    if name in ("maf", "iaf", "spline"):  # flows II (benchmarks/flows2_numbers.py)
        if pixels:  # MADE widths must be >= 64; random orders regularise
            if name == "spline":  # strong decoupled weight decay, chosen on the validation split (best
                # val NLL 90.00 at 1e-2, 89.78 at 0.1, 89.40 at 0.4, 88.91 at 0.8, 89.20 at 1.6); test bits/dim
                # 2.054 -> 2.022 (seed 1: 2.024)
                return _train_cfg(num_layers=8, hidden=(32, 32), mask="parity", num_bins=8,
                                  **{**small, "weight_decay": 0.8})
            return _train_cfg(num_layers=5, hidden=(64, 64), order="random", **small)
        if name == "maf":  # 16 MADE layers, 20k steps: 1.167 standardised on moons vs 1.208 with 8 layers, 10k steps.
            # On 2-D data, as RealNVP, NICE and IAF, depth rather than width: 24 scanned layers of 2x64 instead of
            # 16 of 2x128 (stop 34, scale bound 4; gap to the truth, seeds 0/1/2: grid25 1.911/1.912/1.531 ->
            # 1.722/1.300/1.338, ring8 0.149/0.119/0.176 -> 0.145/0.144/0.174; seed 0: moons 0.018 -> 0.014;
            # 32 layers of 2x64, seed 0: grid25 1.427, ring8 0.133, moons 0.020)
            if dim == 2:
                return _train_cfg(num_layers=24, hidden=(64, 64), order=order, **big)
            return _train_cfg(num_layers=16, hidden=(128, 128), order=order, **big)
        if name == "spline":  # bins out to +-4 standardised units; a little weight decay against overfitting.
            # In 2-D each layer's spline carries a whole coordinate's modes: 32 bins (grid25's five modes per
            # axis sit ~0.7 standardised units apart, closer than 8 bins' width of 1; SPLINE_BINS_2D), which
            # learn as much in 10k steps as in 20k (seed 0, gap to the truth, 20k -> 10k: moons 0.028 -> 0.023,
            # ring8 0.020 -> 0.021, grid25 0.033 -> 0.032) at about twice 8 bins' cost per step
            two_d = dim == 2
            return _train_cfg(num_layers=8, hidden=(128, 128), mask=mask, bound=4.0,
                              num_bins=SPLINE_BINS_2D if two_d else 8,
                              **{**big, "steps": 10_000 if two_d else big["steps"], "weight_decay": 1e-4})
        if dim == 2:  # IAF: as RealNVP and NICE, depth rather than width on 2-D data: 24 scanned layers of 2x64
            # instead of 8 of 2x128 (stop 34; gap to the truth, seeds 0/1/2: ring8 0.418/0.409/0.566 ->
            # 0.273/0.295/0.330, grid25 2.722/2.947/3.022 -> 2.072/1.819/1.625; seed 0: moons 0.025 -> 0.020)
            return _train_cfg(num_layers=24, hidden=(64, 64), order=order, **{**big, "steps": 10_000})
        return _train_cfg(num_layers=8, hidden=(128, 128), order=order, **{**big, "steps": 10_000})
    if pixels:  # glow: actnorm -> LU linear -> affine coupling steps
        return _train_cfg(num_layers=8, hidden=(32, 32) if name == "nice" else (16, 16), mask="parity", **small)
    if name == "nice":  # volume preserving but for one diagonal scale: depth, not width (24 x 2x64 vs the
        # paper's 4 x 2x128, seed 0: moons 1.373 -> 1.214, ring8 -1.065 -> -2.812, grid25 0.448 -> -0.912),
        # affordable since the couplings are scanned (compiled once). Peak learning rate 3e-3 (1e-3 before;
        # seed 0: moons 1.214 -> 1.208, grid25 -0.912 -> -1.164; ring8 gap to the truth over seeds 0/1/2
        # 0.79/1.22/0.98 -> 0.61/0.77/1.27; 5e-3: 1.46, batch 512: 0.75). On 2-D data 48 couplings (stop 31),
        # at about twice 24's time per step. Gap to the truth, seeds 0/1/2, 24 -> 32 -> 48 couplings: ring8
        # 0.61/0.77/1.27 -> 0.48/0.63/0.56 -> 0.39/0.46/0.71; grid25 2.68/2.65/2.80 -> 3.17/2.72/2.89 -> 2.58/2.22/-.
        # 24 couplings for 30k steps instead of 20k: ring8 0.84 on seed 0
        on_mixture = dim == 2 and not pixels and chosen.get("base", "mixture") == "mixture"
        return _train_cfg(num_layers=48 if dim == 2 else 24, hidden=(64, 64), mask=mask,
                          **{**big, "learning_rate": NICE_MIXTURE_LR if on_mixture else 3e-3})
    if name == "realnvp" and dim == 2:  # as NICE, depth rather than width on 2-D data: 24 scanned couplings of
        # 2x64 instead of 8 of 2x128 (gap to the truth, seeds 0/1/2: ring8 0.295/0.309/0.371 -> 0.141/0.113/0.181,
        # grid25 2.895/2.262/2.069 -> 1.530/1.163/1.641; seed 0: moons 0.024 -> 0.016; unrolled, 48 couplings
        # reached grid25 1.050 at ~3x the time, 24 at a peak rate of 3e-3 1.998)
        return _train_cfg(num_layers=24, hidden=(64, 64), mask=mask, **big)
    # glow mixes coordinates by its learned LU linear maps: fixed alternating halves
    return _train_cfg(num_layers=8, hidden=(128, 128), mask=mask if name == "realnvp" else "half", **big)


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
    # runs saved before the masks/orders were recorded used the then defaults: alternating halves/orders
    for keyword, then in (("mask", "half"), ("order", "alternate")):
        if keyword in keys:
            kwargs.setdefault(keyword, then)
    if name == "nice":
        kwargs.setdefault("scale_at", "data")  # and NICE runs saved before stop 32, its scale at the data side
    if name == "maf":
        kwargs.setdefault("max_log_scale", 5.0)  # and MAF runs saved before stop 34, the scale bound 5
    if kwargs["base"] == "mixture":  # runs saved before the components were recorded had gaussian_mixture's 8
        kwargs["base"] = core.gaussian_mixture(dim, int(options.get("base_components", 8)))
    if name in SCANNED:
        kwargs.setdefault("scan", False)  # and runs saved before the layers were scanned, unrolled
    if name == "spline":
        kwargs.setdefault("tails", "identity")  # and spline runs saved before the tails were, identity tails
        kwargs.setdefault("num_bins", 8)  # and before the bins were, 8
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
    # a base that flow matching keeps fixed (the component coupling) starts at its fit to every training row;
    # fitted to INIT_ROWS it overfits them (grid25, ring8, moons: 0.080, 0.062, 0.134 nats above the truth
    # against 0.003, 0.005, 0.033 fitted to all 20k), which the trained bijector of the others corrects
    x0 = jnp.asarray(dataset.train if o.get("coupling") == "component" else dataset.train[:INIT_ROWS])
    params = model.init(k_init, x0 if dequant is None else dequant(k_init, x0))
    warmup = int(round(float(o.get("warmup", 0.0)) * o["steps"]))  # runs saved before it had none
    if warmup > 0:  # linear from 0 to the peak rate, then the cosine decay
        schedule = optax.warmup_cosine_decay_schedule(0.0, o["learning_rate"], warmup, max(o["steps"], warmup + 1))
    else:
        schedule = optax.cosine_decay_schedule(o["learning_rate"], max(o["steps"], 1))
    optimizer = optax.adamw(schedule, weight_decay=o["weight_decay"]) if o["weight_decay"] > 0 else optax.adam(schedule)
    loss = nll(model, dequantize=dequant)
    if o.get("objective") == "flow-matching":  # the CNF without ODE solves, in the flow's space
        loss = _flow_matching_in_flow_space(model.dim, o, preprocess(dataset), dequant)
    # the same global-norm clipping as the library's `fit` (history["clipped"] marks the steps in loss.png)
    return registry.Training(gradient_trainer(loss, optimizer,
                                              max_grad_norm=o["grad_clip"] or None), params, dataset.train,
                             k_fit, o["steps"], o["batch_size"], val_fraction=o["val_fraction"],
                             eval_every=o["eval_every"], patience=o["patience"])


def _flow_matching_in_flow_space(dim: int, options: dict, pre: dict, dequant):
    """``loss(params, x, key)``: `flows.cnf_flow_matching` on data rows mapped into the flow's space.

    The rows are dequantised (pixels) and mapped through the inverse of the
    fixed outer bijector (standardisation or logit), where the CNF lives.
    """
    import jax

    outer = outer_bijector(pre, dim)
    outer_params = outer.init(jax.random.PRNGKey(0))
    base = options["base"]
    if base == "mixture":
        base = core.gaussian_mixture(dim, int(options["base_components"]))
    fm = flows.cnf_flow_matching(dim, tuple(options["hidden"]), activation=options["activation"], base=base,
                                 coupling=options.get("coupling", "independent"))  # runs saved before: independent

    def loss(params, x, key):
        k_deq, k_fm = jax.random.split(key)
        if dequant is not None:
            x = dequant(k_deq, x)
        return fm(params, jax.vmap(outer.inverse, (None, 0))(outer_params, x), k_fm)

    return loss


def _check(options: dict, dataset) -> str | None:
    n_train = dataset.train.shape[0]
    n_fit = n_train - max(1, round(options["val_fraction"] * n_train)) if options["val_fraction"] > 0 else n_train
    if options["batch_size"] > n_fit:
        return f"--batch-size {options['batch_size']} exceeds the {n_fit} training rows of {dataset.name}"
    n_init = min(n_train, INIT_ROWS)
    if options["base"] == "mixture" and options["base_components"] > n_init:
        return (f"--components {options['base_components']} exceeds the {n_init} rows the mixture base is "
                f"fitted to at initialisation")
    if options.get("num_bins") is not None and options["num_bins"] < 2:
        return f"spline: --num-bins must be >= 2, got {options['num_bins']}"
    if options.get("objective") == "flow-matching":
        if options["num_layers"] != 1:
            return (f"cnf: --objective flow-matching trains one ODE block, got --layers {options['num_layers']} "
                    "(use --objective mle for stacked blocks)")
        if options.get("coupling") == "component" and options["base"] != "mixture":
            return "cnf: --coupling component pairs data rows with mixture components; it needs --base mixture"
    elif options.get("coupling", "independent") != "independent":
        return f"cnf: --coupling {options['coupling']} pairs flow-matching batches; it needs --objective flow-matching"
    return None


OPTIONS = (
    registry.STEPS, registry.BATCH_SIZE, registry.LEARNING_RATE,
    registry.Option("--weight-decay", "weight_decay", registry.nonneg_float, "AdamW weight decay"),
    registry.Option("--layers", "num_layers", registry.positive_int, "number of flow layers"),
    registry.HIDDEN,
    registry.Option("--base", "base", str, "base distribution (default: mixture for realnvp, maf, iaf, spline, "
                    "glow and the flow-matching cnf on 2-D continuous data, else the family's own; see "
                    "genlearn.core.make_base)", choices=BASES),
    registry.Option("--components", "base_components", registry.positive_int,
                    "--base mixture: its Gaussian components, started at an EM fit to a batch of data mapped "
                    "through the initial flow"),
    registry.Option("--warmup", "warmup", registry.fraction,
                    "fraction of the steps over which the learning rate rises linearly from 0 (default 0.05 for the "
                    "spline with the 2-D toys' fitted mixture base, else 0)"),
    registry.Option("--val-fraction", "val_fraction", registry.fraction, "validation split for early stopping"),
    registry.Option("--patience", "patience", registry.positive_int,
                    "evaluations without improvement before stopping"),
    registry.Option("--eval-every", "eval_every", registry.positive_int, "steps between validation evaluations"),
    registry.RESUME,
)

SPLINE_OPTIONS = OPTIONS + (
    registry.Option("--num-bins", "num_bins", registry.positive_int,
                    f"spline: rational-quadratic bins per coordinate and layer, >= 2 (default {SPLINE_BINS_2D} on "
                    "2-D data, else 8)"),
)

CNF_OPTIONS = OPTIONS + (
    registry.Option("--objective", "objective", str,
                    "cnf: flow-matching (default: no ODE solve in training, Lipman et al. 2023) or mle "
                    "(maximum likelihood through the solver)", choices=("flow-matching", "mle")),
    registry.Option("--activation", "activation", str, "cnf: the vector field's smooth activation",
                    choices=("tanh", "softplus", "silu", "elu")),
    registry.Option("--coupling", "coupling", str,
                    "cnf flow matching: how base draws pair with data rows, independent or ot (minibatch optimal "
                    "transport, Tong et al. 2024; ~30 ms a step on CPU) or component (a data row with a draw from its "
                    "mixture base component, --base mixture)", choices=("independent", "ot", "component")),
)


def _loss_label(options: dict) -> str:
    if options.get("objective") == "flow-matching":
        return "flow-matching loss (flow space)"
    return "NLL (nats per example)"


for _name in FACTORIES:
    registry.register(registry.Family(
        name=_name,
        defaults=lambda dataset, chosen, _n=_name: defaults(_n, dataset, chosen),
        build=lambda options, dim, pre, _n=_name: build(_n, options, dim, pre),
        trainer=trainer, options={"cnf": CNF_OPTIONS, "spline": SPLINE_OPTIONS}.get(_name, OPTIONS), check=_check,
        preprocess=preprocess,
        loss_label=_loss_label,
    ))
