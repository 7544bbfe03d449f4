"""The curse of dimensionality, measured: KDE, GMM and RealNVP against a known target.

The lecture ("History" slide): basis-expansion estimators
``f_h(x) = sum_j a_j k_h(x, mu_j)`` (histogram, KDE, Gaussian mixture) suffer
from the curse of dimensionality. Here every method gets the same ``n_train``
samples of a target with a known log-density in ``d = 2, 4, ..., 64`` and is
scored by the held-out Monte-Carlo estimate of

    KL(p || q) = E_{x ~ p}[log p(x) - log q(x)]   (nats; >= 0 up to MC error)

on ``n_test`` fresh samples. Targets (``TARGETS``): a 3-component Gaussian
mixture (means at distance 4 from the origin in random directions, rotated
covariances with eigenvalues in [0.25, 1]; built with
``genlearn.classical.gmm(...).from_moments``), where a k = 3 full GMM is the
true model class, and rotated pairwise bananas (non-Gaussian in every pair of
coordinates), where no GMM with 3 components is. Methods:

* KDE: Gaussian kernel, isotropic bandwidth by 5-fold held-out likelihood
  (``kde("gaussian", "cv")``);
* GMM: EM with k = 3 (the true number), full covariances, 3 restarts
  (well specified: its error is pure estimation error, ~ #params / (2 n));
* GMM diag: k = 3 diagonal covariances (misspecified, fewer parameters);
* RealNVP: ``genlearn.flows.realnvp`` on standardised data trained with
  ``genlearn.train.fit`` (Adam, early stopping on a 10 % validation split).

    python benchmarks/curse_of_dimensionality.py   # writes benchmarks/results/curse_of_dimensionality.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
import optax

from genlearn.classical import gmm, kde
from genlearn.flows import realnvp
from genlearn.losses import nll
from genlearn.train import fit

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METHODS = ("KDE (gaussian, CV bandwidth)", "GMM k=3 full (EM)", "GMM k=3 diag (EM)", "RealNVP")


def mixture_target(d: int, seed: int = 0):
    """A 3-component Gaussian mixture in d dims: ``(log_prob(x), sample(key, n))``."""
    rng = np.random.default_rng(seed + d)
    dirs = rng.normal(size=(3, d))
    means = 4.0 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    covs = []
    for _ in range(3):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        covs.append((q * rng.uniform(0.25, 1.0, d)) @ q.T)
    model = gmm(3, "full")
    params = model.from_moments(np.array([0.5, 0.3, 0.2]), means, np.stack(covs))
    return (lambda x: np.asarray(model.log_prob(params, x), np.float64)), (lambda key, n: model.sample(params, key, n))


def banana_target(d: int, seed: int = 0, scale: float = 1.5, curvature: float = 1.0):
    """Rotated pairwise bananas in even d: ``(log_prob(x), sample(key, n))``.

    z ~ N(0, I_d); for each pair (a, b) = (2i, 2i+1): y_a = s z_a,
    y_b = z_b + c (z_a^2 - 1); x = Q y with Q a random rotation. The map is
    triangular with Jacobian determinant s^(d/2), so
    log p(x) = sum_i log N(z_i(Q^T x)) - (d/2) log s.
    """
    if d % 2:
        raise ValueError(f"banana_target needs an even d, got {d}")
    q, _ = np.linalg.qr(np.random.default_rng(seed + 7 * d).normal(size=(d, d)))

    def log_prob(x):
        y = np.asarray(x, np.float64) @ q  # rows: y = Q^T x
        za = y[:, 0::2] / scale
        zb = y[:, 1::2] - curvature * (za**2 - 1)
        z2 = np.sum(za**2, 1) + np.sum(zb**2, 1)
        return -0.5 * z2 - 0.5 * d * np.log(2 * np.pi) - 0.5 * d * np.log(scale)

    def sample(key, n):
        z = np.asarray(jax.random.normal(key, (n, d)), np.float64)
        y = np.empty_like(z)
        y[:, 0::2] = scale * z[:, 0::2]
        y[:, 1::2] = z[:, 1::2] + curvature * (z[:, 0::2] ** 2 - 1)
        return y @ q.T

    return log_prob, sample


TARGETS = {
    "mixture": (mixture_target, "3-component Gaussian mixture, weights (0.5, 0.3, 0.2), |mu_j| = 4, "
                "covariance eigenvalues U[0.25, 1], random rotations"),
    "banana": (banana_target, "rotated pairwise bananas: y_a = 1.5 z_a, y_b = z_b + (z_a^2 - 1) "
               "for d/2 coordinate pairs, then a random rotation"),
}


def fit_realnvp(key, train, steps, layers, hidden):
    mean, std = train.mean(0), train.std(0)
    z = (train - mean) / std
    d = train.shape[1]
    flow = realnvp(d, num_layers=layers, hidden=(hidden, hidden))
    k_init, k_fit = jax.random.split(key)
    params = flow.init(k_init)
    result = fit(
        nll(flow), params, z, optimizer=optax.adam(1e-3), steps=steps, batch_size=256,
        key=k_fit, val_fraction=0.1, eval_every=100, patience=5, progress=False,
    )
    log_det = float(np.sum(np.log(std)))

    def log_prob(x):
        return np.asarray(flow.log_prob(result.params, (x - mean) / std)) - log_det

    return log_prob, result.best_step


def run_one(target_name: str, d: int, args) -> dict:
    """Fits every method to one target in dimension d; returns its row of KLs."""
    log_prob_true, sample_true = TARGETS[target_name][0](d, args.seed)
    k_tr, k_te, k_fit = jax.random.split(jax.random.PRNGKey(args.seed + 1000 * d), 3)
    train = np.asarray(sample_true(k_tr, args.n_train), np.float32)
    test = np.asarray(sample_true(k_te, args.n_test), np.float32)
    log_p = log_prob_true(test.astype(np.float64))
    row = {"target": target_name, "d": d, "kl": {}, "kl_stderr": {}, "seconds": {}, "note": {}}

    def record(name, log_q, t0, note=""):
        gap = log_p - np.asarray(log_q, np.float64)
        row["kl"][name] = float(np.mean(gap))
        row["kl_stderr"][name] = float(np.std(gap) / np.sqrt(len(gap)))
        row["seconds"][name] = time.perf_counter() - t0
        row["note"][name] = note
        print(f"{target_name:8s} d={d:3d}  {name:30s} KL={row['kl'][name]:9.3f} "
              f"+- {row['kl_stderr'][name]:.3f}  ({row['seconds'][name]:.1f} s) {note}", flush=True)

    t0 = time.perf_counter()
    m = kde("gaussian", "cv")
    p = m.fit(k_fit, train)
    record(METHODS[0], m.log_prob(p, test), t0, f"h={float(p['chol'][0, 0]):.3f}")
    for name, cov in ((METHODS[1], "full"), (METHODS[2], "diag")):
        t0 = time.perf_counter()
        m = gmm(3, cov, n_init=3, reg_covar=1e-6)
        p = m.fit(k_fit, train)
        record(name, m.log_prob(p, test), t0, f"{m.num_parameters(d)} parameters")
    t0 = time.perf_counter()
    log_q, best = fit_realnvp(k_fit, train, args.flow_steps, args.flow_layers, args.flow_hidden)
    record(METHODS[3], log_q(test), t0, f"best step {best}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--flow-steps", type=int, default=1500)
    ap.add_argument("--flow-layers", type=int, default=6)
    ap.add_argument("--flow-hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.perf_counter()
    rows = [run_one(t, d, args) for t in args.targets for d in args.dims]

    os.makedirs(RESULTS, exist_ok=True)
    setup = dict(vars(args))
    setup["target_descriptions"] = {t: TARGETS[t][1] for t in args.targets}
    setup["total_seconds"] = time.perf_counter() - t_start
    with open(os.path.join(RESULTS, "curse_of_dimensionality.json"), "w") as f:
        json.dump({"setup": setup, "methods": list(METHODS), "rows": rows}, f, indent=2)

    header = "| target | d | " + " | ".join(METHODS) + " |"
    rule = "|---|---|" + "---:|" * len(METHODS)
    lines = [
        "# Curse of dimensionality: held-out KL(p || q) in nats (lower is better)",
        "",
        f"n_train = {args.n_train}, n_test = {args.n_test}; KL = mean over test points of "
        "log p(x) - log q(x) (+- standard error). "
        f"RealNVP: {args.flow_layers} affine couplings, hidden ({args.flow_hidden}, {args.flow_hidden}), "
        f"<= {args.flow_steps} Adam steps with early stopping. Total time {setup['total_seconds']:.0f} s.",
        "",
    ]
    lines += [f"* {t}: {TARGETS[t][1]}" for t in args.targets]
    lines += ["", header, rule]
    for row in rows:
        cells = [f"{row['kl'][m]:.3f} ± {row['kl_stderr'][m]:.3f}" for m in METHODS]
        lines.append(f"| {row['target']} | {row['d']} | " + " | ".join(cells) + " |")
    lines += ["", "KL per dimension (KL / d):", "", header, rule]
    for row in rows:
        lines.append(f"| {row['target']} | {row['d']} | "
                     + " | ".join(f"{row['kl'][m] / row['d']:.3f}" for m in METHODS) + " |")
    with open(os.path.join(RESULTS, "curse_of_dimensionality.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.targets), figsize=(5.6 * len(args.targets), 4.4), squeeze=False)
    for ax, t in zip(axes[0], args.targets):
        sub = [r for r in rows if r["target"] == t]
        dims = [r["d"] for r in sub]
        for m, marker in zip(METHODS, "osD^"):
            kl = np.array([r["kl"][m] for r in sub])
            se = np.array([r["kl_stderr"][m] for r in sub])
            ax.errorbar(dims, np.maximum(kl, 1e-3), yerr=se, marker=marker, capsize=3, label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(dims)
        ax.set_xticklabels([str(d) for d in dims])
        ax.set_xlabel("dimension d")
        ax.set_ylabel("held-out KL(p || q) [nats]")
        ax.set_title(f"target: {t}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Curse of dimensionality, n_train = {args.n_train} (lower is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "curse_of_dimensionality.png"), dpi=120)


if __name__ == "__main__":
    main()
