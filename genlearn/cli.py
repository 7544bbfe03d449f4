"""The ``genlearn`` command line: fit, sample and evaluate models on built-in data.

    genlearn fit realnvp --data moons --out runs/moons
    genlearn sample --run runs/moons -n 1000 --out samples.npy
    genlearn eval --run runs/moons

Bad arguments print a usage message and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]


def _number(cast, minimum: float, strict: bool, below: float | None = None):
    """An argparse type: a finite number >= minimum (> minimum if strict, < below if given)."""
    kind = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if not ok or value != value or value == float("inf"):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            noun = "" if cast is int else "a finite number "
            raise argparse.ArgumentTypeError(f"must be {noun}{bound}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be in [{minimum}, {below}), got {text}")
        return value

    return parse


_positive_int = _number(int, 1, strict=False)
_nonneg_int = _number(int, 0, strict=False)
_positive_float = _number(float, 0, strict=True)
_nonneg_float = _number(float, 0, strict=False)
_fraction = _number(float, 0, strict=False, below=1)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,128, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    from genlearn.data import DATASETS
    from genlearn.runs import FLOW_MODELS

    parser = argparse.ArgumentParser(prog="genlearn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,sample,eval}")

    p = sub.add_parser("fit", help="train a model on a built-in dataset and save the run")
    p.add_argument("model", help=f"model to fit, one of: {', '.join(sorted(FLOW_MODELS))}")
    p.add_argument("--data", default="moons", help=f"dataset, one of: {', '.join(DATASETS)} (default moons)")
    p.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA)")
    p.add_argument("--steps", type=_nonneg_int, help="training steps (default: 20000 for toys, 3000 for digits)")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=_nonneg_float)
    p.add_argument("--layers", type=_positive_int, help="number of coupling layers")
    p.add_argument("--hidden", type=_widths, help="conditioner hidden widths, e.g. 128,128")
    p.add_argument("--val-fraction", type=_fraction, help="validation split for early stopping")
    p.add_argument("--patience", type=_positive_int, help="evaluations without improvement before stopping")
    p.add_argument("--eval-every", type=_positive_int)
    p.add_argument("--seed", type=_nonneg_int, default=0, help="model/training seed")
    p.add_argument("--data-seed", type=_nonneg_int, default=0, help="seed of the generated toy data")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("--run", required=True, help="run directory written by 'genlearn fit'")
    s.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    s.add_argument("--out", required=True, help="output .npy file")
    s.add_argument("--seed", type=_nonneg_int, default=0)

    e = sub.add_parser("eval", help="evaluate a trained run on its held-out data")
    e.add_argument("--run", required=True, help="run directory written by 'genlearn fit'")
    e.add_argument("--seed", type=_nonneg_int, default=0)
    return parser


def _fail(message: str, code: int = 1) -> int:
    print(f"genlearn: error: {message}", file=sys.stderr)
    return code


def _cmd_fit(args, parser) -> int:
    from genlearn.data import DATASETS, load_dataset
    from genlearn.runs import FLOW_MODELS, default_train_config, train_run

    if args.model not in FLOW_MODELS:
        parser.error(f"unknown model {args.model!r}; choose one of: {', '.join(sorted(FLOW_MODELS))}")
    if args.data not in DATASETS:
        parser.error(f"unknown dataset {args.data!r}; choose one of: {', '.join(DATASETS)}")
    dataset = load_dataset(args.data, seed=args.data_seed)
    config = default_train_config(args.model, dataset)
    overrides = {
        "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
        "weight_decay": args.weight_decay, "num_layers": args.layers, "hidden": args.hidden,
        "val_fraction": args.val_fraction, "patience": args.patience, "eval_every": args.eval_every,
    }
    config = config._replace(seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    n_train = dataset.train.shape[0]
    n_fit = n_train - max(1, round(config.val_fraction * n_train)) if config.val_fraction > 0 else n_train
    if config.batch_size > n_fit:
        parser.error(f"--batch-size {config.batch_size} exceeds the {n_fit} training rows of {args.data}")
    out = args.out or os.path.join("runs", f"{args.model}-{args.data}")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        return _fail(f"cannot write to run directory {out!r}: {err}", 2)
    try:
        params, cfg, result = train_run(args.model, dataset, config, out=out, progress=not args.no_progress,
                                        resume=args.resume, data_seed=args.data_seed)
    except FloatingPointError as err:
        return _fail(str(err))
    metrics = _report(out, params, cfg, dataset, result.history, seed=args.seed)
    print(json.dumps(metrics, indent=2))
    print(f"run saved to {out}")
    return 0


def _report(out, params, cfg, dataset, history, seed=0) -> dict:
    """Writes metrics.json and the figures of a run; returns the metrics."""
    import jax
    import numpy as np

    from genlearn import plotting
    from genlearn.runs import build_model, evaluate_nll

    model = build_model(cfg)
    key = jax.random.PRNGKey(seed + 1)
    levels = cfg.get("discrete_levels")
    train_eval = dataset.train[: min(len(dataset.train), 5000)]
    tr = evaluate_nll(model, params, train_eval, levels=levels, key=key)
    te = evaluate_nll(model, params, dataset.test, levels=levels, key=key)
    metrics = {"model": cfg["model"], "data": cfg["data"], "train_nll": tr["nll"], "test_nll": te["nll"],
               "num_test": int(dataset.test.shape[0])}
    if levels is not None:
        metrics["train_bits_per_dim"] = tr["bits_per_dim"]
        metrics["test_bits_per_dim"] = te["bits_per_dim"]
        metrics["test_nll_stderr"] = te["nll_stderr"]
    if cfg["preprocess"]["kind"] == "standardize":
        log_std = float(np.sum(np.log(cfg["preprocess"]["std"])))
        metrics["test_nll_standardized"] = te["nll"] - log_std
        metrics["train_nll_standardized"] = tr["nll"] - log_std
    if history is not None:
        metrics["steps"] = int(len(history["train_loss"]))
    with open(os.path.join(out, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    samples = np.asarray(model.sample(params, jax.random.PRNGKey(seed + 2), 2000))
    if cfg["dim"] == 2:
        plotting.plot_samples_2d(samples, dataset.test, os.path.join(out, "samples.png"),
                                 title=f"{cfg['model']} samples")
        lp = jax.jit(model.log_prob)
        plotting.plot_density_2d(lambda g: lp(params, g), dataset.test, os.path.join(out, "density.png"),
                                 title=f"{cfg['model']} density")
    elif levels is not None:
        plotting.plot_digit_grid(samples, os.path.join(out, "samples.png"), levels=levels,
                                 title=f"{cfg['model']} samples")
    if history is not None:
        plotting.plot_loss(history, os.path.join(out, "loss.png"), ylabel="NLL (nats per example)")
    return metrics


def _cmd_sample(args) -> int:
    import jax
    import numpy as np

    from genlearn.runs import RunError, load_run

    try:
        model, params, _ = load_run(args.run)
    except RunError as err:
        return _fail(str(err), 2)
    if not args.out.endswith(".npy"):
        return _fail(f"--out must name a .npy file, got {args.out!r}", 2)
    samples = np.asarray(model.sample(params, jax.random.PRNGKey(args.seed), args.n))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, samples)
    print(f"wrote {samples.shape[0]} samples of dimension {samples.shape[1]} to {args.out}")
    return 0


def _cmd_eval(args) -> int:
    import jax

    from genlearn.runs import RunError, dataset_for_run, evaluate_nll, load_run

    try:
        model, params, cfg = load_run(args.run)
    except RunError as err:
        return _fail(str(err), 2)
    dataset = dataset_for_run(cfg)
    levels = cfg.get("discrete_levels")
    te = evaluate_nll(model, params, dataset.test, levels=levels, key=jax.random.PRNGKey(args.seed + 1))
    rows = {"test_nll": te["nll"]}
    if levels is not None:
        rows["test_bits_per_dim"] = te["bits_per_dim"]
        rows["test_nll_stderr"] = te["nll_stderr"]
    width = max(len(k) for k in rows)
    print(f"{'metric':<{width}}  value")
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:.6f}")
    path = os.path.join(args.run, "eval.json")
    with open(path, "w") as fh:
        json.dump(rows, fh, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fit":
        return _cmd_fit(args, parser)
    if args.command == "sample":
        return _cmd_sample(args)
    return _cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
