"""The ``genlearn`` command line: fit, sample and evaluate models on built-in data.

    genlearn fit realnvp --data moons --out runs/moons
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


def _bandwidth_arg(text: str):
    if text in ("scott", "silverman", "cv"):
        return text
    return _positive_float(text)


def _all_models() -> list[str]:
    from genlearn.classical.run import CLASSICAL_MODELS
    from genlearn.runs import FLOW_MODELS

    return sorted(FLOW_MODELS) + list(CLASSICAL_MODELS) + ["ebm", "gan"]


def build_parser() -> argparse.ArgumentParser:
    from genlearn.data import DATASETS

    parser = argparse.ArgumentParser(prog="genlearn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,sample,eval,compare}")

    p = sub.add_parser("fit", help="train a model on a built-in dataset and save the run")
    p.add_argument("model", help=f"model to fit, one of: {', '.join(_all_models())}")
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
    c = p.add_argument_group("classical estimators (histogram, kde, gmm)")
    c.add_argument("--bins", type=_positive_int, help="histogram: bins per axis (default 40)")
    c.add_argument("--pseudocount", type=_nonneg_float, help="histogram: count added to every cell (default 0.01)")
    c.add_argument("--padding", type=_nonneg_float, help="histogram: box padding as a fraction of the data range")
    c.add_argument("--kernel", choices=("gaussian", "epanechnikov", "tophat"), help="kde: kernel")
    c.add_argument("--bandwidth", type=_bandwidth_arg, help="kde: a number > 0, scott, silverman or cv (default)")
    c.add_argument("--covariance", choices=("full", "diag", "spherical", "tied", "isotropic"),
                   help="gmm: full|diag|spherical|tied; kde: isotropic|full")
    c.add_argument("--components", type=_positive_int, help="gmm: number of components")
    c.add_argument("--reg-covar", type=_nonneg_float, help="gmm: added to covariance diagonals")
    c.add_argument("--restarts", type=_positive_int, help="gmm: EM restarts (n_init)")
    m = p.add_argument_group("energy-based model (ebm): --steps, --lr, --hidden, --batch-size also apply")
    m.add_argument("--mcmc-steps", type=_positive_int, help="ebm: MALA + jump steps per PCD update (default 10)")
    m.add_argument("--ais-chains", type=_positive_int, help="ebm: AIS chains for log Z (default 1000)")
    m.add_argument("--ais-temperatures", type=_positive_int, help="ebm: AIS temperatures (default 500)")
    m.add_argument("--sample-steps", type=_positive_int, help="ebm: MCMC steps per drawn sample (default 200)")
    g = p.add_argument_group("generators and GANs (gan): --lr, --hidden, --batch-size apply to the generator")
    g.add_argument("--loss", default=None, help="gan: js|ns|wgan-clip|wgan-gp|sn|hinge|mmd (default wgan-gp; "
                   "also energy|sinkhorn|sliced|moments)")
    g.add_argument("--latent-dim", type=_positive_int, help="gan: latent dimension D")
    g.add_argument("--base", choices=("normal", "uniform"), default=None,
                   help="gan: latent distribution Q, N(0, I) or U[-1, 1]^D")
    g.add_argument("--critic-steps", type=_positive_int, help="gan: critic steps m per generator step")
    g.add_argument("--critic-hidden", type=_widths, help="gan: critic hidden widths")
    g.add_argument("--lr-critic", type=_positive_float, help="gan: critic learning rate (TTUR)")
    g.add_argument("--gp-weight", type=_nonneg_float, help="gan: gradient-penalty weight (wgan-gp)")
    g.add_argument("--r1-weight", type=_nonneg_float, help="gan: R1 penalty weight")
    g.add_argument("--clip", type=_positive_float, help="gan: weight-clipping delta (wgan-clip)")
    g.add_argument("--ema-decay", type=_fraction, help="gan: generator EMA decay in [0, 1)")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("--run", required=True, help="run directory written by 'genlearn fit'")
    s.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    s.add_argument("--out", required=True, help="output .npy file")
    s.add_argument("--seed", type=_nonneg_int, default=0)

    e = sub.add_parser("eval", help="every applicable metric: a run against its held-out data, or two sample files")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory written by 'genlearn fit'")
    src.add_argument("--samples", help="generated samples, an (n, d) .npy file (with --reference)")
    e.add_argument("--reference", help="real samples, an (m, d) .npy file (with --samples)")
    e.add_argument("--num-samples", type=_positive_int, default=None,
                   help="samples drawn from the run (default: the test-set size, at most 5000)")
    e.add_argument("--digits-features", action="store_true",
                   help="with --samples: also compute FID/IS/KID in the digits classifier's features (d = 64)")
    e.add_argument("--out", default=None, help="metrics file (default: RUN/metrics.json, or ./metrics.json)")
    e.add_argument("--seed", type=_nonneg_int, default=0)

    from genlearn.compare import DEFAULT_ROSTER, ROSTER

    c = sub.add_parser("compare", help="fit the roster of models on one dataset and rank them by every metric")
    c.add_argument("--data", default="ring8", help=f"dataset, one of: {', '.join(DATASETS)} (default ring8)")
    c.add_argument("--models", default=None,
                   help=f"comma-separated subset of: {', '.join(ROSTER)} (default: {','.join(DEFAULT_ROSTER)})")
    c.add_argument("--budget", default=None,
                   help="per model: N steps (e.g. 3000) or N seconds (e.g. 60s); default: per-model settings")
    c.add_argument("--out", default=None, help="output directory (default runs/compare-DATA)")
    c.add_argument("--num-samples", type=_positive_int, default=2000, help="samples per model for the metrics")
    c.add_argument("--seed", type=_nonneg_int, default=0)
    c.add_argument("--no-progress", action="store_true", help="hide the per-model progress bars")
    return parser


def _fail(message: str, code: int = 1) -> int:
    print(f"genlearn: error: {message}", file=sys.stderr)
    return code


def _out_dir(args) -> str | None:
    """The run directory, created and checked writable; None after printing an error."""
    out = args.out or os.path.join("runs", f"{args.model}-{args.data}")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write_test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        _fail(f"cannot write to run directory {out!r}: {err}", 2)
        return None
    return out


def _cmd_fit_classical(args, dataset) -> int:
    from genlearn.classical.run import fit_run

    options = {"bins": args.bins, "pseudocount": args.pseudocount, "padding": args.padding,
               "kernel": args.kernel, "bandwidth": args.bandwidth, "num_components": args.components,
               "covariance": args.covariance, "reg_covar": args.reg_covar, "n_init": args.restarts}
    taken = {"histogram": ("bins", "pseudocount", "padding"), "kde": ("kernel", "bandwidth", "covariance"),
             "gmm": ("num_components", "covariance", "reg_covar", "n_init")}[args.model]
    wrong = [k for k, v in options.items() if v is not None and k not in taken]
    if wrong:
        return _fail(f"{args.model} does not take {', '.join('--' + w.replace('_', '-') for w in wrong)}", 2)
    if args.model == "kde" and args.covariance not in (None, "isotropic", "full"):
        return _fail(f"kde: --covariance must be isotropic or full, got {args.covariance}", 2)
    if args.model == "gmm" and args.covariance == "isotropic":
        return _fail("gmm: --covariance must be full, diag, spherical or tied", 2)
    out = _out_dir(args)
    if out is None:
        return 2
    try:
        _, _, metrics = fit_run(args.model, dataset, out, seed=args.seed, data_seed=args.data_seed,
                                options={k: options[k] for k in taken})
    except ValueError as err:
        return _fail(str(err))
    print(json.dumps(metrics, indent=2))
    print(f"run saved to {out}")
    return 0


def _cmd_fit_gan(args, dataset) -> int:
    from genlearn.gan.run import GAN_LOSSES, fit_run

    loss = args.loss or "wgan-gp"
    if loss not in GAN_LOSSES:
        return _fail(f"unknown GAN loss {loss!r}; choose one of: {', '.join(GAN_LOSSES)}", 2)
    wrong = [name for name in ("layers", "val_fraction", "patience", "eval_every", "weight_decay", "bins",
                               "pseudocount", "padding", "kernel", "bandwidth", "covariance", "components",
                               "reg_covar", "restarts") if getattr(args, name) is not None]
    if wrong:
        return _fail(f"gan does not take {', '.join('--' + w.replace('_', '-') for w in wrong)}", 2)
    options = {"latent_dim": args.latent_dim, "base": args.base, "hidden": args.hidden,
               "critic_hidden": args.critic_hidden,
               "critic_steps": args.critic_steps, "batch_size": args.batch_size, "lr_generator": args.lr,
               "lr_critic": args.lr_critic, "gp_weight": args.gp_weight, "r1_weight": args.r1_weight,
               "clip": args.clip, "ema_decay": args.ema_decay}
    out = _out_dir(args)
    if out is None:
        return 2
    try:
        metrics = fit_run(dataset, out, loss=loss, steps=args.steps or None, seed=args.seed,
                          progress=not args.no_progress, resume=args.resume, data_seed=args.data_seed,
                          **{k: v for k, v in options.items() if v is not None})
    except (ValueError, FloatingPointError) as err:
        return _fail(str(err))
    print(json.dumps(metrics, indent=2))
    print(f"run saved to {out}")
    return 0


def _cmd_fit_ebm(args, dataset) -> int:
    from genlearn.energy.run import fit_run

    common = {"command", "model", "data", "out", "seed", "data_seed", "no_progress"}
    taken = {"steps", "batch_size", "lr", "hidden", "mcmc_steps", "ais_chains", "ais_temperatures", "sample_steps"}
    wrong = [k for k, v in vars(args).items() if k not in common | taken and v not in (None, False)]
    if wrong:
        return _fail(f"ebm does not take {', '.join('--' + w.replace('_', '-') for w in wrong)}", 2)
    options = {"k": args.mcmc_steps, "hidden": list(args.hidden) if args.hidden else None, "learning_rate": args.lr,
               "batch_size": args.batch_size, "ais_chains": args.ais_chains,
               "ais_temperatures": args.ais_temperatures, "sample_steps": args.sample_steps}
    out = _out_dir(args)
    if out is None:
        return 2
    try:
        metrics = fit_run(dataset, out, steps=args.steps, seed=args.seed, data_seed=args.data_seed,
                          progress=not args.no_progress, **options)
    except (ValueError, FloatingPointError) as err:
        return _fail(str(err))
    print(json.dumps(metrics, indent=2))
    print(f"run saved to {out}")
    return 0


def _cmd_fit(args, parser) -> int:
    from genlearn.classical.run import CLASSICAL_MODELS
    from genlearn.data import DATASETS, load_dataset
    from genlearn.runs import FLOW_MODELS, default_train_config, train_run

    if args.model not in FLOW_MODELS and args.model not in CLASSICAL_MODELS and args.model not in ("ebm", "gan"):
        parser.error(f"unknown model {args.model!r}; choose one of: {', '.join(_all_models())}")
    if args.data not in DATASETS:
        parser.error(f"unknown dataset {args.data!r}; choose one of: {', '.join(DATASETS)}")
    dataset = load_dataset(args.data, seed=args.data_seed)
    if args.model in CLASSICAL_MODELS:
        return _cmd_fit_classical(args, dataset)
    if args.model == "gan":
        return _cmd_fit_gan(args, dataset)
    if args.model == "ebm":
        return _cmd_fit_ebm(args, dataset)
    ebm_only = [n for n in ("mcmc_steps", "ais_chains", "ais_temperatures", "sample_steps") if getattr(args, n)]
    if ebm_only:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in ebm_only)}: only for 'fit ebm'")
    gan_only = [n for n in ("loss", "latent_dim", "base", "critic_steps", "critic_hidden", "lr_critic", "gp_weight",
                            "r1_weight", "clip", "ema_decay") if getattr(args, n) is not None]
    if gan_only:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in gan_only)}: only for 'fit gan'")
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
    out = _out_dir(args)
    if out is None:
        return 2
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

    from genlearn.runs import RunError, load_any

    if not args.out.endswith(".npy"):
        return _fail(f"--out must name a .npy file, got {args.out!r}", 2)
    try:
        run = load_any(args.run)
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
        if isinstance(v, float):
            text = f"{v:.6g}"
        else:
            text = str(v)
        print(f"{k:<{width}}  {text}")


def _load_npy(path: str, what: str):
    import numpy as np

    if not os.path.isfile(path):
        raise ValueError(f"{what}: no such file {path!r}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{what}: {path!r} is not a readable .npy array ({err})") from err
    if arr.ndim != 2:
        raise ValueError(f"{what}: expected an (n, d) array, got shape {arr.shape} from {path!r}")
    return arr


def _eval_run(args) -> tuple[dict, str]:
    from genlearn.runs import evaluate_run

    rows = evaluate_run(args.run, seed=args.seed, num_samples=args.num_samples)
    return rows, args.out or os.path.join(args.run, "metrics.json")


def _cmd_eval(args, parser) -> int:
    import jax

    from genlearn.metrics import evaluate
    from genlearn.runs import RunError

    if args.samples is not None and args.reference is None:
        parser.error("--samples needs --reference")
    if args.run is not None and (args.reference is not None or args.digits_features):
        parser.error("--reference and --digits-features go with --samples, not --run")
    try:
        if args.run is not None:
            rows, path = _eval_run(args)
            merged = {}
            if os.path.isfile(path):
                try:
                    with open(path) as fh:
                        merged = json.load(fh)
                except json.JSONDecodeError:
                    merged = {}
            merged.update(rows)
            payload = merged
        else:
            fake = _load_npy(args.samples, "--samples")
            real = _load_npy(args.reference, "--reference")
            rows = evaluate(fake, real, key=jax.random.PRNGKey(args.seed),
                            feature_net="digits" if args.digits_features else None)
            path = args.out or "metrics.json"
            payload = rows
    except RunError as err:
        return _fail(str(err), 2)
    except ValueError as err:
        return _fail(str(err), 2)
    _print_table(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    print(f"wrote {path}")
    return 0


def _cmd_compare(args, parser) -> int:
    from genlearn.compare import ROSTER, compare, parse_budget
    from genlearn.data import DATASETS

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    if models is not None:
        unknown = [m for m in models if m not in ROSTER]
        if unknown or not models:
            parser.error(f"unknown model(s) {unknown}; the roster is: {', '.join(ROSTER)}")
    if args.data not in DATASETS:
        parser.error(f"unknown dataset {args.data!r}; choose one of: {', '.join(DATASETS)}")
    try:
        parse_budget(args.budget)
    except ValueError as err:
        parser.error(str(err))
    out = args.out or os.path.join("runs", f"compare-{args.data}")
    compare(args.data, models, budget=args.budget, out=out, seed=args.seed, num_samples=args.num_samples,
            progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fit":
        return _cmd_fit(args, parser)
    if args.command == "sample":
        return _cmd_sample(args)
    if args.command == "compare":
        return _cmd_compare(args, parser)
    return _cmd_eval(args, parser)


if __name__ == "__main__":
    sys.exit(main())
