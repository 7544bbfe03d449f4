"""The EBM family of the run registry (``genlearn fit ebm``).

Training: persistent contrastive divergence with a replay buffer, negatives
from MALA + independent Metropolis-Hastings jumps (a KDE proposal on the data
batch, `genlearn.energy.kde_proposal`), on standardised data; the saved model
is the data-space energy (`genlearn.energy.standardized`). On sharp mixtures
(data with a known component std: ring8, grid25) the energy is residual,
``V = -log q + E_theta`` (`genlearn.energy.residual_energy`) over a Gaussian
mixture ``q`` fitted by EM to the standardised data, ``E_theta`` an MLP started
at zero; the energy's params are then ``{"base", "correction"}``
(``options["base"]`` records which, ``"none"`` for the plain MLP energy, and runs
saved before it rebuild as plain). After training,
``log Z`` is estimated once by AIS (from ``q`` itself for a residual energy,
`genlearn.energy.ais_log_z_from`) and kept in the params with the proposal
centres of the sampler: params ``{"energy", "log_z", "centers"}``. The Model's
``sample`` runs MALA + jump chains (:func:`mcmc_sampler`) and its
``log_prob = -V - log Z`` is flagged as an estimate. metrics.json adds the AIS
diagnostics (``test_nll_stderr`` is the AIS standard error of ``log Z``), the
2-D quadrature check and mode coverage.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genlearn import core, registry
from genlearn.core.model import from_energy
from genlearn.data import Dataset
from genlearn.data.scaling import standardize_stats
from genlearn.energy.ais import gaussian_base, grid_log_z, log_likelihood
from genlearn.energy.models import EnergyModel, mlp_energy, residual_energy, standardized
from genlearn.energy.samplers import independent_mh, kde_proposal, mala
from genlearn.energy.training import persistent_contrastive_divergence

__all__ = ["DEFAULTS", "default_options", "mcmc_sampler", "build", "trainer"]

DEFAULTS: dict[str, Any] = {
    "steps": 4000, "hidden": [128, 128, 128], "activation": "silu", "confinement": 4.0, "learning_rate": 1e-2,
    "batch_size": 256, "k": 10, "sampler": "mala_jump", "proposal_wide_weight": 0.1, "buffer_size": 10_000,
    "reinit_prob": 0.05, "alpha": 0.0, "ais_chains": 1000, "ais_temperatures": 500, "sample_steps": 200,
    "num_proposal_centers": 1024,
    "step_size": None,  # 0.5 * proposal_bandwidth^2 (standardised units)
    "proposal_bandwidth": None,  # mixture std / data std for mixtures, else 0.1
    "base": None,  # "mixture" on sharp mixtures (known component std), else "none"
    "base_components": None,  # min(32, training rows // 8)
}
"""Options of the EBM family (the CLI exposes --steps, --hidden, --lr, --mcmc-steps, ...).

Adam's learning rate is 1e-2 (b1 = 0.5, cosine decay): against 1e-3 it lowers the held-out NLL on every
toy tried at the 4000-step default (standardised nats, log Z by AIS): ring8 -2.976 -> -3.603 (truth
-3.598; the 2-D quadrature puts it 0.03 nats above the truth), grid25 -2.161 -> -3.238, moons
1.164 -> 1.158, pinwheel 1.571 -> 1.552, checkerboard 2.039 -> 1.844. At 1e-3 the energy stays nearly
flat for the first ~1000 updates (800 leave ring8 at -0.62); with 1e-2, 2000 updates bring ring8 within
0.04-0.06 nats of the truth by quadrature on 3 seeds.

``base``: on sharp mixtures (``dataset.std`` known) the energy is a residual over a 32-component diagonal
Gaussian mixture fitted by EM (Deng et al. 2020, residual EBMs; Arbel et al. 2021, generalized EBMs) and AIS
anneals from that mixture. runs.fit at the CLI defaults, standardised held-out NLL gap to the truth (AIS;
2-D quadrature in brackets), modes, high-quality fraction of 2000 samples: grid25 seed 0, plain MLP 0.608
(0.667), 25/25, 68 % -> residual 0.019 (0.019), 25/25, 99 %, AIS ESS 64 -> 996 of 1000 chains; seed 1
residual 0.011 (0.012), 25/25, 99 %; ring8 seed 0, plain -0.005 (0.027; AIS ESS 350, stderr 0.043), 8/8,
98 % -> residual 0.013 (0.017; ESS 997, stderr 0.002), 8/8, 99 %; seed 1 residual 0.012 (0.012), 8/8, 99 %.
The fitted mixture alone is already at 0.019 (grid25) and 0.016 (ring8): the correction moves it little
there. Elsewhere it does not help, so ``base`` is "none" unless ``dataset.std`` is known: on moons the
mixture alone is 0.051 off and the residual EBM reaches only 0.042 (0.042) with the correction started at
zero and 0.043 with it started at a random MLP, against 0.008 for the plain MLP energy; circles (not used
to choose) 0.068 (0.066) against 0.002 (0.002) plain. The residual ``log p - log q`` there has the
mixture's bumps along the curves, which a smooth MLP correction does not learn in 4000 PCD updates."""


MIXTURE_COMPONENTS = 32  # the mixture base's components (K), on at least 8 fitted rows each
BASE_ROWS = 4096  # the standardised training rows EM fits the mixture base to


def default_options(dataset: Dataset, std: np.ndarray | None = None) -> dict:
    """DEFAULTS with the data-dependent ones filled in (``std``: the training data's)."""
    std = np.asarray(standardize_stats(dataset.train)[1] if std is None else std, np.float64)
    opts = dict(DEFAULTS)
    opts["base_components"] = min(MIXTURE_COMPONENTS, max(1, min(int(np.shape(dataset.train)[0]), BASE_ROWS) // 8))
    if dataset.std is not None:
        # Sharp mixtures: the proposal and MALA must resolve one component, and the energy corrects a
        # mixture fitted to the data (see DEFAULTS) rather than carving each mode out of an MLP.
        opts["proposal_bandwidth"] = float(dataset.std / np.max(std))
        opts["base"] = "mixture"
    else:
        opts["proposal_bandwidth"] = 0.1
        opts["base"] = "none"
    opts["step_size"] = 0.5 * opts["proposal_bandwidth"] ** 2
    return opts


def mcmc_sampler(unnormalized_log_prob, *, step_size: float, bandwidth: float, wide_weight: float,
                 num_steps: int):
    """``sample(params, centers, key, n) -> (n, dim)``: the last state of ``n`` MALA + jump chains.

    Each step is one MALA move (``step_size``) then one independent
    Metropolis-Hastings jump from a KDE proposal on ``centers`` (``bandwidth``,
    a ``wide_weight`` share of wide components). Chains start from a Gaussian
    fitted to ``centers``.
    """

    # params and centres are arguments, not closed-over constants: XLA would constant-fold
    # through them and spend most of the compile time there
    @jax.jit
    def run(params, centers, keys, x0):
        logdens = lambda x: unnormalized_log_prob(params, x)  # noqa: E731
        local = mala(logdens, step_size)
        jump = independent_mh(logdens, *kde_proposal(centers, bandwidth, wide_weight=wide_weight))

        def chain(k, x):
            def body(x, kt):
                s, _ = local.step(kt, local.init(x))
                j, _ = jump.step(jax.random.fold_in(kt, 1), jump.init(s.position))
                return j.position, None

            x, _ = jax.lax.scan(body, x, jax.random.split(k, num_steps))
            return x

        return jax.vmap(chain)(keys, x0)

    def sample(params, centers, key, n):
        mean, cov = gaussian_base(centers)
        k0, k1 = jax.random.split(key)
        x0 = mean + jax.random.normal(k0, (n, centers.shape[1])) @ jnp.linalg.cholesky(cov).T
        return run(params, centers, jax.random.split(k1, n), x0)

    return sample


def _energy(options: dict, dim: int, pre: dict | None = None) -> EnergyModel:
    """The energy on standardised data, or (``pre`` given) its data-space version: the MLP energy, or with
    ``base="mixture"`` the residual energy over a Gaussian mixture (the confinement is then unused)."""
    kind = options.get("base", "none")  # runs saved before the base was recorded: the plain MLP energy
    if kind == "mixture":
        mlp = mlp_energy(dim, tuple(options["hidden"]), activation=options["activation"], confinement=float("inf"),
                         zero_init=True)
        model = residual_energy(_mixture(options, dim), mlp)
    elif kind == "none":
        model = mlp_energy(dim, tuple(options["hidden"]), activation=options["activation"],
                           confinement=options["confinement"])
    else:
        raise ValueError(f"ebm: base must be 'mixture' or 'none', got {kind!r}")
    return model if pre is None else standardized(model, np.asarray(pre["mean"]), np.asarray(pre["std"]))


def _mixture(options: dict, dim: int):
    k = options.get("base_components")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"ebm: base_components must be a positive integer, got {k!r}")
    return core.gaussian_mixture(dim, int(k))


def _fit_base(options: dict, u: np.ndarray, key) -> dict:
    """The mixture base's params: EM (`core.gaussian_mixture`'s fit) on at most BASE_ROWS standardised rows."""
    return _mixture(options, u.shape[1]).fit(key, u[:BASE_ROWS])


def _base_functions(options: dict, phi: dict, pre: dict):
    """``(log_q, sample_q, step)`` of the data-space mixture base for `ais_log_z_from` (MALA's first step:
    a quarter of the smallest component variance)."""
    q = _mixture(options, len(pre["mean"]))
    mean, std = jnp.asarray(pre["mean"], jnp.float32), jnp.asarray(pre["std"], jnp.float32)
    log_det = jnp.sum(jnp.log(std))
    phi = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), phi)

    def log_q(x):
        return q.log_prob(phi, (x - mean) / std) - log_det

    def sample_q(key, n):
        return mean + std * q.sample(phi, key, n)

    step = 0.25 * float(jnp.min(jnp.exp(2 * phi["log_std"]) * std**2))
    return log_q, sample_q, step


def build(options: dict, dim: int, pre: dict):
    """The data-space EBM as a Model over params ``{"energy", "log_z", "centers"}`` (centres standardised)."""
    data_model = _energy(options, dim, pre)
    mean, std = jnp.asarray(pre["mean"], jnp.float32), jnp.asarray(pre["std"], jnp.float32)
    scale = float(np.max(pre["std"]))
    mcmc = mcmc_sampler(data_model.unnormalized_log_prob, step_size=options["step_size"] * scale**2,
                        bandwidth=options["proposal_bandwidth"] * scale,
                        wide_weight=options["proposal_wide_weight"], num_steps=options["sample_steps"])
    model = from_energy(data_model._replace(unnormalized_log_prob=lambda p, x: data_model.unnormalized_log_prob(
        p["energy"], x)), lambda p, key, n: mcmc(p["energy"], p["centers"] * std + mean, key, n),
        log_z=lambda p: p["log_z"])

    def init(key, data=None):
        """Untrained energy, log Z = 0; proposal centres from ``data`` (standardised), else N(0, I) draws."""
        k_energy, k_centers = jax.random.split(key)
        m = options["num_proposal_centers"]
        centers = (jax.random.normal(k_centers, (m, dim)) if data is None
                   else (jnp.asarray(data)[:m] - mean) / std)
        return {"energy": data_model.init(k_energy), "log_z": jnp.zeros(()), "centers": centers}

    return model._replace(init=init)


def preprocess(dataset: Dataset) -> dict:
    mean, std = (np.asarray(a, np.float64) for a in standardize_stats(dataset.train))
    return {"kind": "standardize", "mean": mean.tolist(), "std": std.tolist()}


def trainer(model, dataset: Dataset, options: dict, key, ctx: registry.Context) -> registry.Training:
    """PCD on standardised data; ``finish`` estimates ``log Z`` by AIS (the module docstring)."""
    opts = options
    pre = preprocess(dataset)
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    u = ((np.asarray(dataset.train) - mean) / std).astype(np.float32)
    rng = np.random.default_rng(ctx.seed)
    centers = u[rng.choice(u.shape[0], min(opts["num_proposal_centers"], u.shape[0]), replace=False)]
    k_init, k_base, k_fit, k_ais, _ = jax.random.split(key, 5)
    energy = _energy(opts, model.dim)
    params0 = energy.init(k_init)
    residual = opts.get("base", "none") == "mixture"
    if residual:  # the base fitted to the data; the correction starts at zero
        params0 = {**params0, "base": _fit_base(opts, u[rng.permutation(u.shape[0])], k_base)}
    optimizer = optax.adam(optax.cosine_decay_schedule(opts["learning_rate"], max(opts["steps"], 1)), b1=0.5)
    pcd = persistent_contrastive_divergence(
        energy, optimizer, buffer_size=opts["buffer_size"], k=opts["k"], step_size=opts["step_size"],
        alpha=opts["alpha"], reinit_prob=opts["reinit_prob"], sampler=opts["sampler"],
        proposal_bandwidth=opts["proposal_bandwidth"], proposal_wide_weight=opts["proposal_wide_weight"],
        init_range=3.0,
    )

    def finish(result):
        ais = {}
        if residual:  # anneal from the mixture base itself: only the correction is left to bridge
            log_q, sample_q, step = _base_functions(opts, result.params["base"], pre)
            ais = {"base": (log_q, sample_q), "step_size": step}
        ll = log_likelihood(_energy(opts, model.dim, pre), result.params, dataset.test, k_ais,
                            num_chains=opts["ais_chains"], num_temperatures=opts["ais_temperatures"], **ais)
        params = {"energy": result.params, "log_z": jnp.asarray(ll.log_z, jnp.float32),
                  "centers": jnp.asarray(centers)}
        return params, {"test_nll_stderr": ll.nll_stderr, "test_nll_sample_stderr": ll.sample_stderr,
                        "log_z": ll.log_z, "ais_ess": ll.ais.ess, "ais_acceptance_rate": ll.ais.acceptance_rate}

    return registry.Training(pcd, params0, u, k_fit, opts["steps"], min(opts["batch_size"], u.shape[0]),
                             max_nonfinite=20, finish=finish)


def _report(model, params, dataset: Dataset, options: dict, history, key) -> dict:
    """The 2-D quadrature check of ``log Z`` and the mode coverage of 2000 MCMC samples."""
    out: dict[str, Any] = {}
    train_x, test = np.asarray(dataset.train), np.asarray(dataset.test)
    if model.dim == 2:
        std = np.asarray(standardize_stats(train_x)[1], np.float64)
        energy = _energy(options, model.dim, preprocess(dataset))
        f = jax.jit(lambda x: energy.unnormalized_log_prob(params["energy"], x))
        lo, hi = train_x.min(0) - 3 * std / 4, train_x.max(0) + 3 * std / 4
        res = int(min(2000, max(400, 8 * np.max(hi - lo) / (options["proposal_bandwidth"] * np.max(std)))))
        log_z_grid = grid_log_z(f, lo, hi, res)
        out["log_z_quadrature"] = log_z_grid
        out["test_nll_quadrature"] = float(-np.mean(np.asarray(f(jnp.asarray(test)))) + log_z_grid)
    if dataset.centers is not None:
        from genlearn.metrics import mode_coverage

        samples = np.asarray(model.sample(params, jax.random.split(key, 5)[4], 2000))
        mc = mode_coverage(samples, dataset.centers, dataset.std)
        out.update(modes_covered=int(mc.modes_covered), num_modes=int(len(dataset.centers)),
                   high_quality_fraction=float(mc.high_quality_fraction))
    return out


def _check(options: dict, dataset: Dataset) -> str | None:
    kind = options.get("base", "none")
    if kind not in ("mixture", "none"):
        return f"ebm: --base must be mixture or none, got {kind!r}"
    if kind == "mixture":
        k = options.get("base_components")
        rows = min(int(np.shape(dataset.train)[0]), BASE_ROWS)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= rows:
            return f"ebm: --components must be an integer in [1, {rows}] (the rows EM fits the base to), got {k!r}"
    return None


registry.register(registry.Family(
    name="ebm",
    defaults=lambda dataset, chosen: default_options(dataset),
    build=build, trainer=trainer, preprocess=preprocess, report=_report, check=_check,
    applies=lambda dataset: ("the EBM run supports continuous data only (got a discrete dataset)"
                             if dataset.discrete_levels is not None else None),
    options=(
        registry.STEPS, registry.BATCH_SIZE, registry.LEARNING_RATE, registry.HIDDEN,
        registry.Option("--mcmc-steps", "k", registry.positive_int,
                        "ebm: MALA + jump steps per PCD update (default 10)"),
        registry.Option("--ais-chains", "ais_chains", registry.positive_int,
                        "ebm: AIS chains for log Z (default 1000)"),
        registry.Option("--ais-temperatures", "ais_temperatures", registry.positive_int,
                        "ebm: AIS temperatures (default 500)"),
        registry.Option("--sample-steps", "sample_steps", registry.positive_int,
                        "ebm: MCMC steps per drawn sample (default 200)"),
        registry.Option("--base", "base", str, "ebm: mixture (default: the energy corrects a Gaussian mixture "
                        "fitted by EM) or none (a plain MLP energy)", choices=("mixture", "none")),
        registry.Option("--components", "base_components", registry.positive_int,
                        "ebm: the mixture base's components (default 32, at most training rows / 8)"),
    ),
    loss_label="PCD surrogate E[V(data)] - E[V(samples)]",
))
