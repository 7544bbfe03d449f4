"""float64 everywhere: every public function of every subpackage, under x64.

The test walks ``__all__`` of each subpackage. Every public name has either a
*recipe* (a small call of it, for a factory: build, init, call its functions)
or an entry in ``EXCLUDED`` with the reason; a new public name with neither
fails `test_every_public_name_has_a_recipe_or_a_reason`.

In the default suite each recipe runs once under x64 and its floating outputs
must be float64 (`test_x64`); `test_x64_matches_float32` (``-m slow``, twice the
compilation) also checks the rest below. Each recipe ``fn(c)`` runs twice: with float32 inputs (``c`` casts a pytree's
floating leaves to float32), then inside ``jax.enable_x64(True)`` with the same
inputs cast to float64 (so x64 does not leak into other tests). It must not
crash; its floating outputs must be float64 under x64 (unless the recipe says
the function computes in a fixed precision) and finite where the float32 ones
are; and they must equal the float32 outputs within tolerance (unless the
recipe draws random numbers whose bits depend on the precision, e.g. a float64
normal draw). Parameters are initialised once in float32 (`p32`) and cast, so
both calls see the same values.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

SUBPACKAGES = ("core", "flows", "classical", "energy", "gan", "metrics", "data", "train", "losses",
               "distances", "nn", "interop", "parallel")  # diffusion/vae: their own tests

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
A = RNG.normal(size=(24, 2)) * [1.0, 0.5] + [0.3, -0.2]
B = RNG.normal(size=(20, 2)) * [0.8, 0.7] + [0.1, 0.2]
A4 = RNG.normal(size=(16, 4))
PIXELS = np.abs(RNG.normal(size=(2, 12, 64))) * 4


class Recipe(NamedTuple):
    fn: Callable
    compare: bool = True  # values equal float32's within tolerance
    float64: bool = True  # floating outputs are float64 under x64
    rtol: float = 2e-3
    atol: float = 2e-4


RECIPES: dict[str, Recipe] = {}


def recipe(*names, **flags):
    def register(fn):
        for name in names:
            RECIPES[name] = Recipe(fn, **flags)
        return fn
    return register


def p32(fn, *args, **kwargs):
    """``fn(*args)`` with x64 off (parameters with float32 random bits), as numpy arrays."""
    with jax.enable_x64(False):
        return jax.tree_util.tree_map(np.asarray, fn(*args, **kwargs))


def _flow_calls(c, flow, data_init=False, context=None):
    """init (in this precision: must not crash), then log_prob, sample, apply/inverse with float32 params."""
    flow.init(KEY, c(A4[:, : flow.dim])) if data_init else flow.init(KEY)
    params = c(p32(flow.init, KEY, A4[:, : flow.dim].astype(np.float32)) if data_init else p32(flow.init, KEY))
    x = c(A4[:8, : flow.dim] * 0.5)
    ctx = None if context is None else c(context)
    z = flow.inverse(params, x, ctx) if ctx is not None else flow.inverse(params, x)
    out = {"log_prob": flow.log_prob(params, x, ctx) if ctx is not None else flow.log_prob(params, x), "z": z}
    out["sample_shape"] = flow.sample(params, KEY, 3, ctx[:3] if ctx is not None else None).shape \
        if ctx is not None else flow.sample(params, KEY, 3).shape
    return out


# ---------------------------------------------------------------------------
# genlearn.core
# ---------------------------------------------------------------------------
from genlearn import core  # noqa: E402


@recipe("core.standard_normal", "core.logistic", "core.diag_gaussian", "core.uniform", "core.student_t",
        "core.gaussian_mixture", "core.make_base")
def _bases(c):
    out = {}
    for name, dist in {"normal": core.standard_normal(2), "logistic": core.logistic(2),
                       "diag": core.diag_gaussian(2), "uniform": core.uniform(2, -3.0, 3.0),
                       "student_t": core.student_t(2), "student_t5": core.student_t(2, df=5.0),
                       "mixture": core.gaussian_mixture(2, 3), "made": core.make_base("normal", 2)}.items():
        p = c(p32(dist.init, KEY))
        out[name] = jax.vmap(dist.log_prob, (None, 0))(p, c(A[:5]))
        dist.init(KEY)
    return out


@recipe("core.make_bijector", "core.chain", "core.repeat", "core.scale", "core.reverse", "core.permutation",
        "core.random_permutation", "core.fixed_affine", "core.logit_box", "core.make_flow", "core.transformed")
def _bijectors(c):
    out = {}
    bijs = {"scale": core.scale(2), "reverse": core.reverse(2), "perm": core.permutation([1, 0]),
            "rperm": core.random_permutation(KEY, 2), "affine": core.fixed_affine(c(np.array([0.1, 0.2])),
                                                                                c(np.array([2.0, 0.5]))),
            "custom": core.make_bijector(lambda k: {"s": jnp.ones(2)},
                                         lambda p, x: (x * p["s"], jnp.sum(jnp.log(p["s"])) * jnp.ones(())),
                                         lambda p, y: (y / p["s"], -jnp.sum(jnp.log(p["s"])) * jnp.ones(())), 2)}
    bijs["chain"] = core.chain(bijs["scale"], bijs["reverse"], bijs["affine"])
    bijs["repeat"] = core.repeat(core.chain(bijs["custom"], bijs["reverse"]), 3)
    x = c(A[:6] * 0.3)
    for name, bij in bijs.items():
        p = c(p32(bij.init, KEY))
        y, ld = jax.vmap(bij.apply_and_log_det, (None, 0))(p, x)
        out[name] = (y, ld, jax.vmap(bij.inverse, (None, 0))(p, y))
    box = core.logit_box(2, upper=1.0)
    u = c(np.clip(np.abs(A[:6]) / 4, 0.05, 0.95))
    out["logit_box"] = jax.vmap(box.inverse_and_log_det, (None, 0))(c(p32(box.init, KEY)), u)
    flow = core.make_flow(core.standard_normal(2), bijs["chain"])
    out["flow"] = _flow_calls(c, flow)
    out["transformed"] = _flow_calls(c, core.transformed(flow, core.scale(2)))
    return out


@recipe("core.from_flow", "core.from_estimator", "core.from_generator", "core.from_energy")
def _models(c):
    from genlearn import classical, energy, gan
    from genlearn.flows import realnvp

    out = {}
    model = core.from_flow(realnvp(2, 1, (8,)))
    out["flow"] = model.log_prob(c(p32(model.init, KEY)), c(A[:5]))
    est = core.from_estimator(classical.kde(bandwidth=0.5), 2)
    out["estimator"] = est.log_prob(est.init(KEY, c(A)), c(B[:5]))
    out["flow_sample"] = model.sample(c(p32(model.init, KEY)), KEY, 2).shape
    gen = core.from_generator(gan.generator(2, 2, (8,)), shift=0.5, scale=2.0)
    out["generator_shape"] = gen.sample(c(p32(gen.init, KEY)), KEY, 4).shape
    ebm = energy.mlp_energy(2, (8,))
    m = core.from_energy(ebm, lambda p, k, n: jnp.zeros((n, 2)), log_z=lambda p: jnp.zeros(()))
    m.sample(None, KEY, 2)
    out["energy"] = m.log_prob(c(p32(ebm.init, KEY)), c(A[:5]))
    return out


@recipe("core.check_batch", "core.check_example", "core.check_context", "core.batch_context")
def _checks(c):
    core.check_batch(c(A), 2)
    core.check_example(c(A[0]), 2)
    core.check_context(c(A[0]), 2)
    return core.batch_context(c(A[0]), 4, 2)


# ---------------------------------------------------------------------------
# genlearn.flows
# ---------------------------------------------------------------------------
from genlearn import flows  # noqa: E402


@recipe("flows.realnvp", "flows.nice", "flows.coupling", "flows.affine", "flows.shift", "flows.half_mask",
        "flows.parity_mask")
def _coupling_flows(c):
    cond = flows.realnvp(4, 2, (8,), mask="parity", context_dim=2)
    custom = core.make_flow(core.standard_normal(4), core.chain(
        flows.coupling(4, flows.shift(), mask=flows.half_mask(4), hidden=(8,)),
        flows.coupling(4, flows.affine(), mask=flows.parity_mask(4, swap=True), hidden=(8,))))
    return {"realnvp": _flow_calls(c, flows.realnvp(4, 2, (8,))), "nice": _flow_calls(c, flows.nice(4, 2, (8,))),
            "cond": _flow_calls(c, cond, context=A4[:8, :2]), "custom": _flow_calls(c, custom)}


@recipe("flows.maf", "flows.iaf", "flows.made", "flows.MADE", "flows.masked_autoregressive",
        "flows.inverse_autoregressive")
def _autoregressive(c):
    made = flows.made(4, (8,), 2)
    p = c(p32(made.init, KEY, np.zeros((1, 4), np.float32)))
    custom = core.make_flow(core.standard_normal(4), core.chain(
        flows.masked_autoregressive(4, hidden=(8,)), flows.inverse_autoregressive(4, hidden=(8,))))
    return {"maf": _flow_calls(c, flows.maf(4, 2, (8,))), "iaf": _flow_calls(c, flows.iaf(4, 2, (8,))),
            "maf_direct": _flow_calls(c, flows.maf(4, 2, (8,), direct=True)),
            "made": made.apply(p, c(A4[:3])), "custom": _flow_calls(c, custom),
            "is_module": isinstance(made, flows.MADE)}


@recipe("flows.spline", "flows.rational_quadratic")
def _spline(c):
    out = {"coupling": _flow_calls(c, flows.spline(4, 2, (8,))),
           "autoregressive": _flow_calls(c, flows.spline(4, 2, (8,), kind="autoregressive"))}
    rq = flows.rational_quadratic(num_bins=4)
    theta = c(np.linspace(-1, 1, rq.params_per_dim * 3).reshape(3, rq.params_per_dim))
    out["rq"] = rq.forward(theta, c(np.array([-0.5, 0.2, 2.0])))
    return out


@recipe("flows.glow", compare=False)
def _glow_data_init(c):
    # compare=False: glow's lu_linear layers draw their rotation W = jax.random.orthogonal(PRNGKey(0), d) at
    # construction, and under x64 that draw has other bits (max |W64 - W32| = 1.37 for d = 4): the LU factors
    # and ActNorm statistics of a data-initialised build differ, so the two precisions build different flows.
    return _flow_calls(c, flows.glow(4, 2, (8,)), data_init=True)


@recipe("flows.actnorm", "flows.actnorm_data_init", "flows.invertible_linear", "flows.lu_linear", compare=False)
# compare=False: invertible_linear/lu_linear(key=KEY) draw their matrix at construction, in this precision's bits
def _glow_parts(c):
    out = {"glow_no_init": _flow_calls(c, flows.glow(4, 2, (8,), data_init=False))}
    out["data_init"] = flows.actnorm_data_init(c(A4))
    for name, bij in {"actnorm": flows.actnorm(4), "inv": flows.invertible_linear(4, key=KEY),
                      "lu": flows.lu_linear(4, key=KEY)}.items():
        out[name] = jax.vmap(bij.apply_and_log_det, (None, 0))(c(p32(bij.init, KEY)), c(A4[:3]))
    return out


@recipe("flows.batch_norm")
def _batch_norm(c):
    bn = flows.batch_norm(4)
    p, s = c(p32(bn.init, KEY)), c(p32(bn.init_state))
    z, ld, s2 = bn.train_inverse(p, s, c(A4))
    return z, ld, s2, bn.bijector.apply(bn.eval_params(p, s2), z[0])


@recipe("flows.cnf", "flows.cnf_nll", rtol=1e-2, atol=1e-3)
def _cnf(c):
    flow = flows.cnf(2, 1, (8,), rtol=1e-3, atol=1e-3)
    p = c(p32(flow.init, KEY))
    x = c(A[:4] * 0.5)
    return flow.log_prob(p, x), flows.cnf_nll(flow)(p, x, None)


@recipe("flows.cnf_flow_matching")
def _cnf_flow_matching(c):
    p = c(p32(flows.cnf(2, 1, (8,)).init, KEY))
    return flows.cnf_flow_matching(2, (8,), sigma_min=0.01)(p, c(A[:4] * 0.5), KEY)


# ---------------------------------------------------------------------------
# genlearn.classical
# ---------------------------------------------------------------------------
from genlearn import classical  # noqa: E402


@recipe("classical.gmm", "classical.kmeans_plusplus", compare=False)  # k-means++ draws: other bits under x64
def _gmm(c):
    out = {}
    for cov in ("full", "diag", "spherical"):
        g = classical.gmm(2, cov, max_iter=20, precision="default")
        p = g.fit(KEY, c(A))
        out[cov] = g.log_prob(p, c(B[:5]))
        g.sample(p, KEY, 3)
    out["kmeans_shape"] = classical.kmeans_plusplus(KEY, c(A), 3).shape
    return out


@recipe("classical.histogram")
def _histogram(c):
    h = classical.histogram(4, range=[(-3, 3), (-3, 3)], pseudocount=1.0)
    p = h.fit(KEY, c(A))
    return h.log_prob(p, c(B[:5])), h.cell_masses(p), h.sample(p, KEY, 3).shape


@recipe("classical.kde", "classical.kernel_log_norm", "classical.scott_factor", "classical.silverman_factor")
def _kde(c):
    out = {}
    for kernel in ("gaussian", "epanechnikov"):
        k = classical.kde(kernel, bandwidth="silverman", covariance="full")
        p = k.fit(KEY, c(A))
        out[kernel] = k.log_prob(p, c(B[:5]))
    out["cv"] = classical.kde(bandwidth="cv", cv_folds=2, cv_grid=[0.5, 1.0]).fit(KEY, c(A))
    out["consts"] = (classical.kernel_log_norm("gaussian", 2), classical.scott_factor(10, 2),
                     classical.silverman_factor(10, 2))
    return out


# ---------------------------------------------------------------------------
# genlearn.energy
# ---------------------------------------------------------------------------
from genlearn import energy  # noqa: E402


def _ebm(c):
    model = energy.mlp_energy(2, (8,))
    return model, c(p32(model.init, KEY))


@recipe("energy.mlp_energy", "energy.from_function", "energy.standardized")
def _energy_models(c):
    model, p = _ebm(c)
    quad = energy.from_function(lambda p, x: 0.5 * jnp.sum((x - p) ** 2), 2, lambda k: jnp.zeros(2))
    std = energy.standardized(model, c(np.array([0.1, 0.2])), c(np.array([2.0, 0.5])))
    x = c(A[:5])
    return (model.energy(p, x), model.score(p, x), quad.unnormalized_log_prob(c(np.zeros(2)), x),
            std.energy(p, x))


@recipe("energy.residual_energy")
def _residual_energy(c):
    q = core.gaussian_mixture(2, 3)
    model = energy.residual_energy(q, energy.mlp_energy(2, (8,), confinement=float("inf"), zero_init=True))
    p = c(p32(model.init, KEY))
    x = c(A[:5])
    return model.energy(p, x), model.score(p, x)


@recipe("energy.contrastive_divergence", "energy.denoising_score_matching", "energy.sliced_score_matching",
        compare=False)
def _energy_losses(c):
    model, p = _ebm(c)
    x = c(A[:8])
    return (energy.contrastive_divergence(model, k=2)(p, x, KEY),
            energy.denoising_score_matching(model, 0.1)(p, x, KEY),
            energy.sliced_score_matching(model)(p, x, KEY))


@recipe("energy.persistent_contrastive_divergence", "energy.fit_pcd", compare=False)
def _pcd(c):
    model, p = _ebm(c)
    trainer = energy.persistent_contrastive_divergence(model, optax.adam(1e-2), buffer_size=16, k=2)
    return energy.fit_pcd(trainer, p, c(A), key=KEY, steps=2, batch_size=8, chunk=2).params


@recipe("energy.langevin", "energy.mala", "energy.hmc", "energy.nuts", "energy.independent_mh",
        "energy.kde_proposal", "energy.sample_chains", "energy.summarize", "energy.rhat",
        "energy.effective_sample_size", "energy.acceptance_rate", "energy.divergence_rate", compare=False)
def _samplers(c):
    logp = lambda x: -0.5 * jnp.sum(x ** 2)  # noqa: E731
    sample, log_prob = energy.kde_proposal(c(A), 0.5)
    samplers = {"langevin": energy.langevin(logp, 0.1, dim=2), "mala": energy.mala(logp, 0.1, dim=2),
                "hmc": energy.hmc(logp, 0.1, 3, dim=2), "nuts": energy.nuts(logp, 0.3, dim=2, max_num_doublings=3),
                "imh": energy.independent_mh(logp, sample, log_prob, dim=2)}
    out = {}
    for name, sampler in samplers.items():
        samples, info = energy.sample_chains(sampler, KEY, c(A[:2]), 6, burn_in=2)
        out[name] = (samples, energy.summarize(samples, info))
        energy.rhat(samples), energy.effective_sample_size(samples)
        if name != "langevin":
            energy.acceptance_rate(info)
        if name in ("hmc", "nuts"):
            energy.divergence_rate(info)
    return out


@recipe("energy.ais_log_z_from", rtol=0.2, atol=0.2)
def _log_z_from(c):
    logq = lambda x: -0.5 * jnp.sum(x ** 2, -1) - jnp.log(2 * jnp.pi)  # noqa: E731  (normalised N(0, I))
    sample = lambda k, n: jax.random.normal(k, (n, 2))  # noqa: E731
    return energy.ais_log_z_from(lambda x: 2.0 * logq(x), KEY, logq, sample, 2, step_size=0.25, num_chains=64,
                                 num_temperatures=8).log_z


@recipe("energy.ais_log_z", "energy.beta_schedule", "energy.gaussian_base", "energy.grid_log_z",
        "energy.log_likelihood", rtol=0.2, atol=0.2)
def _log_z(c):
    logq = lambda x: -0.5 * jnp.sum(x ** 2, -1)  # noqa: E731  (log Z = log 2 pi)
    mean, cov = energy.gaussian_base(c(A))
    model, p = _ebm(c)
    return {"ais": energy.ais_log_z(logq, KEY, c(np.zeros(2)), c(np.eye(2)), num_chains=64,
                                    num_temperatures=8).log_z,
            "beta": energy.beta_schedule(5), "base": (mean, cov),
            "grid": energy.grid_log_z(logq, c(np.array([-6.0, -6.0])), c(np.array([6.0, 6.0])), 64),
            "ll": energy.log_likelihood(model, p, c(A[:4]), KEY, num_chains=32, num_temperatures=8).nll}


# ---------------------------------------------------------------------------
# genlearn.gan
# ---------------------------------------------------------------------------
from genlearn import gan  # noqa: E402


@recipe("gan.generator", "gan.critic", "gan.expectation", "gan.spectral_normalize", "gan.init_spectral_state",
        "gan.clip_params", "gan.critic_input_grad_norms", "gan.gradient_penalty", "gan.r1_penalty")
def _gan_parts(c):
    gen, crit = gan.generator(2, 2, (8,)), gan.critic(2, (8,), spectral_norm=True)
    gp, cp = c(p32(gen.init, KEY)), c(p32(crit.init, KEY))
    f = lambda x: crit.apply(cp, x)  # noqa: E731
    gan.init_spectral_state(cp, KEY)
    state = c(p32(gan.init_spectral_state, cp, KEY))  # its random start vector: the same bits
    normalized, _, sigmas = gan.spectral_normalize(cp, state)
    return {"apply": gen.apply(gp, c(A[:4])), "critic": f(c(A[:4])), "clip": gan.clip_params(cp, 0.01),
            "norms": gan.critic_input_grad_norms(f, c(A[:4])), "r1": gan.r1_penalty(f, c(A[:4])),
            "gp_dtype": gan.gradient_penalty(f, c(A[:4]), c(B[:4]), KEY).dtype,
            "sn": normalized, "exp_dtype": gan.expectation(gen, gp, lambda x: jnp.sum(x, -1), KEY, 4).dtype,
            "sample_dtype": gen.sample(gp, KEY, 4).dtype}


@recipe("gan.moment_matching", "gan.mmd2", "gan.energy_distance", "gan.sinkhorn_divergence",
        "gan.sliced_wasserstein", "gan.weak_loss", "gan.generator_loss")
def _weak_losses(c):
    x, y = c(A), c(B)
    gen = gan.generator(2, 2, (8,))
    out = {"mm": gan.moment_matching(x, y), "mmd": gan.mmd2(x, y, 1.0), "ed": gan.energy_distance(x, y),
           "sk": gan.sinkhorn_divergence(x, y, 0.5), "sw": gan.sliced_wasserstein(x, y, KEY, 16),
           "weak": [gan.weak_loss(name)(x, y, KEY) for name in ("mmd", "energy")]}
    out["gen_loss_dtype"] = gan.generator_loss(gen, gan.weak_loss("mmd"))(c(p32(gen.init, KEY)), x, KEY).dtype
    return out


@recipe("gan.objective", "gan.minmax", "gan.weak_generator", "gan.train_gan", compare=False, float64=False)
def _gan_training(c):
    # minmax initialises its critic itself with flax's float32 params (flax's param_dtype), so the
    # critic half stays float32 under x64 by design; compare=False: the step draws normals of this precision
    gen, opt = gan.generator(2, 2, (8,)), optax.adam(1e-2)
    out = {}
    for name in ("ns", "wgan-gp"):
        algo = gan.minmax(gen, gan.critic(2, (8,)), gan.objective(name), generator_optimizer=opt,
                          critic_optimizer=opt, critic_steps=1, batch_size=8)
        state = algo.init(KEY, c(p32(gen.init, KEY)))
        out[name] = algo.step(state, c(A[:8]), KEY)
    weak = gan.weak_generator(gen, gan.weak_loss("mmd"), optimizer=opt, batch_size=8)
    out["train"] = gan.train_gan(weak, c(p32(gen.init, KEY)), c(A), steps=2, key=KEY, chunk=2).params
    return out


# ---------------------------------------------------------------------------
# genlearn.metrics
# ---------------------------------------------------------------------------
from genlearn import metrics  # noqa: E402


@recipe("metrics.cost_matrix", "metrics.wasserstein2_exact", "metrics.wasserstein_p", "metrics.entropic_ot",
        "metrics.sinkhorn_divergence", "metrics.sliced_wasserstein", rtol=5e-3, atol=1e-3)
def _ot(c):
    x, y = c(A[:12]), c(B[:12])
    return {"cost": metrics.cost_matrix(x, y), "w2": metrics.wasserstein2_exact(x, y),
            "wp": metrics.wasserstein_p(x, y, 1.0), "ot": metrics.entropic_ot(x, y, 0.5),
            "sk": metrics.sinkhorn_divergence(x, y, 0.5), "sw": metrics.sliced_wasserstein(x, y, KEY, 16)}


@recipe("metrics.wasserstein1_dual", compare=False)
def _w1_dual(c):
    return metrics.wasserstein1_dual(c(A), c(B), KEY, hidden=8, num_steps=3, batch_size=8)


@recipe("metrics.gaussian_stats", "metrics.frechet_distance", "metrics.frechet_distance_from_stats")
def _frechet(c):
    s1, s2 = metrics.gaussian_stats(c(A)), metrics.gaussian_stats(c(B))
    return s1, metrics.frechet_distance(c(A), c(B)), metrics.frechet_distance_from_stats(*s1[:2], *s2[:2])


@recipe("metrics.median_heuristic_bandwidth", "metrics.mmd2", "metrics.energy_distance",
        "metrics.mmd_permutation_test", "metrics.kernel_inception_distance")
def _kernels(c):
    x, y = c(A), c(B)
    return {"bw": metrics.median_heuristic_bandwidth(x, y), "mmd": metrics.mmd2(x, y, 1.0),
            "ed": metrics.energy_distance(x, y), "test": metrics.mmd_permutation_test(x, y, KEY, 1.0,
                                                                                     num_permutations=16).mmd2,
            "kid": metrics.kernel_inception_distance(x, y, KEY, subset_size=8, num_subsets=2).mean}


@recipe("metrics.knn_radii", "metrics.precision_recall", "metrics.density_coverage", "metrics.knn_metrics",
        "metrics.birthday_support_estimate", "metrics.mode_coverage")
def _knn(c):
    x, y = c(A), c(B)
    centers = c(np.array([[0.0, 0.0], [1.0, 1.0]]))
    return {"radii": metrics.knn_radii(x, 3), "pr": metrics.precision_recall(x, y, 3),
            "dc": metrics.density_coverage(x, y, 3), "all4": metrics.knn_metrics(x, y, 3),
            "bday": metrics.birthday_support_estimate(x, KEY, 0.1, batch_sizes=(4, 8), num_trials=4),
            "modes": metrics.mode_coverage(x, centers, 1.0)}


@recipe("metrics.DigitsClassifier", "metrics.digits_classifier_init", "metrics.load_digits_feature_net",
        "metrics.digits_features", "metrics.inception_score", "metrics.feature_frechet_distance",
        "metrics.digits_fid", float64=False, rtol=1e-2, atol=1e-2)
def _digits(c):
    # fixed float32 weights: features are computed in float32 whatever the input
    net = metrics.load_digits_feature_net()
    x, y = c(PIXELS[0]), c(PIXELS[1])
    metrics.digits_classifier_init(KEY)
    assert isinstance(metrics.DigitsClassifier(), metrics.DigitsClassifier)
    return {"features": metrics.digits_features(x, net), "is": metrics.inception_score(x, net),
            "fid": metrics.digits_fid(x, y, net),
            "ffd": metrics.feature_frechet_distance(x, y, lambda s: np.asarray(s)[:, :3])}


@recipe("metrics.log_likelihood_report")
def _likelihood(c):
    dist = core.standard_normal(2)
    return metrics.log_likelihood_report(jax.vmap(lambda x: dist.log_prob({}, x)), c(A)).nll_nats


@recipe("metrics.evaluate", compare=False)
def _evaluate(c):
    return metrics.evaluate(c(A), c(B), key=KEY, centers=c(np.array([[0.0, 0.0]])), std=1.0)


# ---------------------------------------------------------------------------
# genlearn.data, losses, distances, nn, train, parallel, interop
# ---------------------------------------------------------------------------
from genlearn import data, distances, losses, nn, parallel, train  # noqa: E402


@recipe("data.two_moons", "data.circles", "data.ring8", "data.grid25", "data.checkerboard", "data.pinwheel",
        "data.two_spirals", "data.swiss_roll", "data.ring8_centers", "data.grid25_centers", float64=False,
        compare=False)
def _toys(c):
    # generators of float32 benchmark data (float32 by design; under x64 their integer draws take other bits)
    return [getattr(data, name)(KEY, 8) for name in ("two_moons", "circles", "ring8", "grid25", "checkerboard",
                                                      "pinwheel", "two_spirals", "swiss_roll")] + \
        [data.ring8_centers(), data.grid25_centers()]


@recipe("data.two_moons_log_prob", "data.circles_log_prob", "data.ring8_log_prob", "data.grid25_log_prob",
        rtol=1e-2, atol=1e-2)
def _toy_log_probs(c):
    x = c(A[:5])
    return (data.two_moons_log_prob(x, num_nodes=256), data.circles_log_prob(x), data.ring8_log_prob(x, std=0.5),
            data.grid25_log_prob(x, std=0.5))


@recipe("data.uniform_dequantize", "data.nats_to_bits_per_dim", "data.standardize_stats", "data.standardize",
        "data.unstandardize", compare=False, float64=False)  # standardize_stats: float32 by its contract
def _data_utils(c):
    levels = c(np.floor(np.abs(A) * 3))
    mean, std = data.standardize_stats(c(A))
    z, ld = data.standardize(c(A), mean, std)
    return {"deq": data.uniform_dequantize(KEY, levels), "bpd": data.nats_to_bits_per_dim(c(np.array(3.0)), 2),
            "std": (mean, std, z, ld, data.unstandardize(z, mean, std))}


@recipe("data.quantize")
def _quantize(c):
    # floor(y) of dequantised pixels keeps y's dtype; values outside [0, L) clip to the end levels
    return data.quantize(c(np.abs(A) * 5 - 1.0), 17)


@recipe("data.check_data", "data.from_array", float64=False)
def _data_checks(c):
    # float32 by design: check_data's documented contract, and every Dataset holds float32 rows
    ds = data.from_array(c(A), test_fraction=0.25)
    return data.check_data(c(A)), ds.train, ds.test


@recipe("losses.nll", "losses.l2_penalty")
def _losses(c):
    flow = flows.realnvp(2, 1, (8,))
    p = c(p32(flow.init, KEY))
    return losses.nll(flow, weight_decay=1e-3)(p, c(A[:8]), KEY), losses.l2_penalty(p)


@recipe("distances.sq_dists", "distances.row_reduce", "distances.median_bandwidth", "distances.mmd2",
        "distances.energy_distance", "distances.sliced_wasserstein", "distances.sinkhorn_divergence")
def _distances(c):
    x, y = c(A), c(B)
    return {"sq": distances.sq_dists(x, y), "rows": distances.row_reduce(lambda r: jnp.sum(r, -1), x, 8),
            "bw": distances.median_bandwidth(x, y),
            "mmd": [distances.mmd2(x, y, None, kernel=k) for k in distances.KERNELS] + [distances.mmd2(x, y, 1.0,
                                                                                       block_size=8)],
            "ed": distances.energy_distance(x, y, block_size=8), "sw": distances.sliced_wasserstein(x, y, KEY, 16),
            "sk": distances.sinkhorn_divergence(x, y, 0.5)}


@recipe("nn.MLP", "nn.activation_fn")
def _nn(c):
    mlp = nn.MLP((8,), 2, activation=nn.activation_fn("tanh"))
    return mlp.apply(c(p32(mlp.init, KEY, np.zeros((1, 2), np.float32))), c(A[:4]))


@recipe("train.fit", "train.run_trainer", "train.gradient_trainer", "train.train_step", "train.guarded_update",
        "train.all_finite", "train.keep_if", "train.epoch_permutation", "train.minibatch_indices")
def _train(c):
    flow = flows.realnvp(2, 1, (8,))
    p = c(p32(flow.init, KEY))
    loss = losses.nll(flow)
    result = train.fit(loss, p, c(A), optimizer=optax.adam(1e-2), steps=4, batch_size=8, key=KEY,
                       val_fraction=0.25, eval_every=2, progress=False)
    step = train.train_step(loss, optax.adam(1e-2))
    p1, _, value, ok = step(p, optax.adam(1e-2).init(p), c(A[:8]), KEY)
    return {"fit": result.params, "val_loss": result.history["val_loss"], "step": (p1, value, ok),
            "keep": train.keep_if(train.all_finite(p1), p1, p),
            "idx": (train.minibatch_indices(KEY, 3, 24, 8), train.epoch_permutation(KEY, 1, 24))}


@recipe("train.annealed_trainer")
def _annealed(c):
    flow = flows.realnvp(2, 1, (8,))
    p = c(p32(flow.init, KEY))
    nll = losses.nll(flow)
    trainer = train.annealed_trainer(lambda q, b, k, w: nll(q, b, k) + w * 0.1 * sum(
        jnp.sum(v**2) for v in jax.tree_util.tree_leaves(q)), optax.adam(1e-2), optax.linear_schedule(0.0, 1.0, 3))
    result = train.run_trainer(trainer, p, c(A), steps=4, batch_size=8, key=KEY, val_fraction=0.25, eval_every=2,
                               progress=False)
    return {"params": result.params, "val_loss": result.history["val_loss"]}


@recipe("parallel.make_mesh", "parallel.replicate", "parallel.shard_batch", "parallel.batch_spec",
        "parallel.num_batch_shards", "parallel.data_parallel_step", "parallel.pmap_step", "parallel.parallelize")
def _parallel(c):
    loss = lambda p, b, k: jnp.mean((b - p) ** 2)  # noqa: E731
    opt, mesh = optax.sgd(0.1), parallel.make_mesh()
    assert parallel.num_batch_shards(mesh) == 1 and parallel.batch_spec(mesh) is not None
    p, s = parallel.replicate((c(np.zeros(2)), opt.init(c(np.zeros(2)))), mesh)
    batch = parallel.shard_batch(c(A[:8]), mesh)
    plain = parallel.parallelize(lambda p, b: p + jnp.mean(b, 0), mesh, batch_argnums=(1,))
    return (parallel.data_parallel_step(loss, opt, mesh)(p, s, batch, None),
            parallel.pmap_step(loss, opt, mesh)(p, s, batch, None), plain(p, batch))


@recipe("interop.to_distrax", "interop.to_distrax_bijector", "interop.to_distrax_distribution")
def _interop(c):
    flow = flows.realnvp(2, 1, (8,))
    p = c(p32(flow.init, KEY))
    x = c(A[:4])
    return (interop.to_distrax(flow, p).log_prob(x), interop.to_distrax_bijector(flow.bijector, p["bijector"])
            .forward(x), interop.to_distrax_distribution(flow.base, p["base"]).log_prob(x))


from genlearn import interop  # noqa: E402

# ---------------------------------------------------------------------------
# Names without a recipe: each with its reason.
# ---------------------------------------------------------------------------
_FILES = "file and checkpoint I/O on the host: no floating computation to run in two precisions"
_SETUP = "multi-process setup (jax.distributed): nothing numeric"
_VALIDATION = "argument validation of Python scalars (int/float), no arrays"
EXCLUDED = {
    "train.save_pytree": _FILES, "train.load_pytree": _FILES, "data.read_array": _FILES,
    "data.load_file": _FILES, "data.load_source": _FILES, "data.load_dataset": _FILES + " (toy draws: _toys)",
    "data.load_digits_split": "the bundled digits (uint8 pixels) from disk; no floating computation",
    "data.digits_split_indices": "integer row indices",
    "parallel.initialize": _SETUP, "parallel.config_from_env": _SETUP,
    "data.as_integer": _VALIDATION, "data.check_positive": _VALIDATION,
}


def _is_type_or_constant(obj) -> bool:
    """NamedTuple types, exceptions and constants (no computation of their own)."""
    if inspect.isclass(obj):
        return issubclass(obj, (tuple, Exception))
    return not callable(obj)


def _public_names():
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"genlearn.{sub}")
        for name in module.__all__:
            yield f"{sub}.{name}", getattr(module, name)


def test_every_public_name_has_a_recipe_or_a_reason():
    missing = [name for name, obj in _public_names()
               if name not in RECIPES and name not in EXCLUDED and not _is_type_or_constant(obj)]
    assert not missing, f"public names with neither an x64 recipe nor a reason in EXCLUDED: {missing}"
    names = {name for name, _ in _public_names()}
    stale = sorted((set(RECIPES) | set(EXCLUDED)) - names)
    assert not stale, f"recipes or exclusions for names that are not public (any more): {stale}"


def _cast(dtype):
    def cast(tree):
        def leaf(x):
            if isinstance(x, (np.ndarray, jax.Array, float)) and jnp.issubdtype(jnp.result_type(x), jnp.floating):
                return jnp.asarray(x, dtype)
            return x
        return jax.tree_util.tree_map(leaf, tree)
    return cast


def _float_leaves(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return [x for x in leaves if isinstance(x, (np.ndarray, jax.Array, np.floating, float))
            and not (hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))]


def _groups():
    groups = {}
    for name, r in RECIPES.items():
        groups.setdefault(r.fn, []).append(name)
    return {names[0]: RECIPES[names[0]] for names in groups.values()}


def _run64(r):
    with jax.enable_x64(True):
        out64 = r.fn(_cast(np.float64))
        return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, out64)


@pytest.mark.parametrize("name", sorted(_groups()))
def test_x64(name):
    """Under x64 every public function runs and gives float64 where it computes in the input's precision."""
    r = RECIPES[name]
    out64 = _run64(r)
    for i, x64 in enumerate(_float_leaves(out64)):
        x = np.asarray(x64)
        if np.issubdtype(x.dtype, np.floating) and r.float64 and not isinstance(x64, float):
            assert x.dtype == np.float64, f"{name}: output {i} is {x.dtype} under x64"


@pytest.mark.slow  # the same calls again in float32 (twice the compilation): `pytest -m slow`
@pytest.mark.parametrize("name", sorted(_groups()))
def test_x64_matches_float32(name):
    r = RECIPES[name]
    out32 = r.fn(_cast(np.float32))
    out64 = _run64(r)
    a, b = _float_leaves(out32), _float_leaves(out64)
    assert len(a) == len(b), f"{name}: output structure differs under x64"
    for i, (x32, x64) in enumerate(zip(a, b)):
        x32, x64 = np.asarray(x32), np.asarray(x64)
        assert x32.shape == x64.shape, f"{name}: output {i} shape {x32.shape} vs {x64.shape}"
        if not np.issubdtype(x64.dtype, np.floating):
            continue
        if r.float64 and not isinstance(b[i], float):
            assert x64.dtype == np.float64, f"{name}: output {i} is {x64.dtype} under x64"
        assert np.array_equal(np.isfinite(x32), np.isfinite(x64)), f"{name}: output {i} finiteness differs"
        if r.compare:
            np.testing.assert_allclose(x64, x32, rtol=r.rtol, atol=r.atol, err_msg=f"{name}: output {i}")
