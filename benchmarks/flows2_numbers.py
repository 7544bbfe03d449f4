"""Held-out figures of the Flows II issue (#3): MAF, IAF, neural splines, Glow, CNF.

    python benchmarks/flows2_numbers.py                       # every row
    python benchmarks/flows2_numbers.py maf/moons cnf/moons   # some rows (merged into the results)

Each row trains with ``genlearn fit``'s defaults (``genlearn.runs.default_train_config``,
the config is recorded) through ``genlearn.runs.train_run`` and reports what the CLI
writes to metrics.json: on two moons (20k train / 5k test, noise 0.05) the held-out
NLL in standardised units; on digits (1400 / 397, seed-0 split, uniform
dequantisation) bits/dim of the 17-level pixels. Results are merged into
benchmarks/results/flows2.{json,md}; targets from the issue are checked in the table.
"""

import json
import os
import sys
import time

from genlearn.data import load_dataset
from genlearn.runs import default_train_config, train_run

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = ["maf/moons", "spline/moons", "cnf/moons", "iaf/moons", "glow/moons",
        "maf/digits", "spline/digits", "glow/digits"]
# The targets: standardised held-out NLL on moons, bits/dim on digits.
TARGETS = {"maf/moons": 1.15, "spline/moons": 1.15, "cnf/moons": 1.25, "maf/digits": 2.25, "spline/digits": 2.25}
REFERENCES = [  # figures from elsewhere for the table (foundation.md; the text)
    ("realnvp/moons (foundation)", "1.1755", "–"),
    ("realnvp/digits (foundation)", "–", "2.282"),
    ("scikit-learn GaussianMixture, best tried (foundation)", "–", "2.660"),
]


def run_row(name: str) -> dict:
    from genlearn.cli import _report

    model, data = name.split("/")
    ds = load_dataset(data)
    cfg = default_train_config(model, ds)
    t0 = time.time()
    run_dir = os.path.join("runs", f"flows2-{model}-{data}")
    params, run_cfg, res = train_run(model, ds, cfg, out=run_dir, progress=False)
    m = _report(run_dir, params, run_cfg, ds, res.history)
    m["train_seconds"] = time.time() - t0
    m["config"] = run_cfg["train"]
    return m


def write(rows: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "flows2.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    lines = ["# Flows II figures", "",
             "Command: `python benchmarks/flows2_numbers.py [ROW ...]` (CPU, 2 shared cores; `genlearn fit` defaults).",
             "", "| model / data | held-out NLL (nats, data units) | standardised NLL | bits/dim | target | met | "
             "steps run | train s |", "|---|---|---|---|---|---|---|---|"]
    for name in [r for r in ROWS if r in rows] + sorted(set(rows) - set(ROWS)):
        m = rows[name]
        fig = m.get("test_bits_per_dim", m.get("test_nll_standardized"))
        target = TARGETS.get(name)
        met = "–" if target is None else ("yes" if fig <= target else "NO")
        lines.append(f"| {name} | {m['test_nll']:.4f} | {fmt(m.get('test_nll_standardized'))} | "
                     f"{fmt(m.get('test_bits_per_dim'))} | {'–' if target is None else f'<= {target}'} | {met} | "
                     f"{m.get('steps', '–')} | {m['train_seconds']:.0f} |")
    lines += ["", "References:", ""] + [f"- {n}: standardised NLL {a}, bits/dim {b}" for n, a, b in REFERENCES]
    lines += ["", "Configs (layers x hidden, steps, lr, weight decay, options) are in flows2.json."]
    with open(os.path.join(out_dir, "flows2.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None, out_dir=os.path.join(HERE, "results")) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or ROWS
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; choose from {ROWS}", file=sys.stderr)
        return 2
    path = os.path.join(out_dir, "flows2.json")
    rows = json.load(open(path)) if os.path.isfile(path) else {}
    for name in names:
        rows[name] = run_row(name)
        m = rows[name]
        print(name, {k: v for k, v in m.items() if "nll" in k or "bits" in k or k == "train_seconds"}, flush=True)
        write(rows, out_dir)  # after every row: a long run keeps what it has
    return 0


if __name__ == "__main__":
    sys.exit(main())
