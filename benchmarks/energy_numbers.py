"""Figures of the energy-based-model issue (#5): held-out NLL through AIS vs RealNVP, modes covered.

    python benchmarks/energy_numbers.py [--steps N] [--only ring8,moons] [--skip-realnvp]
        # writes benchmarks/results/energy_nll.{json,md} and energy_samples.png

For each of ring8 and two moons: `genlearn.runs.fit("ebm", ...)` with the ebm
family's defaults (PCD, MALA + independent-MH negatives, 4000 steps), held-out NLL with
log Z by AIS (1000 chains, 500 temperatures), checked against 2-D quadrature,
and mode coverage of 2000 MCMC samples (ring8). The RealNVP reference is the
foundation's run (CLI defaults: 8 couplings, 2x128, 20k steps): moons from
benchmarks/results/foundation.json (1.1755 standardised nats), ring8 trained
here with the same defaults. NLLs are reported in data units and in
standardised units (data NLL - sum log std of the training data), the units of
foundation.md.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from genlearn.data import load_dataset
from genlearn.energy.run import DEFAULTS
from genlearn.runs import fit, load

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def _realnvp(name: str, ds) -> dict:
    """Held-out NLL of the foundation's RealNVP (CLI defaults) on ``name``."""
    if name == "moons":
        path = os.path.join(RESULTS, "foundation.json")
        with open(path) as fh:
            m = json.load(fh)["realnvp/moons"]
        return {"test_nll": m["test_nll"], "test_nll_standardized": m["test_nll_standardized"],
                "source": "benchmarks/results/foundation.json", "train_seconds": m.get("train_seconds")}
    t0 = time.time()
    run_dir = os.path.join("runs", f"bench-realnvp-{name}")
    m = fit("realnvp", ds, out=run_dir, progress=False)[2]
    return {"test_nll": m["test_nll"], "test_nll_standardized": m["test_nll_standardized"],
            "source": "trained here (CLI defaults)", "train_seconds": time.time() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=None, help="PCD steps (default: the ebm family's)")
    ap.add_argument("--only", default="ring8,moons")
    ap.add_argument("--skip-realnvp", action="store_true")
    args = ap.parse_args(argv)
    import jax

    rows = {}
    panels = []
    for name in args.only.split(","):
        ds = load_dataset(name)
        run_dir = os.path.join("runs", f"bench-ebm-{name}")
        t0 = time.time()
        m = fit("ebm", ds, out=run_dir, steps=args.steps, progress=False)[2]
        m["total_seconds"] = time.time() - t0
        ref = None if args.skip_realnvp else _realnvp(name, ds)
        row = {"ebm": m, "realnvp": ref}
        if ref is not None:
            row["gap_nats"] = m["test_nll"] - ref["test_nll"]
        rows[name] = row
        print(name, json.dumps(row, indent=1), flush=True)
        panels.append((name, load(run_dir).sample(jax.random.PRNGKey(7), 2000), ds.test[:2000]))

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "energy_nll.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    cmd = "python benchmarks/energy_numbers.py" + (f" --steps {args.steps}" if args.steps else "")
    lines = ["# Energy-based models: held-out NLL through AIS", "",
             f"Command: `{cmd}` (CPU, 2 shared cores).", "",
             "EBM: MLP energy 3x128 silu + ||x||^2/32 confinement, PCD (replay buffer 10k, k = 10 MALA + "
             f"independent-MH steps per update), Adam {DEFAULTS['learning_rate']:g} (b1 = 0.5) cosine, "
             f"batch {DEFAULTS['batch_size']}. log Z by AIS "
             "(1000 chains, 500 geometric temperatures, MALA); quadrature check on a 2-D grid.", "",
             "| data | EBM NLL (data units) | ± AIS se | EBM standardised | RealNVP standardised | gap (nats) "
             "| log Z AIS | log Z quadrature | modes covered | EBM train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        e, ref = r["ebm"], r["realnvp"]
        modes = f"{e['modes_covered']}/{e['num_modes']}" if "modes_covered" in e else "–"
        ref_std = "–" if ref is None else f"{ref['test_nll_standardized']:.4f}"
        gap = "–" if ref is None else f"{r['gap_nats']:+.4f}"
        lines.append(
            f"| {name} | {e['test_nll']:.4f} | {e['test_nll_stderr']:.4f} | {e['test_nll_standardized']:.4f} | "
            f"{ref_std} | {gap} | {e['log_z']:.4f} | {e.get('log_z_quadrature', float('nan')):.4f} | {modes} | "
            f"{e['train_seconds']:.0f} |")
    lines += ["", "Gap = EBM NLL - RealNVP NLL (negative: the EBM is better). RealNVP: moons from "
              "foundation.json, ring8 trained by this script with the CLI defaults.",
              "MCMC samples of both EBMs: `energy_samples.png`."]
    with open(os.path.join(RESULTS, "energy_nll.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (name, s, data) in zip(axes[0], panels):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.7", label="test data")
        ax.scatter(s[:, 0], s[:, 1], s=2, c="C3", label="EBM MCMC samples")
        ax.set_title(f"EBM on {name}")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "energy_samples.png"), dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
