"""``genlearn compare``: the lecture's comparison on one dataset, in one command.

Fits a roster of models — classical (histogram, KDE, GMM), flows (NICE,
RealNVP, MAF, CNF, ...), an energy model and generators (JS GAN, WGAN-GP, MMD
generator) — on the same data with a fixed budget, evaluates each with every
metric that applies (:func:`genlearn.runs.evaluate_run`) and writes

    OUT/leaderboard.md, OUT/leaderboard.json   one row per model, with train time
    OUT/samples.png                            a panel of samples per model
    OUT/density.png                            densities (2-D data, models with one)
    OUT/report.md                              the page tying them together
    OUT/runs/NAME/                             each model's own run directory

Roster rows are registry families (`genlearn.registry`) with options and a
budget; any registered family name works as a row too. A model that is
unavailable, fails or diverges gets a row saying so and the comparison goes on.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from genlearn.data import Dataset

__all__ = ["ROSTER", "DEFAULT_ROSTER", "Entry", "roster_entry", "compare", "parse_budget"]


class Entry(NamedTuple):
    """A roster row: a registry family with options and a budget."""

    name: str
    family: str  # a genlearn.registry name
    options: dict = {}  # overrides of the family's defaults (never mutated)
    default_steps: dict = {}  # data kind ("toy" | "pixels") -> steps at the default budget (else the family's)
    time_cap: float | None = None  # seconds: also stop on the clock at the default budget (slow models)
    kind_options: dict = {}  # data kind ("toy" | "pixels") -> options on top of ``options`` for that kind


def _kind(dataset) -> str:
    return "pixels" if dataset.discrete_levels is not None else "toy"


def _options(entry: Entry, dataset) -> dict:
    """The entry's options for this data set: ``options`` updated by ``kind_options[kind]``."""
    return {**entry.options, **entry.kind_options.get(_kind(dataset), {})}


# Default budgets: the whole default roster on ring8 fits and evaluates in under 10 minutes on 2 CPU
# cores (`genlearn compare --data ring8`); every model gets the same data and seed. On the 2-D toys MAF
# takes batches of 128 at a peak learning rate of 3e-3 (cosine decay): per second of a 2-core CPU the
# affine flows learned faster that way than at the families' 256 and 1e-3 (ring8, RealNVP of 8 couplings of
# 2x128, its 2-D default until stop 30: 4000 steps of 128 at 3e-3 reach -2.43 nats in 11 s, 2000 steps
# of 256 at 1e-3 -1.62 in 12 s; 20000 steps of 128 at 3e-3, -2.64 in 44 s with seed 0, -2.38 with seed 1;
# MAF, 10000 steps, -2.70 in 56 s). 5e-3 was faster still but diverged on one seed of three.
_FLOW_STEPS = {"toy": 2000, "pixels": 2000}
_FAST_TOY = {"toy": {"batch_size": 128, "learning_rate": 3e-3}}
ROSTER: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("histogram", "histogram"),
        Entry("kde", "kde"),
        Entry("gmm", "gmm"),
        # NICE (volume preserving but for its last diagonal scale) needs depth for 8 sharp modes: its family
        # schedule (batch 256 at 3e-3; batch 128 at 2e-3 learned less) with 32 scanned couplings on the toys
        # instead of the family's 48 on 2-D data, at two thirds of the cost per step (ring8 gap to the truth,
        # seeds 0/1/2: 24 couplings 0.61/0.77/1.27, 32: 0.48/0.63/0.56, 48: 0.39/0.46/0.71)
        Entry("nice", "nice", {}, {"toy": 20000, "pixels": 2000}, kind_options={"toy": {"num_layers": 32}}),
        # RealNVP's 2-D default of 24 scanned couplings of 2x64 learns less at 3e-3 (ring8 gap to the truth, seed
        # 0, 20k steps of 128: 1.643); at its own 1e-3 in batches of 128, 0.142 in 71 s (batches of 256: 0.141 in
        # 107 s; 12k of them: 0.195 in 68 s)
        Entry("realnvp", "realnvp", {}, {"toy": 20000, "pixels": 2000}, kind_options={"toy": {"batch_size": 128}}),
        Entry("maf", "maf", {}, {"toy": 8000, "pixels": 2000}, kind_options=_FAST_TOY),
        *(Entry(name, name, {}, _FLOW_STEPS) for name in ("spline", "glow")),
        # trained by flow matching (no ODE solve per step), the family's default objective; the exact
        # likelihood and the samples are ODE solves
        Entry("cnf", "cnf", {}, {"toy": 20000, "pixels": 3000}, time_cap=120.0),
        # a shorter AIS than `genlearn fit ebm` (0.05-nat class accuracy in 2-D; the run records its stderr)
        Entry("ebm", "ebm", {"ais_chains": 500, "ais_temperatures": 300, "sample_steps": 100},
              {"toy": 1500, "pixels": 800}),
        # 2-D toys: the minimax GAN with the flags it needs there (`genlearn fit gan --help`); a third of
        # the 60000 steps of benchmarks/results/mode_collapse.md (98.6 % high quality on ring8): 8/8 modes
        # and 98.65 % (seed 0; 30000 steps: 98.4-98.5 % on 3 seeds), ~50 s on 2 cores
        Entry("gan-js", "gan", {"loss": "js"}, {"toy": 20000, "pixels": 2000},
              kind_options={"toy": {"r1_weight": 0.1, "ema_decay": 0.999, "latent_dim": 2, "base": "uniform",
                                    "hidden": [128, 128, 128]}}),
        # the family's 2-D toy recipe at 3/8 of its 32000 steps (16000 steps: 8/8 modes, 97.0-98.2 % high
        # quality on ring8 over 3 seeds, ~50 s)
        Entry("wgan-gp", "gan", {"loss": "wgan-gp"}, {"toy": 12000, "pixels": 1500}),
        Entry("mmd-gen", "gan", {"loss": "mmd"}, {"toy": 4000, "pixels": 2000}),
        # the IWAE bound with k = 200 (not the family's 1000): the runs layer evaluates it on the test set
        Entry("vae", "vae", {"eval_samples": 200}, {"toy": 3000, "pixels": 2000}),
        # score-based diffusion: its exact likelihood is an ODE solve per batch, so not in the default roster
        Entry("diffusion", "diffusion", {}, {"toy": 3000, "pixels": 1500}, time_cap=120.0),
    ]
}

DEFAULT_ROSTER = ("histogram", "kde", "gmm", "nice", "realnvp", "maf", "spline", "cnf", "ebm", "gan-js", "wgan-gp",
                  "mmd-gen")

# Leaderboard columns: (metric key, header, lower is better?)
COLUMNS = [
    ("test_nll", "test NLL", True),
    ("test_bits_per_dim", "bits/dim", True),
    ("w2_exact", "W2 exact", True),
    ("sliced_w2", "sliced W2", True),
    ("mmd2_unbiased", "MMD²", True),
    ("frechet_distance", "Fréchet", True),
    ("fid_features", "FID (digits net)", True),
    ("is_samples", "IS (digits net)", False),
    ("precision", "precision", False),
    ("recall", "recall", False),
    ("coverage", "coverage", False),
    ("modes_covered", "modes", False),
    ("high_quality_fraction", "high quality", False),
]


def parse_budget(text: str | None) -> tuple[str, float] | None:
    """``"3000"`` -> ("steps", 3000); ``"90s"`` -> ("seconds", 90); None -> None."""
    if text is None:
        return None
    t = str(text).strip().lower()
    try:
        if t.endswith("s") and not t.endswith("steps"):
            value = float(t[:-1])
            kind = "seconds"
        else:
            value = float(t[:-5] if t.endswith("steps") else t)
            kind = "steps"
    except ValueError:
        raise ValueError(f"budget must be a number of steps (e.g. 3000) or seconds (e.g. 90s), got {text!r}") from None
    if not (value > 0 and math.isfinite(value)) or (kind == "steps" and value != int(value)):
        raise ValueError(f"budget must be a positive {'integer number of steps' if kind == 'steps' else 'time'}, "
                         f"got {text!r}")
    return kind, value


def _available(entry: Entry) -> str | None:
    """None if the entry's family is registered (and importable) here, else why not."""
    from genlearn import registry

    try:
        registry.get(entry.family)
    except (ImportError, ValueError) as err:
        return str(err)
    return None


def _not_applicable(entry: Entry, dataset) -> str | None:
    """Why the model does not apply to this data (its row says so), or None."""
    from genlearn import registry

    applies = registry.get(entry.family).applies
    return applies(dataset) if applies else None


def _fit_one(entry: Entry, dataset, out: str, steps: int | None, max_seconds: float | None, seed: int,
             progress: bool) -> dict:
    """Fits one roster entry into the run directory ``out`` (`genlearn.runs.fit`); returns its metrics."""
    from genlearn.runs import fit

    return fit(entry.family, dataset, _options(entry, dataset), out=out, seed=seed, steps=steps,
               max_seconds=max_seconds, progress=progress)[2]


def roster_entry(name: str) -> Entry:
    """The roster row ``name``, or a row for the registered family ``name`` with its own defaults."""
    return ROSTER.get(name) or Entry(name, name)


def _steps_for(entry: Entry, dataset, budget) -> tuple[int | None, float | None]:
    from genlearn import registry

    if "steps" not in registry.get(entry.family).defaults(dataset, _options(entry, dataset)):
        return None, None  # not iterative (a closed-form or EM fit)
    kind = _kind(dataset)
    if budget is None:
        return entry.default_steps.get(kind), entry.time_cap
    if budget[0] == "steps":
        return int(budget[1]), None
    # a time budget: a generous step count, stopped by the clock
    return entry.default_steps.get(kind), float(budget[1])


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def _add_mean_rank(rows: list[dict]) -> None:
    """``mean_rank``: each ok model's rank averaged over the leaderboard metrics it has (1 = best)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    ranks: dict[int, list[float]] = {id(r): [] for r in ok}
    for key, _, lower in COLUMNS:
        have = [r for r in ok if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if len(have) < 2:
            continue
        values = np.array([r[key] for r in have], dtype=float) * (1 if lower else -1)
        order = values.argsort(kind="stable")
        rank = np.empty(len(have))
        rank[order] = np.arange(1, len(have) + 1)
        for v in np.unique(values):  # ties share their mean rank
            rank[values == v] = rank[values == v].mean()
        for r, k in zip(have, rank):
            ranks[id(r)].append(float(k))
    for r in ok:
        if ranks[id(r)]:
            r["mean_rank"] = float(np.mean(ranks[id(r)]))


def _leaderboard_md(rows: list[dict], dataset_name: str) -> str:
    present = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    lines = [f"# genlearn compare — {dataset_name}", "",
             "Sorted by mean rank over the metrics each model has (1 = best). Lower is better for NLL, "
             "bits/dim, W2, MMD², Fréchet and FID; higher for precision, recall, coverage, modes and "
             "high-quality fraction. Best value per column in bold. W2 and MMD² are estimated from finite "
             "samples, so small differences near their noise floor do not separate models.", ""]
    head = ["model", "status", "mean rank", "train s"] + [h for _, h, _ in present]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    best = {}
    for key, _, lower in present:
        vals = [r[key] for r in rows if r.get("status") == "ok" and isinstance(r.get(key), (int, float))
                and math.isfinite(r[key])]
        if vals:
            best[key] = min(vals) if lower else max(vals)
    for r in rows:
        cells = [r["model"], r["status"], _fmt(r.get("mean_rank")), _fmt(r.get("train_seconds"))]
        for key, _, _ in present:
            text = _fmt(r.get(key))
            if key in best and r.get(key) == best[key] and r.get("status") == "ok":
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(data: str | Dataset = "ring8", models: list[str] | tuple[str, ...] | None = None, *,
            budget: str | None = None, out: str = "runs/compare", seed: int = 0, num_samples: int | None = 2000,
            progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Fits and evaluates every model of the roster on ``data``; returns the leaderboard rows.

    Args:
      data: a genlearn dataset name (default ``ring8``; ``digits`` works too), a data
        file (``genlearn.data.load_file`` with its defaults) or a ``Dataset``.
      models: roster names or any registered family (default :data:`DEFAULT_ROSTER`).
      budget: ``"N"`` steps for every iterative model, ``"Ns"`` seconds per
        model (every iterative family stops on the clock), or None for the per-model defaults.
      out: output directory.
      seed: model/training seed.
      num_samples: samples per model for the metrics (default 2000; exact W2 uses <= 2000, Sinkhorn
        <= 1000, and the k-NN metrics grow with the product of sample and test sizes). None: the test size.
      progress: show per-model training progress bars.
      log: where progress lines go.
    """
    import jax

    from genlearn import plotting, registry
    from genlearn.data import DATASETS, FILE_SUFFIXES, load_dataset, load_file
    from genlearn.runs import default_num_samples, evaluate_run, load

    models = list(models or DEFAULT_ROSTER)
    unknown = [m for m in models if m not in ROSTER and m not in registry.names()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; the roster is {list(ROSTER)}")
    if isinstance(data, str) and data not in DATASETS and not data.lower().endswith(FILE_SUFFIXES):
        raise ValueError(f"unknown dataset {data!r}; choose one of {list(DATASETS)} or a data file {FILE_SUFFIXES}")
    parsed = parse_budget(budget)
    dataset = data if not isinstance(data, str) else load_dataset(data) if data in DATASETS else load_file(data)
    data = dataset.name
    os.makedirs(out, exist_ok=True)
    rows: list[dict] = []
    sample_panels: list[tuple[str, np.ndarray]] = []
    density_panels: list[tuple[str, Callable]] = []
    start_all = time.perf_counter()
    for i, name in enumerate(models, 1):
        entry = roster_entry(name)
        row: dict[str, Any] = {"model": name, "family": entry.family}
        why, status = _available(entry), "unavailable"
        if why is None:
            why, status = _not_applicable(entry, dataset), "n/a"
        if why is not None:
            rows.append({**row, "status": status, "error": why})
            log(f"[{i}/{len(models)}] {name}: {status} — {why}")
            continue
        steps, max_seconds = _steps_for(entry, dataset, parsed)
        run_dir = os.path.join(out, "runs", name)
        log(f"[{i}/{len(models)}] {name}: fitting" + (f" ({steps} steps)" if steps else ""))
        t0 = time.perf_counter()
        try:
            fitted = _fit_one(entry, dataset, run_dir, steps, max_seconds, seed, progress)
            row["train_seconds"] = time.perf_counter() - t0
            run = load(run_dir)
            # one draw of samples for the metrics and the panel; the test NLL the fit measured
            n = num_samples or default_num_samples(dataset)
            samples = np.asarray(run.sample(jax.random.PRNGKey(seed + 7), max(n, 2000 if run.dim == 2 else 25)))
            metrics = evaluate_run(run_dir, seed=seed, run=run, dataset=dataset, samples=samples[:n],
                                   fit_metrics=fitted)
            row.update({k: v for k, v in metrics.items() if k not in ("model", "family")})
            row["status"] = "ok"
            sample_panels.append((name, samples[:2000] if run.dim == 2 else samples[:25]))
            if run.log_prob is not None and run.dim == 2:
                grid = os.path.join(run_dir, "density.npz")  # written by the fit on the same test split's grid
                density_panels.append((name, np.load(grid)["log_density"] if os.path.exists(grid) else run.log_prob))
            log(f"[{i}/{len(models)}] {name}: done in {row['train_seconds']:.0f} s"
                + (f", test NLL {row['test_nll']:.4f}" if row.get("test_nll") is not None else "")
                + (f", W2 {row['w2_exact']:.4f}" if "w2_exact" in row else ""))
        except Exception as err:  # noqa: BLE001 - a failing model gets a row; the comparison goes on
            diverged = isinstance(err, FloatingPointError)
            row.update(status="diverged" if diverged else "failed", train_seconds=time.perf_counter() - t0,
                       error=str(err) if diverged else f"{type(err).__name__}: {err}")
            if not diverged:
                with open(os.path.join(out, f"error-{name}.txt"), "w") as fh:
                    fh.write(traceback.format_exc())
            log(f"[{i}/{len(models)}] {name}: {row['status']} — {row['error']}")
        rows.append(row)
    _add_mean_rank(rows)
    rows.sort(key=lambda r: (r.get("status") != "ok", r.get("mean_rank", float("inf"))))
    total = time.perf_counter() - start_all
    with open(os.path.join(out, "leaderboard.json"), "w") as fh:
        json.dump({"data": data, "budget": budget, "seed": seed, "total_seconds": total, "rows": rows}, fh,
                  indent=2, default=float)
    table = _leaderboard_md(rows, data)
    with open(os.path.join(out, "leaderboard.md"), "w") as fh:
        fh.write(table)
    figures = []
    if sample_panels:
        if dataset.test.shape[1] == 2:
            plotting.plot_sample_panels(sample_panels, np.asarray(dataset.test[:2000]), os.path.join(out, "samples.png"))
        elif dataset.discrete_levels is not None and math.isqrt(dataset.test.shape[1]) ** 2 == dataset.test.shape[1]:
            plotting.plot_digit_panels(sample_panels, os.path.join(out, "samples.png"),
                                       levels=int(dataset.discrete_levels))
        figures.append(("Samples", "samples.png"))
    if density_panels:
        plotting.plot_density_panels(density_panels, np.asarray(dataset.test), os.path.join(out, "density.png"))
        figures.append(("Densities", "density.png"))
    report = [table, f"Total time: {total:.0f} s (budget: {budget or 'per-model defaults'}; seed {seed}).", ""]
    for title, path in figures:
        report += [f"## {title}", "", f"![{title}]({path})", ""]
    failures = [r for r in rows if r["status"] != "ok"]
    if failures:
        report += ["## Models without figures", ""]
        report += [f"- **{r['model']}** ({r['status']}): {r.get('error', '')}" for r in failures]
        report.append("")
    report += ["Each model's run directory (config, params, metrics.json, figures) is under `runs/`."]
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(report) + "\n")
    log(f"compare: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} models ok in {total:.0f} s; "
        f"leaderboard in {os.path.join(out, 'leaderboard.md')}")
    return rows
