"""Mode collapse on ring8 / grid25 for every GAN objective and the MMD generator.

The protocol of Metz et al. 2017 / VEEGAN (Srivastava et al. 2017) / PacGAN
(Lin et al. 2018): ring of 8 Gaussians (radius 2) and 5x5 grid (spacing 2),
std 0.02; 5000 generator samples; a sample is high quality within 3 std of
its nearest mode; a mode is covered when it has >= 1 high-quality sample;
KL between the high-quality mode histogram and the uniform one
(``genlearn.metrics.mode_coverage``). Every method trains with the same
defaults as ``genlearn fit gan --loss L --data D`` (and ``--steps`` when given
here), all seeds of one method at once through ``genlearn.gan.run.train_seeds``
(the min-max step vmapped over seeds; the same keys and arithmetic as
``train_model`` up to float rounding, which chaotic adversarial training can
amplify into a different outcome for a seed: compare seeds within one call).
``ns-r1`` / ``js-r1`` are the non-saturating / minimax GAN with the flags in ``VARIANTS`` (R1 0.1, EMA, ...).

Writes benchmarks/results/mode_collapse.{json,md,png}; results are saved
after every run, so a partial run leaves a partial table.

    python benchmarks/mode_collapse.py --seeds 3
    python benchmarks/mode_collapse.py --stability 10   # WGAN-GP on ring8, 10 seeds: NaN / divergence check
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from genlearn.data import load_dataset
from genlearn.gan.run import train_seeds

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METHODS = ("js", "js-r1", "ns", "ns-r1", "wgan-clip", "wgan-gp", "sn", "hinge", "mmd")
# label -> (loss, options on top of the `genlearn fit gan` defaults). ns-r1: the non-saturating GAN with
# a light R1 penalty on the real data (Mescheder et al. 2018), a generator EMA, a 2-D uniform latent, a
# wider generator and a long schedule; the same on both data sets.
_R1 = {"r1_weight": 0.1, "ema_decay": 0.999, "latent_dim": 2, "base": "uniform", "hidden": [128, 128, 128],
       "steps": 60000}
VARIANTS = {"ns-r1": ("ns", _R1), "js-r1": ("js", _R1)}  # js-r1: the same flags on the minimax GAN
DATASETS = ("ring8", "grid25")


def _row(data, method, seed, run, seconds):
    m = run.metrics
    hist = run.result.history
    return {"data": data, "method": method, "seed": seed, "modes_covered": m.get("modes_covered"),
            "num_modes": m.get("num_modes"), "high_quality_fraction": m.get("high_quality_fraction"),
            "mode_kl": m.get("mode_kl"), "steps": run.result.step, "stop_reason": run.result.stop_reason,
            "rejected_updates": int(np.sum(hist["nonfinite"])),
            "final_distance": float(np.mean(hist["distance"][-100:])),
            "max_abs_distance": float(np.max(np.abs(hist["distance"]))), "seconds": seconds,
            "config": {k: run.config[k] for k in ("latent_dim", "base", "hidden", "critic_hidden", "critic_steps",
                                                  "batch_size", "lr_generator", "lr_critic", "steps", "r1_weight",
                                                  "ema_decay")}}


def _table(rows):
    lines = ["| data | method | seeds | modes covered | high-quality % | KL(modes, uniform) | generator steps (critic steps m) | s / run |",
             "|---|---|---|---|---|---|---|---|"]
    for data in DATASETS:
        for method in METHODS:
            rs = [r for r in rows if r["data"] == data and r["method"] == method]
            if not rs:
                continue
            modes = np.array([r["modes_covered"] or 0 for r in rs], float)
            hq = 100 * np.array([r["high_quality_fraction"] or 0 for r in rs], float)
            kl = np.array([np.inf if r["mode_kl"] is None else r["mode_kl"] for r in rs], float)
            lines.append(f"| {data} | {method} | {len(rs)} | {modes.mean():.1f} / {rs[0]['num_modes']} "
                         f"({', '.join(str(int(v)) for v in modes)}) | {hq.mean():.1f} ± {hq.std():.1f} | "
                         f"{kl.mean():.3f} | {rs[0]['steps']} (m = {rs[0]['config']['critic_steps']}) | {np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def _configs(rows):
    lines = ["Configurations (the `genlearn fit gan --loss L --data D` defaults; `ns-r1` adds "
             f"{VARIANTS['ns-r1'][1]}, `js-r1` the same):", ""]
    seen = set()
    for r in sorted(rows, key=lambda r: (DATASETS.index(r["data"]), METHODS.index(r["method"]))):
        key = (r["data"], r["method"])
        if key not in seen:
            seen.add(key)
            c = r["config"]
            lines.append(f"- {r['data']} / {r['method']}: " + ", ".join(f"{k} {c[k]}" for k in c if k in c))
    return "\n".join(lines)


def _figure(samples, path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any((d, m) in samples for d in DATASETS)]
    fig, axes = plt.subplots(len(DATASETS), len(methods), figsize=(2.6 * len(methods), 2.7 * len(DATASETS)),
                             squeeze=False)
    for i, data in enumerate(DATASETS):
        centers = load_dataset(data, n_train=10, n_test=10).centers
        lim = 3.0 if data == "ring8" else 5.5
        for j, method in enumerate(methods):
            ax = axes[i, j]
            ax.scatter(centers[:, 0], centers[:, 1], s=25, c="red", marker="x", lw=1)
            if (data, method) in samples:
                x = samples[(data, method)][:2000]
                ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(method)
            if j == 0:
                ax.set_ylabel(data)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_md(rows, args):
    cmd = "python benchmarks/mode_collapse.py --seeds " + str(args.seeds) + (
        f" --steps {args.steps}" if args.steps else "") + " [--data D --methods M --merge]"
    with open(os.path.join(RESULTS, "mode_collapse.md"), "w") as fh:
        fh.write("# Mode collapse: ring of 8 and grid of 25 Gaussians (std 0.02)\n\n"
                 f"`{cmd}` (mean over seeds; modes per seed in brackets; CPU, shared)\n\n"
                 + _table(rows) + "\n\n" + _configs(rows) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="override every method's default steps")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--merge", action="store_true", help="keep rows of other (data, method) pairs already saved")
    ap.add_argument("--stability", type=int, default=0, help="instead: WGAN-GP on ring8 with this many seeds")
    ap.add_argument("--rewrite", action="store_true", help="only rewrite the table and figure from the saved results")
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    if args.rewrite:
        with open(os.path.join(RESULTS, "mode_collapse.json")) as fh:
            rows = json.load(fh)["rows"]
        with np.load(os.path.join(RESULTS, "mode_collapse.npz")) as z:
            samples = {tuple(k.split("/")): z[k] for k in z.files}
        _write_md(rows, args)
        _figure(samples, os.path.join(RESULTS, "mode_collapse.png"))
        return
    if args.stability:
        rows = []
        ds = load_dataset("ring8")
        t = time.time()
        runs = train_seeds(ds, range(args.stability), loss="wgan-gp", steps=args.steps)
        for seed, run in enumerate(runs):
            rows.append(_row("ring8", "wgan-gp", seed, run, (time.time() - t) / len(runs)))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "config"}), flush=True)
        ok = all(r["stop_reason"] == "steps" and r["rejected_updates"] == 0 and np.isfinite(r["max_abs_distance"])
                 for r in rows)
        with open(os.path.join(RESULTS, "gan_stability.json"), "w") as fh:
            json.dump({"all_finite_no_divergence": ok, "rows": rows}, fh, indent=2)
        lines = ["# WGAN-GP on ring8: stability over seeds", "",
                 f"`python benchmarks/mode_collapse.py --stability {args.stability}`", "",
                 "| seed | stop | rejected updates | final critic distance | max abs distance | modes | HQ % |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['stop_reason']} | {r['rejected_updates']} | {r['final_distance']:.4f} | "
                  f"{r['max_abs_distance']:.3f} | {r['modes_covered']} | {100 * r['high_quality_fraction']:.1f} |"
                  for r in rows]
        lines += ["", f"all finite, no divergence: **{ok}**"]
        with open(os.path.join(RESULTS, "gan_stability.md"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return
    rows, samples = [], {}
    todo = {(d, m) for d in args.data.split(",") for m in args.methods.split(",")}
    json_path, npz_path = os.path.join(RESULTS, "mode_collapse.json"), os.path.join(RESULTS, "mode_collapse.npz")
    if args.merge and os.path.exists(json_path):  # keep the other (data, method) rows of an earlier run
        with open(json_path) as fh:
            rows = [r for r in json.load(fh)["rows"] if (r["data"], r["method"]) not in todo]
        if os.path.exists(npz_path):
            with np.load(npz_path) as z:
                samples = {tuple(k.split("/")): z[k] for k in z.files if tuple(k.split("/")) not in todo}
    for data in args.data.split(","):
        ds = load_dataset(data)
        for method in args.methods.split(","):
            t = time.time()
            loss, options = VARIANTS.get(method, (method, {}))
            options = dict(options)
            steps = args.steps or options.pop("steps", None)
            options.pop("steps", None)
            runs = train_seeds(ds, range(args.seeds), loss=loss, steps=steps, **options)
            for seed, run in enumerate(runs):
                rows.append(_row(data, method, seed, run, (time.time() - t) / len(runs)))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "config"}), flush=True)
            samples[(data, method)] = runs[0].samples
            np.savez_compressed(npz_path, **{f"{d}/{m}": x[:2000] for (d, m), x in samples.items()})
            with open(json_path, "w") as fh:
                json.dump({"protocol": "5000 samples, HQ within 3 std of nearest mode, mode covered if >= 1 HQ "
                           "sample; std 0.02, ring radius 2, grid spacing 2", "rows": rows}, fh, indent=2)
            _write_md(rows, args)
            _figure(samples, os.path.join(RESULTS, "mode_collapse.png"))


if __name__ == "__main__":
    main()
