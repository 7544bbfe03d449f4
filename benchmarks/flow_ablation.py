"""Why genlearn's coupling flows learned less per step than flowjax's: one change at a time (issue 17).

    python benchmarks/flow_ablation.py                    # mixture8 and moons, 3 seeds, 4000 steps
    python benchmarks/flow_ablation.py --targets mixture8 --seeds 2
    python benchmarks/flow_ablation.py --targets moons,digits --variants "maf: direct" --evals 8 --append

Each variant differs from its neighbour in one choice; every run goes through the same loop as
benchmarks/learning_curves.py (Adam 1e-3 with cosine decay, batch 256, same minibatches per seed),
and reports the held-out KL(p || q) in nats against the exact target density (digits: held-out NLL in bits per
dim, as learning_curves.py). The variants of ``SEEDED`` (stop 39 on) are built from each run's seed, as
learning_curves.py builds genlearn's rows; at learning_curves.py's points (``--steps 4000 --evals 8``) the table
also counts the points where a variant's mean is above flowjax's committed curve
(benchmarks/results/learning_curves.json, same seeds). Results: benchmarks/results/flow_ablation.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import learning_curves  # noqa: E402
from genlearn import core, flows  # noqa: E402
from genlearn.flows.autoregressive import layer_orders  # noqa: E402


def _coupling_flow(d, transformer, hidden_init, mask="half", seed=0, final_scale=False, base="normal",
                   last_init_scale=0.0):
    from genlearn.flows._common import alternating_masks
    layers = [flows.coupling(d, transformer, mask=m, hidden=(128, 128), hidden_init=hidden_init,
                             last_init_scale=last_init_scale)
              for m in alternating_masks(d, 8, mask, seed)]
    if final_scale:
        layers.append(core.scale(d))
    return core.make_flow(core.make_base(base, d), core.chain(*layers))


def _maf(d, scale, hidden_init):
    layers = [flows.masked_autoregressive(d, flows.affine(scale), hidden=(128, 128), order=o, hidden_init=hidden_init)
              for o in layer_orders(d, 5, "alternate", 0)]
    return core.make_flow(core.standard_normal(d), core.chain(*layers))


def _normalizing(t):
    """Transformer ``t`` written in the normalizing direction: the density is evaluated through its forward map
    (flowjax's flows are inverted this way by default, so their spline is evaluated directly on the data side)."""
    return flows.Transformer(t.params_per_dim, t.inverse, t.forward)


def _flowjax_tails(t, bound):
    """flowjax's RQ spline from ``t`` (``tails="linear"``: learned boundary derivatives), in the normalizing
    direction, with identity outside [-bound, bound] (so not C^1 at the box): each coordinate's map is ``t``'s
    forward inside the box and x itself outside, as ``flowjax.bijections.RationalQuadraticSpline`` does."""

    def per_coordinate(fn):
        def apply(h, v):
            out, ld = jax.vmap(lambda hi, vi: fn(hi[None], vi[None]))(h, jnp.clip(v, -bound, bound))
            outside = jnp.abs(v) >= bound
            return jnp.where(outside, v, out[:, 0]), jnp.sum(jnp.where(outside, 0.0, ld))
        return apply

    return flows.Transformer(t.params_per_dim, per_coordinate(t.inverse), per_coordinate(t.forward))


class _Peer:
    """flowjax's spline coupling flow of learning_curves.py with another interval, as init/log_prob."""

    def __init__(self, d, interval):
        self.d, self.interval = d, interval

    def init(self, key):
        params, self._log_prob = learning_curves.flowjax_model("spline", self.d, key, self.interval)
        return params

    def log_prob(self, params, x):
        return self._log_prob(params, x)


# The spline and NICE variants below were measured when the spline's defaults were linear tails over N(0, I) and
# NICE's base was N(0, I) (stops 32-37; "(now)" in their names means then): they pin those choices so that they
# still build the models flow_ablation.md reports. Since stop 38 both default to a learned diagonal Gaussian base
# and the spline to identity tails (the "learned base" variants).
_SPLINE_THEN = dict(tails="linear", base="normal")
_NICE_THEN = dict(base="normal")

# name -> factory(d)
VARIANTS = {
    "realnvp: before (exp scale, lecun init)": lambda d: _coupling_flow(d, flows.affine("exp"), "lecun"),
    "realnvp: softplus scale only": lambda d: _coupling_flow(d, flows.affine("softplus"), "lecun"),
    "realnvp: uniform init only": lambda d: _coupling_flow(d, flows.affine("exp"), "uniform"),
    "realnvp: now (softplus + uniform)": lambda d: _coupling_flow(d, flows.affine("softplus"), "uniform"),
    "realnvp: now + random masks": lambda d: _coupling_flow(d, flows.affine("softplus"), "uniform", mask="random"),
    "nice: logistic base (before)": lambda d: _coupling_flow(d, flows.shift(), "uniform", final_scale=True,
                                                             base="logistic"),
    "nice: normal base (now)": lambda d: _coupling_flow(d, flows.shift(), "uniform", final_scale=True),
    "nice: scale at the data side (now)": lambda d: flows.nice(d, 8, (128, 128), scale_at="data",
                                                                        **_NICE_THEN),
    "nice: scale at the base side (the paper's top layer, flowjax's)": lambda d: flows.nice(d, 8, (128, 128),
                                                                                               **_NICE_THEN),
    "nice: learned base (now)": lambda d: flows.nice(d, 8, (128, 128)),
    "maf: before (exp scale, lecun init)": lambda d: _maf(d, "exp", "lecun"),
    "maf: softplus scale only": lambda d: _maf(d, "softplus", "lecun"),
    "maf: uniform init only": lambda d: _maf(d, "exp", "uniform"),
    "maf: now (softplus + uniform)": lambda d: _maf(d, "softplus", "uniform"),
    # the spline's tails and interval (flowjax: identity tails, interval 4)
    "spline: linear tails, bound 4 (now)": lambda d: flows.spline(d, 8, (128, 128), num_bins=8, bound=4.0,
                                                                  **_SPLINE_THEN),
    "spline: identity tails, bound 4 (flowjax's)": lambda d: flows.spline(d, 8, (128, 128), num_bins=8, bound=4.0,
                                                                          tails="identity", base="normal"),
    "spline: learned base and identity tails (now)": lambda d: flows.spline(d, 8, (128, 128), num_bins=8, bound=4.0),
    "spline: linear tails, bound 3": lambda d: flows.spline(d, 8, (128, 128), num_bins=8, bound=3.0, **_SPLINE_THEN),
    "spline: linear tails, bound 6": lambda d: flows.spline(d, 8, (128, 128), num_bins=8, bound=6.0, **_SPLINE_THEN),
    # flowjax's knots=8 are inner knots: 9 bins
    "spline: 9 bins": lambda d: flows.spline(d, 8, (128, 128), num_bins=9, bound=4.0, **_SPLINE_THEN),
    "spline: 9 bins, bound 6": lambda d: flows.spline(d, 8, (128, 128), num_bins=9, bound=6.0, **_SPLINE_THEN),
    "spline: 9 bins, random last layer (flowjax's init)": lambda d: _coupling_flow(
        d, flows.rational_quadratic(9, 4.0, tails="linear"), "uniform", mask="random", last_init_scale=0.05),
    "spline: normalizing direction, linear tails": lambda d: _coupling_flow(
        d, _normalizing(flows.rational_quadratic(8, 4.0, tails="linear")), "uniform", mask="random"),
    "spline: normalizing direction, identity tails": lambda d: _coupling_flow(
        d, _normalizing(flows.rational_quadratic(8, 4.0, tails="identity")), "uniform", mask="random"),
    "spline: normalizing direction, learned boundary slopes, identity tails (flowjax's)": lambda d: _coupling_flow(
        d, _flowjax_tails(flows.rational_quadratic(8, 4.0, tails="linear"), 4.0), "uniform", mask="random"),
    "spline (flowjax): interval 4": lambda d: _Peer(d, 4.0),
    "spline (flowjax): interval 6": lambda d: _Peer(d, 6.0),
}


def _reinit_last(flow, std, seed):
    """``flow`` whose MADE output kernels start from N(0, std^2) instead of zero (flowjax's conditioners start
    from a random last layer)."""
    def init(key):
        params = flow.init(key)
        keys = iter(jax.random.split(jax.random.PRNGKey(seed + 99), 1024))

        def bump(path, x):
            name = "/".join(str(getattr(q, "key", q)) for q in path)
            return x + std * jax.random.normal(next(keys), x.shape) if "masked_out" in name and \
                name.endswith("kernel") else x
        return jax.tree_util.tree_map_with_path(bump, params)

    return flow._replace(init=init)


def _other_draws(flow):
    """The same model from other initial parameters: ``init(key)`` draws from ``fold_in(key, 1)`` (the masks and
    orders, from the seed, are unchanged). How far this moves a curve is the init noise of one seed."""
    return flow._replace(init=lambda key: flow.init(jax.random.fold_in(key, 1)))


def _scale_map(kind):
    """(s(raw), log s(raw)) with s = 1 at raw = 0: "exp" (genlearn's) or "softplus" (flowjax's,
    s = softplus(raw + c))."""
    if kind == "exp":
        return (lambda raw: jax.numpy.exp(raw)), (lambda raw: raw)
    c = float(np.log(np.expm1(1.0)))
    return (lambda raw: jax.nn.softplus(raw + c)), (lambda raw: jax.numpy.log(jax.nn.softplus(raw + c)))


def _gaussian_base(d, learn=("mean", "scale"), scale="exp"):
    """N(mean, diag s^2) learning its mean, its scale (s from ``_scale_map(scale)``) or both; the rest fixed at
    N(0, I)."""

    s_of, log_s_of = _scale_map(scale)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def init(key):
        return {name: jnp.zeros((d,)) for name in learn}

    def log_prob(params, z):
        mean, raw = params.get("mean", 0.0), params.get("scale", jnp.zeros((d,)))
        return -0.5 * jnp.sum(((z - mean) / s_of(raw)) ** 2) - jnp.sum(log_s_of(raw)) - d * half_log_2pi

    def sample(params, key, n):
        return params.get("mean", 0.0) + s_of(params.get("scale", jnp.zeros((d,)))) * jax.random.normal(key, (n, d))

    return core.Distribution(init, log_prob, sample, d)


def _softplus_scale(d):
    """NICE's diagonal scale as flowjax's ``Affine`` parameterises it: s = softplus(raw + c), s = 1 at raw = 0."""
    from genlearn.core.bijectors import make_bijector

    s_of, log_s_of = _scale_map("softplus")

    def init(key):
        return {"raw": jnp.zeros((d,))}

    def apply(params, z):
        return z * s_of(params["raw"]), jnp.sum(log_s_of(params["raw"]))

    def inverse(params, x):
        return x / s_of(params["raw"]), -jnp.sum(log_s_of(params["raw"]))

    return make_bijector(init, apply, inverse, d)


def _nice_flowjax_scales(d, seed):
    """NICE as flows.nice(d, 8, (128, 128), seed=seed) builds it (its masks and couplings), but with softplus scales
    in the base and in the diagonal layer (flowjax's ``Normal`` and ``Affine``) instead of exp ones."""
    from genlearn.flows._common import alternating_masks, default_mask

    layers = [flows.coupling(d, flows.shift(), mask=m, hidden=(128, 128), last_init_scale=1e-2)
              for m in alternating_masks(d, 8, default_mask(d, None), seed)]
    return core.make_flow(_gaussian_base(d, scale="softplus"), core.chain(_softplus_scale(d), *layers))


def _harmonic_affine(max_log_scale=4.0, min_scale=1e-2):
    """`flows.affine`'s softplus scale s with a harmonic bound, 1 / s_b = 1 / s + e^-B (smooth, below e^B, s_b = 1
    at raw = 0 through the offset): no transcendental beyond the softplus and the log-det's log, where the
    default's tanh bound (log s -> B tanh(log s / B)) adds a log, a tanh and an exp per coordinate."""
    floor, eb = float(min_scale), float(math.exp(-max_log_scale))
    offset = float(np.log(np.expm1(1.0 / (1.0 - eb) - floor)))

    def inv_scale(raw):
        return 1.0 / (jax.nn.softplus(raw + offset) + floor) + eb

    def forward(h, z):
        r = inv_scale(h[:, 0])
        return (z - h[:, 1]) * r, jnp.sum(jnp.log(r))

    def inverse(h, x):
        r = inv_scale(h[:, 0])
        return x / r + h[:, 1], -jnp.sum(jnp.log(r))

    return flows.Transformer(2, forward, inverse)


# name -> factory(d, seed): variants measured since stop 39, built from each run's seed as learning_curves.py builds
# genlearn's rows (masks and orders drawn from it).
SEEDED = {
    "maf: now (seeded)": lambda d, s: flows.maf(d, 5, (128, 128), seed=s),
    "maf: now, other init draws": lambda d, s: _other_draws(flows.maf(d, 5, (128, 128), seed=s)),
    "spline: now, other init draws": lambda d, s: _other_draws(flows.spline(d, 8, (128, 128), num_bins=8, bound=4.0,
                                                                           seed=s)),
    "maf: direct connections": lambda d, s: flows.maf(d, 5, (128, 128), seed=s, direct=True),
    "maf: harmonic scale bound": lambda d, s: flows.maf(d, 5, (128, 128), seed=s, transformer=_harmonic_affine()),
    "maf: last layer N(0, 0.01^2)": lambda d, s: _reinit_last(flows.maf(d, 5, (128, 128), seed=s), 1e-2, s),
    "maf: last layer N(0, 1/fan_in) (flowjax's scale)": lambda d, s: _reinit_last(
        flows.maf(d, 5, (128, 128), seed=s), 128 ** -0.5, s),
    "realnvp: residual conditioners": lambda d, s: flows.realnvp(d, 8, (128, 128), seed=s, residual=True),
    "spline: residual conditioners": lambda d, s: flows.spline(d, 8, (128, 128), num_bins=8, bound=4.0, seed=s,
                                                               residual=True),
    "nice: now (seeded)": lambda d, s: flows.nice(d, 8, (128, 128), seed=s),
    "nice: base learns its mean only": lambda d, s: flows.nice(d, 8, (128, 128), seed=s,
                                                               base=_gaussian_base(d, ("mean",))),
    "nice: base learns its scale only": lambda d, s: flows.nice(d, 8, (128, 128), seed=s,
                                                                base=_gaussian_base(d, ("scale",))),
    "nice: softplus scales (flowjax's)": _nice_flowjax_scales,
}


def _points_above(tname, name, seeds, curves, steps):
    """Points where the variant's mean curve is above flowjax's committed one (same seeds, same evaluation
    steps), or None where there is none to compare with."""
    family = name.split(":")[0].split(" ")[0]
    path = os.path.join(learning_curves.RESULTS, "learning_curves.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        ref = {r["seed"]: r["kl"] for r in json.load(fh)
               if (r["target"], r["family"], r["library"]) == (tname, family, "flowjax") and r["steps"] == steps}
    if not all(s in ref for s in seeds):
        return None
    return int(np.sum(np.mean(curves, 0) > np.mean([ref[s] for s in seeds], 0)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="mixture8,moons")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--variants", default=None, help="'|'-separated substrings selecting variants (names hold commas)")
    p.add_argument("--out", default=os.path.join(learning_curves.RESULTS, "flow_ablation.md"))
    p.add_argument("--append", action="store_true", help="append this run's table to --out instead of rewriting it")
    p.add_argument("--evals", type=int, default=4, help="evaluation points (8: learning_curves.py's, compared)")
    a = p.parse_args(argv)
    if a.evals < 2:
        p.error("--evals must be >= 2")
    every = {**{k: (lambda f: lambda d, s: f(d))(v) for k, v in VARIANTS.items()}, **SEEDED}
    chosen = {k: v for k, v in every.items() if a.variants is None or any(s in k for s in a.variants.split("|"))}
    seeds = list(range(a.seeds))
    rows = []
    for tname in a.targets.split(","):
        for name, factory in chosen.items():
            curves, steps = [], None
            for seed in seeds:
                z_tr, z_te, d, to_metric = learning_curves.draws(tname, seed, 20_000, 5_000)
                flow = factory(d, seed)
                curve, _ = learning_curves.train(flow.log_prob, flow.init(jax.random.PRNGKey(seed)), z_tr, z_te,
                                                 steps=a.steps, batch_size=256, lr=1e-3, seed=seed, evals=a.evals)
                curves.append([to_metric(c[2]) for c in curve])
                steps = [int(c[0]) for c in curve]
            curves = np.asarray(curves)
            se = curves.std(0, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else np.full(a.evals, np.nan)
            cols = [a.evals // 4 - 1 if a.evals >= 4 else 0, a.evals // 2 - 1, a.evals - 1]
            above = _points_above(tname, name, seeds, curves, steps)
            rows.append((tname, name, [(curves.mean(0)[i], se[i]) for i in cols], above))
            print(f"{tname:9s} {name:45s} " + "  ".join(f"{m:.3f} ± {e:.3f}" for m, e in rows[-1][2])
                  + ("" if above is None else f"  above flowjax at {above}/{a.evals}"), flush=True)
    compared = any(r[3] is not None for r in rows)
    head = [] if a.append else ["# Flow ablation: one change at a time", ""]
    lines = head + [f"`python benchmarks/flow_ablation.py --targets {a.targets} --seeds {a.seeds} --steps {a.steps}"
             f"{' --variants ' + chr(34) + a.variants + chr(34) if a.variants else ''}"
             f"{' --evals ' + str(a.evals) if a.evals != 4 else ''}`: "
             "held-out KL(p || q) in nats (exact target densities; digits: NLL in bits per dim), mean ± standard "
             "error over seeds, after a quarter and half of the steps and at the end; the loop of "
             "`benchmarks/learning_curves.py`." + (" Last column: the points where the mean is above flowjax's "
                                                   "committed curve (learning_curves.json, same seeds)." if compared
                                                   else ""), "",
             "| target | variant | KL @ 1/4 | KL @ 1/2 | KL final |" + (" above flowjax |" if compared else ""),
             "|---|---|---|---|---|" + ("---|" if compared else "")]
    lines += [f"| {t} | {n} | " + " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in c) + " |"
              + ("" if not compared else f" {'–' if ab is None else f'{ab}/{a.evals}'} |") for t, n, c, ab in rows]
    with open(a.out, "a" if a.append else "w") as fh:
        fh.write(("\n" if a.append else "") + "\n".join(lines) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
