"""The ``genlearn`` command line: fit, sample and evaluate models on built-in data or your own files.

    genlearn fit realnvp --data moons --out runs/moons
    genlearn fit maf --data my.npy                            (also .npz --key K, .csv/.tsv --columns a,b,c)
    genlearn fit kde --data moons --out runs/kde-moons        (also histogram, gmm)
    genlearn fit ebm --data ring8 --out runs/ebm-ring8        (energy-based model: PCD + AIS likelihood)
    genlearn fit gan --loss wgan-gp --data ring8 --out runs/wgan-ring8   (js, ns, wgan-clip, sn, hinge, mmd)
    genlearn sample --run runs/moons -n 1000 --out samples.npy
    genlearn eval --run runs/moons
    genlearn eval --samples fake.npy --reference real.npy --out metrics.json
    genlearn compare --data ring8 --out runs/compare    (every family, one leaderboard)

Bad arguments print a usage message and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]


def _family_flags() -> dict[str, dict]:
    """Every family option flag -> its argparse type, the union of its choices, help, and the families."""
    from genlearn import registry

    flags: dict[str, dict] = {}
    for name in registry.names():
        for opt in registry.get(name).options:
            f = flags.setdefault(opt.flag, {"type": opt.type, "choices": [], "help": opt.help, "families": []})
            f["families"].append(name)
            if opt.help not in f["help"]:
                f["help"] += f"; {opt.help}"
            f["choices"] += [c for c in (opt.choices or ()) if c not in f["choices"]]
    return flags


def _columns(text: str) -> list[str]:
    cols = [c.strip() for c in text.split(",") if c.strip()]
    if not cols:
        raise argparse.ArgumentTypeError("expected comma-separated column names or 0-based indices")
    return cols


def _test_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}")
    return value


def _file_args(p: argparse.ArgumentParser, split: bool) -> None:
    """The flags of a data file (``split``: the flags of a file used as training data)."""
    from genlearn import registry

    g = p.add_argument_group("data files (.npy, .npz, .csv, .tsv)")
    g.add_argument("--key", help="the array of a .npz file")
    g.add_argument("--columns", type=_columns,
                   help="comma-separated columns: header names of a .csv/.tsv file, else 0-based indices")
    if split:
        g.add_argument("--levels", type=registry.positive_int, default=None,
                       help="integer data in 0..L-1 (256 for 8-bit images): dequantised, bits/dim reported")
        g.add_argument("--test-fraction", type=_test_fraction, default=None,
                       help="share of the file's rows held out for testing (default 0.2; split by --data-seed)")
        g.add_argument("--drop-nonfinite", action="store_true", default=None,
                       help="drop the rows with NaN or inf (and say how many) instead of failing")


def build_parser() -> argparse.ArgumentParser:
    from genlearn import registry
    from genlearn.data import DATASETS

    parser = argparse.ArgumentParser(prog="genlearn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,sample,eval,compare}")

    p = sub.add_parser("fit", help="train a model on a built-in dataset or a data file and save the run")
    p.add_argument("model", help=f"model to fit, one of: {', '.join(registry.names())}")
    p.add_argument("--data", default="moons",
                   help=f"dataset, one of: {', '.join(DATASETS)}, or a .npy/.npz/.csv/.tsv file (default moons)")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA)")
    p.add_argument("--seed", type=registry.nonneg_int, default=0, help="model/training seed")
    p.add_argument("--data-seed", type=registry.nonneg_int, default=0,
                   help="seed of the generated toy data, or of a file's train/test split")
    _file_args(p, split=True)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = p.add_argument_group("model options (each family takes some; defaults depend on the model and data)")
    for flag, f in _family_flags().items():
        helptext = f"{f['help']} [{', '.join(f['families'])}]"
        if f["type"] is bool:
            g.add_argument(flag, action="store_true", default=None, help=helptext)
        else:
            g.add_argument(flag, type=f["type"], choices=f["choices"] or None, help=helptext)

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("--run", required=True, help="run directory written by 'genlearn fit'")
    s.add_argument("-n", type=registry.positive_int, default=1000, help="number of samples")
    s.add_argument("--out", required=True, help="output .npy file")
    s.add_argument("--seed", type=registry.nonneg_int, default=0)

    e = sub.add_parser("eval", help="every applicable metric: a run against its held-out data, or two sample files")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by 'genlearn fit'")
    src.add_argument("--samples", help="generated samples, an (n, d) .npy/.npz/.csv/.tsv file (with --reference)")
    e.add_argument("--reference", help="real samples, an (m, d) .npy/.npz/.csv/.tsv file (with --samples)")
    e.add_argument("--num-samples", type=registry.positive_int, default=None,
                   help="samples drawn from the run (default: the test-set size, at most 5000)")
    e.add_argument("--digits-features", action="store_true",
                   help="with --samples: also compute FID/IS/KID in the digits classifier's features (d = 64)")
    e.add_argument("--out", default=None, help="metrics file (default: RUN/metrics.json, or ./metrics.json)")
    e.add_argument("--seed", type=registry.nonneg_int, default=0)
    _file_args(e, split=False)

    from genlearn.compare import DEFAULT_ROSTER, ROSTER

    c = sub.add_parser("compare", help="fit the roster of models on one dataset and rank them by every metric")
    c.add_argument("--data", default="ring8",
                   help=f"dataset, one of: {', '.join(DATASETS)}, or a .npy/.npz/.csv/.tsv file (default ring8)")
    c.add_argument("--models", default=None,
                   help=f"comma-separated roster rows ({', '.join(ROSTER)}) or registered models "
                   f"(default: {','.join(DEFAULT_ROSTER)})")
    c.add_argument("--budget", default=None,
                   help="per model: N steps (e.g. 3000) or N seconds (e.g. 60s); default: per-model settings")
    c.add_argument("--out", default=None, help="output directory (default runs/compare-DATA)")
    c.add_argument("--num-samples", type=registry.positive_int, default=2000, help="samples per model for the metrics")
    c.add_argument("--seed", type=registry.nonneg_int, default=0)
    c.add_argument("--no-progress", action="store_true", help="hide the per-model progress bars")
    _file_args(c, split=True)
    return parser


def _fail(message: str, code: int = 1) -> int:
    print(f"genlearn: error: {message}", file=sys.stderr)
    return code


def _dataset(args, parser):
    """The ``--data`` set: a built-in name or a file. ValueError (exit 2) for a bad file or misused flags."""
    from genlearn.data import DATASETS, FILE_SUFFIXES, load_dataset, load_file

    seed = getattr(args, "data_seed", 0)
    flags = [f"--{k.replace('_', '-')}" for k in ("key", "columns", "levels", "test_fraction", "drop_nonfinite")
             if getattr(args, k) is not None]
    if args.data in DATASETS:
        if flags:
            raise ValueError(f"{', '.join(flags)}: only for a data file, not the built-in dataset {args.data!r}")
        return load_dataset(args.data, seed=seed)
    if not args.data.lower().endswith(FILE_SUFFIXES) and not os.path.exists(args.data):
        parser.error(f"unknown dataset {args.data!r}; choose one of: {', '.join(DATASETS)}, "
                     f"or a data file ({', '.join(FILE_SUFFIXES)})")
    dataset = load_file(args.data, key=args.key, columns=args.columns, seed=seed, discrete_levels=args.levels,
                        test_fraction=0.2 if args.test_fraction is None else args.test_fraction,
                        drop_nonfinite=bool(args.drop_nonfinite))
    if dataset.source["dropped_nonfinite"]:
        kept = dataset.train.shape[0] + dataset.test.shape[0]
        print(f"genlearn: dropped {dataset.source['dropped_nonfinite']} rows with NaN or inf from {args.data} "
              f"({kept} rows kept)", file=sys.stderr)
    return dataset


def _out_dir(args, data_name: str) -> str | None:
    """The run directory, created and checked writable; None after printing an error."""
    out = args.out or os.path.join("runs", f"{args.model}-{data_name}")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        _fail(f"cannot write to run directory {out!r}: {err}", 2)
        return None
    return out


def _cmd_fit(args, parser) -> int:
    from genlearn import registry
    from genlearn.runs import fit, resolve_options

    if args.model not in registry.names():
        parser.error(f"unknown model {args.model!r}; choose one of: {', '.join(registry.names())}")
    family = registry.get(args.model)
    taken = {opt.flag: opt.key for opt in family.options}
    flags = _family_flags()
    dest = lambda flag: flag[2:].replace("-", "_")  # noqa: E731
    wrong = [flag for flag in flags if flag not in taken and getattr(args, dest(flag)) is not None]
    if wrong:
        only = "; ".join(f"{w}: only for {' or '.join(repr('fit ' + n) for n in flags[w]['families'])}" for w in wrong)
        return _fail(f"{args.model} does not take {', '.join(wrong)} ({only})", 2)
    given = {key: getattr(args, dest(flag)) for flag, key in taken.items()}
    resume = bool(given.pop("resume", False))
    try:  # the data and options validate before anything is written
        dataset = _dataset(args, parser)
        opts = resolve_options(family, dataset, given)
        n_train = dataset.train.shape[0]
        if opts.get("batch_size", 0) > n_train:
            raise ValueError(f"{args.data} has {n_train} training rows, fewer than a batch of {opts['batch_size']}; "
                             f"pass --batch-size {n_train} or less")
    except ValueError as err:
        return _fail(str(err), 2)
    out = _out_dir(args, dataset.name)
    if out is None:
        return 2
    try:
        _, _, metrics = fit(args.model, dataset, given, out=out, seed=args.seed, data_seed=args.data_seed,
                            progress=not args.no_progress, resume=resume)
    except (ValueError, FloatingPointError) as err:
        return _fail(str(err))
    print(json.dumps(metrics, indent=2))
    print(f"run saved to {out}")
    return 0


def _cmd_sample(args) -> int:
    import jax
    import numpy as np

    from genlearn.runs import RunError, load

    if not args.out.endswith(".npy"):
        return _fail(f"--out must name a .npy file, got {args.out!r}", 2)
    try:
        run = load(args.run)
    except RunError as err:
        return _fail(str(err), 2)
    samples = np.asarray(run.sample(jax.random.PRNGKey(args.seed), args.n))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, samples)
    print(f"wrote {samples.shape[0]} samples of dimension {samples.shape[1]} to {args.out}")
    return 0


def _print_table(rows: dict) -> None:
    width = max(len(k) for k in rows)
    print(f"{'metric':<{width}}  value")
    for k, v in rows.items():
        print(f"{k:<{width}}  {f'{v:.6g}' if isinstance(v, float) else v}")


def _cmd_eval(args, parser) -> int:
    import jax

    from genlearn.data import read_array
    from genlearn.metrics import evaluate
    from genlearn.runs import evaluate_run

    if args.samples is not None and args.reference is None:
        parser.error("--samples needs --reference")
    if args.run is not None and (args.reference is not None or args.digits_features or args.key or args.columns):
        parser.error("--reference, --digits-features, --key and --columns go with --samples, not --run")
    try:
        if args.run is not None:  # merged into the run's metrics.json (the fit's metrics stay)
            rows = evaluate_run(args.run, seed=args.seed, num_samples=args.num_samples)
            path = args.out or os.path.join(args.run, "metrics.json")
            payload = {}
            try:
                with open(path) as fh:
                    payload = json.load(fh)
            except (OSError, json.JSONDecodeError):
                pass
            payload.update(rows)
        else:
            fake, real = (read_array(p, key=args.key, columns=args.columns)[0] for p in (args.samples, args.reference))
            rows = payload = evaluate(fake, real,
                                      key=jax.random.PRNGKey(args.seed),
                                      feature_net="digits" if args.digits_features else None)
            path = args.out or "metrics.json"
    except ValueError as err:  # a RunError is a ValueError
        return _fail(str(err), 2)
    _print_table(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    print(f"wrote {path}")
    return 0


def _cmd_compare(args, parser) -> int:
    from genlearn import registry
    from genlearn.compare import ROSTER, compare, parse_budget

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if models is not None:
        unknown = [m for m in models if m not in ROSTER and m not in registry.names()]
        if unknown or not models:
            parser.error(f"unknown model(s) {unknown}; the roster is: {', '.join(ROSTER)}")
    try:
        parse_budget(args.budget)
    except ValueError as err:
        parser.error(str(err))
    try:
        dataset = _dataset(args, parser)
    except ValueError as err:
        return _fail(str(err), 2)
    out = args.out or os.path.join("runs", f"compare-{dataset.name}")
    compare(dataset, models, budget=args.budget, out=out, seed=args.seed, num_samples=args.num_samples,
            progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sample":
        return _cmd_sample(args)
    return {"fit": _cmd_fit, "eval": _cmd_eval, "compare": _cmd_compare}[args.command](args, parser)


if __name__ == "__main__":
    sys.exit(main())
