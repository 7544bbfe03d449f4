"""The GAN family of the run registry (``genlearn fit gan --loss L``), and multi-seed training.

A generator is trained on a data set with an adversarial objective (``js``,
``ns``, ``wgan-clip``, ``wgan-gp``, ``sn``, ``hinge``) or directly on a weak
loss (``mmd``: the GMMN generator; ``energy``, ``sinkhorn``, ``sliced``,
``moments``), with per-loss defaults (:func:`default_options`). The run
directory is written by `genlearn.runs` (params: the generator used for
sampling, the EMA when on; ``checkpoints/`` from the driver; ``loss.png``
is the critic's weak-distance estimate per step). metrics.json adds
``modes_covered``, ``num_modes``, ``high_quality_fraction``, ``mode_kl`` for
mixtures with known centres; ``test_mmd2`` and ``test_energy_distance``
otherwise; ``fid_features`` (the digits classifier's FID) for digits.

On the 2-D mixtures (ring8, grid25; ``benchmarks/results/mode_collapse.md``, 3
seeds) ``wgan-gp`` and ``mmd`` cover every mode with >= 90 % high-quality
samples at their defaults. ``ns`` and ``js`` need ``--r1-weight 0.1
--ema-decay 0.999 --latent-dim 2 --base uniform --hidden 128,128,128 --steps
60000`` (rows ``ns-r1``, ``js-r1``). ``hinge`` with those flags and
``--critic-steps 1 --lr-critic 1e-3`` is not reliable: ring8 8/8 at 96.5 and
98.7 % on seeds 0 and 1 but no mode on seed 2 (30000 steps); grid25 25/25 at
92.1 and 84.8 % (60000 steps, seeds 0, 1). ``sn`` with the same flags matched
hinge on ring8 but collapsed on one grid25 seed (13/25 modes), and ``wgan-clip``
stays under 30 % with every flag tried (``benchmarks/results/mode_collapse_tuning.md``).

Pixels (data with ``discrete_levels``) are mapped to ``[-1, 1]`` and the
generator ends in ``tanh``; samples are mapped back.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn import registry
from genlearn.core.model import from_generator
from genlearn.gan.critics import critic
from genlearn.gan.generators import generator
from genlearn.gan.minmax import GANInfo, minmax, weak_generator
from genlearn.gan.objectives import OBJECTIVES, objective
from genlearn.train import run_trainer
from genlearn.gan.weak import WEAK_LOSSES, weak_loss

__all__ = ["GAN_LOSSES", "GANRun", "default_options", "build_algorithm", "run_config", "train_model", "train_seeds"]

GAN_LOSSES = OBJECTIVES + WEAK_LOSSES

def default_options(loss: str, dataset) -> dict:
    """Per-loss and per-data defaults (tuned on ring8 / grid25; see benchmarks/mode_collapse.py)."""
    if loss not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; choose one of {GAN_LOSSES}")
    pixels = dataset.discrete_levels is not None
    opts = {
        "latent_dim": 16 if pixels else 4,
        "hidden": [256, 256] if pixels else [64, 64, 64],
        "critic_hidden": [256, 256] if pixels else [64, 64, 64],
        "base": "normal",
        "activation": "relu",
        "batch_size": 128 if pixels else 256,
        "lr_generator": 1e-3,
        "lr_critic": 1e-3,
        "ema_decay": None,
        "critic_steps": 1,
        "gp_weight": None,
        "r1_weight": 0.0,
        "clip": None,
        "steps": 3000 if pixels else 8000,
        "chunk": 250,
    }
    if loss in ("wgan-gp", "wgan-clip", "sn", "hinge"):
        # Lipschitz critics: the WGAN papers' m = 5 and TTUR (a faster critic); with m = 1-2 and
        # lr 1e-3 the spectrally normalised critics lose the ring entirely
        opts.update(critic_steps=5, lr_generator=2e-4, lr_critic=5e-4)
        if not pixels:  # as many critic steps as the others' 8000 x 1, at half the generator steps
            opts["steps"] = 4000
    if loss == "wgan-gp" and not pixels:
        # sharp modes on 2-D toys: the 2-D uniform latent and wider generator of mmd / ns-r1, a generator EMA,
        # a critic as wide, the toy-scale penalty (lambda 10 is for images; the WGAN-GP authors' toy code
        # uses 0.1), and one critic step at twice the generator's rate for a long schedule; at the m = 5,
        # lr 2e-4 / 5e-4, 4000-step defaults above grid25 gets 7/25 modes, 0.3 % high quality
        # (benchmarks/mode_collapse.py)
        opts.update(latent_dim=2, base="uniform", hidden=[128, 128, 128], critic_hidden=[128, 128, 128],
                    ema_decay=0.999, gp_weight=1.0, critic_steps=1, lr_generator=1e-3, lr_critic=2e-3,
                    steps=32000)
    if loss in WEAK_LOSSES:
        opts["critic_steps"] = 0
        if not pixels:  # no adversary to outrun: a larger step and longer schedule sharpen the modes
            opts.update(lr_generator=3e-3, steps=12000)
        if loss == "mmd":
            if not pixels:
                # a 2-D uniform latent on 2-D toys, a wider generator and a long schedule: the map must tear
                # the latent square into separated modes with sharp seams (the bridges between modes are
                # what costs high-quality samples); grid25 0.73 -> 0.90 high-quality (benchmarks/mode_collapse.py)
                opts.update(latent_dim=2, base="uniform", hidden=[128, 128, 128], steps=40000)
            opts["kernel"] = "gaussian"
            # multi-bandwidth (GMMN): toys, from the modes' width to the data's spread; pixels, around
            # the typical distance between images (~ per-pixel std x sqrt(d)) in the [-1, 1] model units
            std = float(np.mean(np.std(dataset.train, axis=0)))
            if pixels:
                scale = std / ((dataset.discrete_levels - 1) / 2.0) * np.sqrt(dataset.train.shape[1])
                opts["bandwidths"] = [scale * f for f in (0.125, 0.25, 0.5, 1.0, 2.0)]
            else:
                opts["bandwidths"] = [std * f for f in (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)]
        elif loss == "sinkhorn":
            opts["epsilon"] = 0.01
        elif loss == "sliced":
            opts["num_projections"] = 64
        elif loss == "moments":
            opts["order"] = 2
    return opts


def _scaling(dataset) -> tuple[float, float]:
    """``x_model = (x - shift) / scale``: pixels to [-1, 1], other data unchanged."""
    if dataset.discrete_levels is not None:
        half = (dataset.discrete_levels - 1) / 2.0
        return half, half
    return 0.0, 1.0


def build_algorithm(cfg: dict):
    """``(generator, MinMax)`` from a run config (``config.json`` contents)."""
    loss = cfg["loss"]
    pixels = cfg["output"] == "tanh"
    gen = _generator(cfg, cfg["dim"], cfg["output"])
    sched = lambda lr: optax.cosine_decay_schedule(lr, cfg["steps"], 0.05) if cfg["steps"] > 0 else lr
    if loss in WEAK_LOSSES:
        wopts = {k: cfg[k] for k in ("kernel", "bandwidths", "epsilon", "num_projections", "order") if k in cfg}
        if "bandwidths" in wopts:
            wopts["bandwidths"] = tuple(wopts["bandwidths"])
        algo = weak_generator(gen, weak_loss(loss, **wopts), optimizer=optax.adam(sched(cfg["lr_generator"])),
                              batch_size=cfg["batch_size"], ema_decay=cfg["ema_decay"])
        return gen, algo
    obj = objective(loss, gp_weight=cfg["gp_weight"], r1_weight=cfg["r1_weight"], clip=cfg["clip"])
    crit = critic(cfg["dim"], tuple(cfg["critic_hidden"]), activation="leaky_relu" if pixels else cfg["activation"],
                  spectral_norm=obj.spectral_norm)
    b1, b2 = (0.5, 0.9)
    algo = minmax(gen, crit, obj,
                  generator_optimizer=optax.adam(sched(cfg["lr_generator"]), b1=b1, b2=b2),
                  critic_optimizer=optax.adam(sched(cfg["lr_critic"]), b1=b1, b2=b2),
                  critic_steps=cfg["critic_steps"], batch_size=cfg["batch_size"], ema_decay=cfg["ema_decay"])
    return gen, algo


def _generator(options: dict, dim: int, output: str):
    return generator(dim, options["latent_dim"], tuple(options["hidden"]), options["base"],
                     activation=options["activation"], output=output)


def _sample_model(gen, params, cfg, key, n) -> np.ndarray:
    x = np.asarray(jax.jit(gen.sample, static_argnums=2)(params, key, n), np.float64)
    return x * cfg["scale"] + cfg["shift"]


class GANRun(NamedTuple):
    """Everything :func:`train_model` produced (``genlearn fit gan`` writes the same through `genlearn.runs`)."""

    generator: Any
    params: Any
    config: dict
    result: Any
    samples: np.ndarray
    metrics: dict


def run_config(dataset: Any, *, loss: str = "wgan-gp", steps: int | None = None, seed: int = 0,
               **options: Any) -> tuple[Any, dict]:
    """``(dataset, config)``: the gan family's checked options (:func:`default_options` with ``options``
    applied, None values ignored) in one flat dict with the data scaling (``dim``, ``shift``, ``scale``,
    ``output``); ``dataset`` may be a name (loaded with ``options["data_seed"]``)."""
    from genlearn.data import load_dataset
    from genlearn.runs import resolve_options

    resume, data_seed = bool(options.pop("resume", False)), int(options.pop("data_seed", 0) or 0)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, seed=data_seed)
    opts = resolve_options(FAMILY, dataset, {**options, "loss": loss, "steps": steps})
    cfg = {"family": "gan", "model": loss, "data": dataset.name, "data_seed": data_seed, "seed": int(seed),
           "discrete_levels": dataset.discrete_levels, "resume": resume}
    return dataset, {**cfg, **_run_cfg(opts, int(dataset.train.shape[1]), _preprocess(dataset))}


def _check(options: dict, dataset) -> str | None:
    steps = options["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return f"steps must be an integer >= 1, got {steps!r}"
    if options["loss"] in OBJECTIVES and options["critic_steps"] < 1:
        return f"critic_steps (m) must be >= 1 for adversarial loss {options['loss']!r}, got {options['critic_steps']}"
    return None


def _eval_samples(gen, params, cfg, dataset, key_eval) -> np.ndarray:
    return _sample_model(gen, params, cfg, key_eval, 5000 if dataset.discrete_levels is None else 2000)


def _finish(dataset, gen, cfg, result, key_eval) -> GANRun:
    params = result.state.ema if cfg["ema_decay"] is not None else result.state.generator
    samples = _eval_samples(gen, params, cfg, dataset, key_eval)
    metrics = _metrics(dataset, samples, cfg["loss"], result.step, result.stop_reason, result.history["distance"])
    return GANRun(gen, params, cfg, result, samples, metrics)


def _training(algo, cfg: dict, dataset, key) -> registry.Training:
    """The driver's job for one seed (`genlearn fit gan` and :func:`train_model`): the generator, critic
    and spectral-norm state come from ``algo.init`` on the driver's init key, as in :func:`train_seeds`."""
    return registry.Training(algo, None, _model_data(dataset, cfg), jax.random.split(key, 3)[1], cfg["steps"],
                             algo.batch_size, eval_every=cfg["chunk"])


def _model_data(dataset, cfg):
    return jnp.asarray((np.asarray(dataset.train, np.float64) - cfg["shift"]) / cfg["scale"], jnp.float32)


def train_model(dataset: Any, *, loss: str = "wgan-gp", steps: int | None = None, seed: int = 0,
                progress: bool = True, checkpoint_dir: str | None = None, max_seconds: float | None = None,
                **options: Any) -> GANRun:
    """Builds and trains a generator, writing nothing but checkpoints (``genlearn fit gan`` writes a run).

    ``options``: overrides of :func:`default_options` (None values ignored), ``resume`` and ``data_seed``
    (:func:`run_config`). Returns a :class:`GANRun` whose ``samples`` (5000 for toys, 2000 for pixels;
    data scale) were drawn with the key ``split(PRNGKey(seed), 3)[2]`` and scored into ``metrics``.
    """
    dataset, cfg = run_config(dataset, loss=loss, steps=steps, seed=seed, **options)
    gen, algo = build_algorithm(cfg)
    key = jax.random.PRNGKey(seed)
    t = _training(algo, cfg, dataset, key)
    result = run_trainer(t.trainer, t.params, t.data, steps=t.steps, batch_size=t.batch_size, key=t.key,
                         eval_every=t.eval_every, checkpoint_dir=checkpoint_dir, resume=cfg.pop("resume"),
                         progress=progress, progress_desc=f"gan {cfg['loss']}", max_seconds=max_seconds)
    return _finish(dataset, gen, cfg, result, jax.random.split(key, 3)[2])


def train_seeds(dataset: Any, seeds: Sequence[int], *, loss: str = "wgan-gp", steps: int | None = None,
                **options: Any) -> list[GANRun]:
    """:func:`train_model` for several seeds at once: the min-max step ``jax.vmap``-ed over seeds.

    Same keys and batches as :func:`train_model` for each seed (init, the
    driver's minibatches and step keys from ``key_train``, evaluation), one
    compiled ``lax.scan`` for all seeds. The arithmetic equals :func:`train_model`'s up to float rounding
    (1e-6 after 100 steps), but adversarial training is chaotic: over
    thousands of steps a seed's outcome can differ between ``train_model``,
    3 vmapped seeds and 10 vmapped seeds. Each call is deterministic on CPU. A rejected (non-finite) update leaves that seed's state unchanged
    and is counted in its history, as in the driver;
    no checkpoints, no early stop.
    """
    from genlearn.train import FitResult, epoch_permutation

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of integers")
    dataset, cfg = run_config(dataset, loss=loss, steps=steps, seed=seeds[0], **options)
    cfg.pop("resume")
    gen, algo = build_algorithm(cfg)
    keys = jnp.stack([jnp.stack(jax.random.split(jax.random.PRNGKey(s), 3)) for s in seeds])
    data = _model_data(dataset, cfg)
    rows = algo.batch_size * algo.batches_per_step

    @jax.jit
    def run(keys):  # the driver's batches and step keys, per seed (genlearn.train.run_trainer)
        states = jax.vmap(lambda k: algo.init(jax.random.fold_in(k, 4)))(keys[:, 1])  # the driver's init key
        _, shuffle, step_keys, _ = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 4))(keys[:, 1]), 1, 0)

        n, per_epoch = data.shape[0], data.shape[0] // rows

        def one(state, perm, shuffle_key, step_key, t):
            # `genlearn.train.minibatch_indices`, with the epoch's permutation carried (drawn once per epoch)
            epoch, position = jnp.divmod(t, per_epoch)
            perm = jax.lax.cond(position == 0, lambda: epoch_permutation(shuffle_key, epoch, n).astype(jnp.int32),
                                lambda: perm)
            batch = data[jax.lax.dynamic_slice_in_dim(perm, position * rows, rows)]
            state, info = algo.step(state, batch, jax.random.fold_in(step_key, t))
            return (state, perm), info

        def body(carry, t):
            return jax.vmap(one, in_axes=(0, 0, 0, 0, None))(*carry, shuffle, step_keys, t)

        carry = (states, jnp.zeros((len(seeds), n), jnp.int32))
        (states, _), infos = jax.lax.scan(body, carry, jnp.arange(cfg["steps"]))
        return states, infos

    states, infos = jax.device_get(run(keys))
    out = []
    for i, seed in enumerate(seeds):
        state = jax.tree_util.tree_map(lambda v: v[i], states)
        hist = {"step": np.arange(cfg["steps"]), "val_step": np.zeros(0, np.int64), "val_loss": np.zeros(0)}
        hist.update({"train_loss" if f == "loss" else f: np.asarray(getattr(infos, f))[:, i] for f in GANInfo._fields})
        hist["train_loss"] = np.where(hist["nonfinite"], np.nan, hist["train_loss"]).astype(np.float64)
        finite = all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(state))
        result = FitResult(algo.params(state), None, cfg["steps"], hist, None, None,
                           "steps" if finite else "nonfinite", state)
        out.append(_finish(dataset, gen, {**cfg, "seed": seed}, result, keys[i, 2]))
    return out


def _metrics(dataset, samples, loss, steps, stop_reason, distance) -> dict:
    from genlearn.metrics import energy_distance, mmd2
    from genlearn.runs import sample_metrics

    out = {"loss": loss, "data": dataset.name, "steps": int(steps), "stop_reason": stop_reason,
           "final_distance": float(np.mean(np.asarray(distance)[-100:]))}
    if not np.all(np.isfinite(samples)):
        out["nonfinite_samples"] = int(np.sum(~np.isfinite(samples).all(1)))
        return out
    out.update(sample_metrics(samples, dataset))
    test = np.asarray(dataset.test, np.float64)
    if dataset.discrete_levels is None:
        n = min(2000, test.shape[0], samples.shape[0])
        out["test_mmd2"] = float(mmd2(samples[:n], test[:n]))
        out["test_energy_distance"] = float(energy_distance(samples[:n], test[:n]))
    return out


def _preprocess(dataset) -> dict:
    shift, scale = _scaling(dataset)
    return {"kind": "scale", "shift": shift, "scale": scale,
            "output": "tanh" if dataset.discrete_levels is not None else "linear"}


def _run_cfg(options: dict, dim: int, pre: dict) -> dict:
    return {**options, "dim": dim, "shift": pre["shift"], "scale": pre["scale"], "output": pre["output"]}


def _trainer(model, dataset, options: dict, key, ctx: registry.Context) -> registry.Training:
    cfg = _run_cfg(options, model.dim, _preprocess(dataset))
    return _training(build_algorithm(cfg)[1], cfg, dataset, key)


def _report(model, params, dataset, options: dict, history, key) -> dict:
    cfg = _run_cfg(options, model.dim, _preprocess(dataset))
    samples = _eval_samples(_generator(cfg, cfg["dim"], cfg["output"]), params, cfg, dataset,
                            jax.random.split(key, 3)[2])
    return _metrics(dataset, samples, options["loss"], history["steps"], history["stop_reason"],
                    history["distance"])


def _defaults(dataset, chosen: dict) -> dict:
    loss = chosen.get("loss", "wgan-gp")
    return {"loss": loss, **default_options(loss, dataset)}


FAMILY = registry.register(registry.Family(
    name="gan",
    defaults=_defaults,
    build=lambda options, dim, pre: from_generator(_generator(options, dim, pre["output"]), shift=pre["shift"],
                                                   scale=pre["scale"]),
    trainer=_trainer, check=_check, preprocess=_preprocess, report=_report,
    loss_label="critic distance estimate (weak loss for generators without a critic)",
    options=(
        registry.Option("--loss", "loss", str, "gan: js|ns|wgan-clip|wgan-gp|sn|hinge|mmd (default wgan-gp; "
                        "also energy|sinkhorn|sliced|moments). On 2-D toys wgan-gp and mmd reach >= 90 %% high-quality "
                        "samples at their defaults; ns and js need --r1-weight 0.1 --ema-decay 0.999 --latent-dim 2 "
                        "--base uniform --hidden 128,128,128 --steps 60000; hinge and sn with those flags and "
                        "--critic-steps 1 --lr-critic 1e-3 reach 83-99 %% on most seeds but collapse on some "
                        "(hinge: no ring8 mode on one seed of three); wgan-clip reaches no more than 30 %% with "
                        "any flags measured (benchmarks/results/mode_collapse_tuning.md)"),
        registry.STEPS, registry.BATCH_SIZE,
        registry.Option("--lr", "lr_generator", registry.positive_float, "gan: generator learning rate"),
        registry.Option("--hidden", "hidden", registry.widths, "gan: generator hidden widths"),
        registry.Option("--latent-dim", "latent_dim", registry.positive_int, "gan: latent dimension D"),
        registry.Option("--base", "base", str, "gan: latent distribution Q, N(0, I) or U[-1, 1]^D",
                        ("normal", "uniform")),
        registry.Option("--critic-steps", "critic_steps", registry.positive_int,
                        "gan: critic steps m per generator step"),
        registry.Option("--critic-hidden", "critic_hidden", registry.widths, "gan: critic hidden widths"),
        registry.Option("--lr-critic", "lr_critic", registry.positive_float, "gan: critic learning rate (TTUR)"),
        registry.Option("--gp-weight", "gp_weight", registry.nonneg_float, "gan: gradient-penalty weight (wgan-gp)"),
        registry.Option("--r1-weight", "r1_weight", registry.nonneg_float, "gan: R1 penalty weight"),
        registry.Option("--clip", "clip", registry.positive_float, "gan: weight-clipping delta (wgan-clip)"),
        registry.Option("--ema-decay", "ema_decay", registry.fraction, "gan: generator EMA decay in [0, 1)"),
        registry.RESUME,
    ),
))
