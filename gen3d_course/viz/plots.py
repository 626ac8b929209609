"""2D plots (matplotlib): image grids, training curves, 2D scatters.

Each function returns its Figure and closes nothing, so a notebook can still
adjust, save or re-display it. In Jupyter, end the call with `;` (or assign
it): a returned pyplot figure is otherwise shown twice, once as the cell's
value and once when the inline backend flushes open figures.
"""
import math

import matplotlib.pyplot as plt
import numpy as np

from .views3d import to_numpy


def _as_images(images):
    """(N, H, W), (N, H, W, C) or torch-style (N, C, H, W) -> list of imshow-ready arrays."""
    images = [to_numpy(im) for im in images]
    out = []
    for im in images:
        if im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[-1] not in (1, 3):
            im = np.moveaxis(im, 0, -1)  # channels-first, as torch stores images
        if im.ndim == 3 and im.shape[-1] == 1:
            im = im[..., 0]
        if im.ndim == 3 and im.dtype.kind == "f":
            im = np.clip(im, 0.0, 1.0)  # imshow would clip anyway, but warn for every image
        out.append(im)
    return out


def image_grid(images, nrow=None, titles=None, cmap="gray", figsize=None):
    """Show N images in a grid, `nrow` images per row (as torchvision's make_grid).

    Single-channel images use `cmap` with their own value range, which suits
    depth maps and masks; float RGB is clipped to [0, 1].
    """
    images = _as_images(images)
    ncol = nrow or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / ncol)
    fig, axes = plt.subplots(rows, ncol, squeeze=False,
                             figsize=figsize or (2.2 * ncol, 2.2 * rows + 0.3 * bool(titles)))
    for n, ax in enumerate(axes.flat):
        if n >= len(images):
            ax.remove()  # no empty frames: the figure holds exactly N axes
            continue
        ax.imshow(images[n], cmap=cmap if images[n].ndim == 2 else None)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[n]), fontsize=9)
    fig.tight_layout()
    return fig


def _ema(values, weight):
    """Exponential moving average, as TensorBoard smooths noisy losses."""
    out, acc = [], values[0]
    for v in values:
        acc = weight * acc + (1 - weight) * v
        out.append(acc)
    return out


def loss_curves(history, logy=False, smooth=0):
    """One line per key of `history` (name -> per-step values), x = step.

    `smooth` in [0, 1) is an exponential-moving-average weight; the smoothed
    curve replaces the raw one so that trends in noisy losses are readable.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in history.items():
        values = [float(v) for v in values]
        if smooth and values:
            values = _ema(values, smooth)
        ax.plot(np.arange(len(values)), values, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def scatter2d(points, labels=None, ax=None, title=None):
    """(N, 2) points, coloured by integer `labels` if given, with equal axes so
    distances in the plot are distances in the data (e.g. a 2D latent space)."""
    points = to_numpy(points).reshape(-1, 2)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=8)
    else:
        labels = to_numpy(labels).reshape(-1)
        for label in np.unique(labels):
            mask = labels == label
            ax.scatter(points[mask, 0], points[mask, 1], s=8, label=str(label))
        ax.legend(fontsize=8, markerscale=2)
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return ax.figure
