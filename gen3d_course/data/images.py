"""Small offline image sets: renders of the shape collection, and scikit-learn's digits.

Images are rendered by sphere tracing the shapes' exact SDFs, so they cost nothing to ship and
the category of every image is known (a label for classifiers and conditional models).
"""
from __future__ import annotations

import numpy as np
import torch

from ..render.cameras import look_at, orbit_poses
from ..render.sphere_tracing import render_views
from .shapes import CATEGORIES, make_shape

# A three-quarter view that shows every category's defining parts.
DEFAULT_EYE = (1.0, 0.8, 1.4)
KINDS = ("shaded", "depth", "mask")


def shape_images(per_category: int = 20, size: int = 32, kind: str = "shaded",
                 categories=CATEGORIES, start_seed: int = 0, random_views: bool = False):
    """(images (N, 1, size, size) float32 in [0, 1], labels (N,) int64) rendered from shapes.

    ``kind``: "shaded" (Lambertian grey), "depth" (near = bright) or "mask" (silhouette).
    ``random_views`` orbits the camera randomly (azimuth and elevation) per image instead of
    the fixed three-quarter view.
    """
    if kind not in KINDS:
        raise ValueError(f"shape_images: kind {kind!r} must be one of {KINDS}.")
    rng = np.random.default_rng(start_seed)
    images, labels = [], []
    for label, category in enumerate(categories):
        for seed in range(start_seed, start_seed + per_category):
            if random_views:
                pose = orbit_poses(1, radius=float(np.linalg.norm(DEFAULT_EYE)),
                                   elevation_deg=rng.uniform(10, 50),
                                   start_deg=rng.uniform(0, 360))[0]
            else:
                pose = look_at(DEFAULT_EYE)
            view = render_views(make_shape(category, seed), pose, size=size)
            images.append(_to_unit_image(view, kind))
            labels.append(label)
    return torch.from_numpy(np.stack(images)[:, None]), torch.tensor(labels)


def _to_unit_image(view: dict, kind: str) -> np.ndarray:
    if kind == "mask":
        return view["mask"].astype(np.float32)
    if kind == "shaded":
        return view["shaded"]
    depth, mask = view["depth"], view["mask"]
    if not mask.any():
        return np.zeros_like(depth)
    near, far = depth[mask].min(), depth[mask].max()
    return np.where(mask, 1.0 - 0.7 * (depth - near) / max(far - near, 1e-6), 0.0).astype(np.float32)


def digits():
    """scikit-learn's bundled 8×8 digits (1797 images, no download): images (N, 1, 8, 8) in
    [0, 1] and labels (N,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    return images, torch.from_numpy(data.target.astype(np.int64))
