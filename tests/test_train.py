"""Tests for genlearn.train: the driver (through fit and every trainer), train_step, minibatches, checkpoints."""

from __future__ import annotations

import glob
import os
import re
import warnings
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genlearn.train import (
    CheckpointError,
    FitResult,
    fit,
    load_pytree,
    minibatch_indices,
    save_pytree,
    train_step,
)
from genlearn.train.checkpoint import _open_manager, _save_state

# ---------------------------------------------------------------------------
# Tiny models.
# ---------------------------------------------------------------------------


def mean_loss(params, batch, key=None):
    """Quadratic loss whose minimiser is the row mean."""
    return jnp.mean(jnp.sum((batch - params["m"]) ** 2, axis=1))


def regression_loss(params, batch, key=None):
    """Least squares of the last column on the others."""
    x, y = batch[:, :-1], batch[:, -1]
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def noisy_regression_loss(params, batch, key):
    """Regression loss plus a key-dependent perturbation (uses the key)."""
    noise = 0.01 * jax.random.normal(key, params["w"].shape)
    return regression_loss(params, batch) + jnp.sum(noise * params["w"])


def regression_data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = x @ np.array([1.5, -2.0]) + 0.5 + 0.1 * rng.normal(size=n)
    return np.column_stack([x, y]).astype(np.float32)


def regression_params():
    return {"w": jnp.zeros(2), "b": jnp.zeros(())}


def tree_equal(a, b):
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def history_equal(a, b):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def step_dirs(directory):
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


KEY = jax.random.key(0)
JIT_INDICES = jax.jit(minibatch_indices, static_argnums=(2, 3))

# ---------------------------------------------------------------------------
# Convergence and the reference step.
# ---------------------------------------------------------------------------


def test_converges_to_the_mean():
    data = np.random.default_rng(1).normal(2.0, 1.0, size=(200, 3)).astype(np.float32)
    result = fit(
        mean_loss, {"m": jnp.zeros(3)}, data,
        optimizer=optax.adam(0.05), steps=600, batch_size=200, key=KEY, progress=False,
    )
    assert isinstance(result, FitResult)
    assert result.step == 600 and result.stop_reason == "steps"
    np.testing.assert_allclose(result.params["m"], data.mean(axis=0), atol=1e-4)
    losses = result.history["train_loss"]
    assert losses.shape == (600,) and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(result.history["step"], np.arange(600))
    assert result.best_step is None and result.best_val_loss is None
    assert result.history["val_loss"].shape == (0,)


def test_linear_regression_with_minibatches():
    data = regression_data(n=200)
    result = fit(
        regression_loss, regression_params(), data,
        optimizer=optax.adam(0.03), steps=800, batch_size=32, key=KEY, progress=False,
    )
    design = np.column_stack([data[:, :2], np.ones(len(data))])
    coef = np.linalg.lstsq(design, data[:, 2], rcond=None)[0]
    np.testing.assert_allclose(result.params["w"], coef[:2], atol=0.03)
    np.testing.assert_allclose(result.params["b"], coef[2], atol=0.03)
    assert np.mean(result.history["train_loss"][-50:]) < np.mean(result.history["train_loss"][:50])


def test_jitted_chunks_match_step_by_step_reference():
    data = regression_data(n=50)
    batch_size, steps = 8, 11  # 6 steps per epoch: crosses an epoch boundary
    optimizer = optax.adam(0.05)
    result = fit(
        noisy_regression_loss, regression_params(), data,
        optimizer=optimizer, steps=steps, batch_size=batch_size, key=KEY,
        eval_every=4, progress=False,  # chunks of 4, 4, 3
    )

    _, shuffle_key, loss_key, _ = jax.random.split(KEY, 4)
    clipping = optax.chain(optax.clip_by_global_norm(1.0), optimizer)  # fit's default max_grad_norm=1.0
    step = jax.jit(train_step(noisy_regression_loss, clipping))
    params = regression_params()
    opt_state = clipping.init(params)
    losses = []
    for t in range(steps):
        rows = JIT_INDICES(shuffle_key, t, len(data), batch_size)
        params, opt_state, loss, finite = step(
            params, opt_state, jnp.asarray(data)[rows], jax.random.fold_in(loss_key, t)
        )
        assert bool(finite)
        losses.append(float(loss))
    for name in ("w", "b"):
        np.testing.assert_allclose(result.params[name], params[name], atol=1e-6)
    np.testing.assert_allclose(result.history["train_loss"], losses, atol=1e-6)


def test_fit_clips_the_gradient_norm_by_default_and_marks_the_steps():
    data = regression_data(n=64)
    kwargs = dict(steps=12, batch_size=16, key=KEY, progress=False)
    big = dict(optimizer=optax.sgd(0.01), **kwargs)
    clipped = fit(noisy_regression_loss, regression_params(), data, **big)  # max_grad_norm=1.0
    plain = fit(noisy_regression_loss, regression_params(), data, max_grad_norm=None, **big)
    manual = fit(noisy_regression_loss, regression_params(), data, max_grad_norm=None,
                 **{**big, "optimizer": optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.01))})
    assert clipped.history["clipped"].dtype == bool and clipped.history["clipped"].any()
    assert not plain.history["clipped"].any()
    for name in ("w", "b"):  # the default is optax's global-norm clipping, not something else
        np.testing.assert_allclose(clipped.params[name], manual.params[name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(clipped.params["w"], plain.params["w"])
    with pytest.raises(ValueError, match="max_grad_norm"):
        fit(noisy_regression_loss, regression_params(), data, max_grad_norm=0.0, **big)


def test_max_seconds_stops_on_the_clock_after_whole_chunks():
    data = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32)
    kwargs = dict(optimizer=optax.adam(0.01), batch_size=16, key=KEY, progress=False, eval_every=5)
    result = fit(mean_loss, {"m": jnp.zeros(3)}, data, steps=10**9, max_seconds=0.5, **kwargs)
    assert result.stop_reason == "time"
    assert 5 <= result.step < 10**9 and result.step % 5 == 0  # at least one chunk, stopped at a boundary
    assert result.history["train_loss"].shape == (result.step,)
    # a budget that is not reached changes nothing
    full = fit(mean_loss, {"m": jnp.zeros(3)}, data, steps=20, max_seconds=3600, **kwargs)
    assert full.stop_reason == "steps" and full.step == 20


def test_fit_draws_the_rows_of_minibatch_indices():
    # One-hot rows: with loss = sum(batch @ p) and SGD(lr=1), each step
    # subtracts 1 from p at the rows of its batch.
    n, batch_size, steps = 7, 3, 3  # 2 steps per epoch, one row dropped
    data = np.eye(n, dtype=np.float32)
    result = fit(
        lambda p, batch, key: jnp.sum(batch @ p), jnp.zeros(n), data,
        optimizer=optax.sgd(1.0), max_grad_norm=None, steps=steps, batch_size=batch_size, key=KEY,
        eval_every=2, progress=False,
    )
    _, shuffle_key, _, _ = jax.random.split(KEY, 4)
    expected = np.zeros(n)
    for t in range(steps):
        np.subtract.at(expected, np.asarray(minibatch_indices(shuffle_key, t, n, batch_size)), 1.0)
    np.testing.assert_array_equal(result.params, expected)


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 24),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_each_epoch_visits_rows_at_most_once(n, data, seed):
    batch_size = data.draw(st.integers(1, n), label="batch_size")
    steps_per_epoch = n // batch_size
    key = jax.random.key(seed)
    for epoch in range(2):
        rows = np.concatenate([
            np.asarray(minibatch_indices(key, epoch * steps_per_epoch + p, n, batch_size))
            for p in range(steps_per_epoch)
        ])
        assert rows.shape == (steps_per_epoch * batch_size,)
        assert len(set(rows.tolist())) == rows.size  # each row at most once
        assert rows.min() >= 0 and rows.max() < n
    if steps_per_epoch * batch_size == n:  # no remainder: every row exactly once
        assert sorted(rows.tolist()) == list(range(n))


# ---------------------------------------------------------------------------
# Keys.
# ---------------------------------------------------------------------------


def key_probe_loss(params, batch, key):
    # The loss value is a function of the key alone, so the history reveals
    # the key stream; params get zero gradient.
    return 0.0 * jnp.sum(params) + jax.random.uniform(key)


def test_loss_with_key_gets_a_new_key_each_step_and_a_fixed_eval_key():
    data = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
    result = fit(
        key_probe_loss, jnp.zeros(2), data,
        optimizer=optax.sgd(0.1), steps=40, batch_size=5, key=KEY,
        val_fraction=0.25, eval_every=10, progress=False,
    )
    losses = result.history["train_loss"]
    assert len(np.unique(losses)) == 40
    _, _, loss_key, val_key = jax.random.split(KEY, 4)
    expected = [float(jax.random.uniform(jax.random.fold_in(loss_key, t))) for t in (0, 17, 39)]
    np.testing.assert_allclose(losses[[0, 17, 39]], expected, rtol=1e-6)
    np.testing.assert_array_equal(result.history["val_step"], [10, 20, 30, 40])
    np.testing.assert_allclose(result.history["val_loss"], float(jax.random.uniform(val_key)), rtol=1e-6)


def test_loss_without_key_parameter_is_a_clear_error():
    def loss(params, batch):  # no key: losses always take (params, batch, key)
        return jnp.sum(params**2)

    with pytest.raises(ValueError, match=r"the loss could not be traced: .*takes 2 positional arguments.*"
                                         r"loss\(params, batch, key\) \(take the key even if you do not use it\)"):
        fit(loss, jnp.ones(2), np.ones((4, 2)), optimizer=optax.sgd(0.1), steps=3, batch_size=2, key=KEY,
            progress=False)


# ---------------------------------------------------------------------------
# Non-finite guard.
# ---------------------------------------------------------------------------


def test_nan_steps_are_rejected_and_params_unchanged(capsys):
    # loss = -c (SGD lr=1 adds 1 per accepted step), NaN at random steps.
    def loss(params, batch, key):
        nan = jnp.where(jax.random.uniform(key) < 0.3, jnp.nan, 0.0)
        return -params["c"] + nan

    with pytest.warns(RuntimeWarning, match=r"rejected \d+ non-finite update"):
        result = fit(loss, {"c": jnp.zeros(())}, np.zeros((4, 1)),
                     optimizer=optax.sgd(1.0), steps=60, batch_size=2, key=KEY,
                     eval_every=20, max_nonfinite=None, progress_desc="guard")
    assert "guard" in capsys.readouterr().err  # the tqdm bar
    losses = result.history["train_loss"]
    accepted = np.isfinite(losses)
    assert 0 < (~accepted).sum() < 60
    assert result.stop_reason == "steps" and result.step == 60
    # Before step t the counter equals the number of accepted steps before t:
    # rejected steps left params unchanged.
    accepted_before = np.concatenate([[0], np.cumsum(accepted)[:-1]])
    np.testing.assert_array_equal(-losses[accepted], accepted_before[accepted])
    assert float(result.params["c"]) == accepted.sum()


def test_stops_after_max_nonfinite_consecutive_rejections():
    def loss(params, batch, key):
        return jnp.where(params["c"] >= 5.0, jnp.nan, -params["c"])

    with pytest.warns(RuntimeWarning, match=r"at step\(s\) \[5, 6, 7\]"):
        result = fit(loss, {"c": jnp.zeros(())}, np.zeros((4, 1)),
                     optimizer=optax.sgd(1.0), steps=100, batch_size=2, key=KEY,
                     max_nonfinite=3, progress=False)
    assert result.stop_reason == "nonfinite"
    assert result.step == 8  # stopped inside the chunk, right after step 7
    assert float(result.params["c"]) == 5.0
    assert np.isfinite(result.history["train_loss"][:5]).all()
    assert np.isnan(result.history["train_loss"][5:]).all()


def test_train_step_rejects_nonfinite_gradients_and_params():
    optimizer = optax.sgd(1.0)
    params = {"c": jnp.zeros(())}
    opt_state = optimizer.init(params)
    # Finite loss, infinite gradient.
    step = train_step(lambda p, b, k: jnp.sqrt(p["c"]), optimizer)
    new_params, new_state, loss, finite = jax.jit(step)(params, opt_state, None, None)
    assert float(loss) == 0.0 and not bool(finite)
    tree_equal(new_params, params)
    # Finite loss and gradient, overflowing update.
    big = train_step(lambda p, b, k: -3e38 * p["c"], optax.sgd(10.0))
    new_params, _, _, finite = jax.jit(big)({"c": jnp.float32(3e38)}, opt_state, None, None)
    assert not bool(finite) and float(new_params["c"]) == np.float32(3e38)
    # A good step is accepted.
    good = train_step(lambda p, b, key: (p["c"] - 1.0) ** 2, optimizer)
    new_params, _, _, finite = jax.jit(good)(params, opt_state, None, KEY)
    assert bool(finite) and float(new_params["c"]) == 2.0


def test_nonfinite_params_are_never_checkpointed(tmp_path):
    manager = _open_manager(str(tmp_path / "ck"), 3)
    try:
        with pytest.raises(FloatingPointError, match="non-finite"):
            params = {"w": jnp.array([1.0, jnp.nan])}
            _save_state(manager, 1, {"params": params}, {"params": params})
    finally:
        manager.close()
    assert step_dirs(tmp_path / "ck") == []


# ---------------------------------------------------------------------------
# Validation and early stopping.
# ---------------------------------------------------------------------------


def early_stopping_setup():
    rng = np.random.default_rng(3)
    train = rng.normal(0.0, 0.1, size=(64, 1)).astype(np.float32)
    val = rng.normal(1.5, 0.1, size=(32, 1)).astype(np.float32)
    kwargs = dict(optimizer=optax.sgd(0.02), batch_size=16, key=KEY, eval_every=5,
                  progress=False)
    return train, val, kwargs


def test_early_stopping_returns_best_params():
    train, val, kwargs = early_stopping_setup()
    params = {"m": jnp.full((1,), 5.0)}
    result = fit(mean_loss, params, train, val_data=val, steps=2000, patience=3, **kwargs)
    assert result.stop_reason == "early_stopping"
    val_loss = result.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert result.best_step == result.history["val_step"][best]
    assert result.best_val_loss == val_loss[best]
    assert 0 < result.best_step < result.step == result.best_step + 3 * 5
    assert np.all(val_loss[best + 1:] >= val_loss[best])
    # The returned params are exactly those after best_step steps.
    reference = fit(mean_loss, params, train, steps=result.best_step, **kwargs)
    np.testing.assert_array_equal(result.params["m"], reference.params["m"])
    # ... and the final params moved on from there.
    assert result.history["step"].shape == (result.step,)


def test_val_fraction_split_and_zero_steps():
    data = regression_data(n=40)
    result = fit(regression_loss, regression_params(), data, optimizer=optax.adam(0.1),
                 steps=0, batch_size=4, key=KEY, val_fraction=0.25, progress=False)
    assert result.step == 0 and result.stop_reason == "steps"
    tree_equal(result.params, regression_params())
    np.testing.assert_array_equal(result.history["val_step"], [0])
    # Initial params, evaluated on the 10 held-out rows.
    split_key = jax.random.split(KEY, 4)[0]
    val = jnp.asarray(data)[jax.random.permutation(split_key, 40)[:10]]
    np.testing.assert_allclose(result.best_val_loss,
                               float(regression_loss(regression_params(), val)), rtol=1e-6)
    assert result.best_step == 0


# ---------------------------------------------------------------------------
# Checkpoints.
# ---------------------------------------------------------------------------

RESUME_KWARGS = dict(
    optimizer=optax.adam(0.02), batch_size=16, key=jax.random.key(7),
    val_fraction=0.2, eval_every=50, progress=False,
)


@pytest.fixture(scope="module")
def straight_run():
    return fit(noisy_regression_loss, regression_params(), regression_data(),
               steps=300, **RESUME_KWARGS)


def assert_same_result(a, b):
    tree_equal(a.params, b.params)
    tree_equal(a.opt_state, b.opt_state)
    history_equal(a.history, b.history)
    assert (a.step, a.best_step, a.best_val_loss, a.stop_reason) == (
        b.step, b.best_step, b.best_val_loss, b.stop_reason)


def test_resume_is_bit_identical(straight_run, tmp_path):
    directory = tmp_path / "ck"
    first = fit(noisy_regression_loss, regression_params(), regression_data(),
                steps=150, checkpoint_dir=directory, checkpoint_every=50,
                keep_checkpoints=2, **RESUME_KWARGS)
    assert first.step == 150 and step_dirs(directory) == [100, 150]
    # Resume with a different key argument: the checkpointed keys win.
    kwargs = dict(RESUME_KWARGS, key=jax.random.key(123))
    resumed = fit(noisy_regression_loss, regression_params(), regression_data(),
                  steps=300, checkpoint_dir=directory, checkpoint_every=50,
                  keep_checkpoints=2, resume=True, **kwargs)
    np.testing.assert_array_equal(resumed.params["w"], straight_run.params["w"])
    assert_same_result(resumed, straight_run)
    assert step_dirs(directory) == [250, 300]  # keep_checkpoints respected
    # Resuming a finished run trains no further.
    again = fit(noisy_regression_loss, regression_params(), regression_data(),
                steps=300, checkpoint_dir=directory, checkpoint_every=50,
                resume=True, **RESUME_KWARGS)
    assert_same_result(again, straight_run)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
# After a failed read, orbax's asyncio machinery sometimes drops sibling read
# errors as "unraisable"; that is orbax-internal noise, not a failure here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_latest_checkpoint_falls_back(straight_run, tmp_path, damage):
    directory = tmp_path / "ck"
    fit(noisy_regression_loss, regression_params(), regression_data(), steps=150,
        checkpoint_dir=directory, checkpoint_every=50, **RESUME_KWARGS)
    assert step_dirs(directory) == [50, 100, 150]
    if damage == "truncate":
        path = directory / "150" / "default" / "manifest.ocdbt"
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        for path in glob.glob(str(directory / "150" / "default" / "d" / "*")):
            os.remove(path)
    with pytest.warns(RuntimeWarning) as record:
        resumed = fit(noisy_regression_loss, regression_params(), regression_data(),
                      steps=300, checkpoint_dir=directory, checkpoint_every=50,
                      resume=True, **RESUME_KWARGS)
    messages = [str(w.message) for w in record]
    assert any(re.search(r"checkpoint step 150 in .* is unreadable", m) for m in messages)
    assert any(re.search(r"moved unreadable checkpoint step 150 .* resuming from step 100", m)
               for m in messages)
    assert_same_result(resumed, straight_run)
    assert (directory / "unreadable_150").is_dir()
    assert step_dirs(directory) == [200, 250, 300]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_readable_checkpoint_raises(tmp_path):
    directory = tmp_path / "ck"
    fit(noisy_regression_loss, regression_params(), regression_data(), steps=100,
        checkpoint_dir=directory, **RESUME_KWARGS)
    for step in step_dirs(directory):
        os.remove(directory / str(step) / "default" / "manifest.ocdbt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=f"no readable checkpoint in {re.escape(str(directory))}"):
            fit(noisy_regression_loss, regression_params(), regression_data(), steps=200,
                checkpoint_dir=directory, resume=True, **RESUME_KWARGS)
    assert issubclass(CheckpointError, ValueError)
    assert step_dirs(directory) == [50, 100]  # nothing renamed or deleted


def test_resume_without_checkpoints_starts_fresh(tmp_path):
    directory = tmp_path / "does" / "not" / "exist"
    kwargs = dict(steps=60, **RESUME_KWARGS)
    fresh = fit(noisy_regression_loss, regression_params(), regression_data(), **kwargs)
    resumed = fit(noisy_regression_loss, regression_params(), regression_data(),
                  checkpoint_dir=directory, resume=True, **kwargs)
    assert_same_result(resumed, fresh)
    assert step_dirs(directory) == [50, 60]
    with pytest.raises(ValueError, match="already holds checkpoints"):
        fit(noisy_regression_loss, regression_params(), regression_data(),
            checkpoint_dir=directory, **kwargs)


class Model(NamedTuple):
    weights: dict
    scale: jax.Array


def test_save_and_load_pytree(tmp_path):
    tree = Model({"w": jnp.arange(6.0).reshape(2, 3), "b": np.array([1, 2], np.int32)},
                 jnp.float32(0.5))
    metadata = {"family": "realnvp", "layers": 4, "val_loss": float("inf")}
    path = tmp_path / "model"
    save_pytree(path, tree, metadata=metadata)

    restored, meta = load_pytree(path, like=tree)
    assert meta == metadata
    assert isinstance(restored, Model)
    tree_equal(restored, tree)

    raw, _ = load_pytree(path)
    np.testing.assert_array_equal(raw["weights"]["w"], tree.weights["w"])

    with pytest.raises(FileExistsError):
        save_pytree(path, tree, metadata=metadata)
    save_pytree(path, {"x": jnp.ones(2)}, metadata={"v": 2}, overwrite=True)
    assert load_pytree(path)[1] == {"v": 2}
    with pytest.raises(TypeError, match="JSON"):
        save_pytree(tmp_path / "bad", tree, metadata={"f": object()})
    assert not (tmp_path / "bad").exists()


def test_load_pytree_missing_or_corrupt(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pytree(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a saved pytree"):
        load_pytree(tmp_path / "empty")

    path = tmp_path / "model"
    save_pytree(path, {"w": jnp.arange(1000.0)}, metadata={})
    (path / "metadata.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="metadata.json .* unreadable"):
        load_pytree(path)

    path = tmp_path / "model2"
    save_pytree(path, {"w": jnp.arange(1000.0)}, metadata={})
    os.remove(path / "tree" / "manifest.ocdbt")
    with pytest.raises(CheckpointError, match=f"could not restore the pytree in {re.escape(str(path))}"):
        load_pytree(path, like={"w": jnp.zeros(1000)})


# ---------------------------------------------------------------------------
# Argument checks.
# ---------------------------------------------------------------------------

GOOD = dict(optimizer=optax.sgd(0.1), steps=10, batch_size=4, key=KEY, progress=False)


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(steps=-3), r"steps must be >= 0, got -3"),
        (dict(steps=2.5), r"steps must be an integer"),
        (dict(batch_size=0), r"batch_size must be >= 1, got 0"),
        (dict(batch_size=21), r"batch_size \(21\) exceeds the number of training rows \(20\)"),
        (dict(batch_size=17, val_fraction=0.2),
         r"batch_size \(17\) exceeds the number of training rows \(16\)"),
        (dict(eval_every=0), r"eval_every must be >= 1, got 0"),
        (dict(patience=0), r"patience must be >= 1 or None, got 0"),
        (dict(val_fraction=1.0), r"val_fraction must be in \[0, 1\), got 1.0"),
        (dict(val_fraction=-0.1), r"val_fraction must be in \[0, 1\), got -0.1"),
        (dict(checkpoint_every=0), r"checkpoint_every must be >= 1 or None, got 0"),
        (dict(keep_checkpoints=0), r"keep_checkpoints must be >= 1 or None, got 0"),
        (dict(max_nonfinite=0), r"max_nonfinite must be >= 1 or None, got 0"),
        (dict(resume=True), r"resume=True needs a checkpoint_dir"),
        (dict(val_fraction=0.1, val_data=np.zeros((5, 2))), r"not both"),
        (dict(val_data=np.zeros((5, 3))), r"validation data has 3 columns but training data has 2"),
        (dict(val_data=np.full((5, 2), np.nan)), r"validation data contains NaN or inf in 5 rows"),
        (dict(key=None), r"key must be a PRNG key"),
        (dict(max_seconds=0), r"max_seconds must be a positive number of seconds or None, got 0"),
        (dict(max_seconds="1m"), r"max_seconds must be a positive number"),
    ],
)
def test_bad_hyperparameters_raise(override, match):
    with pytest.raises(ValueError, match=match):
        fit(mean_loss, {"m": jnp.zeros(2)}, np.zeros((20, 2)), **dict(GOOD, **override))


def nonfinite_rows():
    data = np.zeros((10, 2))
    data[1, 0] = np.nan
    data[4, 1] = np.inf
    data[7] = -np.inf
    return data


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros(10), r"training data must be a 2-D array of shape \(n, d\), got shape \(10,\)"),
        (np.zeros((2, 3, 4)), r"must be a 2-D array"),
        (np.zeros((0, 2)), r"training data is empty: shape \(0, 2\)"),
        (np.zeros((5, 0)), r"training data is empty"),
        (nonfinite_rows(), r"training data contains NaN or inf in 3 rows"),
        (np.array([["a", "b"]]), r"training data must be numeric"),
    ],
)
def test_bad_data_raises(data, match):
    with pytest.raises(ValueError, match=match):
        fit(mean_loss, {"m": jnp.zeros(2)}, data, **dict(GOOD, batch_size=1))


def test_bad_params_and_loss_raise():
    with pytest.raises(ValueError, match="initial params contain NaN or inf"):
        fit(mean_loss, {"m": jnp.array([0.0, jnp.nan])}, np.zeros((20, 2)), **GOOD)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        fit(lambda p, b, k: b - p["m"], {"m": jnp.zeros(2)}, np.zeros((20, 2)), **GOOD)


# ---------------------------------------------------------------------------
# Every trainer kind through the one driver.
# ---------------------------------------------------------------------------


def _trainers():
    from genlearn import energy, gan
    from genlearn.flows import realnvp
    from genlearn.losses import nll
    from genlearn.train import annealed_trainer, gradient_trainer

    flow, ebm = realnvp(2, num_layers=1, hidden=(8,)), energy.mlp_energy(2, (8,))
    gen = gan.generator(2, 2, (8,))
    opt = optax.adam(1e-2)
    return {
        "mle": (gradient_trainer(nll(flow), opt), flow.init(jax.random.key(0))),
        "cd": (gradient_trainer(energy.contrastive_divergence(ebm, k=2), opt), ebm.init(jax.random.key(0))),
        "dsm": (gradient_trainer(energy.denoising_score_matching(ebm, 0.1), opt), ebm.init(jax.random.key(0))),
        "pcd": (energy.persistent_contrastive_divergence(ebm, opt, buffer_size=32, k=2), ebm.init(jax.random.key(0))),
        "minmax": (gan.minmax(gen, gan.critic(2, (8,)), gan.objective("wgan-gp"), generator_optimizer=opt,
                              critic_optimizer=opt, critic_steps=3, batch_size=8), None),
        "weak": (gan.weak_generator(gen, gan.weak_loss("mmd"), optimizer=opt, batch_size=8), None),
        "annealed": (annealed_trainer(lambda p, b, k, w: nll(flow)(p, b, k) + w * sum(
            jnp.sum(v**2) for v in jax.tree_util.tree_leaves(p)), opt, optax.linear_schedule(0.0, 1.0, 4)),
            flow.init(jax.random.key(0))),
    }


@pytest.mark.parametrize("kind", ["mle", "cd", "dsm", "pcd", "minmax", "weak", "annealed"])
def test_every_trainer_resumes_bit_identically(kind, tmp_path):
    from genlearn.train import run_trainer

    trainer, params = _trainers()[kind]
    data = np.asarray(jax.random.normal(jax.random.key(1), (60, 2)), np.float32)
    kwargs = dict(batch_size=8, key=jax.random.key(2), val_fraction=0.2, eval_every=2, progress=False)
    straight = run_trainer(trainer, params, data, steps=6, **kwargs)
    directory = tmp_path / "ck"
    first = run_trainer(trainer, params, data, steps=4, checkpoint_dir=directory, checkpoint_every=2, **kwargs)
    resumed = run_trainer(trainer, params, data, steps=6, checkpoint_dir=directory, checkpoint_every=2,
                          resume=True, **kwargs)
    assert first.step == 4 and straight.step == resumed.step == 6
    assert straight.stop_reason == resumed.stop_reason == "steps"
    tree_equal(resumed.state, straight.state)
    tree_equal(resumed.params, straight.params)
    history_equal(resumed.history, straight.history)
    assert (resumed.best_step, resumed.best_val_loss) == (straight.best_step, straight.best_val_loss)
    assert np.isfinite(straight.history["train_loss"]).all() and not straight.history["nonfinite"].any()
    # validation only for trainers with a loss (the gradient ones)
    assert (straight.best_step is None) == (trainer.loss is None)
    moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), straight.params, trainer.params(
            trainer.init(jax.random.fold_in(jax.random.key(2), 4), params))))
    assert max(moved) > 0  # training did something


def test_annealed_trainer_weights_the_loss_on_its_schedule_and_validates_at_the_final_weight():
    """loss = w * c under SGD(1): each step moves c by -w_t, w_t = schedule(t) from the state's step count."""
    from genlearn.train import AnnealedState, annealed_trainer, run_trainer

    trainer = annealed_trainer(lambda p, b, k, w: w * p["c"] + 0.0 * jnp.sum(b), optax.sgd(1.0),
                               optax.linear_schedule(0.0, 1.0, 4), final_weight=2.0)
    state = trainer.init(KEY, {"c": jnp.zeros(())})
    assert isinstance(state, AnnealedState) and int(state.step) == 0
    step = jax.jit(trainer.step)
    for _ in range(6):
        state, info = step(state, jnp.zeros((2, 1)), KEY)
    assert int(state.step) == 6
    np.testing.assert_allclose(float(state.params["c"]), -(0.0 + 0.25 + 0.5 + 0.75 + 1.0 + 1.0), rtol=1e-6)
    assert float(trainer.loss({"c": jnp.ones(())}, jnp.zeros((2, 1)), KEY)) == 2.0  # at final_weight
    result = run_trainer(trainer, {"c": jnp.zeros(())}, np.zeros((16, 1), np.float32), steps=6, batch_size=2,
                         key=KEY, progress=False)
    np.testing.assert_allclose(float(result.params["c"]), -3.5, rtol=1e-6)
    np.testing.assert_allclose(result.history["train_loss"][:4], [0.0, 0.0, -0.125, -0.5625], atol=1e-6)
    with pytest.raises(TypeError, match="weight must be a schedule"):
        annealed_trainer(lambda p, b, k, w: 0.0, optax.sgd(1.0), 0.5)


def test_driver_rejects_a_step_without_the_info_protocol():
    from genlearn.train import Trainer, run_trainer

    bad = Trainer(lambda key, p: p, lambda s, b, k: (s, {"loss": 0.0}), lambda s: s)
    with pytest.raises(ValueError, match=r"info.loss and info.nonfinite"):
        run_trainer(bad, jnp.zeros(2), np.zeros((8, 2)), steps=1, batch_size=2, key=KEY, progress=False)
    with pytest.raises(ValueError, match="trainer must be a genlearn.train.Trainer"):
        run_trainer(object(), jnp.zeros(2), np.zeros((8, 2)), steps=1, batch_size=2, key=KEY, progress=False)


def test_all_finite_and_guarded_update():
    from genlearn.train import all_finite, guarded_update

    assert bool(all_finite({"a": jnp.ones(2), "i": jnp.arange(3)}, None))
    assert not bool(all_finite({"a": jnp.array([1.0, jnp.inf])}))
    opt = optax.sgd(1.0)
    params = {"c": jnp.ones(())}
    kept, state, ok = guarded_update(opt, jnp.float32(1.0), {"c": jnp.float32(jnp.nan)}, params, opt.init(params))
    assert not bool(ok) and float(kept["c"]) == 1.0
    new, _, ok = guarded_update(opt, jnp.float32(1.0), {"c": jnp.float32(2.0)}, params, opt.init(params),
                                project=lambda p: {"c": jnp.clip(p["c"], -0.5, 0.5)})
    assert bool(ok) and float(new["c"]) == -0.5


@pytest.mark.parametrize("bad", [False, True])
def test_guarded_update_branch_and_select_agree(bad):
    """On CPU the kept state is chosen by a branch (`_keep_branch`), elsewhere by `keep_if`'s select: the same
    params, Adam state and flag, under jit, vmap (where the branch becomes a select) and inside lax.scan."""
    from genlearn.train import step as st

    opt = optax.adam(0.1)
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda a: jnp.cos(a) + (jnp.nan if bad else 0.0), params)
    state = opt.init(params)
    hlo = jax.jit(lambda g, p, s: st.guarded_update(opt, jnp.float32(1.0), g, p, s)).lower(grads, params, state)
    assert jax.default_backend() != "cpu" or "conditional" in hlo.compile().as_text()

    def run(keep):
        def upd(p, s):
            with pytest.MonkeyPatch.context() as mp:  # guarded_update itself, its choice made by ``keep``
                mp.setattr(st, "_keep", keep)
                return st.guarded_update(opt, jnp.float32(1.0), grads, p, s)

        one = jax.jit(upd)(params, state)
        batched = jax.vmap(upd, in_axes=(0, None))(jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params),
                                                    state)
        scanned = jax.lax.scan(lambda c, _: (upd(*c)[:2], None), (params, state), None, length=3)[0]
        return one, batched, scanned

    # equal up to XLA fusing Adam's arithmetic differently around a branch than around a select (1 ulp)
    for a, b in zip(run(st._keep_branch), run(st.keep_if)):
        chex.assert_trees_all_close(a, b, rtol=1e-6, atol=0)
    got = st.guarded_update(opt, jnp.float32(1.0), grads, params, state)
    chex.assert_trees_all_close(got, run(st.keep_if)[0], rtol=1e-6, atol=0)
    assert bool(got[2]) is (not bad)


# ---------------------------------------------------------------------------
# The host chunk loop (convolutions on CPU).
# ---------------------------------------------------------------------------


def conv_loss(params, batch, key=None):
    """A one-layer convolution of 4x4 'images' (the rows), least squares to zero."""
    x = batch.reshape(-1, 4, 4, 1)
    y = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean((y - 1.0) ** 2)


def test_host_chunk_loop_matches_the_scan_guards_and_resumes_bit_identically(tmp_path):
    data = regression_data()
    scan = fit(noisy_regression_loss, regression_params(), data, steps=120, chunk_loop="scan", **RESUME_KWARGS)
    host = fit(noisy_regression_loss, regression_params(), data, steps=120, chunk_loop="host", **RESUME_KWARGS)
    for name in ("w", "b"):
        np.testing.assert_allclose(host.params[name], scan.params[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host.history["train_loss"], scan.history["train_loss"], rtol=1e-5, atol=1e-6)
    assert (host.step, host.best_step, host.stop_reason) == (scan.step, scan.best_step, scan.stop_reason)
    first = fit(noisy_regression_loss, regression_params(), data, steps=100, chunk_loop="host",
                checkpoint_dir=tmp_path / "ck", checkpoint_every=50, **RESUME_KWARGS)
    assert first.step == 100
    resumed = fit(noisy_regression_loss, regression_params(), data, steps=120, chunk_loop="host",
                  checkpoint_dir=tmp_path / "ck", checkpoint_every=50, resume=True, **RESUME_KWARGS)
    assert_same_result(resumed, host)

    def bad(params, batch, key):
        return jnp.where(params["c"] >= 5.0, jnp.nan, -params["c"])

    with pytest.warns(RuntimeWarning, match=r"at step\(s\) \[5, 6, 7\]"):
        result = fit(bad, {"c": jnp.zeros(())}, np.zeros((4, 1)), optimizer=optax.sgd(1.0), steps=100,
                     batch_size=2, key=KEY, max_nonfinite=3, progress=False, chunk_loop="host")
    assert result.stop_reason == "nonfinite" and result.step == 8 and float(result.params["c"]) == 5.0


def test_auto_chunk_loop_runs_convolutions_on_cpu_step_by_step():
    from genlearn.train.driver import _chunk_loop
    from genlearn.train.trainer import gradient_trainer

    batch = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    conv = gradient_trainer(conv_loss, optax.adam(1e-2))
    conv_state = conv.init(KEY, {"k": jnp.zeros((3, 3, 1, 1))})
    dense = gradient_trainer(regression_loss, optax.adam(1e-2))
    dense_state = dense.init(KEY, regression_params())
    cpu = jax.default_backend() == "cpu"
    assert _chunk_loop("auto", conv, conv_state, batch, KEY) == ("host" if cpu else "scan")
    assert _chunk_loop("auto", dense, dense_state, jax.ShapeDtypeStruct((8, 3), jnp.float32), KEY) == "scan"
    assert _chunk_loop("scan", conv, conv_state, batch, KEY) == "scan"
    with pytest.raises(ValueError, match="chunk_loop must be 'auto', 'scan' or 'host', got 'python'"):
        _chunk_loop("python", conv, conv_state, batch, KEY)
    data = np.asarray(jax.random.normal(KEY, (64, 16)), np.float32)
    runs = [fit(conv_loss, {"k": jnp.zeros((3, 3, 1, 1))}, data, optimizer=optax.adam(1e-2), steps=30, batch_size=8,
                key=KEY, eval_every=10, progress=False, chunk_loop=loop) for loop in ("auto", "scan")]
    np.testing.assert_allclose(runs[0].params["k"], runs[1].params["k"], rtol=1e-5, atol=1e-6)
    assert float(conv_loss(runs[0].params, data)) < float(conv_loss({"k": jnp.zeros((3, 3, 1, 1))}, data))
