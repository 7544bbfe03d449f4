"""PNG figures for runs: samples, 2-D densities, digit grids and loss curves (matplotlib, Agg).

A run's figures are one-panel uses of the panel functions that ``genlearn compare`` uses for many models.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

__all__ = ["plot_digit_grid", "plot_loss", "plot_sample_panels", "plot_density_panels", "plot_digit_panels"]


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


def plot_loss(history: dict, path: str, ylabel: str = "loss") -> None:
    """Training loss (moving average) and validation loss against the step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    train = np.asarray(history.get("train_loss", []), dtype=float)
    if train.size:
        w = max(1, train.size // 100)
        smooth = np.convolve(np.nan_to_num(train, nan=np.nanmean(train)), np.ones(w) / w, mode="valid")
        ax.plot(np.arange(smooth.size) + w - 1, smooth, label="train (moving average)")
    if len(history.get("val_loss", [])):
        ax.plot(history["val_step"], history["val_loss"], "o-", ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


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


def plot_density_panels(panels: list[tuple[str, Callable[[np.ndarray], np.ndarray]]], data: np.ndarray,
                        path: str, resolution: int = 120) -> None:
    """One density heat map per model with a density (2-D)."""
    fig, axes = _grid_axes(len(panels))
    gx, gy, grid = _density_grid(data, resolution, 0.2)
    for ax, (name, log_prob) in zip(axes, panels):
        dens = np.exp(np.asarray(log_prob(grid), dtype=float)).reshape(resolution, resolution)
        ax.imshow(np.nan_to_num(dens), origin="lower", extent=(gx[0], gx[-1], gy[0], gy[-1]), cmap="viridis",
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
