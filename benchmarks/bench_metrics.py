"""Times genlearn.metrics side by side with POT / SciPy / NumPy references.

    python benchmarks/bench_metrics.py [--sizes 1000 5000 20000] [--dim 64]

Writes ``benchmarks/results/metrics.json`` and ``benchmarks/results/metrics.md``.
For each metric and size ``n`` (both sets have ``n`` rows): genlearn's time on
a second call (``ours_s``; the first call, which includes XLA compilation, is
``ours_first_s``), the reference's time, their ratio ``ref_s / ours_s`` (> 1:
genlearn faster), and the relative difference of the values where the
reference computes the same quantity. Entries that were not run say why
(``skipped``): dense ``n x n`` problems at n = 20,000 need 3.2 GB per matrix
and cubic-time exact solvers take far longer than the few minutes a run is
allowed here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
import scipy
import scipy.linalg
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

import genlearn.metrics as gm

HERE = os.path.dirname(os.path.abspath(__file__))


def _time(fn, repeat=1):
    best, val = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        val = fn()
        best = min(best, time.perf_counter() - t)
    return best, val


def _rel(a, b):
    a, b = float(a), float(b)
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------- references (float64 NumPy)

def _blocked_sum(a, b, f, block=1000):
    return sum(float(f(cdist(a[i:i + block], b, "sqeuclidean")).sum()) for i in range(0, a.shape[0], block))


def ref_mmd2_unbiased(x, y, h):
    k = lambda d2: np.exp(-d2 / (2 * h * h))
    n, m = len(x), len(y)
    kxx, kyy, kxy = _blocked_sum(x, x, k), _blocked_sum(y, y, k), _blocked_sum(x, y, k)
    return (kxx - n) / (n * (n - 1)) + (kyy - m) / (m * (m - 1)) - 2 * kxy / (n * m)


def ref_energy(x, y):
    s = np.sqrt
    n, m = len(x), len(y)
    return 2 * _blocked_sum(x, y, s) / (n * m) - _blocked_sum(x, x, s) / n**2 - _blocked_sum(y, y, s) / m**2


def ref_prdc(real, fake, k, block=1000):
    def radii(a):
        return np.concatenate([np.sort(cdist(a[i:i + block], a), axis=1)[:, k] for i in range(0, len(a), block)])

    rr, rf = radii(real), radii(fake)
    prec_hit = np.zeros(len(fake), bool)
    dens = 0
    cov = np.zeros(len(real), bool)
    for i in range(0, len(real), block):
        d = cdist(real[i:i + block], fake)
        inside = d <= rr[i:i + block, None]
        prec_hit |= inside.any(0)
        dens += inside.sum()
        cov[i:i + block] = inside.any(1)
    rec_hit = np.zeros(len(real), bool)
    for j in range(0, len(fake), block):
        rec_hit |= (cdist(fake[j:j + block], real) <= rf[j:j + block, None]).any(0)
    return prec_hit.mean(), rec_hit.mean(), dens / (k * len(fake)), cov.mean()


def ref_frechet_scipy(x, y):
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ---------------------------------------------------------------- benchmark

def bench(sizes, dim, w2_sizes, sinkhorn_max, seed=0):
    import ot

    rows = []
    key = jax.random.PRNGKey(0)

    def data(n, d, s=seed):
        rng = np.random.default_rng(s + n + d)
        return rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.1 + 0.1

    def record(metric, n, d, ours, ref_name, ref=None, compare=True, skipped=None, note=None):
        ours_first, (ours_s, ours_val) = ours
        row = dict(metric=metric, n=n, d=d, ours_first_s=ours_first, ours_s=ours_s, value=ours_val,
                   reference=ref_name)
        if ref is not None:
            ref_s, ref_val = ref
            row.update(ref_s=ref_s, ratio_ref_over_ours=ref_s / ours_s)
            if compare:
                row["rel_diff"] = max(_rel(a, b) for a, b in zip(np.atleast_1d(ours_val), np.atleast_1d(ref_val)))
        if skipped:
            row["skipped"] = skipped
        if note:
            row["note"] = note
        rows.append(row)
        print(json.dumps(row), flush=True)

    def ours(fn):
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        return first, _time(fn)

    # exact W2: assignment vs POT network simplex
    for d in (2, dim):
        for n in w2_sizes:
            x, y = data(n, d)
            o = ours(lambda: gm.wasserstein2_exact(x, y))
            r = _time(lambda: float(np.sqrt(ot.emd2([], [], ot.dist(x, y), numItermax=10**8))))
            record("wasserstein2_exact", n, d, o, "ot.emd2 (POT network simplex)", r)
            r2 = _time(lambda: (lambda c: float(np.sqrt(c[linear_sum_assignment(c)].mean())))(
                cdist(x, y, "sqeuclidean")))
            record("wasserstein2_exact", n, d, o, "scipy linear_sum_assignment + cdist", r2)
    for n in sizes:
        if n not in w2_sizes:
            rows.append(dict(metric="wasserstein2_exact", n=n, d=dim, skipped=(
                "exact OT is O(n^3) with a dense n x n cost (3.2 GB at n=20000); evaluate() subsamples "
                "to max_exact=2000")))

    for n in sizes:
        x, y = data(n, dim)
        # sliced W2, same number of projections (different random directions)
        o = ours(lambda: gm.sliced_wasserstein(x, y, key, 128))
        r = _time(lambda: float(ot.sliced_wasserstein_distance(x, y, n_projections=128, p=2, seed=0)))
        record("sliced_wasserstein", n, dim, o, "ot.sliced_wasserstein_distance (128 proj.)", r, compare=False,
               note="different random directions: values agree only statistically")

        # Frechet distance
        o = ours(lambda: gm.frechet_distance(x, y))
        r = _time(lambda: ref_frechet_scipy(x, y))
        record("frechet_distance", n, dim, o, "scipy.linalg.sqrtm(S1 @ S2)", r)

        # MMD^2 (unbiased, Gaussian, fixed bandwidth)
        h = float(np.sqrt(dim) * 1.5)
        o = ours(lambda: gm.mmd2(x, y, h))
        r = _time(lambda: ref_mmd2_unbiased(x, y, h))
        record("mmd2_unbiased", n, dim, o, "NumPy float64, cdist in blocks", r)

        # energy distance
        o = ours(lambda: gm.energy_distance(x, y))
        r = _time(lambda: ref_energy(x, y))
        record("energy_distance", n, dim, o, "NumPy float64, cdist in blocks", r)

        # precision / recall / density / coverage
        o = ours(lambda: (*gm.precision_recall(x, y, 5), *gm.density_coverage(x, y, 5)))
        r = _time(lambda: ref_prdc(x, y, 5))
        record("precision_recall_density_coverage", n, dim, o, "NumPy float64, cdist + sort in blocks", r)

        # Sinkhorn divergence
        if n <= sinkhorn_max:
            eps = 0.05 * float(cdist(x[:500], y[:500], "sqeuclidean").mean())
            o = ours(lambda: gm.sinkhorn_divergence(x, y, eps, tol=1e-6))
            a = np.full(n, 1 / n)
            r = _time(lambda: float(ot.bregman.empirical_sinkhorn_divergence(
                x, y, eps, a, a, method="sinkhorn_log", stopThr=1e-6, numIterMax=2000)))
            record("sinkhorn_divergence", n, dim, o, "ot.bregman.empirical_sinkhorn_divergence (log)", r,
                   compare=False, note="POT debiases the transport cost <P,C>, genlearn the dual value "
                                       "OT_eps (Feydy et al.); times only")
        else:
            rows.append(dict(metric="sinkhorn_divergence", n=n, d=dim, skipped=(
                f"dense n x n Sinkhorn limited to n <= {sinkhorn_max} here (3.2 GB per cost matrix at 20000)")))
    return rows


def agreement(seed=0):
    """Max relative error vs the references on random sets (2-D and 64-D, n up to 1000)."""
    import ot

    rng = np.random.default_rng(seed)
    out = {}

    def upd(name, err):
        out[name] = max(out.get(name, 0.0), float(err))

    for d in (2, 64):
        for n in (10, 100, 1000):
            x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.2 + 0.3
            w = gm.wasserstein2_exact(x, y)
            upd("wasserstein2_exact vs ot.emd2", _rel(w, np.sqrt(ot.emd2([], [], ot.dist(x, y), numItermax=10**8))))
            c = cdist(x, y, "sqeuclidean")
            r, cc = linear_sum_assignment(c)
            upd("wasserstein2_exact vs scipy linear_sum_assignment", _rel(w, np.sqrt(c[r, cc].mean())))
            h = float(np.median(cdist(x, y)))
            k = lambda d2: np.exp(-d2 / (2 * h * h))
            kxx, kyy, kxy = k(cdist(x, x, "sqeuclidean")), k(cdist(y, y, "sqeuclidean")), k(c)
            ub = ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * kxy.mean())
            upd("mmd2 unbiased vs NumPy float64", _rel(gm.mmd2(x, y, h, True), ub))
            upd("mmd2 biased vs NumPy float64", _rel(gm.mmd2(x, y, h, False), kxx.mean() + kyy.mean() - 2 * kxy.mean()))
            upd("energy_distance vs NumPy float64", _rel(gm.energy_distance(x, y), ref_energy(x, y)))
            if n > 5:
                p, rc, dn, cv = ref_prdc(x, y, 5)
                pr, dc = gm.precision_recall(x, y, 5), gm.density_coverage(x, y, 5)
                upd("precision/recall/density/coverage vs NumPy (abs)", max(
                    abs(pr.precision - p), abs(pr.recall - rc), abs(dc.density - dn), abs(dc.coverage - cv)))
        for n, dd in ((1000, d), (20, 64), (10, 64)):
            x, y = rng.normal(size=(n, dd)), rng.normal(size=(n, dd)) * 0.8 + 0.1
            m1, m2, s1, s2 = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
            r1 = scipy.linalg.sqrtm(s1)
            ref = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1)).real
            key = "frechet_distance vs scipy sqrtm" + (" (rank-deficient n <= d)" if n <= dd else "")
            upd(key, _rel(gm.frechet_distance(x, y), ref))
    for p in (1.0, 3.0):
        x, y = rng.normal(size=(60, 3)), rng.normal(size=(45, 3))
        a = rng.random(60)
        a /= a.sum()
        upd("wasserstein_p (LP, unequal/weighted) vs ot.emd2",
            _rel(gm.wasserstein_p(x, y, p, x_weights=a), ot.emd2(a, np.full(45, 1 / 45), cdist(x, y) ** p) ** (1 / p)))
    return out


def to_markdown(rows, meta, agree=None):
    lines = ["# genlearn.metrics benchmark", "",
             f"Machine: {meta['machine']}; jax {meta['jax']} ({meta['backend']}), POT {meta['pot']}, "
             f"SciPy {meta['scipy']}. Command: `{meta['command']}`.", "",
             "`ours` is the second call (the first, with XLA compilation, is `ours first`). "
             "`ratio` = reference time / ours (> 1: genlearn faster). `rel diff` = |ours - ref| / |ref| "
             "where both compute the same value.", "",
             "| metric | n | d | ours (s) | ours first (s) | reference | ref (s) | ratio | rel diff |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r and "ours_s" not in r:
            lines.append(f"| {r['metric']} | {r['n']} | {r['d']} | - | - | skipped: {r['skipped']} | - | - | - |")
            continue
        f = lambda k, fmt="{:.4g}": fmt.format(r[k]) if k in r else "-"
        lines.append(f"| {r['metric']} | {r['n']} | {r['d']} | {f('ours_s')} | {f('ours_first_s')} | "
                     f"{r['reference']} | {f('ref_s')} | {f('ratio_ref_over_ours', '{:.2f}')} | "
                     f"{f('rel_diff', '{:.1e}')} |")
    notes = sorted({r["note"] for r in rows if "note" in r})
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    if agree:
        lines += ["", "## Agreement with references (max relative error; random sets, d = 2 and 64, n <= 1000)",
                  "", "| metric vs reference | max error |", "|---|---:|"]
        lines += [f"| {k} | {v:.1e} |" for k, v in agree.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--w2-sizes", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--sinkhorn-max", type=int, default=5000)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--agreement-only", action="store_true",
                        help="only print the max relative errors vs the references (and add them to the results)")
    args = parser.parse_args(argv)
    if args.agreement_only:
        agree = agreement()
        print(json.dumps(agree, indent=1))
        path = os.path.join(args.out, "metrics.json")
        if os.path.exists(path):
            with open(path) as fh:
                saved = json.load(fh)
            saved["agreement"] = agree
            with open(path, "w") as fh:
                json.dump(saved, fh, indent=1)
            with open(os.path.join(args.out, "metrics.md"), "w") as fh:
                fh.write(to_markdown(saved["rows"], saved["meta"], agree))
        return
    import ot

    meta = dict(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
                jax=jax.__version__, backend=jax.default_backend(), pot=ot.__version__, scipy=scipy.__version__,
                command="python benchmarks/bench_metrics.py " + " ".join(argv or []))
    rows = bench(args.sizes, args.dim, args.w2_sizes, args.sinkhorn_max)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    with open(os.path.join(args.out, "metrics.md"), "w") as fh:
        fh.write(to_markdown(rows, meta))


if __name__ == "__main__":
    main()
