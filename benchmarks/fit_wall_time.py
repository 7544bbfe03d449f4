"""Wall time of each library's own training loop: `genlearn.train.fit` against flowjax's `fit_to_data` (issue 17).

    python benchmarks/fit_wall_time.py                          # every target and family, 1 seed
    python benchmarks/fit_wall_time.py --targets moons --families realnvp --seeds 1
    python benchmarks/fit_wall_time.py --merge ...              # add rows to the committed results
    python benchmarks/fit_wall_time.py --first-seed 1 --seeds 2 --merge   # seeds 1 and 2 beside the committed 0

`benchmarks/learning_curves.py` trains both libraries' flows through ONE loop, to compare what they learn
per step. Users do not write that loop: they call their library's. This script times those calls, end to
end (compilation included, as a user waits for it), at equal work:

- the models of `learning_curves.py` (equal architecture), on the same standardised draws of its targets;
- Adam with cosine decay from 1e-3 over S steps, batch 256, 10 % of the training draws held out for
  validation once per epoch (``floor(0.9 n / 256)`` steps), the parameters of the best validation loss
  returned, no early stopping; flowjax: ``fit_to_data(key, dist, x, optimizer=..., batch_size=256,
  max_epochs=S / epoch, max_patience=S / epoch, val_prop=0.1)``; genlearn: ``gl.train.fit(loss, params, x,
  optimizer=..., steps=S, batch_size=256, val_fraction=0.1, eval_every=epoch, key=...)`` with every other
  argument at its default (global-norm clipping at 1.0 included).

genlearn also trains at 0.7 S and at half the steps S/2 (its cosine schedule over the shorter budget):
fewer steps is how a user of a faster-learning library spends less time for the same quality, and 0.7 S
is the budget of the criterion when genlearn's steps cost what flowjax's do.

Output: benchmarks/results/fit_wall_time.{md,json}: per target and family, held-out KL(p || q) (nats,
data units; 0 is the data-generating density) and seconds, mean +- standard error over seeds, and the
issue's criterion: a genlearn run reaches flowjax's final KL (its mean is at or below) in at most 0.7x
flowjax's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import _targets  # noqa: E402
import learning_curves as lc  # noqa: E402
import genlearn as gl  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TARGETS = ("moons", "mixture8", "funnel8", "warped16")
BATCH, LR, VAL = 256, 1e-3, 0.1


def _epoch_steps(n: int) -> int:
    return (n - int(round(VAL * n))) // BATCH


def run_genlearn(family, d, seed, z_tr, epochs):
    params, log_prob = lc.genlearn_model(family, d, seed)
    per_epoch = _epoch_steps(z_tr.shape[0])
    steps = int(round(epochs * per_epoch))
    opt = optax.adam(optax.cosine_decay_schedule(LR, steps))
    t0 = time.perf_counter()
    res = gl.train.fit(lambda p, b, k: -jnp.mean(log_prob(p, b)), params, z_tr, optimizer=opt, steps=steps,
                       batch_size=BATCH, val_fraction=VAL, eval_every=per_epoch, key=jax.random.PRNGKey(seed),
                       progress=False)
    jax.block_until_ready(res.params)
    seconds = time.perf_counter() - t0
    return jax.jit(lambda x: log_prob(res.params, x)), seconds, steps


def run_flowjax(family, d, seed, z_tr, epochs):
    import equinox as eqx
    import paramax
    from flowjax.train import fit_to_data

    dist = lc.flowjax_dist(family, d, seed)
    steps = epochs * _epoch_steps(z_tr.shape[0])
    opt = optax.adam(optax.cosine_decay_schedule(LR, steps))
    t0 = time.perf_counter()
    dist, _ = fit_to_data(jax.random.PRNGKey(seed), dist, jnp.asarray(z_tr), optimizer=opt, batch_size=BATCH,
                          max_epochs=epochs, max_patience=epochs, val_prop=VAL, show_progress=False)
    jax.block_until_ready(eqx.filter(dist, eqx.is_inexact_array))
    seconds = time.perf_counter() - t0
    params, static = eqx.partition(dist, eqx.is_inexact_array)
    return jax.jit(lambda x: paramax.unwrap(eqx.combine(params, static)).log_prob(x)), seconds, steps


def run(targets, families, seeds, epochs, n_train, n_test, first_seed=0):
    rows = []
    # JAX's one-off process start-up (backend, first compilation) would otherwise be charged to the first run timed
    jax.block_until_ready(jax.jit(lambda x: optax.adam(1e-3).init(x))(jnp.zeros(3)))
    for tname in targets:
        target = _targets.make_target(tname)
        for seed in range(first_seed, first_seed + seeds):
            r = np.random.default_rng(seed)
            x_tr, x_te = target.sample(r, n_train), target.sample(r, n_test)
            mean, std = x_tr.mean(0), x_tr.std(0)
            log_det = float(np.sum(np.log(std)))
            true_lp = float(np.mean(target.log_prob(x_te)))
            z_tr, z_te = (x_tr - mean) / std, jnp.asarray((x_te - mean) / std)
            for family in families:
                for lib, fn, ep in (("flowjax", run_flowjax, epochs), ("genlearn", run_genlearn, epochs),
                                    ("genlearn-0.7", run_genlearn, 0.7 * epochs),
                                    ("genlearn-half", run_genlearn, epochs / 2)):
                    log_prob, seconds, steps = fn(family, target.dim, seed, z_tr, ep)
                    kl = float(-jnp.mean(log_prob(z_te))) + log_det + true_lp
                    rows.append({"target": tname, "family": family, "library": lib, "seed": seed, "steps": steps,
                                 "seconds": seconds, "kl": kl})
                    print(f"{tname:9s} {family:8s} {lib:9s} seed {seed}: KL {kl:.3f} nats, {seconds:.1f} s "
                          f"({steps} steps)", flush=True)
    return rows


# (library label in the rows, budget named in the verdict)
BUDGETS = (("flowjax", "S"), ("genlearn", "S"), ("genlearn-0.7", "0.7 S"), ("genlearn-half", "S/2"))


def _stat(xs):
    xs = np.asarray(xs, float)
    return xs.mean(), (xs.std(ddof=1) / np.sqrt(xs.size) if xs.size > 1 else float("nan"))


def _pm(mean, se):
    return f"{mean:.3f}" if np.isnan(se) else f"{mean:.3f} ± {se:.3f}"


def write(rows, base):
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["family"]), {}).setdefault(r["library"], []).append(r)
    order = list(_targets.TARGETS)
    lines = ["# Wall time of each library's own training loop: `gl.train.fit` vs flowjax's `fit_to_data`", "",
             "`python benchmarks/fit_wall_time.py` (equal architecture: the models of `learning_curves.py`; Adam",
             "with cosine decay from 1e-3, batch 256, 10 % validation once per epoch, best-validation parameters;",
             "seconds end to end with compilation, 2 CPU cores; held-out KL in nats, mean ± standard error over",
             "seeds). genlearn trains at flowjax's step budget S, at 0.7 S and at S/2 (its own cosine schedule",
             "over the shorter budget).",
             "Criterion (issue 17): a genlearn run at or below flowjax's final KL in at most 0.7x flowjax's seconds.",
             "",
             "| target | family | flowjax KL (S) | s | genlearn KL (S) | s | ratio | genlearn KL (0.7 S) | s | ratio "
             "| genlearn KL (S/2) | s | ratio | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (t, f) in sorted(groups, key=lambda k: (order.index(k[0]), lc.FAMILIES.index(k[1]))):
        g = groups[(t, f)]
        if not all(lib in g for lib, _ in BUDGETS):
            continue
        kf, ef = _stat([r["kl"] for r in g["flowjax"]])
        sf = _stat([r["seconds"] for r in g["flowjax"]])[0]
        cells, met = [_pm(kf, ef), f"{sf:.1f}"], []
        for lib, _ in BUDGETS[1:]:
            k, e = _stat([r["kl"] for r in g[lib]])
            sec = _stat([r["seconds"] for r in g[lib]])[0]
            cells += [_pm(k, e), f"{sec:.1f}", f"{sec / sf:.2f}"]
            met.append(k <= kf and sec <= 0.7 * sf)
        verdict = f"yes ({BUDGETS[1 + met.index(True)][1]})" if any(met) else "no"
        lines.append(f"| {t} | {f} | " + " | ".join(cells) + f" | {verdict} |")
    with open(base + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(base + ".json", "w") as fh:
        json.dump(rows, fh, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--families", default=",".join(lc.FAMILIES))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--epochs", type=int, default=57, help="57 epochs of 70 steps: 3990 steps, as learning_curves")
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--n-test", type=int, default=5_000)
    p.add_argument("--merge", action="store_true", help="replace matching rows of the committed results")
    p.add_argument("--out", default=os.path.join(RESULTS, "fit_wall_time"))
    a = p.parse_args(argv)
    rows = run(a.targets.split(","), a.families.split(","), a.seeds, a.epochs, a.n_train, a.n_test, a.first_seed)
    if a.merge:
        rows = lc.merge_rows(a.out + ".json", rows, ("target", "family", "library", "seed"))
    write(rows, a.out)
    print("wrote", a.out + ".{md,json}")


if __name__ == "__main__":
    main()
