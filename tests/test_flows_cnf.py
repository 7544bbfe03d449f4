"""Continuous normalizing flows: round trip and log-det within the ODE tolerance,
Hutchinson's estimate equals the exact trace in expectation, adjoint gradients,
conditional CNFs, and bad input. The CNF is not in the bijector registry: its
round trip is bounded by the solver tolerance, not by float round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import core, flows
from genlearn.losses import nll
from tests.helpers import perturb

D, N = 2, 16  # every batch has N rows, so the jitted solves compile once and are shared
H = (16, 16)
FLOW = flows.cnf(D, hidden=H, rtol=1e-6, atol=1e-6)
APPLY, INVERSE, LOG_DET, LOG_PROB = (jax.jit(f) for f in (FLOW.apply, FLOW.inverse, FLOW.log_det, FLOW.log_prob))


def _params(flow, scale=0.3):
    return perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale)


PARAMS = _params(FLOW)


def test_starts_at_identity_and_round_trips_within_tolerance():
    z = jax.random.normal(jax.random.PRNGKey(2), (N, D))
    np.testing.assert_allclose(APPLY(FLOW.init(jax.random.PRNGKey(0)), z), z, atol=1e-6)  # zero-initialised field
    x = APPLY(PARAMS, z)
    assert float(jnp.abs(x - z).max()) > 0.05  # a non-trivial flow
    err_tight = float(jnp.abs(INVERSE(PARAMS, x) - z).max())
    assert err_tight < 1e-4
    # looser tolerances give a worse round trip: the tolerances are real parameters
    loose = flows.cnf(D, hidden=H, rtol=1e-2, atol=1e-2)
    err_loose = float(jnp.abs(jax.jit(lambda p, v: loose.inverse(p, loose.apply(p, v)))(PARAMS, z) - z).max())
    assert err_tight < err_loose


def test_log_det_equals_slogdet_of_the_jacobian_and_density_is_consistent():
    """log|det dx/dz| against central differences of apply (the batch shares one step
    sequence, so the discretised map is smooth in z), and log p(G(z)) = log q(z) - log_det."""
    h = 1e-2
    z0 = jax.random.normal(jax.random.PRNGKey(3), (N // (2 * D), D))
    steps = jnp.concatenate([h * jnp.eye(D), -h * jnp.eye(D)])  # (2D, D)
    x = APPLY(PARAMS, (z0[:, None, :] + steps[None]).reshape(N, D)).reshape(-1, 2 * D, D)
    jac = jnp.swapaxes((x[:, :D] - x[:, D:]) / (2 * h), 1, 2)  # (n, i, j) = dx_i / dz_j
    ld = LOG_DET(PARAMS, jnp.tile(z0, (2 * D, 1)))[: z0.shape[0]]
    np.testing.assert_allclose(ld, jnp.linalg.slogdet(jac)[1], atol=2e-3)
    assert float(jnp.abs(ld).max()) > 0.05
    z = jax.random.normal(jax.random.PRNGKey(4), (N, D))
    log_q = jax.vmap(FLOW.base.log_prob, (None, 0))(PARAMS["base"], z)
    np.testing.assert_allclose(LOG_PROB(PARAMS, APPLY(PARAMS, z)), log_q - LOG_DET(PARAMS, z), atol=1e-4)
    # the single-example bijector (used by transformed flows and runs) agrees with the batch functions
    x_b, ld_b = jax.jit(jax.vmap(FLOW.bijector.apply_and_log_det, (None, 0)))(PARAMS["bijector"], z)
    np.testing.assert_allclose(x_b, APPLY(PARAMS, z), atol=1e-4)
    np.testing.assert_allclose(ld_b, LOG_DET(PARAMS, z), atol=1e-4)


def test_density_integrates_to_one_in_2d():
    g = jnp.linspace(-7, 7, 141)
    xx = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, D)
    mass = float(jnp.exp(LOG_PROB(PARAMS, xx)).sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 5e-3, mass


def test_hutchinson_equals_exact_trace_in_expectation():
    """Mean of many single-probe estimates = exact log p(x), within 4 standard errors."""
    reps = 256
    hu = flows.cnf(D, hidden=H, rtol=1e-6, atol=1e-6, trace="hutchinson")
    x = jax.random.normal(jax.random.PRNGKey(5), (N, D))
    lp_exact = np.asarray(LOG_PROB(PARAMS, x))
    tiled = jnp.tile(x, (reps, 1))  # each row gets its own probe: reps independent estimates per point
    estimate = jax.jit(lambda p, v, k: hu.log_prob(p, v, key=k))
    est = np.asarray(estimate(PARAMS, tiled, jax.random.PRNGKey(6))).reshape(reps, N)
    stderr = est.std(0) / np.sqrt(reps)
    assert np.all(est.std(0) > 1e-3)  # noisy per probe ...
    np.testing.assert_array_less(np.abs(est.mean(0) - lp_exact), 4 * stderr + 1e-3)  # ... unbiased
    # the probes come from the key: same key, same estimate
    np.testing.assert_array_equal(np.asarray(estimate(PARAMS, tiled, jax.random.PRNGKey(6))).reshape(reps, N), est)


def test_adjoint_gradients_agree():
    """Backsolve (continuous adjoint, O(1) memory) and reverse mode through the solver
    give the same NLL gradient up to the ODE tolerance."""
    x = jax.random.normal(jax.random.PRNGKey(7), (N, D))
    back = flows.cnf(D, hidden=H, rtol=1e-6, atol=1e-6, adjoint="backsolve")
    flat = []
    for flow in (FLOW, back):
        g = jax.jit(jax.grad(nll(flow)))(PARAMS, x)
        flat.append(np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(g)]))
    assert np.linalg.norm(flat[0]) > 1e-2
    np.testing.assert_allclose(flat[1], flat[0], atol=1e-3 * np.abs(flat[0]).max())


def test_conditional_cnf():
    cond = flows.cnf(D, hidden=H, context_dim=2)
    cp = _params(cond)
    c = jnp.array([1.0, -1.0])
    xs = jax.jit(cond.sample, static_argnums=2)(cp, jax.random.PRNGKey(10), N, c)
    log_prob = jax.jit(cond.log_prob)
    lp = log_prob(cp, xs, c)
    assert lp.shape == (N,) and np.all(np.isfinite(np.asarray(lp)))
    assert float(jnp.abs(log_prob(cp, xs, -c) - lp).max()) > 1e-3  # the context matters
    with pytest.raises(ValueError, match="context"):
        cond.log_prob(cp, xs, jnp.ones(3))
    with pytest.raises(ValueError, match="context"):
        cond.sample(cp, jax.random.PRNGKey(0), 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flows.cnf(2, trace="stochastic"), "trace must be 'exact' or 'hutchinson'"),
        (lambda: flows.cnf(2, probe="uniform"), "probe"),
        (lambda: flows.cnf(2, rtol=0.0), "rtol must be a finite number > 0"),
        (lambda: flows.cnf(2, atol=float("nan")), "atol"),
        (lambda: flows.cnf(2, t1=-1.0), "t1"),
        (lambda: flows.cnf(2, solver="euler"), "unknown solver"),
        (lambda: flows.cnf(2, adjoint="magic"), "unknown adjoint"),
        (lambda: flows.cnf(2, max_steps=0), "max_steps"),
        (lambda: flows.cnf(2, activation="relu"), "smooth"),
        (lambda: flows.cnf(2, num_layers=0), "num_layers"),
        (lambda: flows.cnf_nll(flows.cnf(2), weight_decay=-1.0), "weight_decay"),
    ],
)
def test_invalid_hyperparameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_keys_and_shapes_are_checked():
    ex, hu = FLOW, flows.cnf(D, hidden=H, trace="hutchinson")
    params = PARAMS
    x = jnp.zeros((3, D))
    with pytest.raises(ValueError, match="needs a key"):
        hu.log_prob(params, x)
    with pytest.raises(ValueError, match="takes no key"):
        ex.log_prob(params, x, key=jax.random.PRNGKey(0))
    loss = flows.cnf_nll(hu)
    assert np.isfinite(float(loss(params, x, jax.random.PRNGKey(1))))
    with pytest.raises(ValueError, match="dim 2 but data has dim 3"):
        ex.log_prob(params, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive int"):
        ex.sample(params, jax.random.PRNGKey(0), 0)


# -- flow matching ---------------------------------------------------------------------------------------------

def test_flow_matching_loss_at_the_identity_is_the_path_velocity_energy():
    """A zero-initialised field has loss E||u||^2 = mean ||t1^0 x1||^2 + (1 - sigma)^2 d exactly in expectation
    (x0 ~ N(0, I) independent of x1); checked on 40000 rows, and t1 only scales the field, not the target."""
    x1 = 2.0 + jax.random.normal(jax.random.PRNGKey(0), (40_000, 3))
    sigma = 0.1
    expected = float(jnp.mean(jnp.sum(x1**2, -1))) + (1 - sigma) ** 2 * 3
    for t1 in (1.0, 2.5):
        fm = jax.jit(flows.cnf_flow_matching(3, (8,), sigma_min=sigma, t1=t1))
        params = flows.cnf(3, hidden=(8,), t1=t1).init(jax.random.PRNGKey(1))
        np.testing.assert_allclose(float(fm(params, x1, jax.random.PRNGKey(2))), expected, rtol=0.02)


@pytest.mark.optimized  # 4000 executed steps: 23.3 -> 14.2 s at XLA's default optimisation (tests/conftest.py)
def test_flow_matching_learns_a_conditional_gaussian_density():
    """Trained by flow matching only (no ODE solve), the CNF's exact log_prob is that of the data:
    x | c ~ N(1.5 c, 0.4^2) in 1-D, c in {-1, 1}. On held-out rows its NLL is within 0.03 nats of the
    true density's (the KL; measured 0.007), and the context selects the component."""
    import optax
    from scipy import stats

    from genlearn.train import fit

    def draw(k, n):
        kc, kx = jax.random.split(k)
        c = jnp.where(jax.random.bernoulli(kc, 0.5, (n, 1)), 1.0, -1.0)
        return 1.5 * c + 0.4 * jax.random.normal(kx, (n, 1)), c

    x, c = draw(jax.random.PRNGKey(0), 4000)
    flow = flows.cnf(1, hidden=(32, 32), activation="silu", context_dim=1, rtol=1e-5, atol=1e-5)
    loss = flows.cnf_flow_matching(1, (32, 32), activation="silu", context_dim=1)
    result = fit(loss, flow.init(jax.random.PRNGKey(2)), jnp.concatenate([x, c], 1),
                 optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, 4000)), steps=4000, batch_size=512,
                 key=jax.random.PRNGKey(3), progress=False)
    log_prob = jax.jit(flow.log_prob)
    xt, ct = draw(jax.random.PRNGKey(7), 2000)
    model_nll = -float(jnp.mean(log_prob(result.params, xt, ct)))
    true_nll = -float(np.mean(stats.norm(1.5 * np.asarray(ct[:, 0]), 0.4).logpdf(np.asarray(xt[:, 0]))))
    assert -0.01 < model_nll - true_nll < 0.03, (model_nll, true_nll)
    at = jnp.full((1, 1), 1.5)
    assert float(log_prob(result.params, at, jnp.ones(1))[0] - log_prob(result.params, at, -jnp.ones(1))[0]) > 5


def _four_clusters(key, n, std=0.1):
    centres = jnp.array([[3.0, 3.0], [-3.0, 3.0], [3.0, -3.0], [-3.0, -3.0]])
    kc, kx = jax.random.split(key)
    return centres[jax.random.randint(kc, (n,), 0, 4)] + std * jax.random.normal(kx, (n, 2))


def test_flow_matching_couplings_pair_data_rows_with_nearby_source_draws():
    """At a zero field the loss is E||x1 - (1 - sigma) x0||^2, the pairs' squared distance. From a mixture base
    fitted to four clusters of std 0.1 at (+-3, +-3): independent pairs are 36 + 0.04 apart on average (two
    coordinates, each +-3 against +-3 with probability one half), the component and minibatch-OT couplings pair
    rows within their cluster (2 * 2 * 0.01 = 0.04). Minibatch OT must cross clusters where a batch's source and
    data counts per cluster differ (about sqrt(128) rows of 512 at 36 apiece: ~1 on average; measured 1.04 over
    four draws, 0.84 over the two drawn here)."""
    x1 = _four_clusters(jax.random.PRNGKey(0), 512)
    base = core.gaussian_mixture(2, 4)
    flow = flows.cnf(2, hidden=(8,), base=base)
    params = flow.init(jax.random.PRNGKey(1))
    params = {**params, "base": base.fit(jax.random.PRNGKey(2), x1)}
    losses = {}
    for c, draws in (("independent", 4), ("component", 4), ("ot", 2)):  # each OT pairing: a Sinkhorn solve, ~6 s
        loss = jax.jit(flows.cnf_flow_matching(2, (8,), base=base, coupling=c))
        losses[c] = float(np.mean([loss(params, x1, jax.random.PRNGKey(k)) for k in range(draws)]))
    assert 34.0 < losses["independent"] < 38.5, losses
    assert losses["component"] < 0.06, losses
    assert losses["ot"] < 2.0, losses
    # N(0, I) (the default base) is drawn as before the base was an argument: the same loss bit for bit
    plain = flows.cnf(2, hidden=(8,)).init(jax.random.PRNGKey(1))
    np.testing.assert_array_equal(flows.cnf_flow_matching(2, (8,))(plain, x1, jax.random.PRNGKey(5)),
                                  flows.cnf_flow_matching(2, (8,), base="normal")(plain, x1, jax.random.PRNGKey(5)))


def test_component_coupling_keeps_the_base_as_the_source_marginal():
    """Rows drawn from the mixture itself and paired by their responsibilities give source draws distributed as
    the mixture: its component weights (by nearest mean) and moments, on 40000 rows of a three-component
    mixture with unequal weights and scales."""
    from genlearn.flows.cnf import _component_draw

    mixture = {"logits": jnp.log(jnp.array([0.6, 0.3, 0.1])),
               "means": jnp.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]]),
               "log_std": jnp.log(jnp.array([[1.0, 0.5], [0.3, 0.3], [0.7, 1.2]]))}
    base = core.gaussian_mixture(2, 3)
    x1 = base.sample(mixture, jax.random.PRNGKey(0), 40_000)
    x0 = np.asarray(jax.jit(_component_draw)(mixture, x1, jax.random.PRNGKey(1)))
    x1 = np.asarray(x1)
    nearest = lambda x: np.argmin(((x[:, None] - np.asarray(mixture["means"])[None]) ** 2).sum(-1), 1)  # noqa: E731
    np.testing.assert_allclose(np.bincount(nearest(x0), minlength=3) / len(x0),
                               np.bincount(nearest(x1), minlength=3) / len(x1), atol=0.01)
    np.testing.assert_allclose(x0.mean(0), x1.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(x0.T), np.cov(x1.T), atol=0.15)


def test_flow_matching_from_a_fitted_mixture_learns_what_the_mixture_cannot():
    """Four elongated, rotated clusters (full covariances): a diagonal 4-component mixture fitted by EM is off
    by a measurable KL; a CNF started at it and trained by flow matching with the component coupling (no ODE
    solve in training) brings the held-out NLL within 0.05 nats of the true density's and well below the
    mixture's own."""
    import optax
    from scipy import stats

    from genlearn.train import fit

    centres = np.array([[3.0, 3.0], [-3.0, 3.0], [3.0, -3.0], [-3.0, -3.0]])
    angle = np.pi / 4
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov = rot @ np.diag([0.8**2, 0.15**2]) @ rot.T

    def draw(seed, n):
        rng = np.random.default_rng(seed)
        return (centres[rng.integers(0, 4, n)] + rng.multivariate_normal(np.zeros(2), cov, n)).astype(np.float32)

    def true_nll(x):
        dens = np.mean([stats.multivariate_normal(c, cov).pdf(x) for c in centres], 0)
        return -float(np.mean(np.log(dens)))

    x, xt = draw(0, 8000), draw(1, 2000)
    base = core.gaussian_mixture(2, 4)
    flow = flows.cnf(2, hidden=(64, 64), activation="silu", base=base, rtol=1e-5, atol=1e-5)
    params = {**flow.init(jax.random.PRNGKey(0)), "base": base.fit(jax.random.PRNGKey(1), x[:1024])}
    base_nll = -float(jnp.mean(jax.vmap(base.log_prob, (None, 0))(params["base"], jnp.asarray(xt))))
    loss = flows.cnf_flow_matching(2, (64, 64), activation="silu", base=base, coupling="component")
    result = fit(loss, params, jnp.asarray(x), optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, 3000)),
                 steps=3000, batch_size=256, key=jax.random.PRNGKey(3), progress=False)
    model_nll = -float(jnp.mean(jax.jit(flow.log_prob)(result.params, jnp.asarray(xt))))
    truth = true_nll(xt)
    np.testing.assert_array_equal(result.params["base"]["means"], params["base"]["means"])  # the base stays put
    assert base_nll - truth > 0.15, (base_nll, truth)
    assert -0.02 < model_nll - truth < 0.05, (model_nll, base_nll, truth)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flows.cnf_flow_matching(2, coupling="nearest"), "coupling must be"),
        (lambda: flows.cnf_flow_matching(2, coupling="component"), "needs a gaussian_mixture base"),
        (lambda: flows.cnf_flow_matching(2, base="student_t", coupling="component"), "needs a gaussian_mixture"),
        (lambda: flows.cnf_flow_matching(2, coupling="ot", context_dim=1), "pairs unconditional batches"),
        (lambda: flows.cnf_flow_matching(2, coupling="ot", ot_epsilon=0.0), "ot_epsilon"),
        (lambda: flows.cnf_flow_matching(2, base="nonsense"), "unknown base distribution"),
        (lambda: flows.cnf_flow_matching(2, sigma_min=0.0), "sigma_min must be in"),
        (lambda: flows.cnf_flow_matching(2, sigma_min=1.0), "sigma_min must be in"),
        (lambda: flows.cnf_flow_matching(2, t1=0.0), "t1"),
        (lambda: flows.cnf_flow_matching(2, activation="relu"), "smooth"),
        (lambda: flows.cnf_flow_matching(2, hidden=()), "hidden"),
        (lambda: flows.cnf_flow_matching(2, (8,))(flows.cnf(2, 2, (8,)).init(jax.random.PRNGKey(0)),
                                                  jnp.zeros((4, 2)), jax.random.PRNGKey(0)), "one-block"),
        (lambda: flows.cnf_flow_matching(2, (8,))(flows.cnf(2, 1, (8,)).init(jax.random.PRNGKey(0)),
                                                  jnp.zeros((4, 3)), jax.random.PRNGKey(0)), r"batch must be \(n, 2\)"),
    ],
)
def test_flow_matching_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
