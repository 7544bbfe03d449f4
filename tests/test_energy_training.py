"""Z-free training: CD, PCD, DSM and SSM each lower the held-out NLL (exact by 2-D quadrature); NaN guards."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn.energy import (
    contrastive_divergence,
    denoising_score_matching,
    fit_pcd,
    from_function,
    grid_log_z,
    mlp_energy,
    persistent_contrastive_divergence,
    sliced_score_matching,
)
from genlearn.train import fit

MEAN = jnp.array([1.0, -0.5])
SCALE = jnp.array([0.5, 1.0])
ENTROPY = 1.0 + math.log(2 * math.pi) + float(jnp.sum(jnp.log(SCALE)))  # the best achievable NLL
TRAIN = MEAN + SCALE * jax.random.normal(jax.random.PRNGKey(0), (4000, 2))
TEST = MEAN + SCALE * jax.random.normal(jax.random.PRNGKey(1), (2000, 2))
MODEL = mlp_energy(2, (32, 32))
PARAMS0 = MODEL.init(jax.random.PRNGKey(2))


def heldout_nll(params) -> float:
    """Exact held-out NLL: -mean(-V(test)) + log Z with Z by quadrature."""
    f = lambda x: MODEL.unnormalized_log_prob(params, x)  # noqa: E731
    log_z = grid_log_z(f, [-9, -9], [9, 9], 300)
    return float(-jnp.mean(f(TEST)) + log_z)


NLL0 = None


def _check_learned(params, slack):
    global NLL0
    NLL0 = heldout_nll(PARAMS0) if NLL0 is None else NLL0
    nll = heldout_nll(params)
    assert nll < NLL0 - 1.0, (NLL0, nll)
    assert nll < ENTROPY + slack, (nll, ENTROPY)


@pytest.mark.parametrize(
    "name, loss, slack",
    [
        ("dsm", lambda: denoising_score_matching(MODEL, 0.1), 0.1),
        ("ssm", lambda: sliced_score_matching(MODEL, num_projections=2), 0.15),
        ("cd", lambda: contrastive_divergence(MODEL, k=10, step_size=0.02), 0.3),
    ],
)
def test_losses_through_train_fit_lower_the_heldout_nll(name, loss, slack):
    res = fit(loss(), PARAMS0, TRAIN, optimizer=optax.adam(3e-3), steps=300, batch_size=256,
              key=jax.random.PRNGKey(3), progress=False)
    _check_learned(res.params, slack)


def test_pcd_with_replay_buffer_lowers_the_heldout_nll_and_reports_info():
    trainer = persistent_contrastive_divergence(MODEL, optax.adam(3e-3, b1=0.5), buffer_size=1000, k=10,
                                                step_size=0.02, sampler="mala")
    assert trainer.init(jax.random.PRNGKey(4), PARAMS0).buffer.positions.shape == (1000, 2)
    res = fit_pcd(trainer, PARAMS0, TRAIN, key=jax.random.PRNGKey(5), steps=300, batch_size=128, chunk=150)
    state, hist = res.state, res.history
    assert int(state.step) == 300 and hist["train_loss"].shape == (300,) and res.stop_reason == "steps"
    assert not hist["nonfinite"].any() and np.all(hist["divergence_rate"] == 0)
    assert set(hist) >= {"energy_data", "energy_samples"}
    # the buffer holds model samples: their mean approaches the data mean
    np.testing.assert_allclose(jnp.mean(state.buffer.positions, 0), MEAN, atol=0.3)
    _check_learned(state.params, 0.3)


def test_pcd_rejects_non_finite_updates_and_stops():
    # log of a negative parameter: every loss is NaN
    bad = from_function(lambda p, x: jnp.sum(x**2) + jnp.log(p["b"]), 2, init=lambda k: {"b": -jnp.ones(())})
    trainer = persistent_contrastive_divergence(bad, optax.sgd(0.1), buffer_size=64, k=2)
    state = trainer.init(jax.random.PRNGKey(0), bad.init(None))
    new, info = jax.jit(trainer.step)(state, TRAIN[:16], jax.random.PRNGKey(1))
    assert bool(info.nonfinite)
    np.testing.assert_array_equal(new.params["b"], state.params["b"])  # params kept
    # the driver stops on info.nonfinite (a non-gradient trainer), keeping the last good params
    with pytest.warns(RuntimeWarning, match=r"PCD: rejected 3 non-finite update\(s\) at step\(s\) \[0, 1, 2\]"):
        res = fit_pcd(trainer, bad.init(None), TRAIN, key=jax.random.PRNGKey(2), steps=10, batch_size=16, chunk=5,
                      max_nonfinite=3)
    assert res.stop_reason == "nonfinite" and res.step == 3 and np.isnan(res.history["train_loss"]).all()
    np.testing.assert_array_equal(res.params["b"], -1.0)


def test_diverging_negatives_are_reported_in_info_not_trained_on():
    # energy NaN beyond |x| > 2.5: Langevin proposals out there diverge and are kept out of the buffer
    nanny = from_function(lambda p, x: jnp.where(jnp.all(jnp.abs(x) < 2.5), p["a"] * jnp.sum(x**2), jnp.nan), 2,
                          init=lambda k: {"a": jnp.ones(())})
    trainer = persistent_contrastive_divergence(nanny, optax.sgd(1e-3), buffer_size=256, k=5, step_size=0.5,
                                                init_range=2.4)
    state = trainer.init(jax.random.PRNGKey(0), nanny.init(None))
    new, info = jax.jit(trainer.step)(state, TRAIN[:128] * 0.1, jax.random.PRNGKey(1))
    assert float(info.divergence_rate) > 0
    assert not bool(info.nonfinite) and np.isfinite(float(info.loss))
    assert np.all(np.isfinite(np.asarray(new.buffer.positions)))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: contrastive_divergence(MODEL, k=0), "k \\(number of Langevin steps\\) must be an integer >= 1"),
        (lambda: contrastive_divergence(MODEL, step_size=-0.1), "step_size must be a positive"),
        (lambda: denoising_score_matching(MODEL, 0.0), "sigma must be a positive"),
        (lambda: sliced_score_matching(MODEL, num_projections=0), "num_projections must be an integer >= 1"),
        (lambda: persistent_contrastive_divergence(MODEL, optax.sgd(0.1), reinit_prob=1.5), "reinit_prob"),
        (lambda: persistent_contrastive_divergence(MODEL, optax.sgd(0.1), sampler="gibbs"), "sampler must be"),
        (lambda: persistent_contrastive_divergence(MODEL, optax.sgd(0.1), buffer_size=-1), "buffer_size"),
    ],
)
def test_bad_hyperparameters_raise_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_fit_pcd_bad_data_and_steps():
    trainer = persistent_contrastive_divergence(MODEL, optax.sgd(0.1), buffer_size=64, k=1)
    state = trainer.init(jax.random.PRNGKey(0), PARAMS0)
    with pytest.raises(ValueError, match="NaN"):
        fit_pcd(trainer, PARAMS0, TRAIN.at[0, 0].set(jnp.nan), key=jax.random.PRNGKey(0), steps=1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        fit_pcd(trainer, PARAMS0, TRAIN, key=jax.random.PRNGKey(0), steps=-1)
    with pytest.raises(ValueError, match=r"batch must have shape \(b, 2\)"):
        trainer.step(state, jnp.zeros((8, 3)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="max_seconds"):
        fit_pcd(trainer, PARAMS0, TRAIN, key=jax.random.PRNGKey(0), steps=1, max_seconds=0)


def test_fit_pcd_stops_on_the_clock_at_a_chunk_boundary():
    trainer = persistent_contrastive_divergence(MODEL, optax.sgd(1e-3), buffer_size=64, k=1)
    res = fit_pcd(trainer, PARAMS0, TRAIN, key=jax.random.PRNGKey(1), steps=10**7, batch_size=16, chunk=7,
                  max_seconds=0.3)
    done = res.history["train_loss"].shape[0]
    assert 7 <= done < 10**7 and done % 7 == 0 and int(res.state.step) == done == res.step
    assert res.stop_reason == "time"
