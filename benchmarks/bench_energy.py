"""Throughput of the EBM machinery, side by side with plain blackjax.

    python benchmarks/bench_energy.py      # writes benchmarks/results/energy_throughput.{json,md}

Samplers: transitions per second for 1000 chains on a 2-D target (the ring
mixture of 8 Gaussians, and an MLP energy 3x128 silu), genlearn's
``sample_chains`` (validated wrapper, divergence flag in the info) against the
plain blackjax idiom ``jit(scan(vmap(alg.step)))``; ULA against a hand-written
``jnp`` update. Training: PCD updates per second (batch 256, k = 10, MLP
3x128) with Langevin and with MALA + independent-MH negatives (the run
defaults), and CD-10 through ``genlearn.train.train_step`` (the guarded update of ``fit``). Each figure is the median
of 3 timed repetitions after a compile run; genlearn and the peer alternate
within a repetition, so the ratio is robust to the shared CPU's load.
"""

import json
import math
import os
import sys
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn.energy import (
    contrastive_divergence,
    hmc,
    langevin,
    mala,
    mlp_energy,
    persistent_contrastive_divergence,
    sample_chains,
)
from genlearn.train import train_step

HERE = os.path.dirname(os.path.abspath(__file__))
CHAINS, STEPS, REPS = 1000, 200, 3
RING = 2.0 * jnp.stack([jnp.cos(jnp.arange(8) * math.pi / 4), jnp.sin(jnp.arange(8) * math.pi / 4)], 1)


def ring_logpdf(x):
    return jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - RING) ** 2, 1) / 0.3**2)


def _time(fn):
    jax.block_until_ready(fn())  # compile
    out = []
    for _ in range(REPS):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return out


def _plain_blackjax(alg, x0, key):
    @jax.jit
    def run(key, x0):
        states = jax.vmap(alg.init)(x0)

        def body(states, k):
            states, _ = jax.vmap(alg.step)(jax.random.split(k, CHAINS), states)
            return states, None

        states, _ = jax.lax.scan(body, states, jax.random.split(key, STEPS))
        return states.position

    return lambda: run(key, x0)


def _plain_ula(logdens, eps, x0, key):
    grad = jax.vmap(jax.grad(logdens))

    @jax.jit
    def run(key, x):
        def body(x, k):
            return x + eps * grad(x) + math.sqrt(2 * eps) * jax.random.normal(k, x.shape), None

        return jax.lax.scan(body, x, jax.random.split(key, STEPS))[0]

    return lambda: run(key, x0)


def samplers() -> dict:
    model = mlp_energy(2, (128, 128, 128))
    params = model.init(jax.random.PRNGKey(0))
    targets = {"ring8 mixture": ring_logpdf, "MLP energy 3x128": lambda x: model.unnormalized_log_prob(params, x)}
    x0 = jax.random.normal(jax.random.PRNGKey(1), (CHAINS, 2))
    key = jax.random.PRNGKey(2)
    rows = {}
    for tname, logdens in targets.items():
        cases = {
            "mala": (mala(logdens, 0.05, dim=2), blackjax.mala(logdens, 0.05), "blackjax.mala"),
            "hmc (5 leapfrog)": (hmc(logdens, 0.1, 5, dim=2), blackjax.hmc(logdens, 0.1, jnp.ones(2), 5),
                                 "blackjax.hmc"),
            "langevin (ULA)": (langevin(logdens, 0.01, dim=2), None, "hand-written jnp ULA"),
        }
        for sname, (ours, theirs, peer) in cases.items():
            mine = lambda s=ours: sample_chains(s, key, x0, STEPS)[0]  # noqa: E731
            other = _plain_ula(logdens, 0.01, x0, key) if theirs is None else _plain_blackjax(theirs, x0, key)
            t_g, t_b = [], []
            jax.block_until_ready(mine())
            jax.block_until_ready(other())
            for _ in range(REPS):  # alternate, so both see the same load
                t_g += _time_once(mine)
                t_b += _time_once(other)
            g, b = CHAINS * STEPS / np.median(t_g), CHAINS * STEPS / np.median(t_b)
            rows[f"{tname} / {sname}"] = {"genlearn_steps_per_s": g, "peer_steps_per_s": b, "peer": peer,
                                          "ratio_genlearn_over_peer": g / b}
            print(tname, sname, rows[f"{tname} / {sname}"], flush=True)
    return rows


def _time_once(fn):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return [time.perf_counter() - t]


def training() -> dict:
    data = jnp.asarray(RING[jax.random.randint(jax.random.PRNGKey(0), (20000,), 0, 8)]
                       + 0.1 * jax.random.normal(jax.random.PRNGKey(1), (20000, 2))) / 1.45
    model = mlp_energy(2, (128, 128, 128))
    params = model.init(jax.random.PRNGKey(2))
    n, rows = 50, {}

    def batches(key):
        return data[jax.random.randint(key, (n, 256), 0, data.shape[0])]

    for sampler in ("langevin", "mala_jump"):
        trainer = persistent_contrastive_divergence(model, optax.adam(1e-3, b1=0.5), k=10, step_size=5e-3,
                                                    sampler=sampler, proposal_bandwidth=0.07)
        state = trainer.init(jax.random.PRNGKey(3), params)
        run = jax.jit(lambda st, keys, xs: jax.lax.scan(lambda s, a: trainer.step(s, a[1], a[0]), st, (keys, xs))[0])
        keys, xs = jax.random.split(jax.random.PRNGKey(4), n), batches(jax.random.PRNGKey(5))
        t = _time(lambda: run(state, keys, xs).params)  # noqa: B023
        rows[f"PCD k=10 {sampler}"] = {"updates_per_s": n / np.median(t), "batch": 256}
        print(rows[f"PCD k=10 {sampler}"], flush=True)
    step = train_step(contrastive_divergence(model, k=10, step_size=5e-3), optax.adam(1e-3))
    opt_state = optax.adam(1e-3).init(params)

    @jax.jit
    def run_cd(params, opt_state, keys, xs):
        def body(c, a):
            p, o, _, _ = step(c[0], c[1], a[1], a[0])
            return (p, o), None

        return jax.lax.scan(body, (params, opt_state), (keys, xs))[0][0]

    keys, xs = jax.random.split(jax.random.PRNGKey(6), n), batches(jax.random.PRNGKey(7))
    t = _time(lambda: run_cd(params, opt_state, keys, xs))
    rows["CD-10 (Langevin), genlearn.train.train_step"] = {"updates_per_s": n / np.median(t), "batch": 256}
    print(rows["CD-10 (Langevin), genlearn.train.train_step"], flush=True)
    return rows


def main() -> int:
    out = {"device": str(jax.devices()[0]), "chains": CHAINS, "steps": STEPS, "samplers": samplers(),
           "training": training()}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "energy_throughput.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    lines = ["# EBM throughput", "", "Command: `python benchmarks/bench_energy.py` (CPU, 2 cores shared with other "
             "jobs: absolute figures are noisy, the ratios are measured side by side).", "",
             f"Samplers: transitions per second for {CHAINS} chains x {STEPS} steps, 2-D.", "",
             "| target / sampler | genlearn steps/s | peer steps/s | peer | genlearn / peer |", "|---|---|---|---|---|"]
    for k, r in out["samplers"].items():
        lines.append(f"| {k} | {r['genlearn_steps_per_s']:.3g} | {r['peer_steps_per_s']:.3g} | {r['peer']} | "
                     f"{r['ratio_genlearn_over_peer']:.2f} |")
    lines += ["", "Training updates per second (MLP 3x128, batch 256, k = 10 sampler steps per update, "
              "50 updates in one jitted scan per timed call):", "", "| trainer | updates/s |", "|---|---|"]
    lines += [f"| {k} | {r['updates_per_s']:.3g} |" for k, r in out["training"].items()]
    with open(os.path.join(HERE, "results", "energy_throughput.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
