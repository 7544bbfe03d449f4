"""The shipped digits feature network, IS and FID-style scores, likelihood reporting, evaluate()."""

import functools
import json
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from genlearn.core import logit_box
from genlearn.data import digits_split_indices, load_digits_split, ring8, ring8_centers, uniform_dequantize
from genlearn.metrics import (
    DIGITS_WEIGHTS_PATH,
    digits_classifier_init,
    digits_features,
    digits_fid,
    evaluate,
    inception_score,
    load_digits_feature_net,
    log_likelihood_report,
)


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_split(0)
    _, te_idx = digits_split_indices(0)
    return train, test, load_digits().target[te_idx]


@pytest.fixture(scope="module")
def net():
    return load_digits_feature_net()


def test_weights_file_is_small_msgpack_and_accurate(digits, net):
    assert os.path.getsize(DIGITS_WEIGHTS_PATH) < 1_000_000
    with open(DIGITS_WEIGHTS_PATH, "rb") as fh:
        raw = fh.read()
    assert not raw.startswith(b"\x80")  # not a pickle stream
    params = flax.serialization.from_bytes(digits_classifier_init(jax.random.PRNGKey(1)), raw)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(net.params)
    _, test, labels = digits
    acc = np.mean(np.argmax(np.asarray(net.probs(jnp.asarray(test))), axis=1) == labels)
    assert acc >= 0.97
    assert digits_features(test[:5], net).shape == (5, 64)


def test_inception_score_real_beats_noise_and_collapse(digits, net):
    train, test, labels = digits
    is_test = inception_score(test, net)
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 16, size=test.shape)
    collapsed = test[labels == 3]
    assert 8.5 < is_test <= 10.0
    assert inception_score(noise, net) < is_test
    assert 1.0 <= inception_score(collapsed, net) < 1.5
    assert inception_score(test, net, num_splits=3) <= 10.0


def test_digits_fid_real_close_noise_and_collapse_far(digits, net):
    train, test, labels = digits
    fid_real = digits_fid(test, train, net)
    rng = np.random.default_rng(0)
    fid_noise = digits_fid(rng.uniform(0, 16, size=test.shape), train, net)
    fid_collapsed = digits_fid(test[labels == 3], train, net)
    assert fid_real < 0.1 * fid_noise
    assert fid_real < 0.1 * fid_collapsed


def test_sample_metrics_of_dequantized_samples_are_those_of_their_images(digits):
    # a density model of pixels samples y = x + u; its images are floor(y). Comparing y itself with integer
    # images shifts every pixel by half a level on average, which costs the digits' own training images
    # more than one FID unit (1.59 -> 2.73).
    from genlearn.data import load_dataset
    from genlearn.runs import sample_metrics

    ds = load_dataset("digits")
    train = np.asarray(ds.train, np.float64)
    y = np.asarray(uniform_dequantize(jax.random.PRNGKey(0), jnp.asarray(train)), np.float64)
    as_images = sample_metrics(y, ds, dequantized=True)
    reference = sample_metrics(train, ds)
    assert as_images["fid_features"] == pytest.approx(reference["fid_features"], rel=1e-9)
    assert as_images["is_samples"] == pytest.approx(reference["is_samples"], rel=1e-9)
    assert reference["fid_features"] < 2.0 < sample_metrics(y, ds)["fid_features"]
    # toys have no levels: the flag changes nothing
    toy = load_dataset("ring8")
    xs = np.asarray(toy.test, np.float64)
    assert sample_metrics(xs, toy, dequantized=True) == sample_metrics(xs, toy)


def test_feature_bad_inputs(net):
    with pytest.raises(ValueError, match=r"expected shape \(n, 64\)"):
        inception_score(np.zeros((4, 10)), net)
    with pytest.raises(ValueError, match="at least 2 samples"):
        inception_score(np.zeros((1, 64)), net)
    with pytest.raises(ValueError, match="NaN or inf"):
        digits_fid(np.full((4, 64), np.nan), np.zeros((4, 64)), net)
    with pytest.raises(FileNotFoundError, match="train_feature_net"):
        load_digits_feature_net("/nonexistent/weights.msgpack")


def _std_normal_log_prob(z):
    return -0.5 * jnp.sum(z**2, axis=1) - 0.5 * z.shape[1] * jnp.log(2 * jnp.pi)


def test_log_likelihood_report_nats_and_bits_per_dim():
    x = np.random.default_rng(0).normal(size=(300, 4))
    rep = log_likelihood_report(_std_normal_log_prob, x, batch_size=64)
    ref = np.mean(0.5 * (x.astype(np.float32).astype(np.float64) ** 2).sum(1) + 2 * np.log(2 * np.pi))
    assert rep.nll_nats == pytest.approx(ref, rel=1e-5)
    assert rep.bits_per_dim == pytest.approx(ref / (4 * np.log(2)), rel=1e-5)
    assert rep.num_examples == 300 and rep.dim == 4


def test_log_likelihood_report_dequantized_logit_bookkeeping(digits):
    train, _, _ = digits
    x = train[:50]
    key = jax.random.PRNGKey(0)
    outer = logit_box(64, upper=17.0)
    rep = log_likelihood_report(_std_normal_log_prob, x, key=key, dequantize=True, outer=outer)
    # by hand: y = x + u, z = logit(alpha + (1 - 2 alpha) y / 17), log p(y) = log N(z) + log|dz/dy|
    from genlearn.data import uniform_dequantize

    y = np.asarray(uniform_dequantize(key, jnp.asarray(x)), np.float64)
    alpha = 0.05
    p = alpha + (1 - 2 * alpha) * y / 17.0
    z = np.log(p) - np.log1p(-p)
    log_det = np.sum(np.log((1 - 2 * alpha) / 17.0) - np.log(p) - np.log1p(-p), axis=1)
    lp = -0.5 * (z**2).sum(1) - 32 * np.log(2 * np.pi) + log_det
    assert rep.nll_nats == pytest.approx(-lp.mean(), rel=1e-5)
    assert rep.dequantized
    with pytest.raises(ValueError, match="needs a PRNG key"):
        log_likelihood_report(_std_normal_log_prob, x, dequantize=True)
    with pytest.raises(ValueError, match="non-finite"):
        log_likelihood_report(lambda z: jnp.full(z.shape[0], jnp.nan), x)
    with pytest.raises(ValueError, match="shape"):
        log_likelihood_report(lambda z: z, x)


def test_evaluate_ring8_and_digits(digits):
    x = np.asarray(ring8(jax.random.PRNGKey(1), 300))
    y = np.asarray(ring8(jax.random.PRNGKey(2), 400))
    out = evaluate(x, y, key=jax.random.PRNGKey(0), centers=ring8_centers(), std=0.02, max_exact=200,
                   num_permutations=50, log_prob=functools.partial(_std_normal_log_prob))
    for key in ["w2_exact", "w2_exact_num_samples", "sliced_w2", "sinkhorn_divergence", "frechet_distance",
                "mmd2_unbiased", "mmd2_biased", "mmd_p_value", "energy_distance", "precision", "recall",
                "density", "coverage", "modes_covered", "high_quality_fraction", "mode_kl", "nll_nats",
                "bits_per_dim"]:
        assert key in out and isinstance(out[key], float) and np.isfinite(out[key]), key
    assert out["w2_exact_num_samples"] == 200.0 and out["modes_covered"] == 8.0
    json.dumps(out)
    train, test, _ = digits
    out = evaluate(test[:150], train[:200], key=jax.random.PRNGKey(0), feature_net="digits",
                   groups=("features", "frechet"))
    assert {"fid_features", "is_samples", "is_reference", "kid_mean", "kid_std", "frechet_distance"} <= set(out)
    assert "w2_exact" not in out
    with pytest.raises(ValueError, match="unknown metric groups"):
        evaluate(x, y, key=jax.random.PRNGKey(0), groups=("fid",))
    with pytest.raises(ValueError, match="feature_net expects 64-d"):
        evaluate(x, y, key=jax.random.PRNGKey(0), feature_net="digits")
    with pytest.raises(ValueError, match="both centers and std"):
        evaluate(x, y, key=jax.random.PRNGKey(0), centers=ring8_centers())
    with pytest.raises(ValueError, match="dimension mismatch"):
        evaluate(x, train[:10], key=jax.random.PRNGKey(0))
