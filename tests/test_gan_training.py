"""GAN family, training: the min-max step, adversarial objectives on a toy, the driver, runs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn import gan


def _shift_generator(dim=1):
    """G(z) = z * 0.3 + mu: a generator whose only job is to find the data's location."""

    def init(key):
        return {"mu": jnp.zeros(dim)}

    def apply(params, z):
        return 0.3 * z + params["mu"]

    def sample_latent(key, n):
        return jax.random.normal(key, (n, dim))

    def sample(params, key, n):
        return apply(params, sample_latent(key, n))

    return gan.Generator(init, apply, sample, sample_latent, dim, dim, "normal")


DATA_1D = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2048, 1)) * 0.3 + 2.0)


@pytest.mark.parametrize("name", gan.OBJECTIVES)
def test_adversarial_objectives_move_the_generator_towards_the_data(name):
    obj = gan.objective(name)
    g = _shift_generator()
    c = gan.critic(1, (16, 16), spectral_norm=obj.spectral_norm, activation="leaky_relu")
    lr_c = 1e-2 if name != "wgan-clip" else 5e-3
    algo = gan.minmax(g, c, obj, generator_optimizer=optax.adam(1e-2, b1=0.5),
                      critic_optimizer=optax.adam(lr_c, b1=0.5), critic_steps=5, batch_size=64)
    state = algo.init(jax.random.PRNGKey(1))
    res = gan.train_gan(algo, state, DATA_1D, steps=200, key=jax.random.PRNGKey(2), chunk=200, progress=False)
    mu = float(res.state.generator["mu"][0])
    assert abs(mu - 2.0) < 0.5, (name, mu)  # started at distance 2
    assert res.stop_reason == "steps" and not res.history["nonfinite"].any()
    np.testing.assert_array_equal(res.history["train_loss"], res.history["distance"])
    # the critic's distance estimate is a progress monitor: it shrinks as the generator arrives
    d = res.history["distance"]
    assert np.mean(d[:10]) > np.mean(d[-20:]), name


def _ring_setup(m=2, ema=None, name="wgan-gp"):
    obj = gan.objective(name)
    g = gan.generator(2, 2, (32, 32))
    c = gan.critic(2, (32, 32), spectral_norm=obj.spectral_norm)
    algo = gan.minmax(g, c, obj, generator_optimizer=optax.adam(1e-3), critic_optimizer=optax.adam(1e-3),
                      critic_steps=m, batch_size=64, ema_decay=ema)
    data = jax.random.normal(jax.random.PRNGKey(9), (512, 2))
    return algo, data


def test_fused_step_equals_separate_critic_and_generator_updates():
    algo, data = _ring_setup(m=3, ema=0.9, name="hinge")  # spectral-norm state threads through the scan
    state = algo.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(4)
    batch = data[: 3 * 64]
    fused, info = jax.jit(algo.step)(state, batch, key)
    k_c, k_g = jax.random.split(key)
    s = state
    critic_update, generator_update = jax.jit(algo.critic_update), jax.jit(algo.generator_update)
    for i, k in enumerate(jax.random.split(k_c, 3)):  # the halves as separate jitted calls (the benchmark's baseline)
        s, cinfo = critic_update(s, batch[64 * i: 64 * (i + 1)], k)
    s, ginfo = generator_update(s, batch[-64:], k_g)
    for a, b in zip(jax.tree_util.tree_leaves(fused), jax.tree_util.tree_leaves(s)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(info.distance) == pytest.approx(float(cinfo.distance), rel=1e-5)
    assert int(fused.step) == 1
    # EMA moved towards the new generator params, but not all the way
    g0, g1, e1 = (jax.tree_util.tree_leaves(t)[0] for t in (state.generator, fused.generator, fused.ema))
    np.testing.assert_allclose(e1, 0.9 * g0 + 0.1 * g1, rtol=1e-5, atol=1e-7)


def test_nonfinite_updates_are_rejected():
    algo, data = _ring_setup(name="ns")
    state = algo.init(jax.random.PRNGKey(0))
    bad = gan.minmax(gan.generator(2, 2, (32, 32)), gan.critic(2, (32, 32)), gan.objective("ns"),
                     generator_optimizer=optax.adam(1e-3), critic_optimizer=optax.scale(jnp.nan),
                     critic_steps=1, batch_size=64)
    new, info = jax.jit(bad.step)(state, data[:64], jax.random.PRNGKey(1))
    assert bool(info.nonfinite)
    for a, b in zip(jax.tree_util.tree_leaves(new.critic), jax.tree_util.tree_leaves(state.critic)):
        np.testing.assert_array_equal(a, b)
    # the driver stops after max_nonfinite consecutive rejections and returns a finite state
    with pytest.warns(RuntimeWarning, match=r"rejected 5 non-finite update\(s\) at step\(s\) \[0, 1, 2, 3, 4\]"):
        res = gan.train_gan(bad, state, data, steps=40, key=jax.random.PRNGKey(2), chunk=10, max_nonfinite=5,
                            progress=False)
    assert res.stop_reason == "nonfinite" and res.step == 5
    assert res.history["nonfinite"].all() and np.isnan(res.history["train_loss"]).all()
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(res.state))


def test_minmax_bad_input():
    g, c, obj = gan.generator(2, 2, (8,)), gan.critic(2, (8,)), gan.objective("wgan-gp")
    opt = optax.adam(1e-3)
    with pytest.raises(ValueError, match="critic_steps"):
        gan.minmax(g, c, obj, generator_optimizer=opt, critic_optimizer=opt, critic_steps=0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        gan.minmax(gan.generator(3, 2, (8,)), c, obj, generator_optimizer=opt, critic_optimizer=opt)
    with pytest.raises(ValueError, match="spectrally normalised"):
        gan.minmax(g, c, gan.objective("sn"), generator_optimizer=opt, critic_optimizer=opt)
    algo = gan.minmax(g, c, obj, generator_optimizer=opt, critic_optimizer=opt, batch_size=8)
    state = algo.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        algo.step(state, jnp.zeros((16, 3)), jax.random.PRNGKey(0))
    three = gan.minmax(g, c, obj, generator_optimizer=opt, critic_optimizer=opt, critic_steps=3, batch_size=8)
    with pytest.raises(ValueError, match="multiple of the 3 critic step"):
        three.step(three.init(jax.random.PRNGKey(0)), jnp.zeros((16, 2)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"batch_size \* batches_per_step \(8 \* 3 = 24\) exceeds the number "
                                         r"of training rows \(16\)"):
        gan.train_gan(three, None, np.zeros((16, 2)), steps=1, key=jax.random.PRNGKey(0), progress=False)
    with pytest.raises(ValueError, match="NaN|finite"):
        gan.train_gan(algo, state, np.full((16, 2), np.nan), steps=1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="ema_decay"):
        gan.minmax(g, c, obj, generator_optimizer=opt, critic_optimizer=opt, ema_decay=1.5)


def test_checkpoint_resume_is_bit_identical(tmp_path):
    algo, data = _ring_setup(name="sn")  # spectral-norm u-vectors are part of the checkpointed state
    state = algo.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(3)
    full = gan.train_gan(algo, state, data, steps=30, key=key, chunk=10, progress=False)
    ckpt = str(tmp_path / "ckpt")
    gan.train_gan(algo, state, data, steps=20, key=key, chunk=10, checkpoint_dir=ckpt, progress=False)
    assert sorted(os.listdir(ckpt)) == ["10", "20"]  # keep=2, orbax step directories
    resumed = gan.train_gan(algo, state, data, steps=30, key=key, chunk=10, checkpoint_dir=ckpt, resume=True,
                            progress=False)
    assert resumed.step == 30 and resumed.history["distance"].shape == (30,)
    for a, b in zip(jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.history["distance"], resumed.history["distance"])


@pytest.mark.optimized  # measured (tests/conftest.py): 33.0 -> 20.3 s at XLA's default optimisation
def test_mmd_generator_learns_the_ring_modes():
    """GMMN on ring8 with the CLI defaults, shortened: every mode found (files and sampling: test_cli)."""
    run = gan.run.train_model("ring8", loss="mmd", steps=1200, seed=0, progress=False, chunk=1200)
    m = run.metrics
    assert run.config["family"] == "gan" and run.config["model"] == "mmd"
    assert m["num_modes"] == 8 and m["modes_covered"] == 8, m
    # samples spread evenly over the circle would score ~0.08 (8 x 0.12 of its 4 pi length)
    assert m["high_quality_fraction"] > 0.25 and m["mode_kl"] < 0.5, m


def test_fit_run_bad_input(tmp_path):
    from genlearn.data import load_dataset
    from genlearn.runs import fit

    ring = load_dataset("ring8")
    with pytest.raises(ValueError, match="unknown GAN loss"):
        fit("gan", ring, {"loss": "vae"})
    with pytest.raises(ValueError, match="critic_steps"):
        fit("gan", ring, {"loss": "wgan-gp", "critic_steps": 0}, steps=1)
    with pytest.raises(ValueError, match="latent_dim"):
        fit("gan", ring, {"loss": "wgan-gp", "latent_dim": 0}, steps=1)
    with pytest.raises(ValueError, match="does not take the option"):
        fit("gan", ring, {"loss": "wgan-gp", "foo": 1})
    with pytest.raises(ValueError, match="gan does not take the option"):
        gan.run.train_model("ring8", loss="wgan-gp", foo=1)


def test_minmax_step_jit_equals_no_jit():
    """The fused step (a critic step with spectral-norm state and an R1 penalty, then the generator)
    gives the same state with and without jit."""
    g, c = gan.generator(2, 2, (8,)), gan.critic(2, (8,), spectral_norm=True)
    algo = gan.minmax(g, c, gan.objective("hinge", r1_weight=1.0), generator_optimizer=optax.adam(1e-3),
                      critic_optimizer=optax.adam(1e-3), critic_steps=1, batch_size=32, ema_decay=0.5)
    data = jax.random.normal(jax.random.PRNGKey(9), (256, 2))
    state = algo.init(jax.random.PRNGKey(0))
    jitted, info_j = jax.jit(algo.step)(state, data[:32], jax.random.PRNGKey(1))
    with jax.disable_jit():
        plain, info_p = algo.step(state, data[:32], jax.random.PRNGKey(1))
    for a, b in zip(jax.tree_util.tree_leaves((jitted, info_j)), jax.tree_util.tree_leaves((plain, info_p))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_seeds_equals_train_model_per_seed():
    """The vmapped multi-seed program draws each seed's batches and keys as the driver does."""
    from genlearn.data import load_dataset
    from genlearn.gan.run import train_model, train_seeds

    ds = load_dataset("ring8", n_train=600, n_test=200)
    opts = dict(hidden=[16, 16], critic_hidden=[16, 16], latent_dim=2, batch_size=32, critic_steps=2)
    many = train_seeds(ds, [0, 1], loss="wgan-gp", steps=12, **opts)
    one = train_model(ds, loss="wgan-gp", steps=12, seed=1, progress=False, **opts)
    for a, b in zip(jax.tree_util.tree_leaves(many[1].params), jax.tree_util.tree_leaves(one.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(many[1].result.history["train_loss"], one.result.history["train_loss"], rtol=1e-4,
                               atol=1e-5)
