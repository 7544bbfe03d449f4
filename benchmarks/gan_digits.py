"""A GAN on scikit-learn digits (8x8, 17 levels): a grid of samples and the digits FID.

Trains ``genlearn.gan.run.train_model`` with the defaults of
``genlearn fit gan --loss L --data digits`` (pixels mapped to [-1, 1], tanh
generator, 2x256 MLPs, latent 16) and writes

* ``benchmarks/results/gan_digits_<loss>.png``: 100 samples (rounded to the 17 levels),
* ``benchmarks/results/gan_digits.{json,md}``: FID in the features of genlearn's
  digits classifier (``genlearn.metrics.digits_fid``) against the 397 test
  images, with the FID of the 1400 training images as the floor (samples: 2000 per model).

    python benchmarks/gan_digits.py [--losses wgan-gp,mmd] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from genlearn.data import load_dataset
from genlearn.gan.run import train_model
from genlearn.metrics import digits_fid
from genlearn.plotting import plot_digit_grid

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--losses", default="wgan-gp,mmd")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", action="store_true", help="keep saved rows of other losses")
    args = ap.parse_args()
    ds = load_dataset("digits")
    floor = float(digits_fid(np.asarray(ds.train, np.float64), np.asarray(ds.test, np.float64)))
    rows, path = [], os.path.join(RESULTS, "gan_digits.json")
    if args.merge and os.path.exists(path):  # keep the rows of the losses not rerun now
        with open(path) as fh:
            rows = [r for r in json.load(fh)["rows"] if r["loss"] not in args.losses.split(",")]
    for loss in args.losses.split(","):
        t = time.time()
        run = train_model(ds, loss=loss, steps=args.steps, seed=args.seed, progress=False)
        seconds = time.time() - t
        pixels = np.clip(np.round(run.samples), 0, ds.discrete_levels - 1)
        plot_digit_grid(pixels[:100], os.path.join(RESULTS, f"gan_digits_{loss}.png"), levels=ds.discrete_levels,
                        title=f"{loss} generator, digits ({run.config['steps']} steps)", rows=10, cols=10)
        rows.append({"loss": loss, "digits_fid": run.metrics.get("fid_features"), "steps": run.result.step,
                     "stop_reason": run.result.stop_reason, "seconds": seconds,
                     "rejected_updates": int(np.sum(run.result.history["nonfinite"])),
                     "config": {k: run.config[k] for k in ("latent_dim", "hidden", "critic_hidden", "critic_steps",
                                                           "batch_size", "lr_generator", "lr_critic")}})
        print(json.dumps(rows[-1]), flush=True)
    with open(path, "w") as fh:
        json.dump({"fid_train_vs_test": floor, "rows": rows}, fh, indent=2)
    losses = ",".join(r["loss"] for r in rows)
    lines = ["# GANs on digits", "", f"`python benchmarks/gan_digits.py --losses {losses}`"
             + (f" --steps {args.steps}" if args.steps else "") + " (CPU, shared; 2000 samples per model)", "",
             "| loss | digits FID (vs the 397 test images) | steps | s | samples |", "|---|---|---|---|---|",
             f"| training images (floor) | {floor:.2f} | – | – | – |"]
    lines += [f"| {r['loss']} | {r['digits_fid']:.2f} | {r['steps']} | {r['seconds']:.0f} | "
              f"gan_digits_{r['loss']}.png |" for r in rows]
    with open(os.path.join(RESULTS, "gan_digits.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
