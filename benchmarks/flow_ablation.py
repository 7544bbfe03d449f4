"""Why genlearn's coupling flows learned less per step than flowjax's: one change at a time (issue 17).

    python benchmarks/flow_ablation.py                    # mixture8 and moons, 3 seeds, 4000 steps
    python benchmarks/flow_ablation.py --targets mixture8 --seeds 2

Each variant differs from its neighbour in one choice; every run goes through the same loop as
benchmarks/learning_curves.py (Adam 1e-3 with cosine decay, batch 256, same minibatches per seed),
and reports the held-out KL(p || q) in nats against the exact target density. Results:
benchmarks/results/flow_ablation.md.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import _targets  # noqa: E402
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
    import jax.numpy as jnp

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default="mixture8,moons")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--variants", default=None, help="'|'-separated substrings selecting variants (names hold commas)")
    p.add_argument("--out", default=os.path.join(learning_curves.RESULTS, "flow_ablation.md"))
    p.add_argument("--append", action="store_true", help="append this run's table to --out instead of rewriting it")
    a = p.parse_args(argv)
    chosen = {k: v for k, v in VARIANTS.items()
              if a.variants is None or any(s in k for s in a.variants.split("|"))}
    rows = []
    for tname in a.targets.split(","):
        target = _targets.make_target(tname)
        for name, factory in chosen.items():
            finals, quarters = [], []
            for seed in range(a.seeds):
                r = np.random.default_rng(seed)
                x_tr, x_te = target.sample(r, 20_000), target.sample(r, 5_000)
                mean, std = x_tr.mean(0), x_tr.std(0)
                const = float(np.sum(np.log(std))) + float(np.mean(target.log_prob(x_te)))
                flow = factory(target.dim)
                curve, _ = learning_curves.train(flow.log_prob, flow.init(jax.random.PRNGKey(seed)),
                                                 (x_tr - mean) / std, (x_te - mean) / std, steps=a.steps,
                                                 batch_size=256, lr=1e-3, seed=seed, evals=4)
                quarters.append(curve[0][2] + const)
                finals.append(curve[-1][2] + const)
            se = lambda v: np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")  # noqa: E731
            rows.append((tname, name, np.mean(quarters), se(quarters), np.mean(finals), se(finals)))
            print(f"{tname:9s} {name:45s} KL@1/4 {rows[-1][2]:.3f} ± {rows[-1][3]:.3f}   "
                  f"final {rows[-1][4]:.3f} ± {rows[-1][5]:.3f}", flush=True)
    head = [] if a.append else ["# Flow ablation: one change at a time", ""]
    lines = head + [f"`python benchmarks/flow_ablation.py --targets {a.targets} --seeds {a.seeds} --steps {a.steps}"
             f"{' --variants ' + a.variants if a.variants else ''}`: "
             "held-out KL(p || q) in nats (exact target densities, mean ± standard error over seeds), after a "
             "quarter of the steps and at the end; the loop of `benchmarks/learning_curves.py`.", "",
             "| target | variant | KL @ 1/4 | KL final |", "|---|---|---|---|"]
    lines += [f"| {t} | {n} | {q:.3f} ± {qs:.3f} | {f:.3f} ± {fs:.3f} |" for t, n, q, qs, f, fs in rows]
    with open(a.out, "a" if a.append else "w") as fh:
        fh.write(("\n" if a.append else "") + "\n".join(lines) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
