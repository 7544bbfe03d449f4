"""loss.png: a robust y-range, off-scale, rejected and clipped steps marked (hand-built histories, no training)."""

import numpy as np
import pytest

from genlearn.plotting import plot_loss, robust_ylim


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def _spiky(n=2000, seed=0):
    loss = 1.0 + 0.05 * np.random.default_rng(seed).standard_normal(n)
    loss[300] = 3000.0
    return loss


def test_robust_ylim_keeps_the_bulk_despite_a_spike_and_an_early_transient():
    loss = _spiky()
    loss[:20] = np.linspace(50.0, 2.0, 20)  # the first percent: a transient that does not set the scale
    lo, hi = robust_ylim(loss)
    assert 0.5 < lo < np.percentile(loss[20:], 1) and np.percentile(loss[20:], 99) < hi < 2.0
    burst = _spiky()
    burst[600:630:2] = 1500.0  # a burst over 1.5 % of the steps, like `genlearn fit realnvp --data moons --steps 3000`
    assert robust_ylim(burst)[1] < 2.0
    assert robust_ylim(np.full(10, 3.0)) == pytest.approx((2.7, 3.3))  # constant: +-10 % of the value
    assert robust_ylim([]) is None and robust_ylim([np.nan, np.inf]) is None
    with pytest.raises(ValueError, match="1-D"):
        robust_ylim(np.ones((2, 2)))


def test_a_spike_is_off_scale_and_does_not_flatten_the_curve(tmp_path):
    fig = plot_loss({"train_loss": _spiky()}, str(tmp_path / "loss.png"))
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi < 10 and lo > 0.5
    loss = _spiky()
    assert f"off-scale (at the edge): {np.sum((loss < lo) | (loss > hi))} points" in _legend(fig)
    top = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert 300 in top[0].get_xdata() and np.all(top[0].get_ydata() == 1.0)  # at the top edge (axes fraction)
    median = next(line for line in ax.get_lines() if line.get_label().startswith("train (running median"))
    assert np.nanmax(median.get_ydata()) < 1.2  # the running median does not smear the spike over its window


def test_rejected_and_clipped_steps_are_marked_and_counted(tmp_path):
    loss = _spiky()
    loss[[10, 500, 501]] = np.nan
    nonfinite = np.isnan(loss)
    clipped = np.zeros(loss.size, bool)
    clipped[:40] = True
    history = {"step": np.arange(loss.size), "train_loss": loss, "nonfinite": nonfinite, "clipped": clipped,
               "val_step": np.array([0, 1000, 2000]), "val_loss": np.array([1.1, 500.0, 1.0])}
    fig = plot_loss(history, str(tmp_path / "loss.png"), ylabel="NLL")
    legend = _legend(fig)
    assert "rejected (non-finite): 3 steps" in legend
    assert any(t.startswith("gradient clipped: 40 steps") for t in legend)
    lo, hi = fig.axes[0].get_ylim()
    off = np.sum((loss < lo) | (loss > hi)) + 1  # the training spike, noise beyond the margin, one validation point
    assert f"off-scale (at the edge): {off} points" in legend and hi < 10 and len(fig.axes) == 2 and fig.axes[1].get_ylim()[1] <= 1.02
    with pytest.raises(ValueError, match="clipped"):
        plot_loss({**history, "clipped": clipped[:-1]}, str(tmp_path / "bad.png"))


def test_a_validation_curve_away_from_the_training_loss_stays_in_range(tmp_path):
    history = {"train_loss": _spiky(), "val_step": np.arange(0, 2000, 100.0), "val_loss": np.full(20, 3.0)}
    fig = plot_loss(history, str(tmp_path / "loss.png"))
    lo, hi = fig.axes[0].get_ylim()
    assert lo < 0.9 and 3.0 < hi < 10


@pytest.mark.parametrize("history", [
    {},
    {"train_loss": np.array([]), "val_step": np.array([]), "val_loss": np.array([])},
    {"train_loss": np.full(50, np.nan), "nonfinite": np.ones(50, bool)},
    {"train_loss": np.array([2.0])},
    {"train_loss": -np.linspace(0.0, 5.0, 300), "val_step": np.array([100]), "val_loss": np.array([np.nan])},
], ids=["empty", "empty-arrays", "all-nan", "one-step", "negative-gan-like"])
def test_degenerate_histories_write_a_png(tmp_path, history):
    path = tmp_path / "run" / "loss.png"
    plot_loss(history, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_density_panels_take_a_callable_or_its_grid_values(tmp_path):
    """`grid_log_density` is the callable on the panel grid; a panel of those values plots the same
    figure (runs write them to density.npz for `genlearn compare`); values for another grid are refused."""
    from genlearn.plotting import grid_log_density, plot_density_panels

    data = np.random.default_rng(0).normal(size=(500, 2))

    def log_prob(g):
        return -0.5 * np.sum(np.asarray(g) ** 2, axis=1) - np.log(2 * np.pi)

    values = grid_log_density(log_prob, data, resolution=30)
    lo, hi = np.percentile(data, [0.5, 99.5], axis=0)
    corner = np.array([lo[0] - 0.2 * (hi - lo)[0], lo[1] - 0.2 * (hi - lo)[1]])
    assert values.shape == (900,) and values[0] == pytest.approx(log_prob(corner[None])[0], rel=1e-5)
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    plot_density_panels([("f", log_prob)], data, a, resolution=30)
    plot_density_panels([("f", values)], data, b, resolution=30)
    assert open(a, "rb").read() == open(b, "rb").read()
    # values of a coarser grid of the same box (a family's density_resolution) keep their own grid
    c = str(tmp_path / "c.png")
    plot_density_panels([("f", values)], data, c, resolution=40)
    assert open(a, "rb").read() == open(c, "rb").read()
    with pytest.raises(ValueError, match="panel 'f' has 899 log-densities, the grid 1600"):
        plot_density_panels([("f", values[:-1])], data, b, resolution=40)
