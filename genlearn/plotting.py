"""PNG figures for runs: samples, 2-D densities, digit grids and loss curves (matplotlib, Agg).

A run's figures are one-panel uses of the panel functions that ``genlearn compare`` uses for many models.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import numpy as np

__all__ = ["plot_digit_grid", "plot_loss", "robust_ylim", "plot_sample_panels", "plot_density_panels",
           "grid_log_density", "plot_digit_panels"]

DENSITY_RESOLUTION = 120  # density.png's grid points per axis unless a family asks for fewer
LOG_RANGE = 30.0  # nats of log-density below the maximum that a coarse grid's log image shows


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _density_grid(data: np.ndarray, resolution: int, padding: float):
    """Axes ``gx, gy`` and the ``(resolution**2, 2)`` float32 grid covering the data's 0.5-99.5 % box."""
    lo, hi = np.percentile(data, [0.5, 99.5], axis=0)
    pad = padding * (hi - lo)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    return gx, gy, np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)


def plot_digit_grid(samples: np.ndarray, path: str, levels: int = 17, title: str = "samples",
                    rows: int = 8, cols: int = 8) -> None:
    """A grid of 8x8 digit images; values are clipped to [0, levels)."""
    plt = _plt()
    n = min(rows * cols, samples.shape[0])
    side = int(round(np.sqrt(samples.shape[1])))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9))
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(np.clip(samples[i], 0, levels - 1).reshape(side, side), cmap="gray_r", vmin=0, vmax=levels - 1)
    fig.suptitle(title)
    _save(fig, path)


def robust_ylim(values, skip: float = 0.02, margin: float = 0.1, blocks: int = 100) -> tuple[float, float] | None:
    """``(lo, hi)`` covering the bulk of a loss curve, or None when it has no finite value.

    The curve's trend is the running median, over 5 blocks, of the medians of
    ``blocks`` consecutive blocks of steps (NaN and inf ignored): a burst
    shorter than about two blocks does not move it. The limits are the
    trend's extremes after the first ``skip`` fraction of steps, widened on
    each side by ``margin`` times their span or 4 robust standard deviations
    (1.4826 MAD) of the steps about their block's median, whichever is larger
    (``margin * max(|hi|, 1)`` for a constant curve). Early transients and
    spikes do not set the scale.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"robust_ylim: values must be 1-D, got shape {values.shape}")
    if not 0 <= skip < 1:
        raise ValueError(f"robust_ylim: skip must be in [0, 1), got {skip}")
    if not np.isfinite(values).any():
        return None
    size = max(1, values.size // blocks)
    num = -(-values.size // size)
    steps = np.full(num * size, np.nan)
    steps[: values.size] = np.where(np.isfinite(values), values, np.nan)
    steps = steps.reshape(num, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks and windows give NaN
        block = np.nanmedian(steps, axis=1)
        sigma = 1.4826 * np.nanmedian(np.abs(steps - block[:, None]))
        trend = np.nanmedian(np.lib.stride_tricks.sliding_window_view(np.pad(block, 2, constant_values=np.nan), 5),
                             axis=1)
    tail = trend[-(-int(skip * values.size) // size):]
    trend = tail if np.isfinite(tail).any() else trend
    lo, hi = np.nanmin(trend), np.nanmax(trend)
    pad = max(margin * (hi - lo), 4 * sigma) or margin * max(abs(hi), 1.0)
    return float(lo - pad), float(hi + pad)


def _windows(values: np.ndarray, w: int, reduce, max_points: int = 500):
    """``(steps, reduce(window))`` over trailing windows of ``w`` steps, at most ``max_points`` of them."""
    stride = max(1, -(-(values.size - w + 1) // max_points))
    windows = np.lib.stride_tricks.sliding_window_view(values, w)[::stride]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (rejected steps) give NaN
        return np.arange(windows.shape[0]) * stride + w - 1, reduce(windows, axis=1)


def _step_flags(history: dict, name: str, n: int) -> np.ndarray:
    flags = np.asarray(history.get(name, np.zeros(n, bool)))
    if flags.shape != (n,):
        raise ValueError(f"plot_loss: history[{name!r}] has shape {flags.shape}, train_loss has ({n},)")
    return np.nan_to_num(flags.astype(float)) != 0


def _plot_clipped(ax, x, y, lo, hi, **kwargs) -> tuple[list, int]:
    """Plot ``y`` clipped to ``[lo, hi]``, with a triangle on the axis edge at each value beyond it.

    Returns the line's handles and the number of values beyond the range."""
    handles = ax.plot(x, np.clip(y, lo, hi), **kwargs)
    for mask, edge, marker in ((y > hi, 1.0, "^"), (y < lo, 0.0, "v")):
        ax.plot(x[mask], np.full(mask.sum(), edge), marker, ms=4, color="tab:purple",
                transform=ax.get_xaxis_transform(), clip_on=False)
    return handles, int(np.sum((y > hi) | (y < lo)))


def plot_loss(history: dict, path: str, ylabel: str = "loss"):
    """Training loss against the step, with the validation loss, on a robust y-range; returns the Figure.

    ``history`` is a driver history: ``"train_loss"`` (NaN at rejected
    updates), optionally ``"nonfinite"`` and ``"clipped"`` (bools per step)
    and ``"val_step"``/``"val_loss"``. Drawn: the per-step loss (faint), its
    running median over ``len // 100`` steps (one huge step does not smear
    over the window) and the validation points, all within the union of
    :func:`robust_ylim` of the training and of the validation losses; values
    beyond it run along the axis edge and are marked by triangles there. Rejected steps are red ticks
    along the bottom; the fraction of clipped steps per window is a thin
    series on a right axis. The legend counts off-scale, rejected and clipped
    steps.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(6, 3.6))
    train = np.asarray(history.get("train_loss", []), dtype=float)
    if train.ndim != 1:
        raise ValueError(f"plot_loss: history['train_loss'] must be 1-D, got shape {train.shape}")
    val_step = np.asarray(history.get("val_step", []), dtype=float)
    val = np.asarray(history.get("val_loss", []), dtype=float)
    if val.shape != val_step.shape:
        raise ValueError(f"plot_loss: val_loss has shape {val.shape}, val_step has {val_step.shape}")
    lims = [lim for lim in (robust_ylim(train), robust_ylim(val)) if lim is not None]
    lo, hi = (min(l for l, _ in lims), max(h for _, h in lims)) if lims else (-np.inf, np.inf)
    handles, off = [], 0
    if train.size:
        steps = np.arange(train.size)
        w = max(1, train.size // 100)
        line, off = _plot_clipped(ax, steps, train, lo, hi, lw=0.5, alpha=0.35, color="tab:blue",
                                  label="train (per step)")
        at, median = _windows(train, w, np.nanmedian)
        handles += line + ax.plot(at, np.clip(median, lo, hi), color="tab:blue",
                                  label=f"train (running median of {w})")
        rejected = _step_flags(history, "nonfinite", train.size) | np.isnan(train)
        if rejected.any():
            handles += ax.plot(steps[rejected], np.zeros(rejected.sum()), "|", ms=10, color="tab:red",
                               transform=ax.get_xaxis_transform(), clip_on=False,
                               label=f"rejected (non-finite): {rejected.sum()} steps")
        clipped = _step_flags(history, "clipped", train.size)
        if clipped.any():
            twin = ax.twinx()
            at, frac = _windows(clipped.astype(float), w, np.mean)
            handles += twin.plot(at, frac, lw=0.8, color="tab:orange",
                                 label=f"gradient clipped: {clipped.sum()} steps (fraction, right axis)")
            twin.set_ylim(0, 1.02)
            twin.set_ylabel("fraction clipped")
            ax.set_zorder(twin.get_zorder() + 1)  # the loss and legend above the fraction
            ax.patch.set_visible(False)
    if val.size:
        line, count = _plot_clipped(ax, val_step, val, lo, hi, marker="o", ms=3, color="tab:green",
                                    label="validation")
        handles, off = handles + line, off + count
    if off:
        handles.append(Line2D([], [], ls="none", marker="^", color="tab:purple",
                              label=f"off-scale (at the edge): {off} points"))
    if lims:
        ax.set_ylim(lo, hi)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if handles:
        ax.legend(handles=handles, fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return fig


def _grid_axes(count: int, size: float = 3.2, max_cols: int = 4):
    plt = _plt()
    cols = min(max_cols, max(count, 1))
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.axis("off")
    return fig, axes.ravel()


def plot_sample_panels(panels: list[tuple[str, np.ndarray]], data: np.ndarray, path: str) -> None:
    """One scatter per model (2-D), the data first, on common axes limits."""
    panels = [("data", data)] + list(panels)
    fig, axes = _grid_axes(len(panels))
    lo, hi = np.percentile(data, [0.5, 99.5], axis=0)
    pad = 0.2 * (hi - lo)
    for ax, (name, pts) in zip(axes, panels):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.4, color="k" if name == "data" else None)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def grid_log_density(log_prob: Callable[[np.ndarray], np.ndarray], data: np.ndarray,
                     resolution: int = DENSITY_RESOLUTION) -> np.ndarray:
    """``log_prob`` on the ``(resolution**2, 2)`` grid of :func:`plot_density_panels` for ``data``
    (its 0.5-99.5 % box, padded by 20 %), as float64; pass it as a panel to plot it again."""
    return np.asarray(log_prob(_density_grid(data, resolution, 0.2)[2]), dtype=float)


def plot_density_panels(panels: list[tuple[str, Callable[[np.ndarray], np.ndarray] | np.ndarray]],
                        data: np.ndarray, path: str, resolution: int = DENSITY_RESOLUTION) -> None:
    """One density heat map per model with a density (2-D).

    Each panel is ``(title, log_prob)``, a batched log-density evaluated on the grid
    covering ``data``, or ``(title, values)``: those log-densities already evaluated
    (:func:`grid_log_density` with the same ``data``, at ``resolution`` or any other
    number of points per axis: e.g. a run's density.npz of a family with a coarser
    ``density_resolution``). The density is drawn on a linear scale; a panel on a
    grid coarser than ``DENSITY_RESOLUTION`` draws the log-density (its top
    ``LOG_RANGE`` nats, titled "(log)"): its pixels miss the peaks of sharp modes,
    which a linear image then shows as a few bright pixels.
    """
    fig, axes = _grid_axes(len(panels))
    gx, gy, grid = _density_grid(data, resolution, 0.2)
    for ax, (name, log_prob) in zip(axes, panels):
        values = np.asarray(log_prob(grid) if callable(log_prob) else log_prob, dtype=float)
        side = math.isqrt(values.size)  # values evaluated on a coarser grid of the same box keep their own
        if side * side != values.size or (callable(log_prob) and side != resolution):
            raise ValueError(f"plot_density_panels: panel {name!r} has {values.size} log-densities, "
                             f"the grid {resolution * resolution}")
        if side < DENSITY_RESOLUTION:  # a coarse grid's pixels miss sharp peaks: the log-density shows every mode
            top = np.nanmax(np.where(np.isfinite(values), values, np.nan))
            image = np.clip(np.nan_to_num(values, nan=top - LOG_RANGE, neginf=top - LOG_RANGE), top - LOG_RANGE, top)
            name = f"{name} (log)"
        else:
            image = np.nan_to_num(np.exp(values))
        ax.imshow(image.reshape(side, side), origin="lower", extent=(gx[0], gx[-1], gy[0], gy[-1]), cmap="viridis",
                  aspect="auto")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def plot_digit_panels(panels: list[tuple[str, np.ndarray]], path: str, levels: int = 17, per_side: int = 5) -> None:
    """A small grid of digit samples per model (8x8 images)."""
    fig, axes = _grid_axes(len(panels), size=2.6)
    for ax, (name, samples) in zip(axes, panels):
        samples = np.clip(np.asarray(samples)[: per_side * per_side], 0, levels - 1)
        side = int(round(np.sqrt(samples.shape[1])))
        tiles = np.zeros((per_side * (side + 1), per_side * (side + 1)))
        for i, s in enumerate(samples):
            r, c = divmod(i, per_side)
            tiles[r * (side + 1): r * (side + 1) + side, c * (side + 1): c * (side + 1) + side] = s.reshape(side, side)
        ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=levels - 1)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    _save(fig, path)
