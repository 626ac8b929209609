"""Small 1D and 2D distributions where a generative model's success can be *counted*.

A mixture of well-separated Gaussians has a known set of modes, so "did the GAN cover the
modes?" becomes a number (``mode_statistics``) instead of an impression.
"""
from __future__ import annotations

import numpy as np
import torch


def ring_centers(k: int = 8, radius: float = 2.0) -> torch.Tensor:
    """(k, 2) centres evenly spaced on a circle."""
    angles = torch.arange(k, dtype=torch.float32) * (2 * np.pi / k)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def grid_centers(k: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """(k², 2) centres on a k × k grid centred at the origin."""
    axis = (torch.arange(k, dtype=torch.float32) - (k - 1) / 2) * spacing
    return torch.cartesian_prod(axis, axis)


def gaussian_mixture(n: int, centers: torch.Tensor, std: float = 0.05, seed: int = 0) -> torch.Tensor:
    """n samples (n, d) from an equal-weight mixture of isotropic Gaussians at ``centers``."""
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(len(centers), (n,), generator=g)
    return centers[which] + std * torch.randn(n, centers.shape[1], generator=g)


def ring_of_gaussians(n: int, k: int = 8, radius: float = 2.0, std: float = 0.05, seed: int = 0):
    """The classic mode-collapse test: k Gaussians on a ring."""
    return gaussian_mixture(n, ring_centers(k, radius), std, seed)


def grid_of_gaussians(n: int, k: int = 5, spacing: float = 2.0, std: float = 0.05, seed: int = 0):
    """k² Gaussians on a grid: harder than the ring because modes have many neighbours."""
    return gaussian_mixture(n, grid_centers(k, spacing), std, seed)


def swiss_roll(n: int, noise: float = 0.1, seed: int = 0) -> torch.Tensor:
    """(n, 2) points on a noisy spiral, scaled to about [-2, 2]²: one curved, connected mode."""
    g = torch.Generator().manual_seed(seed)
    t = 1.5 * np.pi * (1 + 2 * torch.rand(n, generator=g))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 7.0
    return points + noise * torch.randn(n, 2, generator=g)


def mixture_1d(n: int, means=(-2.0, 0.5, 2.5), stds=(0.4, 0.3, 0.5), weights=(0.3, 0.4, 0.3),
               seed: int = 0) -> torch.Tensor:
    """(n,) samples of a 1D Gaussian mixture (for inverse-CDF sampling and 1D GANs)."""
    weights = torch.as_tensor(weights, dtype=torch.float32)
    if (weights < 0).any() or not torch.isclose(weights.sum(), torch.tensor(1.0)):
        raise ValueError(f"mixture_1d: weights {weights.tolist()} must be non-negative and sum to 1.")
    g = torch.Generator().manual_seed(seed)
    which = torch.multinomial(weights, n, replacement=True, generator=g)
    means, stds = torch.as_tensor(means), torch.as_tensor(stds)
    return (means[which] + stds[which] * torch.randn(n, generator=g)).float()


def mode_statistics(samples: torch.Tensor, centers: torch.Tensor, std: float,
                    n_std: float = 3.0, min_count: int = 1) -> dict[str, float]:
    """How many modes a generator covers and how many of its samples are good.

    A sample is *high quality* if it lies within ``n_std``·std of its nearest centre; a mode is
    *covered* if at least ``min_count`` high-quality samples fall on it (Srivastava et al.,
    VEEGAN, 2017, use the same two numbers).
    """
    samples = torch.as_tensor(samples, dtype=torch.float32)
    if samples.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"mode_statistics: samples have shape {tuple(samples.shape)}; "
                         f"expected (N, {centers.shape[1]}).")
    distances = torch.cdist(samples, centers)
    nearest_distance, nearest = distances.min(dim=1)
    good = nearest_distance <= n_std * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "modes_total": len(centers),
        "high_quality": float(good.float().mean()),
    }
