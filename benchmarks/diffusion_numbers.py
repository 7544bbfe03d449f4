"""The diffusion figures of issue 15: modes, likelihoods, digits, sampler cost vs quality, and the diffrax peer.

    python benchmarks/diffusion_numbers.py                 # every part, full size (tens of minutes on 2 cores)
    python benchmarks/diffusion_numbers.py --quick         # a smoke run of every part (<= 3 minutes)
    python benchmarks/diffusion_numbers.py modes likelihood digits samplers peer   # some parts

Parts:

* ``modes``: ring8 and grid25, 3 seeds each, ``genlearn fit diffusion`` defaults: modes covered and the
  high-quality fraction (within 3 std of a centre) of 5000 samples (target 8/8, 25/25, >= 95 %).
* ``likelihood``: moons, the probability-flow NLL in standardised units beside the true density's on
  the same test points (target: within 0.03 nats of 1.150) and the variational bound.
* ``digits``: bits/dim (uniform dequantisation, 8 draws; Hutchinson trace) and the digits-net FID
  (``fid_features``) of 2000 samples (targets <= 2.10 bits/dim, FID <= 2.0).
* ``digits-fid``: the digits-net FID of the ``digits`` run's images floor(y), 10000 samples of its default
  sampler (and 5 x 2000), beside training images drawn with replacement and the FID of y itself.
* ``digits-guidance``: the class-conditional digits model (10 classes, label dropout 0.1), FID of 6000
  samples with uniform labels at classifier-free guidance w = 0 and 0.5.
* ``samplers``: the trained ring8 model (or digits with ``--samplers-data digits``) sampled by each
  sampler at NFE 10, 20, 50, 100, 1000 on both time grids (uniform, edm) (the ODE: fixed Heun steps at
  the same NFE, and adaptive):
  high-quality fraction / FID and wall time, a table and ``diffusion_samplers.png``.
* ``peer``: diffrax's score-based-diffusion example (equinox; its MLP on concat(x, t) read as the score,
  the VP SDE, weighting lambda = 1 - exp(-int beta), low-discrepancy times, AdaBelief) against
  gl.diffusion with the same MLP, weighting, times and optimiser on moons: training steps per second
  and the probability-flow test NLL (same exact-trace solver for both), as ratios. Both time a compiled
  ``lax.scan`` of their training step (ours: the `gradient_trainer` step that `run_trainer` scans).

Results go to benchmarks/results/diffusion.{json,md} (merged part by part) and the PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from genlearn import registry, runs  # noqa: E402
from genlearn.data import load_dataset  # noqa: E402

RESULTS = os.path.join(HERE, "results")
NFES = (10, 20, 50, 100, 1000)
SAMPLER_METHODS = ("ancestral", "ddim", "euler_maruyama", "predictor_corrector", "ode")
SPACINGS = ("uniform", "edm")


def _fit(data: str, seed: int, quick: bool, **options):
    ds = load_dataset(data, **({"n_train": 4000, "n_test": 1000} if quick and data != "digits" else {}))
    opts = dict(options)
    if quick:
        opts.setdefault("steps", 300)
    run_dir = os.path.join("runs", f"diffusion-{data}-s{seed}{'-quick' if quick else ''}")
    t0 = time.time()
    params, cfg, metrics = runs.fit("diffusion", ds, opts, out=run_dir, seed=seed, progress=not quick)
    metrics["seconds"] = time.time() - t0
    metrics["config"] = cfg["options"]
    return ds, params, cfg, metrics, run_dir


def part_modes(quick: bool) -> dict:
    out = {}
    for data in ("ring8", "grid25"):
        rows = []
        for seed in (0,) if quick else (0, 1, 2):
            _, _, _, m, _ = _fit(data, seed, quick)
            rows.append({k: m.get(k) for k in ("modes_covered", "num_modes", "high_quality_fraction",
                                               "test_nll_standardized", "test_nll_bound_standardized", "seconds")})
            print(data, seed, rows[-1], flush=True)
        out[data] = {"seeds": rows, "config": m["config"],
                     "min_modes": min(r["modes_covered"] for r in rows),
                     "min_high_quality": min(r["high_quality_fraction"] for r in rows)}
    return out


def part_likelihood(quick: bool) -> dict:
    ds, _, _, m, run_dir = _fit("moons", 0, quick)
    test = np.asarray(ds.test, np.float64)
    log_std = float(np.sum(np.log(np.asarray(ds.train, np.float64).std(0))))
    true_nll = float(-np.mean(ds.log_prob(test))) - log_std
    row = {"test_nll_standardized": m["test_nll_standardized"], "true_nll_standardized": true_nll,
           "excess": m["test_nll_standardized"] - true_nll,
           "test_nll_bound_standardized": m["test_nll_bound_standardized"], "seconds": m["seconds"],
           "config": m["config"]}
    print("moons", row, flush=True)
    return {"moons": row}


def part_digits(quick: bool) -> dict:
    _, _, _, m, _ = _fit("digits", 0, quick)
    row = {k: m.get(k) for k in ("test_bits_per_dim", "test_nll_stderr", "test_bits_per_dim_bound", "fid_features",
                                 "is_samples", "steps", "stop_reason", "seconds")}
    row["config"] = m["config"]
    row["fid_of"] = "images floor(y)"  # since the digits-fid part; rows without the key scored y itself
    print("digits", row, flush=True)
    return {"digits": row}


def part_digits_fid(quick: bool) -> dict:
    """FID of the `digits` part's run (runs/diffusion-digits-s0, fitted here if missing), its default sampler.

    The model is a density of the dequantised pixels y = x + u; its images are floor(y)
    (`genlearn.data.quantize`), what `genlearn fit` reports since this part was added. The FID of y itself
    (what was reported before) is kept beside it: it adds half a level to every pixel.

    A 2000-sample FID against the 397 test digits is noisy: 2000 training images drawn with replacement score
    1.3 to 2.5. So the figure is the FID of 10000 samples (5 keys x 2000), beside the mean +- se of the five
    2000-sample FIDs, and the same two numbers for training images drawn with replacement (what a model
    that memorised the training set would score).
    """
    from genlearn.data import quantize
    from genlearn.diffusion import sample
    from genlearn.diffusion.run import build_diffusion, model_space, preprocess
    from genlearn.metrics import digits_fid

    run_dir = os.path.join("runs", f"diffusion-digits-s0{'-quick' if quick else ''}")
    if not os.path.exists(os.path.join(run_dir, "config.json")):
        _fit("digits", 0, quick)
    ds, run = load_dataset("digits"), runs.load(run_dir)
    cfg = run.config
    diff = build_diffusion(cfg["options"], cfg["dim"])
    _, to_data, _ = model_space({**preprocess(ds), "dim": cfg["dim"]})
    chunk, keys = (500, 2) if quick else (2000, 5)
    levels, test, train = ds.discrete_levels, np.asarray(ds.test, np.float64), np.asarray(ds.train, np.float64)
    method, nfe = cfg["options"]["sampler"], int(cfg["options"]["sample_nfe"])
    fn = jax.jit(lambda p, k: sample(diff, p, k, chunk, method=method, nfe=nfe))
    xs, secs = [], []
    for seed in range(keys):
        t0 = time.time()
        xs.append(np.asarray(to_data(fn(run.params, jax.random.PRNGKey(100 + seed))), np.float64))
        secs.append(time.time() - t0)
    images = [quantize(x, levels) for x in xs]
    per_key = [float(digits_fid(x, test)) for x in images]
    rng = np.random.default_rng(0)
    boot = [train[rng.integers(0, len(train), chunk)] for _ in range(keys)]
    boot_per_key = [float(digits_fid(x, test)) for x in boot]

    def se(v):
        return float(np.std(v, ddof=1) / np.sqrt(len(v)))

    out = {"run": run_dir, "sampler": method, "nfe": nfe, "chunk": chunk, "keys": keys,
           "fid": float(digits_fid(np.concatenate(images), test)),
           "fid_per_key": per_key, "fid_per_key_mean": float(np.mean(per_key)), "fid_per_key_se": se(per_key),
           "fid_of_y": float(digits_fid(np.clip(np.concatenate(xs), 0, levels - 1), test)),
           "seconds_per_chunk": float(np.mean(secs[1:] if len(secs) > 1 else secs)),
           "training_images_fid": float(digits_fid(train, test)),
           "training_bootstrap_fid": float(digits_fid(np.concatenate(boot), test)),
           "training_bootstrap_per_key_mean": float(np.mean(boot_per_key)),
           "training_bootstrap_per_key_se": se(boot_per_key), "config": cfg["options"]}
    print("digits fid", {k: v for k, v in out.items() if k != "config"}, flush=True)
    return {"digits_fid": out}


def part_digits_guidance(quick: bool) -> dict:
    """The class-conditional digits model (``--num-classes 10 --label-dropout 0.1``, the other options the
    digits defaults): FID of 3 x 2000 samples (uniform labels) at guidance w = 0 and 0.5.

    Trained by the family's trainer through the one driver, as `genlearn fit` does, without fit's
    probability-flow likelihood (half an hour on CPU; the conditional model's p(x) is a 10-term mixture).
    """
    import pickle

    from genlearn.data import quantize
    from genlearn.metrics import digits_fid

    ds, fam = load_dataset("digits"), registry.get("diffusion")
    chosen = {"num_classes": 10, "label_dropout": 0.1, **({"steps": 300} if quick else {})}
    opts = runs.resolve_options(fam, ds, chosen)
    pre = fam.preprocess(ds)
    model = fam.build(opts, ds.train.shape[1], pre)
    ctx = registry.Context(seed=0, progress=not quick, desc="digits-guidance")
    t0 = time.time()
    params, hist = runs._train(fam, model, ds, opts, jax.random.PRNGKey(0), ctx)
    train_seconds = time.time() - t0
    os.makedirs("runs", exist_ok=True)
    with open(os.path.join("runs", f"diffusion-digits-cond-s0{'-quick' if quick else ''}.pkl"), "wb") as fh:
        pickle.dump({"options": opts, "params": jax.device_get(params)}, fh)
    test = np.asarray(ds.test, np.float64)
    chunk, keys = (500, 2) if quick else (2000, 3)
    rows = []
    for w in (0.0, 0.5):
        m = fam.build({**opts, "guidance": w}, ds.train.shape[1], pre)
        fn = jax.jit(m.sample, static_argnums=2)
        t0 = time.time()
        images = [quantize(np.asarray(fn(params, jax.random.PRNGKey(100 + s), chunk), np.float64), ds.discrete_levels)
                  for s in range(keys)]
        per_key = [float(digits_fid(x, test)) for x in images]
        rows.append({"guidance": w, "fid": float(digits_fid(np.concatenate(images), test)), "fid_per_key": per_key,
                     "fid_per_key_mean": float(np.mean(per_key)),
                     "fid_per_key_se": float(np.std(per_key, ddof=1) / np.sqrt(len(per_key))),
                     "seconds": time.time() - t0})
        print("digits guidance", rows[-1], flush=True)
    return {"digits_guidance": {"chunk": chunk, "keys": keys, "train_seconds": train_seconds,
                                "best_val_loss": float(np.nanmin(np.asarray(hist["val_loss"], np.float64))),
                                "stop_reason": hist["stop_reason"], "rows": rows, "config": opts}}


def part_samplers(quick: bool, data: str = "ring8") -> dict:
    from genlearn.diffusion import sample
    from genlearn.diffusion.run import build_diffusion, model_space, preprocess
    from genlearn.data import quantize
    from genlearn.metrics import digits_fid, mode_coverage

    ds, params, cfg, _, _ = _fit(data, 0, quick)
    diff = build_diffusion(cfg["options"], cfg["dim"])
    _, to_data, _ = model_space({**preprocess(ds), "dim": cfg["dim"]})
    n = 500 if quick else (5000 if data != "digits" else 2000)
    nfes = (10, 50) if quick else NFES
    rows = []
    for method in SAMPLER_METHODS:
        for nfe, spacing in [(k, sp) for sp in SPACINGS for k in nfes] + ([(None, None)] if method == "ode" else []):
            if method == "predictor_corrector" and nfe is not None and nfe < 2:
                continue
            kw = {} if spacing is None else {"spacing": spacing}
            fn = jax.jit(lambda p, k, _m=method, _n=nfe, _kw=kw: sample(diff, p, k, n, method=_m, nfe=_n, **_kw))
            fn(params, jax.random.PRNGKey(0)).block_until_ready()  # compile
            t0 = time.time()
            xs = np.asarray(to_data(fn(params, jax.random.PRNGKey(1))), np.float64)
            seconds = time.time() - t0
            row = {"sampler": method, "nfe": nfe if nfe is not None else "adaptive", "spacing": spacing or "adaptive",
                   "seconds": seconds}
            if ds.centers is not None:
                mc = mode_coverage(xs, ds.centers, ds.std)
                row.update(modes=int(mc.modes_covered), high_quality=float(mc.high_quality_fraction))
            if ds.discrete_levels is not None:
                row["fid_features"] = float(digits_fid(quantize(xs, ds.discrete_levels), ds.test))  # images: floor(y)
            rows.append(row)
            print(row, flush=True)
    _plot_samplers(rows, os.path.join(RESULTS, "diffusion_samplers.png"),
                   "high_quality" if ds.centers is not None else "fid_features")
    return {"samplers": {"data": data, "num_samples": n, "rows": rows}}


def _plot_samplers(rows, path, metric):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = dict(zip(SAMPLER_METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for method in SAMPLER_METHODS:
        for spacing, style in (("uniform", "o-"), ("edm", "s--")):
            pts = [r for r in rows if r["sampler"] == method and r.get("spacing", "uniform") == spacing]
            if pts:
                kw = dict(color=colors[method], label=f"{method} ({spacing})")
                axes[0].plot([r["nfe"] for r in pts], [r[metric] for r in pts], style, **kw)
                axes[1].plot([r["seconds"] for r in pts], [r[metric] for r in pts], style, **kw)
    for ax, xlabel in zip(axes, ("NFE", "wall seconds")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def part_peer(quick: bool) -> dict:
    """diffrax's score-based-diffusion example (equinox) vs gl.diffusion, equal MLP, moons, same steps."""
    import equinox as eqx
    import optax

    import genlearn.diffusion as gd
    from genlearn.data.scaling import standardize_stats

    ds = load_dataset("moons", n_train=4000 if quick else 20000, n_test=500 if quick else 5000)
    mean, std = (np.asarray(a, np.float32) for a in standardize_stats(ds.train))
    data = jnp.asarray((ds.train - mean) / std)
    test = jnp.asarray((ds.test - mean) / std)
    steps, batch, width, depth, lr = (300 if quick else 6000), 256, 128, 3, 3e-3
    t1, beta_min, beta_max = 1.0, 0.1, 20.0

    # --- the peer: written after diffrax's examples/score_based_diffusion.ipynb (an equinox MLP on
    # concat(x, t), the VP SDE with int beta = t * (beta_min + t (beta_max - beta_min) / 2), weighting
    # 1 - exp(-int beta), the loss mean over the batch of weight * ||std * score + noise||^2)
    def int_beta(t):
        return beta_min * t + 0.5 * t**2 * (beta_max - beta_min)

    class PeerMLP(eqx.Module):
        mlp: eqx.nn.MLP

        def __init__(self, key):
            self.mlp = eqx.nn.MLP(3, 2, width, depth, activation=jax.nn.silu, key=key)

        def __call__(self, t, y):
            return self.mlp(jnp.concatenate([y, jnp.atleast_1d(t)]))

    def peer_single_loss(model, weight, int_beta, data, t, key):
        mean_ = data * jnp.exp(-0.5 * int_beta(t))
        var = jnp.maximum(1 - jnp.exp(-int_beta(t)), 1e-5)
        std_ = jnp.sqrt(var)
        noise = jax.random.normal(key, data.shape)
        y = mean_ + std_ * noise
        pred = model(t, y)
        return weight(t) * jnp.mean((pred + noise / std_) ** 2)

    def peer_batch_loss(model, weight, int_beta, data, t1, key):
        batch_size = data.shape[0]
        tkey, losskey = jax.random.split(key)
        losskey = jax.random.split(losskey, batch_size)
        t = jax.random.uniform(tkey, (batch_size,), minval=0, maxval=t1 / batch_size)  # low-discrepancy times
        t = t + (t1 / batch_size) * jnp.arange(batch_size)
        loss_fn = jax.vmap(peer_single_loss, in_axes=(None, None, None, 0, 0, 0))(model, weight, int_beta, data, t,
                                                                               losskey)
        return jnp.mean(loss_fn)

    opt = optax.adabelief(lr)  # the example's optimiser
    peer = PeerMLP(jax.random.PRNGKey(0))
    weight = lambda t: 1 - jnp.exp(-int_beta(t))  # noqa: E731

    @eqx.filter_jit
    def peer_steps(model, opt_state, key):
        def body(carry, k):
            model, opt_state = carry
            kb, kl = jax.random.split(k)
            idx = jax.random.choice(kb, data.shape[0], (batch,), replace=False)
            loss, grads = eqx.filter_value_and_grad(peer_batch_loss)(model, weight, int_beta, data[idx], t1, kl)
            updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
            return (eqx.apply_updates(model, updates), opt_state), loss

        params, static = eqx.partition(model, eqx.is_array)

        def body_p(carry, k):
            p, s = carry
            (m, s), loss = body((eqx.combine(p, static), s), k)
            return (eqx.filter(m, eqx.is_array), s), loss

        (params, opt_state), losses = jax.lax.scan(body_p, (params, opt_state), jax.random.split(key, steps))
        return eqx.combine(params, static), opt_state, losses

    opt_state = opt.init(eqx.filter(peer, eqx.is_inexact_array))
    jax.block_until_ready(peer_steps(peer, opt_state, jax.random.PRNGKey(9)))  # compile
    t0 = time.time()
    peer, _, _ = peer_steps(peer, opt_state, jax.random.PRNGKey(1))
    jax.block_until_ready(peer)
    peer_sps = steps / (time.time() - t0)

    # the peer's probability-flow NLL through the same exact-trace ODE solver (its score is model(t, y))
    def peer_eps(p, x, t, label=None):
        tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        sd = jnp.sqrt(jnp.maximum(1 - jnp.exp(-int_beta(tt)), 1e-5))[:, None]
        return -sd * jax.vmap(lambda ti, yi: p(ti, yi))(tt, x)

    sde = gd.vp(beta_min, beta_max, t_min=1e-5)
    # Both networks output the raw score from concat(x, t), which the example's weighting (~ s^2) barely
    # trains near t = 0: the ODE is solved down to eval_t_min = 1e-3 (s = 0.01) for both. (A check on 500
    # test points: medians 1.4029 / 1.4019 / 1.4141 at t_min 1e-5 / 1e-3 / 1e-2, so the choice is immaterial.)
    eval_t_min = 1e-3
    sde_eval = gd.vp(beta_min, beta_max, t_min=eval_t_min)
    z, ld = jax.jit(lambda v: gd.probability_flow(sde_eval, peer_eps, peer, v, rtol=1e-4, atol=1e-4))(test)
    log_std = float(np.sum(np.log(std)))
    peer_nlls = -np.asarray(sde_eval.prior_log_prob(z) + ld, np.float64)

    # --- ours with the same network: the example's MLP on concat(x, t) (genlearn.nn.MLP, silu) as a
    # ScoreNet read as the score (the peer's parameterisation), the peer's weighting being our sigma2
    # weighting (lambda = s^2 = 1 - exp(-int beta)) with stratified times; same optimiser, batch, steps
    from genlearn.diffusion.nets import ScoreNet
    from genlearn.nn import MLP
    from genlearn.train import gradient_trainer

    mlp = MLP(hidden=(width,) * depth, out=2, activation="silu")

    def apply(p, x, t, label=None):
        tt = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])[:, None]
        return mlp.apply(p, jnp.concatenate([x, tt], 1))

    net = ScoreNet(lambda k: mlp.init(k, jnp.zeros((3,))), apply, 2, 0, "mlp")
    model = gd.diffusion_model(sde, net, "score")
    # "score" reads the net's input scaled by c_in = 1/sqrt(m^2 + s^2), which is 1 for the VP SDE
    trainer = gradient_trainer(gd.dsm_loss(model, weighting="sigma2", time_sampling="stratified"),
                               optax.adabelief(lr))

    @jax.jit
    def ours_steps(state, key):  # the trainer's step under one scan, batches drawn as the peer draws them
        def body(st, k):
            kb, kl = jax.random.split(k)
            idx = jax.random.choice(kb, data.shape[0], (batch,), replace=False)
            st, info = trainer.step(st, data[idx], kl)
            return st, info.loss

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    state0 = trainer.init(jax.random.PRNGKey(0), model.init(jax.random.PRNGKey(0)))
    jax.block_until_ready(ours_steps(state0, jax.random.PRNGKey(9)))  # compile
    t0 = time.time()
    state, _ = ours_steps(state0, jax.random.PRNGKey(1))
    jax.block_until_ready(state)
    ours_sps = steps / (time.time() - t0)
    model_eval = gd.diffusion_model(sde_eval, net, "score")
    ours_nlls = -np.asarray(jax.jit(lambda p, v: gd.log_prob(model_eval, p, v, rtol=1e-4, atol=1e-4))(
        trainer.params(state), test), np.float64)
    # A raw-score MLP extrapolates linearly: on a few outlying test points the ODE's field grows with |x|
    # and the solve diverges (NLL > 1e3 nats). Both means are reported over the points where neither diverged,
    # with the count of the others and the medians over all points.
    ok = (ours_nlls < 1e3) & (peer_nlls < 1e3)
    peer_nll, ours_nll = float(peer_nlls[ok].mean()), float(ours_nlls[ok].mean())
    true_nll = float(-np.mean(ds.log_prob(np.asarray(ds.test, np.float64)))) - log_std
    row = {"steps": steps, "batch": batch, "mlp": [width] * depth, "eval_t_min": eval_t_min,
           "peer_steps_per_second": peer_sps, "ours_steps_per_second": ours_sps, "throughput_ratio": ours_sps / peer_sps,
           "peer_test_nll_standardized": peer_nll, "ours_test_nll_standardized": ours_nll,
           "true_test_nll_standardized": true_nll, "num_test": int(test.shape[0]),
           "peer_diverged": int(np.sum(peer_nlls >= 1e3)), "ours_diverged": int(np.sum(ours_nlls >= 1e3)),
           "peer_median_nll": float(np.median(peer_nlls)), "ours_median_nll": float(np.median(ours_nlls)),
           "likelihood_ratio_per_point": float(np.exp(peer_nll - ours_nll))}
    print("peer", row, flush=True)
    return {"peer": row}


def write(results: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "diffusion.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(results)
    with open(path, "w") as fh:
        json.dump(old, fh, indent=2)
    lines = ["# Diffusion (issue 15)", "", "Written by `benchmarks/diffusion_numbers.py`"
             + (" --quick (smoke sizes, not the figures)" if old.get("quick") else "") + ".", ""]
    for data in ("ring8", "grid25"):
        if data in old:
            r = old[data]
            lines += [f"## {data}: modes and high-quality samples ({len(r['seeds'])} seeds)", "",
                      "| seed | modes | high quality | NLL std | bound std | seconds |", "|---|---|---|---|---|---|"]
            for i, s in enumerate(r["seeds"]):
                lines.append(f"| {i} | {s['modes_covered']}/{s['num_modes']} | {100 * s['high_quality_fraction']:.1f} % "
                             f"| {s['test_nll_standardized']:.3f} | {s['test_nll_bound_standardized']:.3f} "
                             f"| {s['seconds']:.0f} |")
            lines.append("")
    if "moons" in old:
        r = old["moons"]
        lines += ["## moons: probability-flow NLL (standardised, nats)", "",
                  "| model | true density | excess | variational bound |", "|---|---|---|---|",
                  f"| {r['test_nll_standardized']:.4f} | {r['true_nll_standardized']:.4f} | {r['excess']:+.4f} "
                  f"| {r['test_nll_bound_standardized']:.4f} |", ""]
    if "digits" in old:
        r = old["digits"]
        fid_of = r.get("fid_of", "the dequantised y; see the next table for the images")
        lines += ["## digits", "", f"| bits/dim (PF ODE) | bits/dim bound | FID at fit time (of {fid_of}) | IS | steps |",
                  "|---|---|---|---|---|",
                  f"| {r['test_bits_per_dim']} | {r['test_bits_per_dim_bound']} | {r['fid_features']} "
                  f"| {r['is_samples']} | {r['steps']} |", ""]
    if "digits_fid" in old:
        r = old["digits_fid"]
        n = r["chunk"] * r["keys"]
        lines += [f"## digits FID of the `digits` run ({r['sampler']}, NFE {r['nfe']})", "",
                  "The images are floor(y) of the dequantised samples y (`genlearn.data.quantize`); the FID of y "
                  "itself, reported before, adds half a level to every pixel. A 2000-sample FID against the 397 "
                  "test digits is noisy, so the figure is that of all samples together, beside the mean +- se "
                  f"of {r['keys']} FIDs of {r['chunk']}; training images drawn with replacement are the "
                  f"reference (a model that memorised the training set). The 1400 training images themselves "
                  f"score {r['training_images_fid']:.3f}.", "",
                  f"| samples | FID of {n} | FID of {r['chunk']} (mean ± se) | FID of y ({n}) |", "|---|---|---|---|",
                  f"| diffusion | {r['fid']:.3f} | {r['fid_per_key_mean']:.3f} ± {r['fid_per_key_se']:.3f} "
                  f"| {r['fid_of_y']:.3f} |",
                  f"| training images, with replacement | {r['training_bootstrap_fid']:.3f} "
                  f"| {r['training_bootstrap_per_key_mean']:.3f} ± {r['training_bootstrap_per_key_se']:.3f} | |", ""]
    if "digits_guidance" in old:
        r = old["digits_guidance"]
        n = r["chunk"] * r["keys"]
        lines += ["## class-conditional digits (`--num-classes 10 --label-dropout 0.1`), classifier-free guidance", "",
                  f"Uniform labels, {r['config']['sampler']} sampling at NFE {r['config']['sample_nfe']}; FID of the "
                  f"images floor(y), {n} samples together and the mean ± se of {r['keys']} x {r['chunk']}. "
                  f"Best validation DSM loss {r['best_val_loss']:.3f}; training {r['train_seconds']:.0f} s.", "",
                  f"| guidance w | FID of {n} | FID of {r['chunk']} (mean ± se) |", "|---|---|---|"]
        lines += [f"| {x['guidance']} | {x['fid']:.3f} | {x['fid_per_key_mean']:.3f} ± {x['fid_per_key_se']:.3f} |"
                  for x in r["rows"]]
        lines.append("")
    if "samplers" in old:
        r = old["samplers"]
        metric = "high_quality" if any("high_quality" in x for x in r["rows"]) else "fid_features"
        lines += [f"## sampler cost vs quality ({r['data']}, {r['num_samples']} samples)", "",
                  "Time grids: `uniform` in t, or `edm` (Karras et al. 2022, rho = 7 in the noise-to-signal ratio, "
                  "dense at low noise; `--spacing edm`); the ODE row `adaptive` is dopri5 at rtol = atol = 1e-5.", "",
                  f"| sampler | NFE | time grid | {metric} | seconds |", "|---|---|---|---|---|"]
        lines += [f"| {x['sampler']} | {x['nfe']} | {x.get('spacing', 'uniform')} | {x[metric]:.4f} "
                  f"| {x['seconds']:.2f} |" for x in r["rows"]]
        lines += ["", "![samplers](diffusion_samplers.png)", ""]
    if "peer" in old:
        r = old["peer"]
        lines += ["## peer: diffrax's score-based-diffusion example (equinox), equal MLP, moons", "",
                  f"Both nets read as the score; the probability-flow NLL is solved down to t = {r.get('eval_t_min', 1e-5)} "
                  f"(true density {r['true_test_nll_standardized']:.4f}). The raw-score MLP's ODE diverges on a few "
                  f"outlying test points (NLL > 1e3: peer {r.get('peer_diverged')}, ours {r.get('ours_diverged')} of "
                  f"{r.get('num_test')}); the means are over the others, the medians over all "
                  f"(peer {r.get('peer_median_nll', float('nan')):.4f}, ours {r.get('ours_median_nll', float('nan')):.4f}).", "",
                  "| | steps/s | PF NLL std |", "|---|---|---|",
                  f"| diffrax example | {r['peer_steps_per_second']:.1f} | {r['peer_test_nll_standardized']:.4f} |",
                  f"| gl.diffusion | {r['ours_steps_per_second']:.1f} | {r['ours_test_nll_standardized']:.4f} |",
                  f"| ratio (ours / peer) | {r['throughput_ratio']:.2f} | likelihood ratio "
                  f"{r['likelihood_ratio_per_point']:.3f} per point |", ""]
    with open(os.path.join(RESULTS, "diffusion.md"), "w") as fh:
        fh.write("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=["modes", "likelihood", "digits", "samplers", "peer"])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (<= 3 minutes), not the figures")
    parser.add_argument("--samplers-data", default="ring8", choices=("ring8", "grid25", "digits"))
    args = parser.parse_args(argv)
    registry.get("diffusion")
    parts = {"modes": part_modes, "likelihood": part_likelihood, "digits": part_digits, "digits-fid": part_digits_fid,
             "digits-guidance": part_digits_guidance,
             "samplers": lambda q: part_samplers(q, args.samplers_data), "peer": part_peer}
    for name in args.parts:
        if name not in parts:
            parser.error(f"unknown part {name!r}; choose from {sorted(parts)}")
        results = parts[name](args.quick)
        results["quick"] = args.quick
        write(results)


if __name__ == "__main__":
    main()
