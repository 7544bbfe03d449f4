"""What `genlearn fit MODEL --data D` gives with no other flags: every family x {moons, ring8, grid25, digits}.

    python benchmarks/defaults_table.py                      # every cell (hours on 2 cores)
    python benchmarks/defaults_table.py --data ring8 grid25  # some datasets, every family
    python benchmarks/defaults_table.py --family maf gan     # some families, every dataset
    python benchmarks/defaults_table.py --table              # rewrite the .md and README table from the .json

Each cell is one `genlearn.runs.fit` with the CLI defaults (the same call `genlearn fit` makes), seed 0,
written to ``runs/defaults-FAMILY-DATA``. Recorded per cell:

* toys (standardised test NLL, nats): the model's held-out NLL where it has a density, the true
  density's NLL on the same test points (the floor) and the gap;
* ring8, grid25: modes covered and the high-quality fraction of 5000 samples (within 3 std of a centre),
  for every family, density models included;
* digits: bits/dim of the 17-level pixels (uniform dequantisation), and the digits-net FID of 2000 samples
  (for density models, of their images floor(y), `genlearn.data.quantize`);
* wall seconds of the whole ``fit`` (training and evaluation) and the training steps.

Cells are merged into benchmarks/results/defaults_table.json as they finish, so the table can be
built in several sittings; the .md records when each cell ran. README's table is the block between
``<!-- defaults-table -->`` markers, rewritten from the .json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from genlearn import registry, runs  # noqa: E402
from genlearn.data import load_dataset  # noqa: E402

RESULTS = os.path.join(HERE, "results")
JSON = os.path.join(RESULTS, "defaults_table.json")
MD = os.path.join(RESULTS, "defaults_table.md")
README = os.path.join(os.path.dirname(HERE), "README.md")
DATASETS = ("moons", "ring8", "grid25", "digits")
MARK = "<!-- defaults-table -->"


def true_nll_standardized(ds) -> float | None:
    """The data-generating density's NLL on the test points, in the units of ``test_nll_standardized``."""
    if ds.log_prob is None:
        return None
    log_std = float(np.sum(np.log(np.asarray(ds.train, np.float64).std(0))))
    return float(-np.mean(ds.log_prob(np.asarray(ds.test, np.float64)))) - log_std


def run_cell(family: str, data: str, seed: int = 0) -> dict:
    ds = load_dataset(data)
    fam = registry.get(family)
    why = fam.applies(ds) if fam.applies else None
    if why:
        return {"applies": False, "why": why}
    run_dir = os.path.join("runs", f"defaults-{family}-{data}")
    t0 = time.time()
    _, cfg, m = runs.fit(family, ds, out=run_dir, seed=seed, progress=False)
    seconds = time.time() - t0
    row = {"applies": True, "seconds": seconds, "steps": m.get("steps"), "options": cfg["options"],
           "when": datetime.date.today().isoformat(), "jax": jax.__version__}
    for k in ("test_nll_standardized", "test_bits_per_dim", "fid_features", "is_samples", "modes_covered",
              "num_modes", "high_quality_fraction"):
        if m.get(k) is not None:
            row[k] = m[k]
    truth = true_nll_standardized(ds)
    if truth is not None:
        row["true_nll_standardized"] = truth
        if row.get("test_nll_standardized") is not None:
            row["gap"] = row["test_nll_standardized"] - truth
    if ds.centers is not None and "modes_covered" not in row:  # density models: judge their samples too
        run = runs.load(run_dir)
        xs = run.sample(jax.random.PRNGKey(seed + 7), 5000)
        row.update({k: v for k, v in runs.sample_metrics(xs, ds).items() if k in
                    ("modes_covered", "num_modes", "high_quality_fraction")})
    if ds.name == "digits" and "fid_features" not in row:  # density models: the FID of their images floor(y)
        run = runs.load(run_dir)
        xs = np.asarray(run.sample(jax.random.PRNGKey(seed + 7), 2000), np.float64)
        if np.all(np.isfinite(xs)):
            m = runs.sample_metrics(xs, ds, dequantized=run.model.log_prob is not None)
            row.update(fid_features=m["fid_features"], is_samples=m["is_samples"])
    return row


def _cell_text(r: dict | None, data: str) -> str:
    if r is None:
        return "not run"
    if not r["applies"]:
        return "n/a"
    parts = []
    if data == "digits":
        if r.get("test_bits_per_dim") is not None:
            parts.append(f"{r['test_bits_per_dim']:.3f} b/d")
        if r.get("fid_features") is not None:
            parts.append(f"FID {r['fid_features']:.2f}")
    else:
        if r.get("test_nll_standardized") is not None:
            parts.append(f"{r['test_nll_standardized']:.3f} (+{r['gap']:.3f})" if r["gap"] >= 0
                         else f"{r['test_nll_standardized']:.3f} ({r['gap']:.3f})")
        if r.get("modes_covered") is not None:
            parts.append(f"{r['modes_covered']}/{r['num_modes']}, {100 * r['high_quality_fraction']:.0f} %")
        if not parts:
            parts.append("no density")
    parts.append(f"{r['seconds']:.0f} s")
    return "<br>".join(parts)


def table(results: dict) -> list[str]:
    fams = [f for f in registry.names() if f in results]
    truth = {d: next((r["true_nll_standardized"] for f in fams for dd, r in results[f].items()
                      if dd == d and r.get("true_nll_standardized") is not None), None) for d in DATASETS}
    head = [f"{d} (truth {truth[d]:.3f})" if truth[d] is not None else d for d in DATASETS]
    lines = ["| family | " + " | ".join(head) + " |", "|---" * (len(DATASETS) + 1) + "|"]
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(_cell_text(results[f].get(d), d) for d in DATASETS) + " |")
    return lines


def legend() -> list[str]:
    return ["Each cell: `genlearn fit FAMILY --data D` with no other flags, seed 0, 2 CPU cores. Toys: held-out",
            "NLL in standardised nats (gap to the true density's NLL on the same test points, which is the",
            "floor), then modes covered and % high-quality samples (within 3 std of a centre, 5000 samples)",
            "on ring8/grid25; digits: bits/dim of the 17-level pixels and the digits-net FID of 2000 samples",
            "(for density models, of their images floor(y); the training images score 1.59, and 2000 of them",
            "drawn with replacement 1.3 to 2.5, so differences under about 0.5 are noise). Last: wall seconds",
            "of the whole fit, evaluation included.",
            "Written by `python benchmarks/defaults_table.py`."]


def write(results: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(JSON, "w") as fh:
        json.dump(results, fh, indent=2, sort_keys=True)
    lines = ["# Defaults table", ""] + legend() + [""] + table(results) + [""]
    notes = [f"- {f}/{d}: {r['why']}" for f, rows in results.items() for d, r in rows.items() if not r["applies"]]
    if notes:
        lines += ["Not applicable:", ""] + notes + [""]
    dates = sorted({r["when"] for rows in results.values() for r in rows.values() if r.get("when")})
    if dates:
        lines += [f"Cells run on {', '.join(dates)}."]
    with open(MD, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(README) as fh:
        text = fh.read()
    if text.count(MARK) == 2:
        a, _, rest = text.partition(MARK)
        _, _, b = rest.partition(MARK)
        block = "\n".join(legend() + [""] + table(results))
        with open(README, "w") as fh:
            fh.write(f"{a}{MARK}\n{block}\n{MARK}{b}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="*", default=None, help="families (default: every registered one)")
    parser.add_argument("--data", nargs="*", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--table", action="store_true", help="only rewrite the tables from the .json")
    args = parser.parse_args(argv)
    results = json.load(open(JSON)) if os.path.exists(JSON) else {}
    if not args.table:
        for family in args.family or registry.names():
            for data in args.data:
                row = run_cell(family, data)
                results.setdefault(family, {})[data] = row
                print(family, data, {k: v for k, v in row.items() if k != "options"}, flush=True)
                write(results)
    write(results)


if __name__ == "__main__":
    main()
