"""Flow throughput: genlearn vs flowjax and distrax at identical architecture.

Every model is on R^64 (the digits dimension) with a standard-normal base and
2x128 ReLU MLP conditioners:

* RealNVP: 8 affine couplings, halves alternating (flowjax ``coupling_flow``
  with ``Affine``; distrax ``SplitCoupling`` + ``ScalarAffine``).
* NICE: 8 additive couplings (flowjax ``coupling_flow`` with ``Loc``; distrax
  ``SplitCoupling`` + shift-only ``ScalarAffine``). genlearn's NICE adds its
  diagonal scale layer (64 parameters), flowjax adds random permutations.
* MAF: 5 MADE layers (flowjax ``masked_autoregressive_flow``; distrax has no
  MADE, so no distrax column).
* spline: 8 rational-quadratic spline couplings, 8 bins on [-3, 3] with
  identity tails (flowjax ``RationalQuadraticSpline``, distrax
  ``RationalQuadraticSpline``; their conditioners output 3K+1 numbers per
  coordinate, genlearn's 3K-1 as its boundary derivatives are fixed to 1).

The coupling layouts differ between the peers: flowjax permutes the coordinates at
random between layers, distrax alternates contiguous halves. genlearn is timed in both
layouts: ``genlearn`` at its default (a random half per layer above two dimensions,
flowjax's layout) and ``genlearn-half`` (``mask="half"``, distrax's; scanned pairs of
couplings, `genlearn.core.repeat`). Both use the peers' standard-normal base (genlearn's
default bases are a Student-t or a learned diagonal Gaussian).

Other genlearn flows (Glow, IAF, CNF) have no same-architecture peer in these
libraries and are not timed here.

For each (model, library, batch) the script measures, in one process, after a
warm-up call:

* training: ``S`` Adam steps of the mean NLL inside one jitted `lax.scan`
  (the way `genlearn.train.fit` runs them), examples / s;
* ``log_prob`` and ``sample`` of one batch, examples / s;
* compile time of the training chunk (lower + compile);
* the fraction of the machine's jitted float32 matmul roofline (a square
  matmul measured in the same run) reached by training: the architecture's
  dense-layer FLOPs (3x a forward pass per example, the same count for every
  library) times examples / s, over the matmul FLOP/s.

The libraries of one (model, batch) are timed interleaved, round after round,
so that load from other processes hits them alike; the table gives the best
round (``--repeats`` rounds) and the JSON also the medians. The results go to
``benchmarks/results/throughput.{json,md}`` (plus ``throughput_<device>`` when
run on a GPU), with ratios genlearn / fastest peer.

    nice -n 0 python benchmarks/bench_throughput.py                 # all
    python benchmarks/bench_throughput.py --previous run1.json run2.json  # + median over runs
    python benchmarks/bench_throughput.py --batches 256 --models realnvp --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DIM, WIDTH, DEPTH = 64, 128, 2
LAYERS = {"nice": 8, "realnvp": 8, "maf": 5, "spline": 8}
KNOTS, BOUND = 8, 3.0  # rational-quadratic splines: bins on [-BOUND, BOUND]


# ---------------------------------------------------------------------------
# The three libraries, each as (params, log_prob(params, x), sample(params, key, n)).
# ---------------------------------------------------------------------------


def genlearn_model(name, key, mask=None):
    """genlearn's flow with the peers' standard-normal base; ``mask=None``: its default layout at d = 64 (a
    random half per layer, as flowjax permutes between layers), ``"half"``: distrax's contiguous halves."""
    from genlearn import flows

    hidden = (WIDTH,) * DEPTH
    if name == "nice":
        flow = flows.nice(DIM, LAYERS[name], hidden, base="normal", mask=mask)
    elif name == "realnvp":
        flow = flows.realnvp(DIM, LAYERS[name], hidden, base="normal", mask=mask)
    elif name == "spline":
        flow = flows.spline(DIM, LAYERS[name], hidden, num_bins=KNOTS, bound=BOUND, base="normal", mask=mask)
    elif mask is None:
        flow = flows.maf(DIM, LAYERS[name], hidden, base="normal")
    else:
        return None  # a MADE has no coupling halves
    return flow.init(key), flow.log_prob, flow.sample


def flowjax_model(name, key):
    import equinox as eqx
    import paramax
    from flowjax.bijections import Affine, Loc, RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    base = Normal(jnp.zeros(DIM))
    common = dict(base_dist=base, flow_layers=LAYERS[name], nn_width=WIDTH, nn_depth=DEPTH,
                  nn_activation=jax.nn.relu)
    if name == "maf":
        model = masked_autoregressive_flow(key, transformer=Affine(), **common)
    else:
        transformer = {"nice": Loc(0.0), "realnvp": Affine(),
                       "spline": RationalQuadraticSpline(knots=KNOTS, interval=BOUND)}[name]
        model = coupling_flow(key, transformer=transformer, **common)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def build(p):
        return paramax.unwrap(eqx.combine(p, static))

    def log_prob(p, x):
        return build(p).log_prob(x)

    def sample(p, k, n):
        return build(p).sample(k, (n,))

    return params, log_prob, sample


def distrax_model(name, key):
    if name == "maf":
        return None
    import distrax
    from genlearn.nn import MLP

    half = DIM // 2
    per = {"nice": 1, "realnvp": 2, "spline": 3 * KNOTS + 1}[name]
    net = MLP(hidden=(WIDTH,) * DEPTH, out=half * per, zero_init_last=True)
    keys = jax.random.split(key, LAYERS[name])
    params = [net.init(k, jnp.zeros((1, half))) for k in keys]

    def bijector(h):
        h = h.reshape(*h.shape[:-1], half, per)
        if name == "nice":
            return distrax.ScalarAffine(shift=h[..., 0])
        if name == "spline":
            return distrax.RationalQuadraticSpline(h, range_min=-BOUND, range_max=BOUND,
                                                   boundary_slopes="identity")
        return distrax.ScalarAffine(shift=h[..., 1], log_scale=5.0 * jnp.tanh(h[..., 0] / 5.0))

    def build(p):
        layers = [
            distrax.SplitCoupling(half, 1, partial(net.apply, q), bijector, swap=bool(i % 2))
            for i, q in enumerate(p)
        ]
        base = distrax.MultivariateNormalDiag(jnp.zeros(DIM), jnp.ones(DIM))
        return distrax.Transformed(base, distrax.Chain(layers[::-1]))  # distrax applies last first

    def log_prob(p, x):
        return build(p).log_prob(x)

    def sample(p, k, n):
        return build(p).sample(seed=k, sample_shape=n)

    return params, log_prob, sample


LIBRARIES = {"genlearn": genlearn_model, "genlearn-half": partial(genlearn_model, mask="half"),
             "flowjax": flowjax_model, "distrax": distrax_model}


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------


def _timed(fn, args):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def matmul_roofline(repeats, n):
    """Jitted float32 square matmul FLOP/s on the default device (best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    return 2 * n**3 / min(_timed(f, (a, b)) for _ in range(repeats))


def model_flops_per_example(model):
    """Matmul FLOPs of one log_prob pass (2 * in * out per dense layer), the same
    architecture for every library; a training step counts 3x (forward + backward)."""
    if model == "maf":
        widths = [DIM, *(WIDTH,) * DEPTH, 2 * DIM]  # MADE: masked, dense cost
    else:  # genlearn's spline has 3K - 1 parameters per coordinate, distrax 3K + 1
        per = {"nice": 1, "realnvp": 2, "spline": 3 * KNOTS - 1}[model]
        widths = [DIM // 2, *(WIDTH,) * DEPTH, per * DIM // 2]
    dense = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return LAYERS[model] * dense


def train_chunk(log_prob, optimizer):
    def loss(p, x):
        return -jnp.mean(log_prob(p, x))

    def chunk(params, opt_state, xs):
        def body(carry, x):
            p, s = carry
            value, grads = jax.value_and_grad(loss)(p, x)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), value

        (params, opt_state), values = jax.lax.scan(body, (params, opt_state), xs)
        return params, opt_state, values

    return chunk


def prepare(model, library, batch, steps, data_key):
    """Compile the three jitted programs of one (model, library, batch); None if
    the library has no such model."""
    made = LIBRARIES[library](model, jax.random.key(0))
    if made is None:
        return None
    params, log_prob, sample = made
    optimizer = optax.adam(1e-4)
    opt_state = optimizer.init(params)
    xs = jax.random.normal(data_key, (steps, batch, DIM), jnp.float32)
    t0 = time.perf_counter()
    train = jax.jit(train_chunk(log_prob, optimizer)).lower(params, opt_state, xs).compile()
    compile_s = time.perf_counter() - t0
    _, _, values = train(params, opt_state, xs)  # warm-up
    if not np.all(np.isfinite(np.asarray(values))):
        raise FloatingPointError(f"{library} {model}: non-finite training loss")
    lp = jax.jit(log_prob).lower(params, xs[0]).compile()
    smp = jax.jit(sample, static_argnums=2).lower(params, jax.random.key(3), batch).compile()
    jax.block_until_ready((lp(params, xs[0]), smp(params, jax.random.key(3))))
    return {
        "calls": {"train": (train, (params, opt_state, xs)), "log_prob": (lp, (params, xs[0])),
                  "sample": (smp, (params, jax.random.key(3)))},
        "compile_s": compile_s,
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
    }


def measure_group(model, batch, libraries, steps, repeats):
    """Time every library of one (model, batch) *interleaved*, round after round,
    so a burst of load from other processes hits them alike; per library the
    best and the median round are kept."""
    prepared = {lib: prepare(model, lib, batch, steps, jax.random.key(batch)) for lib in libraries}
    prepared = {lib: p for lib, p in prepared.items() if p is not None}
    times = {lib: {name: [] for name in ("train", "log_prob", "sample")} for lib in prepared}
    for _ in range(repeats):
        for name in ("train", "log_prob", "sample"):
            for lib, p in prepared.items():
                fn, args = p["calls"][name]
                times[lib][name].append(_timed(fn, args))
    rows = []
    for lib, p in prepared.items():
        t = times[lib]
        per = {"train": steps * batch, "log_prob": batch, "sample": batch}
        row = {"model": model, "library": lib, "batch": batch, "compile_s": p["compile_s"],
               "num_params": p["num_params"]}
        for name, count in per.items():
            row[f"{name}_examples_per_s"] = count / min(t[name])
            row[f"{name}_examples_per_s_median"] = count / statistics.median(t[name])
        row["train_step_ms_all"] = [1e3 * v / steps for v in t["train"]]
        row["train_flops_per_s"] = 3 * model_flops_per_example(model) * row["train_examples_per_s"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def add_ratios(rows, roofline):
    by_key = {}
    for r in rows:
        by_key.setdefault((r["model"], r["batch"]), []).append(r)
    for group in by_key.values():
        ours = [r for r in group if r["library"].startswith("genlearn")]
        mine = next((r for r in ours if r["library"] == "genlearn"), None)
        peers = [r for r in group if not r["library"].startswith("genlearn")]
        for r in group:
            r["roofline_fraction"] = r["train_flops_per_s"] / roofline
        if not ours or not peers:
            continue
        for metric in ("train_examples_per_s", "log_prob_examples_per_s", "sample_examples_per_s"):
            best = max(p[metric] for p in peers)
            name = metric.replace("_examples_per_s", "")
            for r in ours:
                r[f"{name}_ratio_vs_fastest_peer"] = r[metric] / best
            if mine is not None:
                for p in peers:
                    p[f"genlearn_over_this_{name}"] = mine[metric] / p[metric]


def merge_runs(rows, previous):
    """Add, per genlearn row, the median of each ratio over this run and the
    ``previous`` result files (earlier runs of this script)."""
    earlier = []
    for path in previous:
        with open(path) as f:
            earlier.append({(r["model"], r["batch"], r["library"]): r for r in json.load(f)["rows"]})
    for r in rows:
        if r["library"] != "genlearn":
            continue
        key = (r["model"], r["batch"], r["library"])
        for metric in ("train", "log_prob", "sample"):
            name = f"{metric}_ratio_vs_fastest_peer"
            values = [run[key][name] for run in earlier if name in run.get(key, {})]
            if name in r:
                values.append(r[name])
                r[f"{metric}_ratio_runs"] = values
                r[f"{metric}_ratio_median_over_runs"] = statistics.median(values)


def markdown(result):
    lines = [
        "# Flow throughput: genlearn vs flowjax and distrax",
        "",
        f"Device: {result['device']}; jax {result['versions']['jax']}, flowjax "
        f"{result['versions']['flowjax']}, distrax {result['versions']['distrax']}. "
        f"Measured matmul roofline: {result['roofline_gflops']:.1f} GFLOP/s "
        f"(jitted float32 {result['roofline_n']}^2 matmul).",
        "",
        f"dim {DIM}, 2x{WIDTH} ReLU MLPs, NICE/RealNVP 8 couplings, MAF 5 MADE layers; "
        f"training = {result['steps']} Adam steps of the NLL in one jitted scan; best of "
        f"{result['repeats']} interleaved rounds after a warm-up (medians in the JSON). "
        f"Ratio = genlearn / fastest peer (>1: genlearn faster; genlearn-half: genlearn with "
        f"distrax's contiguous halves, genlearn: its default random halves, flowjax's layout); "
        f"with several runs of the "
        f"script, the median ratio and each run's. Roofline % = 3 x dense-layer "
        f"FLOPs per example x train ex/s / matmul FLOP/s.",
        "",
        f"Note: {result['note']}",
        "",
        "| model | batch | library | train ex/s | train ratio | log_prob ex/s | log_prob ratio "
        "| sample ex/s | sample ratio | compile s | roofline % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        def ratio(name):
            v = r.get(f"{name}_ratio_vs_fastest_peer")
            if v is None:
                return ""
            runs = r.get(f"{name}_ratio_runs", [v])
            if len(runs) == 1:
                return f"**{v:.2f}x**"
            return (f"**{statistics.median(runs):.2f}x** (runs: "
                    + ", ".join(f"{x:.2f}" for x in runs) + ")")
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['library']} | {r['train_examples_per_s']:,.0f} "
            f"| {ratio('train')} | {r['log_prob_examples_per_s']:,.0f} | {ratio('log_prob')} "
            f"| {r['sample_examples_per_s']:,.0f} | {ratio('sample')} | {r['compile_s']:.1f} "
            f"| {100 * r['roofline_fraction']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=list(LIBRARIES))
    ap.add_argument("--batches", nargs="+", type=int, default=[256, 4096])
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed scan")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None, help="file stem in benchmarks/results/")
    ap.add_argument("--previous", nargs="*", default=[],
                    help="JSON results of earlier runs: report the median ratio over all runs")
    ap.add_argument("--note", default="this 2-core CPU machine was shared with other "
                    "engineers' jobs while measuring; ratios from one process are more "
                    "reliable than absolute numbers")
    args = ap.parse_args(argv)

    device = jax.devices()[0]
    device_name = f"{device.platform}:{getattr(device, 'device_kind', '')}".strip(":")
    roofline_n = 4096 if device.platform != "cpu" else 1024
    roofline = matmul_roofline(max(args.repeats, 5), roofline_n)
    print(f"{device_name}: matmul roofline {roofline / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for batch in args.batches:
        for model in args.models:
            group = measure_group(model, batch, args.libraries, args.steps, args.repeats)
            for r in group:
                print(f"{model:8s} {r['library']:9s} b={batch:5d} train {r['train_examples_per_s']:10,.0f}"
                      f" ex/s  log_prob {r['log_prob_examples_per_s']:11,.0f}  sample "
                      f"{r['sample_examples_per_s']:11,.0f}  compile {r['compile_s']:.1f} s",
                      flush=True)
            rows.extend(group)
    add_ratios(rows, roofline)
    merge_runs(rows, args.previous)
    import distrax
    import flowjax

    result = {
        "device": device_name,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": {"jax": jax.__version__, "flowjax": getattr(flowjax, "__version__", "?"),
                     "distrax": distrax.__version__},
        "roofline_gflops": roofline / 1e9,
        "roofline_n": roofline_n,
        "steps": args.steps,
        "repeats": args.repeats,
        "note": args.note,
        "previous_runs": list(args.previous),
        "rows": rows,
    }
    stem = args.out or ("throughput" if device.platform == "cpu" else
                        f"throughput_{device_name.replace(' ', '_').replace(':', '_')}")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(RESULTS, f"{stem}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
