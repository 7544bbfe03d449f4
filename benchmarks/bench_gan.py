"""Throughput of the min-max update: one jitted step vs separate jitted critic / generator calls.

The fused ``MinMax.step`` runs the m critic steps as a ``lax.scan`` and the
generator step inside one compiled function; the separate version jits
``critic_update`` and ``generator_update`` and calls them from Python
(m + 1 dispatches per step, the usual PyTorch-style loop). A third variant
runs the fused steps in one ``lax.scan`` (what ``genlearn.train.run_trainer`` does).

Writes benchmarks/results/bench_gan.{json,md}.

    python benchmarks/bench_gan.py [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import optax

from genlearn import gan
from genlearn.data import load_dataset

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def build(loss, m, hidden, batch):
    obj = gan.objective(loss)
    g = gan.generator(2, 4, hidden)
    c = gan.critic(2, hidden, spectral_norm=obj.spectral_norm)
    return gan.minmax(g, c, obj, generator_optimizer=optax.adam(1e-4, b1=0.5, b2=0.9),
                      critic_optimizer=optax.adam(1e-4, b1=0.5, b2=0.9), critic_steps=m, batch_size=batch)


def bench(loss, m, hidden, batch, steps, repeats, data):
    algo = build(loss, m, hidden, batch)
    state0 = algo.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), steps)
    real = data[: m * batch]  # m critic batches; the step's cost does not depend on which rows
    reals = real.reshape(m, batch, real.shape[1])

    fused = jax.jit(algo.step)
    crit = jax.jit(algo.critic_update)
    genu = jax.jit(algo.generator_update)

    def run_fused(state):
        for k in keys:
            state, _ = fused(state, real, k)
        return state

    def run_separate(state):
        for k in keys:
            k_c, k_g = jax.random.split(k)
            for real, kc in zip(reals, jax.random.split(k_c, m)):
                state, _ = crit(state, real, kc)
            state, _ = genu(state, reals[-1], k_g)
        return state

    scan = jax.jit(lambda s: jax.lax.scan(lambda s, k: algo.step(s, real, k), s, keys))

    def run_scan(state):
        return scan(state)[0]

    out = {}
    for name, fn in (("fused", run_fused), ("separate", run_separate), ("scan", run_scan)):
        jax.block_until_ready(fn(state0))  # compile + warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(state0))
            best = min(best, time.perf_counter() - t)
        out[name] = steps / best
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = jnp.asarray(load_dataset("ring8").train)
    rows = []
    # the ring8 defaults of `genlearn fit gan` (3x64 MLPs, batch 256), and a small network where dispatch dominates
    for loss, m, hidden, batch in (("wgan-gp", 5, (64, 64, 64), 256), ("ns", 1, (64, 64, 64), 256),
                                   ("sn", 5, (64, 64, 64), 256), ("wgan-gp", 5, (32, 32), 64)):
        r = bench(loss, m, hidden, batch, args.steps, args.repeats, data)
        row = {"loss": loss, "critic_steps": m, "hidden": list(hidden), "batch_size": batch,
               "fused_steps_per_s": r["fused"], "separate_steps_per_s": r["separate"],
               "scan_steps_per_s": r["scan"], "fused_over_separate": r["fused"] / r["separate"],
               "scan_over_separate": r["scan"] / r["separate"]}
        print(json.dumps(row))
        rows.append(row)
    meta = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "steps": args.steps, "repeats": args.repeats, "note": "best of repeats; CPU shared with other jobs"}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_gan.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    lines = ["# GAN min-max step throughput (generator steps / s)", "",
             f"`python benchmarks/bench_gan.py --steps {args.steps} --repeats {args.repeats}`; {meta['device']}, "
             f"{meta['cpu_count']} CPU cores (shared), best of {args.repeats}.", "",
             "| loss | m | hidden | batch | fused step | separate calls | scan chunk | fused / separate | scan / separate |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['critic_steps']} | {r['hidden']} | {r['batch_size']} | "
                     f"{r['fused_steps_per_s']:.1f} | {r['separate_steps_per_s']:.1f} | {r['scan_steps_per_s']:.1f} | "
                     f"{r['fused_over_separate']:.2f} | {r['scan_over_separate']:.2f} |")
    with open(os.path.join(RESULTS, "bench_gan.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
