"""Score-based diffusion: SDE identities, the DSM optimum, the probability-flow likelihood against closed forms,
samplers against each other (MMD), jit == no-jit, float64 and every bad input of issue 15.

The reference model is analytic: for data N(mu, sig^2 I) (or a Gaussian mixture) every marginal p_t of a
linear SDE is Gaussian (a mixture), so the true eps_hat = -s(t) grad log p_t is known in closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import genlearn.diffusion as gd
from genlearn.diffusion.nets import ScoreNet

SDES = [gd.vp(), gd.vp(schedule="cosine"), gd.subvp(t_min=1e-3), gd.ve(0.01, 20.0)]
MU, SIG = 0.7, 0.5


def _rows(v, x):
    return jnp.broadcast_to(jnp.asarray(v, x.dtype), x.shape[:1])[:, None]


def gaussian_model(sde, mu=MU, sig=SIG, dim=2, parameterization="eps"):
    """A Diffusion whose 'network' outputs the exact eps / v / score of data N(mu, sig^2 I) under ``sde``."""

    def apply(params, x, t, label=None):
        t = _rows(t, x)
        m, s = sde.mean_coeff(t), sde.std(t)
        xt = x * jnp.sqrt(m**2 + s**2)  # the model feeds c_in x_t
        eps = s * (xt - m * mu) / (m**2 * sig**2 + s**2)
        scale = params.get("c", 1.0) if isinstance(params, dict) else 1.0
        if parameterization == "eps":
            return scale * eps
        if parameterization == "v":
            return scale * (eps * (m**2 + s**2) - s * xt) / m
        return scale * -eps / s

    return gd.diffusion_model(sde, ScoreNet(lambda k: {}, apply, dim, 0, "analytic"), parameterization)


CENTERS = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
WEIGHTS = jnp.array([0.5, 0.3, 0.2])
MIX_STD = 0.2


def mixture_model(sde, mix_std=MIX_STD):
    """The exact eps of the 2-D Gaussian mixture (CENTERS, WEIGHTS, ``mix_std``) under ``sde``."""

    def log_pt(x, t):
        m, s = sde.mean_coeff(t), sde.std(t)
        var = m**2 * mix_std**2 + s**2
        comp = -0.5 * jnp.sum((x - m * CENTERS) ** 2, -1) / var - jnp.log(2 * jnp.pi * var) + jnp.log(WEIGHTS)
        return jax.nn.logsumexp(comp)

    def apply(params, x, t, label=None):
        t = _rows(t, x)[:, 0]
        m, s = sde.mean_coeff(t), sde.std(t)
        xt = x * jnp.sqrt(m**2 + s**2)[:, None]
        return -s[:, None] * jax.vmap(jax.grad(log_pt))(xt, t)

    return gd.diffusion_model(sde, ScoreNet(lambda k: {}, apply, 2, 0, "analytic"))


def mixture_samples(key, n):
    k1, k2 = jax.random.split(key)
    comp = jax.random.choice(k1, 3, (n,), p=WEIGHTS)
    return CENTERS[comp] + MIX_STD * jax.random.normal(k2, (n, 2))


# -- SDEs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_sde_marginals_solve_their_moment_equations(sde):
    """d log m / dt = f and d s^2 / dt = 2 f s^2 + g^2 (the marginals belong to the SDE), in float64."""
    with jax.enable_x64(True):
        t = jnp.linspace(0.02, 0.98, 9, dtype=jnp.float64)
        dlogm = jax.vmap(jax.grad(lambda u: jnp.log(sde.mean_coeff(u))))(t)
        ds2 = jax.vmap(jax.grad(lambda u: sde.std(u) ** 2))(t)
        np.testing.assert_allclose(dlogm, sde.drift_coeff(t), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ds2, 2 * sde.drift_coeff(t) * sde.std(t) ** 2 + sde.diffusion(t) ** 2, rtol=1e-6)
        assert sde.std(t).dtype == jnp.float64
    # the prior covers p_1 (VP-family: m(1) ~ 0, s(1) ~ 1)
    if sde.name != "ve":
        assert float(sde.mean_coeff(1.0)) < 0.01 and abs(float(sde.std(1.0)) - 1) < 1e-3


def test_discretisation_matches_ddpm():
    """DDPM's linear betas (1e-4 .. 0.02 over 1000 steps) come back from the continuous VP SDE."""
    betas = gd.ddpm_betas(gd.vp_from_ddpm(1e-4, 0.02, 1000, t_min=0.0), 1000)
    # beta_i = 1 - exp(-int beta) over step i ~ beta(t_{i - 1/2}) / N: DDPM's linspace up to half a step
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000), rtol=0.02, atol=2e-5)
    disc = gd.discretize(gd.vp(), 50)
    np.testing.assert_allclose(np.cumprod(disc.a[1:] ** 2) * disc.mean_coeff[0] ** 2, disc.mean_coeff[1:] ** 2,
                               rtol=1e-5)


# -- the DSM loss --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameterization", gd.PARAMETERIZATIONS)
@pytest.mark.parametrize("weighting,time_sampling", [("sigma2", "uniform"), ("sigma2", "antithetic"),
                                                     ("likelihood", "importance"), ("likelihood", "stratified")])
def test_dsm_loss_is_minimised_by_the_true_score(parameterization, weighting, time_sampling):
    """Scaling the exact output by c: the loss is a quadratic in c with its minimum at c = 1 (common noise)."""
    sde = gd.vp()
    model = gaussian_model(sde, parameterization=parameterization)
    loss = gd.dsm_loss(model, weighting=weighting, time_sampling=time_sampling)
    x = MU + SIG * jax.random.normal(jax.random.PRNGKey(0), (40000, 2))
    f = lambda c: loss({"c": c}, x, jax.random.PRNGKey(1))  # noqa: E731
    slope, curvature = jax.grad(f)(1.0), jax.grad(jax.grad(f))(1.0)
    assert float(curvature) > 0
    # the minimiser c* = 1 - slope / curvature (exact for a quadratic) is 1 up to Monte Carlo error
    assert abs(float(slope / curvature)) < 0.03, (float(slope), float(curvature))


def test_importance_sampled_times_give_the_closed_form_likelihood_loss():
    """Likelihood weighting, exact score, data N(0, sig^2 I): the loss is
    d/2 [log(1 + sig^2 SNR(t_min)) - log(1 + sig^2 SNR(1))] / (1 - t_min); importance-sampled times
    estimate it to 1 % where uniform times (weight ~ 1/t) are far noisier."""
    sde, sig = gd.vp(), 1.5
    model = gaussian_model(sde, mu=0.0, sig=sig)
    x = sig * jax.random.normal(jax.random.PRNGKey(0), (50000, 2))
    snr0, snr1 = (float(jnp.exp(sde.log_snr(t))) for t in (sde.t_min, 1.0))
    exact = (np.log1p(sig**2 * snr0) - np.log1p(sig**2 * snr1)) / (1 - sde.t_min)
    imp = gd.dsm_loss(model, weighting="likelihood", time_sampling="importance")(None, x, jax.random.PRNGKey(2))
    np.testing.assert_allclose(float(imp), exact, rtol=0.01)
    uni = gd.dsm_loss(model, weighting="likelihood", time_sampling="uniform")(None, x, jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(uni), exact, rtol=0.2)


# -- likelihoods ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [SDES[0], SDES[3]], ids=lambda s: s.name)
def test_probability_flow_likelihood_of_a_gaussian_equals_the_closed_form(sde):
    """With the true score the ODE carries p_{t_min} to p_1: log p_1(z) + log|det dz/dx| = log p_{t_min}(x)."""
    model = gaussian_model(sde)
    x = MU + 1.5 * SIG * jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    z, log_det = jax.jit(lambda v: gd.probability_flow(sde, model.eps, None, v, rtol=1e-6, atol=1e-6))(x)

    def log_normal(v, mean, var):
        return -0.5 * jnp.sum((v - mean) ** 2, -1) / var - jnp.log(2 * jnp.pi * var)

    m0, s0, m1, s1 = sde.mean_coeff(sde.t_min), sde.std(sde.t_min), sde.mean_coeff(1.0), sde.std(1.0)
    expected = log_normal(x, m0 * MU, m0**2 * SIG**2 + s0**2)
    np.testing.assert_allclose(log_normal(z, m1 * MU, m1**2 * SIG**2 + s1**2) + log_det, expected, atol=2e-4)
    if sde.name == "vp":  # the prior N(0, I) is p_1 up to m(1) ~ 0.007: the model's log p is the data's
        lp = gd.log_prob(model, None, x, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(lp, log_normal(x, MU, SIG**2), atol=0.03)


def test_hutchinson_likelihood_is_unbiased():
    sde = gd.vp()
    model = mixture_model(sde)
    x = mixture_samples(jax.random.PRNGKey(0), 4)
    exact = gd.log_prob(model, None, x, rtol=1e-4, atol=1e-4)
    reps = 32
    est = gd.log_prob(model, None, jnp.tile(x, (reps, 1)), trace="hutchinson", key=jax.random.PRNGKey(1),
                      rtol=1e-4, atol=1e-4).reshape(reps, 4)
    assert np.all(np.asarray(est.std(0)) > 1e-3)
    np.testing.assert_array_less(np.abs(est.mean(0) - exact), 4 * est.std(0) / np.sqrt(reps) + 1e-3)


def test_variational_bound_is_above_the_exact_nll_and_tight_for_the_true_score():
    """E[bound(x)] >= -log p(x), and within a few hundredths of a nat for the exact score (Gaussian data)."""
    sde = gd.vp()
    model = gaussian_model(sde)
    x = MU + SIG * jax.random.normal(jax.random.PRNGKey(0), (2000, 2))
    nll = 0.5 * jnp.sum((x - MU) ** 2, -1) / SIG**2 + jnp.log(2 * jnp.pi * SIG**2)
    bound = jax.jit(lambda v, k: gd.variational_bound(model, None, v, k, num_t=16))(x, jax.random.PRNGKey(1))
    gap = np.asarray(bound - nll)
    stderr = gap.std() / np.sqrt(gap.size)
    assert gap.mean() > -3 * stderr and gap.mean() < 0.05 + 3 * stderr, (gap.mean(), stderr)


# -- samplers ------------------------------------------------------------------------------------------------
@pytest.mark.optimized  # measured (tests/conftest.py): 32.0 -> 21.3 s at XLA's default optimisation
def test_samplers_agree_in_distribution_on_a_mixture():
    """Each sampler with the exact score draws the mixture: an MMD permutation test does not reject."""
    from genlearn.metrics import mmd_permutation_test

    sde = gd.vp(t_min=1e-3)
    model = mixture_model(sde)
    reference = np.asarray(mixture_samples(jax.random.PRNGKey(99), 1000))
    wrong = reference + np.array([0.3, 0.0])  # a shift of 1.5 mode widths is detected
    assert mmd_permutation_test(wrong, reference, jax.random.PRNGKey(0), num_permutations=200).p_value < 0.01
    for i, (method, nfe) in enumerate([("ancestral", 50), ("ddim", 25), ("euler_maruyama", 100),
                                       ("predictor_corrector", 100), ("ode", None)]):
        xs = gd.sample(model, None, jax.random.PRNGKey(i), 1000, method=method, nfe=nfe)
        res = mmd_permutation_test(np.asarray(xs), reference, jax.random.PRNGKey(10 + i), num_permutations=200)
        assert res.p_value > 0.01, (method, res)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_edm_time_grid_spaces_the_noise_to_signal_ratio_as_karras(sde):
    """t_min and 1 at the ends, rising, and r(t) = s/m at the grid has evenly spaced r^(1/7)."""
    t = gd.time_grid(sde, 12, "edm")
    assert t.shape == (13,) and t[0] == pytest.approx(sde.t_min) and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    r = np.asarray(sde.std(jnp.asarray(t)), np.float64) / np.asarray(sde.mean_coeff(jnp.asarray(t)), np.float64)
    np.testing.assert_allclose(np.diff(r ** (1 / 7)), np.diff(r ** (1 / 7)).mean(), rtol=0.02)
    if sde.name == "vp":
        assert np.diff(t)[0] < 0.5 / 12  # denser than uniform at low noise
    np.testing.assert_array_equal(gd.time_grid(sde, 12), np.linspace(sde.t_min, 1.0, 13))


@pytest.mark.slow  # a sampler-quality study (15 s); the EDM grid itself: the test above
def test_edm_spacing_samples_the_mixture_and_beats_uniform_at_few_steps():
    """With the exact score every sampler on the edm grid draws the mixture (MMD), and a 20-NFE ODE
    on it puts >90 % of a sharp mixture's samples on its modes, where the uniform grid puts <10 %."""
    from genlearn.metrics import mmd_permutation_test

    sde = gd.vp(t_min=1e-3)
    model = mixture_model(sde)
    reference = np.asarray(mixture_samples(jax.random.PRNGKey(99), 1000))
    for i, (method, nfe) in enumerate([("ancestral", 50), ("ddim", 25), ("euler_maruyama", 100),
                                       ("predictor_corrector", 100), ("ode", 40)]):
        xs = gd.sample(model, None, jax.random.PRNGKey(i), 1000, method=method, nfe=nfe, spacing="edm")
        res = mmd_permutation_test(np.asarray(xs), reference, jax.random.PRNGKey(10 + i), num_permutations=200)
        assert res.p_value > 0.01, (method, res)
    sharp = mixture_model(sde, mix_std=0.02)  # modes as narrow as ring8's: the fine structure needs low-noise steps

    def near(spacing):
        xs = gd.sample(sharp, None, jax.random.PRNGKey(5), 1000, method="ode", nfe=20, spacing=spacing)
        return float(jnp.mean(jnp.min(jnp.linalg.norm(xs[:, None] - CENTERS[None], axis=-1), 1) < 3 * 0.02))

    assert near("edm") > 0.9 > 0.1 > near("uniform"), (near("edm"), near("uniform"))


def test_ddim_with_eta_one_is_ancestral_sampling():
    """DDIM(eta = 1) and DDPM with the posterior variance are the same update (same key, same noise)."""
    sde = gd.vp()
    model = mixture_model(sde)
    fn = gd.eps_fn(model, None)
    a = gd.run_sampler(gd.ancestral(sde, fn, 2, 20), jax.random.PRNGKey(3), 64)
    b = gd.run_sampler(gd.ddim(sde, fn, 2, 20, eta=1.0), jax.random.PRNGKey(3), 64)
    np.testing.assert_allclose(a, b, atol=1e-4)
    c = gd.run_sampler(gd.ddim(sde, fn, 2, 20, eta=0.0), jax.random.PRNGKey(3), 64)
    assert float(jnp.abs(a - c).max()) > 1e-2


def test_trajectories_start_at_the_prior_and_end_at_the_samples():
    model = mixture_model(gd.vp())
    x, traj = gd.sample(model, None, jax.random.PRNGKey(0), 32, method="ancestral", nfe=10, return_trajectory=True)
    assert traj.shape == (11, 32, 2)
    np.testing.assert_allclose(traj[-1], x)
    x_ode, xs, stats = gd.sample(model, None, jax.random.PRNGKey(0), 32, method="ode", nfe=None,
                                 return_trajectory=True, num_saves=5)
    assert xs.shape == (5, 32, 2) and int(stats["num_steps"]) >= 1
    np.testing.assert_allclose(xs[-1], x_ode)


# -- networks, jit and float64 --------------------------------------------------------------------------------
def _small_models():
    sde = gd.vp()
    return [gd.diffusion_model(sde, gd.mlp_net(2, (16, 16), emb_dim=8)),
            gd.diffusion_model(sde, gd.unet_net((8, 8), 4, emb_dim=8, num_classes=3), "v")]


def test_jit_equals_no_jit():
    for model in _small_models()[:1]:
        params = model.init(jax.random.PRNGKey(0))
        params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
        x = jax.random.normal(jax.random.PRNGKey(2), (8, model.dim))
        batch = x if not model.num_classes else jnp.concatenate([x, jnp.arange(8)[:, None] % 3.0], 1)
        loss = gd.dsm_loss(model, label_dropout=0.2 if model.num_classes else 0.0)
        np.testing.assert_allclose(jax.jit(loss)(params, batch, jax.random.PRNGKey(3)),
                                   loss(params, batch, jax.random.PRNGKey(3)), rtol=1e-5)
        kw = dict(label=1, guidance=2.0) if model.num_classes else {}
        draw = lambda p, k: gd.sample(model, p, k, 4, method="ddim", nfe=3, **kw)  # noqa: E731
        np.testing.assert_allclose(jax.jit(draw)(params, jax.random.PRNGKey(4)), draw(params, jax.random.PRNGKey(4)),
                                   rtol=1e-4, atol=1e-5)


def test_float64_works():
    model = _small_models()[0]
    params32 = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                                      model.init(jax.random.PRNGKey(0)))
    x32 = jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    lp32 = gd.log_prob(model, params32, x32, rtol=1e-5, atol=1e-5)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params32)
        x = jnp.asarray(x32, jnp.float64)
        loss = gd.dsm_loss(model, weighting="likelihood", time_sampling="importance")(params, x, jax.random.PRNGKey(3))
        assert loss.dtype == jnp.float64 and np.isfinite(float(loss))
        xs = gd.sample(model, params, jax.random.PRNGKey(4), 5, method="euler_maruyama", nfe=5)
        assert xs.dtype == jnp.float64 and np.all(np.isfinite(np.asarray(xs)))
        lp = gd.log_prob(model, params, x, rtol=1e-6, atol=1e-6)
        assert lp.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(lp), np.asarray(lp32), atol=1e-2)  # float32 at rtol 1e-5


def test_conditional_unet_uses_labels_and_guidance():
    model = _small_models()[1]
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                                    jax.jit(model.init)(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 64))
    eps = jax.jit(model.eps)
    e0, e1 = eps(params, x, 0.5, jnp.zeros(4, jnp.int32)), eps(params, x, 0.5, jnp.ones(4, jnp.int32))
    assert float(jnp.abs(e0 - e1).max()) > 1e-4
    unguided = jax.jit(lambda p, v: gd.eps_fn(model, p, jnp.ones(4, jnp.int32), guidance=0.0)(v, 0.5))
    np.testing.assert_allclose(unguided(params, x), e1, rtol=1e-5, atol=1e-6)
    null = eps(params, x, 0.5, None)  # no label: the null label
    guided = jax.jit(lambda p, v: gd.eps_fn(model, p, jnp.ones(4, jnp.int32), guidance=1.5)(v, 0.5))
    np.testing.assert_allclose(guided(params, x), 2.5 * e1 - 1.5 * null, rtol=1e-4, atol=1e-5)
    # images may also come as (n, 8, 8)
    out = jax.jit(model.net.apply)(params, x.reshape(4, 8, 8), 0.5)
    assert out.shape == (4, 8, 8)


# -- bad input (issue 15, item 4) -----------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"beta_end must lie in \(0, 1\)"):
        gd.vp_from_ddpm(1e-4, 1.5, 1000)
    with pytest.raises(ValueError, match=r"beta_start must lie in \(0, 1\)"):
        gd.vp_from_ddpm(0.0, 0.02, 1000)
    with pytest.raises(ValueError, match="beta_max must exceed beta_min"):
        gd.vp(20.0, 0.1)
    with pytest.raises(ValueError, match="beta_min must be a finite number > 0"):
        gd.vp(-1.0, 20.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        gd.check_time(1.5)
    with pytest.raises(ValueError, match=r"t_min must lie in \[0, 1\)"):
        gd.vp(t_min=-0.1)
    with pytest.raises(ValueError, match="sigma_min must be smaller than sigma_max"):
        gd.ve(5.0, 1.0)
    model = mixture_model(gd.vp())
    for nfe in (0, -3):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            gd.sample(model, None, jax.random.PRNGKey(0), 4, method="ancestral", nfe=nfe)
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            gd.sample(model, None, jax.random.PRNGKey(0), 4, method="ode", nfe=nfe)
    with pytest.raises(ValueError, match="needs nfe >= 2"):
        gd.sample(model, None, jax.random.PRNGKey(0), 4, method="predictor_corrector", nfe=1)
    with pytest.raises(ValueError, match="guidance scale was given for an unconditional model"):
        gd.sample(model, None, jax.random.PRNGKey(0), 4, label=1, guidance=2.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        gd.sample(model, None, jax.random.PRNGKey(0), 4, method="heun")
    for method in gd.SAMPLERS:
        with pytest.raises(ValueError, match="unknown time spacing 'log'"):
            gd.sample(model, None, jax.random.PRNGKey(0), 4, method=method, nfe=4, spacing="log")
    with pytest.raises(ValueError, match="rho must be a finite number > 0"):
        gd.time_grid(gd.vp(), 4, "edm", rho=0.0)
    net = gd.unet_net((8, 8), 4)
    params = net.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="expected images of shape 8x8"):
        net.apply(params, jnp.zeros((2, 63)), 0.5)
    with pytest.raises(ValueError, match="expected images of shape 8x8"):
        net.apply(params, jnp.zeros((2, 4, 16)), 0.5)
    with pytest.raises(ValueError, match="divisible by 4"):
        gd.unet_net((6, 6))
    with pytest.raises(ValueError, match="parameterization"):
        gd.diffusion_model(gd.vp(), gd.mlp_net(2), "x0")
    with pytest.raises(ValueError, match="label_dropout needs a class-conditional model"):
        gd.dsm_loss(gd.diffusion_model(gd.vp(), gd.mlp_net(2)), label_dropout=0.1)
    with pytest.raises(ValueError, match="time_sampling"):
        gd.dsm_loss(gd.diffusion_model(gd.vp(), gd.mlp_net(2)), time_sampling="sobol")
    with pytest.raises(ValueError, match="needs a key"):
        gd.log_prob(model, None, jnp.zeros((2, 2)), trace="hutchinson")


# -- the Gaussian-mixture base -----------------------------------------------------------------------------------
def _mixture_params(dtype=jnp.float32):
    return {"logits": jnp.log(WEIGHTS).astype(dtype), "means": CENTERS.astype(dtype),
            "log_std": jnp.log(jnp.array([[0.2, 0.1], [0.05, 0.3], [0.4, 0.4]])).astype(dtype)}


@pytest.mark.parametrize("sde", [SDES[0], SDES[3]], ids=lambda s: s.name)
def test_mixture_eps_is_minus_s_times_the_diffused_mixtures_score(sde):
    """q_t = sum_k w_k N(m mu_k, m^2 sigma_k^2 + s^2): eps = -s grad log q_t, by autodiff of that density."""
    from genlearn.core import gaussian_mixture

    mix = gaussian_mixture(2, 3)
    with jax.enable_x64(True):
        p = _mixture_params(jnp.float64)
        x = 1.5 * jax.random.normal(jax.random.PRNGKey(0), (6, 2), jnp.float64)
        for t in (1e-3, 0.1, 0.6, 1.0):
            m, s = sde.mean_coeff(t), sde.std(t)
            pt = {**p, "means": m * p["means"], "log_std": 0.5 * jnp.log(m**2 * jnp.exp(2 * p["log_std"]) + s**2)}
            want = -s * jax.vmap(jax.grad(lambda z: mix.log_prob(pt, z)))(x)
            got = gd.mixture_eps(sde, p, x, t)
            if t == 0.1:
                want_01 = np.asarray(want)
            assert got.dtype == jnp.float64
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gd.mixture_eps(sde, p, x, jnp.full((6,), t)), want, rtol=1e-10, atol=1e-12)
        t_rows = jnp.linspace(0.01, 0.9, 6)  # one time per row equals the rows at their own times
        rows = jnp.concatenate([gd.mixture_eps(sde, p, x[i:i + 1], t_rows[i]) for i in range(6)])
        np.testing.assert_allclose(gd.mixture_eps(sde, p, x, t_rows), rows, rtol=1e-10)
    x32 = jnp.asarray(np.asarray(x), jnp.float32)  # float32 agrees with float64
    np.testing.assert_allclose(gd.mixture_eps(sde, _mixture_params(), x32, 0.1), want_01, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mixture must be gaussian_mixture params"):
        gd.mixture_eps(sde, {"means": CENTERS}, x32, 0.1)
    with pytest.raises(ValueError, match=r"expected x of shape \(n, 2\)"):
        gd.mixture_eps(sde, _mixture_params(), x32[:, :1], 0.1)


@pytest.mark.parametrize("parameterization", gd.PARAMETERIZATIONS)
def test_a_mixture_base_under_an_untrained_network_is_the_mixture(parameterization):
    """At init (zero last layer) the model's eps is the mixture's, its likelihood the mixture's density;
    init(key, data) is the base's EM fit; no gradient reaches the base; the network's output adds on top."""
    from genlearn.core import gaussian_mixture

    sde = gd.vp()
    mix = gaussian_mixture(2, 3)
    model = gd.diffusion_model(sde, gd.mlp_net(2, (32, 32)), parameterization, base=mix)
    data = np.asarray(mixture_samples(jax.random.PRNGKey(0), 3000), np.float64)
    params = model.init(jax.random.PRNGKey(1), data)
    fitted = mix.fit(jax.random.fold_in(jax.random.PRNGKey(1), 1), data)
    for k in fitted:
        np.testing.assert_allclose(params["base"][k], fitted[k], rtol=1e-6)
    assert jax.tree.structure(model.init(jax.random.PRNGKey(1))) == jax.tree.structure(params)  # the template
    x = mixture_samples(jax.random.PRNGKey(2), 64)
    for t in (1e-3, 0.3, jnp.linspace(0.05, 0.95, 64)):
        np.testing.assert_allclose(model.eps(params, x, t), gd.mixture_eps(sde, params["base"], x, t),
                                   rtol=1e-4, atol=1e-5)
    lp = gd.log_prob(model, params, x[:16], rtol=1e-6, atol=1e-6)
    want = jax.vmap(mix.log_prob, (None, 0))(params["base"], x[:16])
    np.testing.assert_allclose(lp, want, atol=0.02)  # the ODE to t = 1 and the N(0, I) prior: 0.0066-sized means
    grads = jax.grad(lambda p: gd.dsm_loss(model)(p, x, jax.random.PRNGKey(3)))(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["base"]))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["net"])) > 0
    # a non-zero network output moves eps away from the mixture's by A(t) u
    moved = jax.tree.map(lambda a: a + 0.05, params)
    moved["base"] = params["base"]
    u = model.net.apply(moved["net"], x / jnp.sqrt(sde.mean_coeff(0.3) ** 2 + sde.std(0.3) ** 2), 0.3)
    m, s = sde.mean_coeff(0.3), sde.std(0.3)
    lin = {"eps": 1.0, "v": m / (m**2 + s**2), "score": -s}[parameterization]
    np.testing.assert_allclose(model.eps(moved, x, 0.3), gd.mixture_eps(sde, params["base"], x, 0.3) + lin * u,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="base must be a genlearn.core.gaussian_mixture"):
        gd.diffusion_model(sde, gd.mlp_net(2, (8,)), base=gaussian_mixture(2, 3).log_prob)
    with pytest.raises(ValueError, match="the base is 3-dimensional, the network 2-dimensional"):
        gd.diffusion_model(sde, gd.mlp_net(2, (8,)), base=gaussian_mixture(3, 2))
