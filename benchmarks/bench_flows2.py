"""Flows II throughput (#3): genlearn vs flowjax (and distrax where it has the layer).

Equal architecture on R^DIM with a standard-normal base and 2xWIDTH ReLU conditioners:

* ``maf``: 5 MADE layers with affine transformers (flowjax
  ``masked_autoregressive_flow``, fast density). Headline: **sampling**
  (d sequential MADE passes per layer).
* ``iaf``: the same layers inverted (flowjax ``masked_autoregressive_flow(invert=False)``).
  Headline: **density** (d sequential passes per layer).
* ``spline``: 8 rational-quadratic coupling layers, 8 bins on [-3, 3] (flowjax
  ``coupling_flow`` with ``RationalQuadraticSpline(knots=7)``; distrax
  ``SplitCoupling`` + ``RationalQuadraticSpline``).
* ``glow`` (8 steps actnorm/LU/affine coupling) and ``cnf`` (one FFJORD block,
  exact trace, dopri5 at 1e-5): no peer ships the layer, genlearn only.

For every model: training examples/s (Adam steps of the mean NLL inside one
jitted ``lax.scan``), ``log_prob`` and ``sample`` examples/s of one batch; the
libraries of a model are timed interleaved, round after round, and the best
round is kept. The ``train_chunk`` and ``_timed`` helpers are those of
``benchmarks/bench_throughput.py`` (NICE/RealNVP/MAF against the same peers).
Results: ``benchmarks/results/flows2_throughput.{json,md}`` with ratios
genlearn / fastest peer (> 1: genlearn faster).

    python benchmarks/bench_flows2.py [--dim 16] [--batch 256] [--repeats 3] [--models maf iaf ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_throughput import _timed, train_chunk  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
WIDTH, DEPTH, BINS, BOUND = 128, 2, 8, 3.0
LAYERS = {"maf": 5, "iaf": 5, "spline": 8, "glow": 8, "cnf": 1}
HEADLINE = {"maf": "sample", "iaf": "log_prob"}


def genlearn_model(name, dim, key):
    from genlearn import flows

    hidden = (WIDTH,) * DEPTH
    # the peers' standard-normal base (genlearn's defaults: Student-t for MAF/IAF/Glow, a learned diagonal
    # Gaussian for the spline)
    if name == "cnf":
        flow = flows.cnf(dim, hidden=(64, 64), rtol=1e-5, atol=1e-5, base="normal")
    elif name == "spline":
        flow = flows.spline(dim, LAYERS[name], hidden, num_bins=BINS, bound=BOUND, base="normal")
    else:
        flow = {"maf": flows.maf, "iaf": flows.iaf, "glow": partial(flows.glow, data_init=False)}[name](
            dim, LAYERS[name], hidden, base="normal")
    return flow.init(key), flow.log_prob, flow.sample


def flowjax_model(name, dim, key):
    if name not in ("maf", "iaf", "spline"):
        return None
    import equinox as eqx
    import paramax
    from flowjax.bijections import Affine, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    common = dict(base_dist=Normal(jnp.zeros(dim)), flow_layers=LAYERS[name], nn_width=WIDTH, nn_depth=DEPTH,
                  nn_activation=jax.nn.relu)
    if name == "spline":  # flowjax counts inner knots: K bins = knots + 1
        model = coupling_flow(key, transformer=RationalQuadraticSpline(knots=BINS - 1, interval=BOUND), **common)
    else:
        model = masked_autoregressive_flow(key, transformer=Affine(), invert=name == "maf", **common)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def build(p):
        return paramax.unwrap(eqx.combine(p, static))

    return params, lambda p, x: build(p).log_prob(x), lambda p, k, n: build(p).sample(k, (n,))


def distrax_model(name, dim, key):
    if name != "spline":
        return None
    import distrax

    from genlearn.nn import MLP

    half = dim // 2
    per = 3 * BINS + 1  # distrax: K widths, K heights, K + 1 knot slopes (identity boundary slopes)
    net = MLP(hidden=(WIDTH,) * DEPTH, out=(dim - half) * per, zero_init_last=True)
    params = [net.init(k, jnp.zeros((1, half))) for k in jax.random.split(key, LAYERS[name])]

    def spline(h):
        return distrax.RationalQuadraticSpline(h.reshape(*h.shape[:-1], dim - half, per), range_min=-BOUND,
                                               range_max=BOUND, boundary_slopes="identity")

    def build(p):
        layers = [distrax.SplitCoupling(half, 1, partial(net.apply, q), spline, swap=bool(i % 2))
                  for i, q in enumerate(p)]
        base = distrax.MultivariateNormalDiag(jnp.zeros(dim), jnp.ones(dim))
        return distrax.Transformed(base, distrax.Chain(layers[::-1]))

    return (params, lambda p, x: build(p).log_prob(x),
            lambda p, k, n: build(p).sample(seed=k, sample_shape=n))


LIBRARIES = {"genlearn": genlearn_model, "flowjax": flowjax_model, "distrax": distrax_model}


def measure(name, dim, batch, steps, repeats):
    compiled = {}
    xs = jax.random.normal(jax.random.key(batch), (steps, batch, dim))
    for lib, make in LIBRARIES.items():
        made = make(name, dim, jax.random.key(0))
        if made is None:
            continue
        params, log_prob, sample = made
        opt = optax.adam(1e-4)
        state = opt.init(params)
        train = jax.jit(train_chunk(log_prob, opt)).lower(params, state, xs).compile()
        lp = jax.jit(log_prob).lower(params, xs[0]).compile()
        smp = jax.jit(sample, static_argnums=2).lower(params, jax.random.key(3), batch).compile()
        values = train(params, state, xs)[2]
        if not np.all(np.isfinite(np.asarray(values))):
            raise FloatingPointError(f"{lib} {name}: non-finite training loss")
        compiled[lib] = {"train": (train, (params, state, xs)), "log_prob": (lp, (params, xs[0])),
                         "sample": (smp, (params, jax.random.key(3)))}
        jax.block_until_ready((lp(params, xs[0]), smp(params, jax.random.key(3))))
    best = {lib: {k: float("inf") for k in ("train", "log_prob", "sample")} for lib in compiled}
    for _ in range(repeats):  # interleaved: load from other processes hits every library alike
        for what in ("train", "log_prob", "sample"):
            for lib, calls in compiled.items():
                fn, args = calls[what]
                best[lib][what] = min(best[lib][what], _timed(fn, args))
    rows = []
    for lib, t in best.items():
        rows.append({"model": name, "library": lib, "dim": dim, "batch": batch,
                     "train_examples_per_s": steps * batch / t["train"],
                     "log_prob_examples_per_s": batch / t["log_prob"],
                     "sample_examples_per_s": batch / t["sample"]})
    mine = next(r for r in rows if r["library"] == "genlearn")
    peers = [r for r in rows if r["library"] != "genlearn"]
    for what in ("train", "log_prob", "sample"):
        if peers:
            key = f"{what}_examples_per_s"
            mine[f"{what}_ratio"] = mine[key] / max(p[key] for p in peers)
    return rows


def markdown(result):
    lines = ["# Flows II throughput: genlearn vs flowjax and distrax", "",
             f"Device: {result['device']}; dim {result['dim']}, batch {result['batch']}, 2x{WIDTH} ReLU "
             f"conditioners (CNF: 2x64 tanh field); MAF/IAF 5 MADE layers, spline 8 RQ couplings with {BINS} bins, "
             f"Glow 8 steps. Training = {result['steps']} Adam steps in one jitted scan; best of "
             f"{result['repeats']} interleaved rounds. Ratio = genlearn / fastest peer (> 1: genlearn faster); "
             "bold = the issue's headline (MAF sampling, IAF density).", "",
             f"Note: {result['note']}", "",
             "| model | library | train ex/s | train ratio | log_prob ex/s | log_prob ratio | sample ex/s | "
             "sample ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        def ratio(what):
            v = r.get(f"{what}_ratio")
            if v is None:
                return "" if r["library"] != "genlearn" else "no peer"
            return f"**{v:.2f}x**" if HEADLINE.get(r["model"]) == what else f"{v:.2f}x"
        lines.append(f"| {r['model']} | {r['library']} | {r['train_examples_per_s']:,.0f} | {ratio('train')} | "
                     f"{r['log_prob_examples_per_s']:,.0f} | {ratio('log_prob')} | "
                     f"{r['sample_examples_per_s']:,.0f} | {ratio('sample')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--note", default="2-core CPU shared with other engineers' jobs while measuring: "
                    "the ratios (interleaved, one process) are the reliable part, not the absolute numbers")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models:
        for r in measure(name, args.dim, args.batch, args.steps, args.repeats):
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
            rows.append(r)
    import distrax
    import flowjax

    device = jax.devices()[0]
    result = {"device": f"{device.platform}:{getattr(device, 'device_kind', '')}", "cpu_count": os.cpu_count(),
              "versions": {"jax": jax.__version__, "flowjax": getattr(flowjax, "__version__", "?"),
                           "distrax": distrax.__version__},
              "dim": args.dim, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
              "note": args.note, "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "flows2_throughput.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    with open(os.path.join(RESULTS, "flows2_throughput.md"), "w") as fh:
        fh.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
