"""Render a signed distance field by sphere tracing: march each ray by the distance value.

Because |sdf(p)| is never more than the distance to the surface, stepping t ← t + sdf(o + t·d)
cannot jump through it; the ray stops when sdf < eps (a hit) or leaves the scene.
"""
from __future__ import annotations

import numpy as np
import torch

from .cameras import pixel_rays


def sdf_gradient(shape, points: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """∇sdf by central differences: for a true distance it is the unit outward normal."""
    offsets = np.eye(3) * eps
    grads = [
        (shape.sdf(points + offsets[k]) - shape.sdf(points - offsets[k])) / (2 * eps)
        for k in range(3)
    ]
    return np.stack(grads, axis=1)


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


def render_rgba(shape, albedo, c2w, width: int, height: int, focal: float,
                light=(0.4, 0.8, 0.6), ambient: float = 0.35, specular: float = 0.0,
                shininess: float = 32.0, far: float | None = None,
                steps: int = 96) -> dict[str, np.ndarray]:
    """Colour image with an explicit alpha channel, by sphere tracing ``shape.sdf``.

    ``albedo`` is an RGB triple or a callable (N, 3) hit points → (N, 3) colours in [0, 1]
    (e.g. the colour of the nearest object). Shading, per hit with unit normal n, light l,
    view direction v and half vector h = (l + v)/|l + v|:

        c = albedo · (ambient + (1 − ambient) · max(n·l, 0)) + specular · max(n·h, 0)^shininess

    ``specular`` > 0 makes the colour depend on the viewing direction (a highlight moves with
    the camera); 0 gives a purely Lambertian, view-independent image.

    Returns float32 arrays: ``rgb`` (H, W, 3) straight (not premultiplied) colour, 0 where
    nothing is hit; ``alpha`` (H, W) 1 on hits, 0 on background; ``depth`` (H, W) ray distance
    t of the hit (0 = background); ``normal`` (H, W, 3).
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    origins, directions = (x.reshape(-1, 3).numpy().astype(np.float64)
                           for x in pixel_rays(c2w, width, height, focal))
    if far is None:
        far = 2 * float(np.linalg.norm(origins[0])) + 1
    near = 0.0
    bounds = getattr(getattr(shape, "solid", None), "bounds", None)
    if bounds is not None:  # start each ray where it enters the solid's box: fewer SDF calls
        lo, hi = (np.asarray(b, float) for b in bounds())
        near, exit_ = _box_interval(origins, directions, lo - 1e-2, hi + 1e-2)
        near = np.where(exit_ >= near, near, far)
    t, hit = sphere_trace(shape, origins, directions, near=near, far=far, steps=steps)
    rgb = np.zeros_like(origins)
    normal = np.zeros_like(origins)
    if hit.any():
        points = origins[hit] + t[hit, None] * directions[hit]
        g = sdf_gradient(shape, points)
        n = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        normal[hit] = n
        base = (np.broadcast_to(np.asarray(albedo, float), points.shape) if not callable(albedo)
                else np.asarray(albedo(points), float))
        rgb[hit] = shade(base, n, directions[hit], light, ambient, specular, shininess)
    return {
        "rgb": rgb.reshape(height, width, 3).astype(np.float32),
        "alpha": hit.reshape(height, width).astype(np.float32),
        "depth": np.where(hit, t, 0.0).reshape(height, width).astype(np.float32),
        "normal": normal.reshape(height, width, 3).astype(np.float32),
    }


def _box_interval(origins: np.ndarray, directions: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Entry and exit distances (N,) of rays through an axis-aligned box (slab method).

    Entry is clamped to 0 (a camera inside the box); a ray misses when exit < entry.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(directions) < 1e-12, 1e-12, directions)
        t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    entry = np.maximum(np.minimum(t0, t1).max(axis=1), 0.0)
    exit_ = np.maximum(t0, t1).min(axis=1)
    return entry, exit_


def shade(albedo: np.ndarray, normals: np.ndarray, directions: np.ndarray, light=(0.4, 0.8, 0.6),
          ambient: float = 0.35, specular: float = 0.0, shininess: float = 32.0) -> np.ndarray:
    """The shading of ``render_rgba`` for (N, 3) albedos, unit normals and ray directions.

    c = albedo · (ambient + (1 − ambient) · max(n·l, 0)) + specular · max(n·h, 0)^shininess,
    h = (l − d)/|l − d| (d points from the camera to the surface), clipped to [0, 1].
    """
    l = np.asarray(light, float) / np.linalg.norm(light)
    diffuse = np.clip(normals @ l, 0.0, 1.0)[:, None]
    color = albedo * (ambient + (1.0 - ambient) * diffuse)
    if specular > 0:
        h = l[None] - directions
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        color = color + specular * np.clip(np.sum(normals * h, axis=1), 0.0, 1.0)[:, None] ** shininess
    return np.clip(color, 0.0, 1.0)
