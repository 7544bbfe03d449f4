"""MMD, the permutation test, energy distance and KID against float64 NumPy/SciPy references."""

import jax
import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.distance import cdist, pdist
from sklearn.metrics.pairwise import polynomial_kernel

from genlearn.metrics import (
    energy_distance,
    kernel_inception_distance,
    median_heuristic_bandwidth,
    mmd2,
    mmd_permutation_test,
)


def _mmd_ref(kxx, kyy, kxy, unbiased):
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def _gauss(a, b, h):
    return np.exp(-cdist(a, b, "sqeuclidean") / (2 * h * h))


def _pair(seed, n=150, m=110, d=6, shift=0.3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + shift


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("h", [0.5, 2.0])
def test_mmd2_gaussian_matches_numpy(unbiased, h):
    x, y = _pair(0)
    ref = _mmd_ref(_gauss(x, x, h), _gauss(y, y, h), _gauss(x, y, h), unbiased)
    assert mmd2(x, y, h, unbiased) == pytest.approx(ref, rel=1e-6)
    # block size does not change the value
    assert mmd2(x, y, h, unbiased, block_size=17) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd2_polynomial_matches_sklearn_kernel(unbiased):
    x, y = _pair(1)
    kw = dict(degree=3, gamma=1 / 6, coef0=1)
    ref = _mmd_ref(polynomial_kernel(x, x, **kw), polynomial_kernel(y, y, **kw), polynomial_kernel(x, y, **kw),
                   unbiased)
    assert mmd2(x, y, unbiased=unbiased, kernel="polynomial") == pytest.approx(ref, rel=1e-6)


def test_median_heuristic_and_default_bandwidth():
    x, y = _pair(2)
    h = np.median(pdist(np.concatenate([x, y])))
    assert median_heuristic_bandwidth(x, y) == pytest.approx(h, rel=1e-9)
    ref = _mmd_ref(_gauss(x, x, h), _gauss(y, y, h), _gauss(x, y, h), True)
    assert mmd2(x, y) == pytest.approx(ref, rel=1e-6)


@given(st.integers(0, 2**31 - 1))
def test_mmd2_symmetric_and_biased_nonnegative(seed):
    x, y = _pair(seed, 30, 20, 3)
    assert mmd2(x, y, 1.0) == pytest.approx(mmd2(y, x, 1.0), rel=1e-9, abs=1e-12)
    assert mmd2(x, y, 1.0, unbiased=False) >= 0
    assert mmd2(x, x, 1.0, unbiased=False) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_matches_scipy_1d_and_numpy_nd():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(90, 1)), rng.normal(size=(70, 1)) * 2
    assert np.sqrt(energy_distance(a, b)) == pytest.approx(scipy.stats.energy_distance(a[:, 0], b[:, 0]), rel=1e-6)
    x, y = _pair(4)
    ref = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(ref, rel=1e-6)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-7)


def test_permutation_test_calibration_and_power():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(120, 2)), rng.normal(size=(100, 2))
    same = mmd_permutation_test(x, y, jax.random.PRNGKey(0), num_permutations=200)
    assert same.p_value > 0.05
    shifted = mmd_permutation_test(x, y + 0.8, jax.random.PRNGKey(0), num_permutations=200)
    assert shifted.p_value <= 1 / 201 + 1e-12
    assert shifted.mmd2 == pytest.approx(mmd2(x, y + 0.8, shifted.bandwidth), rel=1e-6)
    assert same.num_samples == (120, 100)


def test_kid_matches_reference_on_full_subset():
    x, y = _pair(6, 60, 60, 8)
    res = kernel_inception_distance(x, y, jax.random.PRNGKey(0), subset_size=60, num_subsets=3)
    kw = dict(degree=3, gamma=1 / 8, coef0=1)
    ref = _mmd_ref(polynomial_kernel(x, x, **kw), polynomial_kernel(y, y, **kw), polynomial_kernel(x, y, **kw), True)
    assert res.mean == pytest.approx(ref, rel=1e-6)  # a full-size subset is a permutation of the set
    assert res.std == pytest.approx(0.0, abs=1e-9 * abs(ref))


def test_kernel_bad_inputs():
    x, y = _pair(7, 10, 10, 2)
    with pytest.raises(ValueError, match="dimension mismatch"):
        mmd2(x, y[:, :1], 1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2(x[:1], y, 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        mmd2(x, np.where(y > 0, np.nan, y), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2(x, y, -1.0)
    with pytest.raises(ValueError, match="kernel"):
        mmd2(x, y, 1.0, kernel="laplace")
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd2(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="dimension mismatch"):
        energy_distance(x, y[:, :1])
    with pytest.raises(ValueError, match="num_permutations"):
        mmd_permutation_test(x, y, jax.random.PRNGKey(0), num_permutations=0)
