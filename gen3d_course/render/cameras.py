"""Pinhole cameras and rays, in one stated convention.

Convention (OpenGL / Blender / NeRF-synthetic): a camera-to-world matrix ``c2w`` (4×4) has
columns (right, up, back, position); the camera looks down its −z axis, y is up, x is right.
A pixel (i, j) (column i, row j from the top) has the camera-space direction
((i + 0.5 − W/2) / f, −(j + 0.5 − H/2) / f, −1), rotated into the world by c2w.
A ray is r(t) = o + t·d.
"""
from __future__ import annotations

import numpy as np
import torch


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """c2w (4, 4) of a camera at ``eye`` looking at ``target`` with ``up`` roughly upward."""
    eye, target, up = (torch.as_tensor(v, dtype=torch.float32) for v in (eye, target, up))
    back = eye - target
    if back.norm() < 1e-8:
        raise ValueError("look_at: eye and target coincide; the view direction is undefined.")
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    if right.norm() < 1e-8:
        raise ValueError("look_at: 'up' is parallel to the view direction; pick another up vector.")
    right = right / right.norm()
    true_up = torch.linalg.cross(back, right)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def orbit_poses(n: int, radius: float = 1.5, elevation_deg: float = 30.0,
                start_deg: float = 0.0) -> torch.Tensor:
    """(n, 4, 4) cameras evenly spaced on a circle around the origin, looking at it."""
    elevation = np.radians(elevation_deg)
    azimuths = np.radians(start_deg) + np.linspace(0, 2 * np.pi, n, endpoint=False)
    eyes = radius * np.stack([np.cos(elevation) * np.sin(azimuths),
                              np.full(n, np.sin(elevation)),
                              np.cos(elevation) * np.cos(azimuths)], axis=1)
    return torch.stack([look_at(eye) for eye in eyes])


def focal_from_fov(width: int, fov_deg: float) -> float:
    """Focal length in pixels for a horizontal field of view: f = W / (2·tan(fov/2))."""
    return 0.5 * width / np.tan(0.5 * np.radians(fov_deg))


def pixel_rays(c2w: torch.Tensor, width: int, height: int, focal: float):
    """World-space ray origins and unit directions, each (H, W, 3), through pixel centres."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    if c2w.shape != (4, 4) and c2w.shape != (3, 4):
        raise ValueError(f"pixel_rays: c2w has shape {tuple(c2w.shape)}; expected (4, 4) or (3, 4).")
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                          torch.arange(width, dtype=torch.float32), indexing="ij")
    dirs = torch.stack([(i + 0.5 - width / 2) / focal, -(j + 0.5 - height / 2) / focal,
                        -torch.ones_like(i)], dim=-1)
    directions = dirs @ c2w[:3, :3].T
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(directions), directions
