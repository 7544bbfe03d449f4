"""Histogram estimator: exact normalisation, numpy.histogramdd reference, bad input."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genlearn.classical import CV_BINS, MAX_CELLS, histogram
from genlearn.data import two_moons


def _moons(n=2000, seed=0):
    return np.asarray(two_moons(jax.random.PRNGKey(seed), n), np.float64)


@given(
    bins=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    n=st.integers(1, 300),
    seed=st.integers(0, 10_000),
    alpha=st.sampled_from([0.0, 0.5]),
)
def test_masses_sum_to_one(bins, n, seed, alpha):
    with jax.enable_x64(True):
        x = np.random.default_rng(seed).standard_t(3, size=(n, len(bins)))
        model = histogram(bins, pseudocount=alpha)
        params = model.fit(None, x)
        masses = np.asarray(model.cell_masses(params))
        assert masses.shape == (int(np.prod(bins)),)
        np.testing.assert_allclose(masses.sum(), 1.0, rtol=1e-12)
        # The box's corners (the data's min and max, numpy's closed last cell) are inside.
        corners = np.stack([x.min(0), x.max(0)])
        assert np.all(np.isfinite(np.asarray(model.log_prob(params, corners))))


def test_nll_matches_numpy_histogramdd():
    with jax.enable_x64(True):
        train, test = _moons(2000, 0), _moons(1000, 1)
        bins = (12, 7)
        model = histogram(bins)
        params = model.fit(jax.random.PRNGKey(0), train)
        counts, edges = np.histogramdd(train, bins=bins)
        dens = counts / (len(train) * np.prod([e[1] - e[0] for e in edges]))
        inside = np.all((test >= train.min(0)) & (test <= train.max(0)), axis=1)
        idx = [np.clip(np.searchsorted(e, test[:, j], side="right") - 1, 0, len(e) - 2) for j, e in enumerate(edges)]
        ref = dens[idx[0], idx[1]]
        lp = np.asarray(model.log_prob(params, test))
        keep = inside & (ref > 0)
        assert keep.sum() > 900
        np.testing.assert_allclose(lp[keep], np.log(ref[keep]), rtol=1e-12)
        assert np.all(np.isneginf(lp[~keep]))
        np.testing.assert_allclose(-lp[keep].mean(), -np.log(ref[keep]).mean(), rtol=1e-12)
        # Training NLL: every training point lies in a non-empty cell.
        counts_at = counts[tuple(np.clip(np.searchsorted(e, train[:, j], side="right") - 1, 0, len(e) - 2) for j, e in enumerate(edges))]
        np.testing.assert_allclose(
            np.asarray(model.log_prob(params, train)),
            np.log(counts_at / (len(train) * np.prod([e[1] - e[0] for e in edges]))),
            rtol=1e-12,
        )


def test_bin_width_range_floor_and_sample():
    with jax.enable_x64(True):
        train = _moons(1000, 2)
        model = histogram(bin_width=0.25, range=[(-1.5, 2.5), (-1.0, 1.5)], floor=1e-4)
        params = model.fit(None, train)
        np.testing.assert_allclose(np.asarray(params["width"]), [0.25, 0.25])
        np.testing.assert_array_equal(np.asarray(params["num_bins"]), [16, 10])
        far = np.array([[10.0, 10.0], [-9.0, 0.0]])
        np.testing.assert_allclose(np.asarray(model.log_prob(params, far)), np.log(1e-4))
        x = np.asarray(model.sample(params, jax.random.PRNGKey(3), 4000))
        assert x.shape == (4000, 2)
        # Samples land only in cells with positive mass, and match the cell masses.
        assert np.all(np.asarray(histogram(bin_width=0.25, range=[(-1.5, 2.5), (-1.0, 1.5)]).log_prob(params, x)) > -np.inf)
        counts, _ = np.histogramdd(x, bins=[16, 10], range=[(-1.5, 2.5), (-1.0, 1.5)])
        masses = np.asarray(model.cell_masses(params)).reshape(16, 10)
        assert np.abs(counts / 4000 - masses).max() < 0.02


def test_bad_input():
    x = _moons(100)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        histogram(0)
    with pytest.raises(ValueError, match="bins must be >= 1"):
        histogram([3, 0])
    with pytest.raises(ValueError, match="bins must be an int >= 1, one per axis, or 'cv', got 'auto'"):
        histogram("auto")
    with pytest.raises(ValueError, match=r"even 4\^13 cells exceed MAX_CELLS"):
        histogram("cv").fit(None, np.random.default_rng(0).normal(size=(50, 13)))
    with pytest.raises(ValueError, match="bin_width must be finite and > 0"):
        histogram(bin_width=-0.1)
    with pytest.raises(ValueError, match="floor must be finite and > 0"):
        histogram(floor=0.0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        histogram(5).fit(None, bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        histogram(5).fit(None, bad)
    model = histogram(5)
    params = model.fit(None, x)
    with pytest.raises(ValueError, match="model has dim 2 but the query has dim 3"):
        model.log_prob(params, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="exceed MAX_CELLS"):
        histogram(10).fit(None, np.random.default_rng(0).normal(size=(50, 8)))
    with pytest.raises(ValueError, match="low < high"):
        histogram(5, range=[(0.0, 0.0), (0.0, 1.0)]).fit(None, x)
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(params, jax.random.PRNGKey(0), 0)
    assert MAX_CELLS == 2**24


def test_cv_bins_maximise_the_brute_force_leave_one_out_likelihood():
    """bins="cv" picks the count whose histogram, refitted without each point in turn, scores the
    left-out points best (checked against refits with numpy.histogramdd on a small set)."""
    x = _moons(60, seed=3)
    lo, hi = x.min(0), x.max(0)
    alpha = 0.5

    def loo(b):
        total = 0.0
        for i in range(len(x)):
            rest = np.delete(x, i, axis=0)
            counts, edges = np.histogramdd(rest, bins=b, range=list(zip(lo, hi)))
            cell = tuple(min(int(np.searchsorted(e, v, side="right")) - 1, b - 1) for e, v in zip(edges, x[i]))
            vol = np.prod((hi - lo) / b)
            total += np.log((counts[cell] + alpha) / ((len(rest) + alpha * b**2) * vol))
        return total / len(x)

    scores = {b: loo(b) for b in CV_BINS if b <= 25}
    params = histogram("cv", pseudocount=alpha).fit(None, x)
    assert int(params["num_bins"][0]) == max(scores, key=scores.get), scores


def test_cv_bins_resolve_sharp_modes_that_a_fixed_count_blurs():
    """On a ring of 8 narrow Gaussians the cross-validated histogram is >= 1 nat better held out than 40 bins."""
    from genlearn.data import load_dataset

    ds = load_dataset("ring8", n_train=5000, n_test=2000)
    lo, hi = ds.train.min(0), ds.train.max(0)
    box = list(zip(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)))  # as genlearn fit histogram pads it
    models = {b: histogram(b, range=box, pseudocount=0.01) for b in ("cv", 40)}
    nll = {b: -float(np.mean(np.asarray(m.log_prob(m.fit(None, ds.train), ds.test)))) for b, m in models.items()}
    assert nll["cv"] < nll[40] - 1.0, nll
