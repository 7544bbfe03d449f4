"""Full-size figures of the foundation issue, in one run.

    python benchmarks/foundation_numbers.py            # writes benchmarks/results/foundation.{json,md}

- RealNVP (8 couplings, 2x128 MLPs, Adam 1e-3 with cosine decay, batch 256,
  20k steps) on standardised two moons (noise 0.05, 20k train / 5k test):
  held-out NLL in standardised units.
- Digits (1400 train / 397 test, seed-0 split, uniform dequantisation):
  bits/dim of the 17-level pixels for RealNVP and NICE (CLI defaults), next to
  scikit-learn GaussianMixture references fitted to the same dequantised data.
"""

import json
import os
import sys

import numpy as np

from genlearn.data import load_dataset, load_digits_split
from _fit_defaults import fit_with_defaults

HERE = os.path.dirname(os.path.abspath(__file__))


def main(out_dir=os.path.join(HERE, "results")):
    rows = {}
    for model, data in [("realnvp", "moons"), ("nice", "moons"), ("realnvp", "digits"), ("nice", "digits")]:
        m = fit_with_defaults(model, load_dataset(data), os.path.join("runs", f"bench-{model}-{data}"))
        rows[f"{model}/{data}"] = m
        print(model, data, {k: v for k, v in m.items() if "nll" in k or "bits" in k}, flush=True)

    from sklearn.mixture import GaussianMixture

    tr, te = load_digits_split(0)
    rng = np.random.default_rng(0)
    trd, ted = tr + rng.uniform(size=tr.shape), te + rng.uniform(size=te.shape)
    gmm = {}
    for k, cov, reg in [(10, "full", 1e-6), (10, "full", 0.1), (5, "full", 0.1), (20, "diag", 1e-6)]:
        g = GaussianMixture(k, covariance_type=cov, reg_covar=reg, random_state=0, max_iter=200).fit(trd)
        gmm[f"k={k},{cov},reg={reg}"] = float(-g.score(ted) / (64 * np.log(2)))
    rows["sklearn_gmm_digits_bits_per_dim"] = gmm
    print("sklearn GMM", gmm)

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "foundation.json"), "w") as fh:
        json.dump(rows, fh, indent=2)
    lines = ["# Foundation figures", "", "Command: `python benchmarks/foundation_numbers.py` (CPU, 2 cores).", "",
             "| model / data | held-out NLL (nats, data units) | standardised NLL | bits/dim | train s |",
             "|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    for name, m in rows.items():
        if "/" not in name:
            continue
        lines.append(f"| {name} | {m['test_nll']:.4f} | {fmt(m.get('test_nll_standardized'))} | "
                     f"{fmt(m.get('test_bits_per_dim'))} | {m['train_seconds']:.0f} |")
    lines += ["", "scikit-learn GaussianMixture on the same dequantised digits (bits/dim, lower is better):", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in gmm.items()]
    with open(os.path.join(out_dir, "foundation.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
