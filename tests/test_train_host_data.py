"""The driver's host-data path (`run_trainer(..., device_data_bytes=...)`): data
larger than the threshold stay on the host and train bit-identically to the
on-device path."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn.train import fit, run_trainer
from genlearn.train import driver as driver_module


def noisy_regression_loss(params, batch, key):
    x, y = batch[:, :-1], batch[:, -1]
    noise = 0.01 * jax.random.normal(key, params["w"].shape)
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2) + jnp.sum(noise * params["w"])


def regression_data(n=150, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = x @ np.array([1.5, -2.0]) + 0.5 + 0.1 * rng.normal(size=n)
    return np.column_stack([x, y]).astype(dtype)


PARAMS = {"w": jnp.zeros(2), "b": jnp.zeros(())}
# 150 rows, val 30, 120 train rows / 16 = 7 steps per epoch: 40 steps cross 5 epoch boundaries,
# chunks of 6 steps start mid-epoch, and the last chunk is partial.
KWARGS = dict(optimizer=optax.adam(0.05), steps=40, batch_size=16, key=jax.random.key(3),
              val_fraction=0.2, eval_every=6, progress=False)


def assert_same(a, b, rtol=0.0):
    """Bit-equal runs; ``rtol`` > 0 allows rounding of that relative size instead (and 0.1 rtol absolute)."""
    same = np.testing.assert_array_equal if rtol == 0 else functools.partial(np.testing.assert_allclose, rtol=rtol,
                                                                              atol=0.1 * rtol)
    for x, y in zip(jax.tree_util.tree_leaves((a.params, a.state)), jax.tree_util.tree_leaves((b.params, b.state))):
        same(np.asarray(x), np.asarray(y))
    assert set(a.history) == set(b.history)
    for name in a.history:
        same(a.history[name], b.history[name])
    assert (a.step, a.best_step, a.best_val_loss, a.stop_reason) == (b.step, b.best_step, b.best_val_loss,
                                                                     b.stop_reason)


@pytest.fixture(scope="module")
def device_run():
    return fit(noisy_regression_loss, PARAMS, regression_data(), **KWARGS)


def test_host_path_is_taken_and_bit_identical(device_run, monkeypatch):
    fetched = []
    make = driver_module._host_batches

    def spy(*args):
        fetch = make(*args)
        return lambda start, end: fetched.append((start, end)) or fetch(start, end)

    monkeypatch.setattr(driver_module, "_host_batches", spy)
    data = regression_data()
    host = fit(noisy_regression_loss, PARAMS, data, device_data_bytes=data.nbytes - 1, **KWARGS)
    assert_same(host, device_run)
    # every chunk fetched once (the next one while the current trains), none at the default threshold
    assert fetched == [(s, min(s + 6, 40)) for s in range(0, 40, 6)]
    fetched.clear()
    fit(noisy_regression_loss, PARAMS, data, **dict(KWARGS, steps=2))
    assert fetched == []


def test_memory_mapped_npy_and_float64_rows(device_run, tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, regression_data(dtype=np.float64))  # float64 rows: cast to float32 on the way, as on device
    rows = np.load(path, mmap_mode="r")
    host = fit(noisy_regression_loss, PARAMS, rows, device_data_bytes=0, **KWARGS)
    assert_same(host, device_run)


def test_host_path_resumes_bit_identically(device_run, tmp_path):
    data = regression_data()
    kwargs = dict(KWARGS, device_data_bytes=0, checkpoint_dir=tmp_path / "ck", checkpoint_every=6)
    first = fit(noisy_regression_loss, PARAMS, data, **dict(kwargs, steps=18))
    assert first.step == 18
    resumed = fit(noisy_regression_loss, PARAMS, data, resume=True, **kwargs)
    assert_same(resumed, device_run)


def test_minmax_with_several_batches_per_step():
    from genlearn import gan

    opt = optax.adam(1e-2)
    trainer = gan.minmax(gan.generator(2, 2, (8,)), gan.critic(2, (8,)), gan.objective("ns"),
                         generator_optimizer=opt, critic_optimizer=opt, critic_steps=2, batch_size=8)
    assert trainer.batches_per_step == 2
    data = np.asarray(jax.random.normal(jax.random.key(1), (100, 2)), np.float32)
    kwargs = dict(steps=9, batch_size=8, key=jax.random.key(2), eval_every=4, progress=False)
    device = run_trainer(trainer, None, data, **kwargs)
    host = run_trainer(trainer, None, data, device_data_bytes=0, **kwargs)
    # bit-equal under XLA's default CPU code generation; the suite's faster-compiling emitters (tests/conftest.py)
    # fuse the two paths' min-max steps differently and leave 4 of 8 params an ulp apart. A wrong batch order or
    # key is off by ~1e-2
    assert_same(host, device, rtol=1e-6)


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True])
def test_bad_threshold_raises(bad):
    with pytest.raises(ValueError, match="device_data_bytes must be"):
        fit(noisy_regression_loss, PARAMS, regression_data(), **dict(KWARGS, device_data_bytes=bad))


def test_bad_host_data_is_checked_in_blocks():
    data = regression_data()
    data[[3, 77], 1] = np.nan
    with pytest.raises(ValueError, match="training data contains NaN or inf in 2 rows"):
        fit(noisy_regression_loss, PARAMS, data, **dict(KWARGS, device_data_bytes=0))
