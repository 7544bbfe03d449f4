"""Loss spikes under the library's defaults (issue 17, item 3).

    python benchmarks/stability.py                      # 6 flow families x moons, ring8, grid25, 3 seeds
    python benchmarks/stability.py --families cnf --steps 1000
    python benchmarks/stability.py --base normal --out benchmarks/results/stability_normal_base.md
    python benchmarks/stability.py --lr 3e-4 --out benchmarks/results/stability_lr3e-4.md

Each run is ``gl.train.fit(gl.losses.nll(flow), ..., optimizer=optax.adam(lr))`` with the library's
defaults (gradient clipping at global norm 1.0), 2000 steps of batch 256 on standardised data. The
issue's criterion: no minibatch loss above twice the initial loss after the first 50 steps. Reported:
the initial loss L0, the largest loss after step 50 and its step, their ratio, and the held-out NLL.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import genlearn as gl
from genlearn.data import load_dataset, standardize, standardize_stats

FAMILIES = {
    "realnvp": gl.flows.realnvp,
    "nice": gl.flows.nice,
    "maf": gl.flows.maf,
    "iaf": gl.flows.iaf,
    "spline": gl.flows.spline,
    "glow": gl.flows.glow,
    "cnf": gl.flows.cnf,  # an ODE solve per step: not in the default --families
}
HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(f for f in FAMILIES if f != "cnf"))
    p.add_argument("--data", default="moons,ring8,grid25")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--base", default=None, help="base distribution for every flow (default: each family's own)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "stability.md"))
    a = p.parse_args(argv)
    rows = []
    for name in a.data.split(","):
        ds = load_dataset(name)
        mean, std = standardize_stats(ds.train)
        train, _ = standardize(ds.train, mean, std)
        test, _ = standardize(ds.test, mean, std)
        for family in a.families.split(","):
            for seed in range(a.seeds):
                flow = FAMILIES[family](train.shape[1], **({"base": a.base} if a.base else {}))
                t0 = time.time()
                key = jax.random.PRNGKey(seed)
                params = flow.init(key, train[:256]) if family == "glow" else flow.init(key)  # Glow's data init
                res = gl.train.fit(gl.losses.nll(flow), params, train,
                                   optimizer=optax.adam(a.lr), steps=a.steps, batch_size=256,
                                   key=jax.random.PRNGKey(seed + 10), progress=False)
                loss = np.asarray(res.history["train_loss"])
                late = loss[50:]
                worst = int(np.nanargmax(late)) + 50
                held = float(-jnp.mean(flow.log_prob(res.params, test)))
                rows.append((name, family, seed, loss[0], loss[worst], worst, loss[worst] / loss[0],
                             int(np.sum(late > 2 * loss[0])), held, time.time() - t0))
                print("{} {} seed {}: L0 {:.2f}, max after 50 {:.2f} at {}, ratio {:.2f}, {} steps > 2 L0, "
                      "held-out {:.3f}".format(*rows[-1][:9]), flush=True)
    lines = ["# Loss spikes under the library defaults", "",
             f"`python benchmarks/stability.py --lr {a.lr}{' --base ' + a.base if a.base else ''}`: "
             f"`gl.train.fit` with `optax.adam({a.lr})` and the default gradient clipping (global norm 1.0), "
             f"base {a.base or 'each family default'}, {a.steps} steps of batch 256, standardised data. "
             "Criterion (issue 17): no minibatch loss above 2 x the initial loss after step 50.", "",
             "| data | family | seed | initial loss | max after step 50 | at step | ratio | steps > 2 x initial | "
             "held-out NLL | meets |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]} | {r[6]:.2f} | {r[7]} | "
                     f"{r[8]:.3f} | {'yes' if r[7] == 0 else 'no'} |")
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
