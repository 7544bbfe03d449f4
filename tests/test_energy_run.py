"""The EBM family's run (`genlearn.energy.run`): the recorded mixture base, old configs, the residual fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import core, registry, runs
from genlearn.data import load_dataset
from genlearn.energy import mlp_energy, standardized
from genlearn.energy import run as ebm_run

# the options of a run saved before the mixture base was recorded (no "base", "base_components")
OLD = {"steps": 4000, "hidden": [16, 16], "activation": "silu", "confinement": 4.0, "learning_rate": 1e-2,
       "batch_size": 256, "k": 10, "sampler": "mala_jump", "proposal_wide_weight": 0.1, "buffer_size": 10000,
       "reinit_prob": 0.05, "alpha": 0.0, "ais_chains": 1000, "ais_temperatures": 500, "sample_steps": 200,
       "num_proposal_centers": 1024, "step_size": 0.005, "proposal_bandwidth": 0.1}
PRE = {"kind": "standardize", "mean": [0.5, -0.2], "std": [1.5, 0.8]}


def test_defaults_record_the_mixture_base_on_sharp_mixtures():
    for name in ("grid25", "ring8"):
        opts = ebm_run.default_options(load_dataset(name, n_train=2000, n_test=10))
        assert opts["base"] == "mixture" and opts["base_components"] == 32
    small = ebm_run.default_options(load_dataset("moons", n_train=100, n_test=10))
    assert small["base"] == "none" and small["base_components"] == 12  # at least 8 rows per component


def test_a_run_saved_before_the_base_rebuilds_unchanged():
    model = ebm_run.build(dict(OLD), 2, PRE)
    mlp = mlp_energy(2, (16, 16), confinement=4.0)
    energy = mlp.init(jax.random.PRNGKey(0))
    params = {"energy": energy, "log_z": jnp.asarray(0.3), "centers": jnp.zeros((4, 2))}
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    want = -standardized(mlp, PRE["mean"], PRE["std"]).energy(energy, x) - 0.3
    np.testing.assert_allclose(model.log_prob(params, x), want, rtol=1e-6, atol=1e-6)
    # and its untrained init is the plain MLP's pytree, not the residual one
    assert set(model.init(jax.random.PRNGKey(0))["energy"]) == set(energy)


def test_the_residual_run_is_the_fitted_mixture_until_trained(tmp_path):
    # one update at a negligible rate: the correction stays ~0, so AIS from the mixture base finds
    # log Z = 0 and the held-out NLL is the EM mixture's; the saved run reloads with the same density
    ds = load_dataset("moons", n_train=600, n_test=200)
    opts = {"base": "mixture", "base_components": 8, "steps": 1, "learning_rate": 1e-12, "hidden": [8],
            "batch_size": 64, "k": 1, "ais_chains": 32, "ais_temperatures": 5, "sample_steps": 2}
    params, cfg, m = runs.fit("ebm", ds, opts, out=str(tmp_path / "r"), seed=0, progress=False)
    assert cfg["options"]["base"] == "mixture" and cfg["options"]["base_components"] == 8
    assert abs(m["log_z"]) < 1e-4 and m["ais_ess"] == pytest.approx(32, rel=1e-4)
    pre = cfg["preprocess"]
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    q = core.gaussian_mixture(2, 8)
    u = jnp.asarray((np.asarray(ds.test) - mean) / std, jnp.float32)
    log_q = jax.vmap(q.log_prob, (None, 0))(params["energy"]["base"], u) - np.sum(np.log(std))
    assert m["test_nll"] == pytest.approx(-float(jnp.mean(log_q)), abs=1e-3)
    run = runs.load(str(tmp_path / "r"))
    np.testing.assert_allclose(run.log_prob(ds.test[:20]), log_q[:20], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("opts, message", [
    ({"base": "gaussian"}, "mixture or none"),
    ({"base": "mixture", "base_components": 200}, r"--components must be an integer in \[1, 100\]"),
])
def test_bad_base_options_raise_clearly(opts, message):
    with pytest.raises(ValueError, match=message):
        runs.resolve_options(registry.get("ebm"),
                             load_dataset("moons", n_train=100, n_test=10), opts)
