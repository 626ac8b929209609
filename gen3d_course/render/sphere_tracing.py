"""Render a signed distance field by sphere tracing: march each ray by the distance value.

Because |sdf(p)| is never more than the distance to the surface, stepping t ← t + sdf(o + t·d)
cannot jump through it; the ray stops when sdf < eps (a hit) or leaves the scene.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.samples import sdf_gradient
from .cameras import pixel_rays


def sphere_trace(shape, origins: np.ndarray, directions: np.ndarray, near: float = 0.0,
                 far: float = 4.0, steps: int = 64, eps: float = 1e-3):
    """Hit distance t (N,) and hit mask (N,) of rays (N, 3) against ``shape.sdf``."""
    t = np.full(len(origins), near)
    active = np.ones(len(origins), bool)
    for _ in range(steps):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        d = shape.sdf(origins[idx] + t[idx, None] * directions[idx])
        t[idx] += d
        active[idx] = (d > eps) & (t[idx] < far)
    hit = shape.sdf(origins + t[:, None] * directions) < 10 * eps
    return t, hit & (t < far)


def render_views(shape, c2w, size: int = 64, fov_deg: float = 40.0,
                 light=None) -> dict[str, np.ndarray]:
    """Shaded image, depth, silhouette and normals of ``shape`` seen by one camera.

    ``light`` is a world direction towards the light; by default it comes from behind the
    camera and above it, so every view is lit.

    Returns float32 arrays: ``shaded`` (H, W) Lambertian grey in [0, 1] (0 = background),
    ``depth`` (H, W) ray distance (0 = background), ``mask`` (H, W) bool, ``normal`` (H, W, 3).
    """
    focal = 0.5 * size / np.tan(0.5 * np.radians(fov_deg))
    origins, directions = (x.reshape(-1, 3).numpy().astype(np.float64)
                           for x in pixel_rays(torch.as_tensor(c2w), size, size, focal))
    t, hit = sphere_trace(shape, origins, directions, far=2 * np.linalg.norm(origins[0]) + 1)
    normal = np.zeros_like(origins)
    points = origins[hit] + t[hit, None] * directions[hit]
    g = sdf_gradient(shape, points)
    normal[hit] = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    c2w = np.asarray(c2w, dtype=np.float64)
    light = c2w[:3, 2] + 0.6 * c2w[:3, 1] if light is None else np.asarray(light, dtype=np.float64)
    light = light / np.linalg.norm(light)
    shaded = np.where(hit, 0.25 + 0.75 * np.clip(normal @ light, 0, 1), 0.0)
    hw = (size, size)
    return {
        "shaded": shaded.reshape(hw).astype(np.float32),
        "depth": np.where(hit, t, 0.0).reshape(hw).astype(np.float32),
        "mask": hit.reshape(hw),
        "normal": normal.reshape(size, size, 3).astype(np.float32),
    }
