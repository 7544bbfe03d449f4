"""Models actually learn: held-out thresholds (full-size figures are produced by
benchmarks/foundation_numbers.py).

NICE's test runs in the default suite, the others under ``pytest -m slow``: the default suite
asserts the same property at the library's defaults for every other flow family
(tests/test_stability.py: held-out ring8 NLL after 400 steps) and for the other families in their
own modules (gmm, ebm, gan, vae, diffusion).
"""

import jax
import numpy as np
import optax
import pytest

from genlearn import flows
from genlearn.data import load_dataset, nats_to_bits_per_dim
from genlearn.data.scaling import standardize, standardize_stats
from genlearn.losses import nll
from genlearn.runs import evaluate_nll, fit as fit_run
from genlearn.train import fit

def _adam(lr, steps):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(lr, steps)))


GAUSSIAN_NLL_2D = float(np.log(2 * np.pi * np.e))  # 2.838: a standard normal on standardised data


def _held_out_moons_nll(flow, steps):
    ds = load_dataset("moons", n_train=6000, n_test=2000)
    mean, std = standardize_stats(ds.train)
    train, _ = standardize(ds.train, mean, std)
    test, _ = standardize(ds.test, mean, std)
    params = flow.init(jax.random.PRNGKey(0))
    res = fit(nll(flow), params, train, optimizer=_adam(2e-3, steps), steps=steps, batch_size=256,
              key=jax.random.PRNGKey(1), eval_every=500, progress=False)
    return float(-flow.log_prob(res.params, test).mean())


@pytest.mark.slow  # see the module docstring
def test_realnvp_learns_two_moons():
    held_out = _held_out_moons_nll(flows.realnvp(2, num_layers=6, hidden=(64, 64)), 2000)
    assert held_out < 1.45, held_out  # full size (20k steps, 8x2x128) reaches ~1.17
    assert held_out < GAUSSIAN_NLL_2D - 1.0


def test_nice_learns_two_moons():
    held_out = _held_out_moons_nll(flows.nice(2, num_layers=4, hidden=(64, 64)), 1500)
    assert held_out < 1.9, held_out


@pytest.mark.slow  # see the module docstring
def test_realnvp_beats_a_gaussian_mixture_on_digits():
    """scikit-learn's best GaussianMixture gets ~2.66 bits/dim on these dequantised digits."""
    ds = load_dataset("digits")
    params, run_cfg, _ = fit_run("realnvp", ds, steps=1200, progress=False)
    from genlearn import registry

    model = registry.get("realnvp").build(run_cfg["options"], run_cfg["dim"], run_cfg["preprocess"])
    metrics = evaluate_nll(model, params, ds.test, levels=17, key=jax.random.PRNGKey(0))
    assert metrics["bits_per_dim"] < 2.5, metrics
    np.testing.assert_allclose(metrics["bits_per_dim"], nats_to_bits_per_dim(metrics["nll"], 64), rtol=1e-6)
