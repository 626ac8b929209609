"""An unposed image collection for 3D-aware GANs: one category, random colours, random viewpoints.

What GRAF learns from is a pile of 2D photographs of one kind of object (cars, chairs, faces):
no two images need to show the same instance, no camera poses are given, no 3D. This module
makes such a collection offline: image n shows shape ``seed + n`` of a category of the shape
collection, painted one random colour (hue uniform, saturation and value bounded away from
grey and white so the object stands out from the white background), lit by a light fixed in
the world (so the shading is part of the object, the same from every side), and seen from a
camera drawn from ``render.patches.PoseDistribution`` (a cap of the sphere around the object).

The poses and colours are kept in the returned ``ImageCollection`` for *evaluation* (e.g.
comparing generated and real images at the same camera angles); a GRAF model never sees them,
it only knows the distribution p_ξ the cameras came from.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

from ..render.cameras import focal_from_fov
from ..render.patches import PoseDistribution
from ..render.sphere_tracing import render_rgba
from .shapes import CATEGORIES, make_shape

DEFAULT_FOV = 40.0
LIGHT = (0.4, 0.8, 0.6)  # world direction towards the light: above, front-right


@dataclass
class ImageCollection:
    """``images`` (N, 3, H, W) in [0, 1] composited on ``background``; ``alpha`` (N, H, W);
    ``poses`` (N, 4, 4) and ``angles`` (N, 2) (azimuth, elevation in degrees) of the cameras;
    ``colors`` (N, 3) the objects' albedos; ``seeds`` the shape seeds; ``focal`` in pixels."""

    images: torch.Tensor
    alpha: torch.Tensor
    poses: torch.Tensor
    angles: torch.Tensor
    colors: torch.Tensor
    seeds: list
    focal: float
    category: str
    poses_from: PoseDistribution
    background: tuple = (1.0, 1.0, 1.0)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def __getitem__(self, index) -> "ImageCollection":
        idx = torch.arange(len(self))[index]
        idx = idx.reshape(-1)
        return ImageCollection(self.images[idx], self.alpha[idx], self.poses[idx], self.angles[idx],
                               self.colors[idx], [self.seeds[i] for i in idx.tolist()], self.focal,
                               self.category, self.poses_from, self.background)


def random_colors(n: int, seed: int = 0, saturation=(0.45, 0.9), value=(0.55, 0.95)) -> np.ndarray:
    """(n, 3) RGB albedos: hue uniform, saturation and value uniform in the given ranges."""
    rng = np.random.default_rng([7, seed])
    hsv = np.stack([rng.uniform(0, 1, n), rng.uniform(*saturation, n), rng.uniform(*value, n)], 1)
    return np.array([colorsys.hsv_to_rgb(*c) for c in hsv], dtype=np.float32)


def graf_images(n: int = 256, size: int = 32, category: str = "chair", seed: int = 0,
                poses: PoseDistribution | None = None, fov_deg: float = DEFAULT_FOV,
                background=(1.0, 1.0, 1.0), light=LIGHT) -> ImageCollection:
    """Render ``n`` images of ``category`` (shape seeds ``seed·100000 + i``), one random colour and
    one random camera ξ ~ ``poses`` each, by sphere tracing the exact SDF (≈ 50 ms per 32×32)."""
    if category not in CATEGORIES:
        raise ValueError(f"graf_images: unknown category {category!r}; choose one of {CATEGORIES}.")
    if n < 1 or size < 4:
        raise ValueError(f"graf_images: need n >= 1 and size >= 4, got n={n}, size={size}.")
    poses = PoseDistribution() if poses is None else poses
    generator = torch.Generator().manual_seed(int(seed))
    c2w, angles = poses.sample(n, generator)
    colors = random_colors(n, seed)
    focal = focal_from_fov(size, fov_deg)
    seeds = [seed * 100000 + i for i in range(n)]
    rgb, alpha = [], []
    for i in range(n):
        out = render_rgba(make_shape(category, seeds[i]), colors[i], c2w[i], size, size, focal,
                          light=light)
        rgb.append(out["rgb"])
        alpha.append(out["alpha"])
    rgb, alpha = torch.from_numpy(np.stack(rgb)), torch.from_numpy(np.stack(alpha))
    bg = torch.as_tensor(background, dtype=torch.float32).expand(3)
    images = alpha[..., None] * rgb + (1 - alpha[..., None]) * bg
    return ImageCollection(images.permute(0, 3, 1, 2).contiguous(), alpha, c2w, angles,
                           torch.from_numpy(colors), seeds, float(focal), category, poses,
                           tuple(bg.tolist()))
