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


def pose_from_angles(azimuth_deg: float, elevation_deg: float, radius: float = 1.5,
                     target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """c2w (4, 4) of a camera at (azimuth, elevation) on a sphere around ``target``, looking at it.

    Azimuth 0 looks from +z, 90 from +x; elevation is the angle above the horizontal plane.
    """
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = np.asarray(target, float) + radius * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
    return look_at(eye, target)


def orbit_poses(n: int, radius: float = 1.5, elevation_deg: float = 30.0, start_deg: float = 0.0,
                target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """(n, 4, 4) cameras evenly spaced in azimuth on a circle around ``target``, looking at it."""
    return torch.stack([pose_from_angles(start_deg + 360.0 * k / n, elevation_deg, radius, target)
                        for k in range(n)])


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


def rays_through(c2w: torch.Tensor, uv: torch.Tensor, width: int, height: int, focal: float):
    """Rays through arbitrary (sub)pixel positions: origins and unit directions (..., 3).

    ``uv`` (..., 2) are continuous pixel coordinates, u to the right and v down from the image's
    top-left corner, so pixel (i, j) spans [i, i+1] × [j, j+1] and its centre is (i + 0.5, j + 0.5)
    (``pixel_rays`` is the special case of all centres). Camera-space direction
    ((u − W/2)/f, −(v − H/2)/f, −1), rotated by c2w. ``c2w`` is (4, 4) for all rays, or (B, 4, 4)
    with ``uv`` (B, ..., 2) for one camera per batch entry (e.g. GRAF's random patches).
    """
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    uv = torch.as_tensor(uv, dtype=torch.float32)
    if c2w.shape[-2:] not in ((4, 4), (3, 4)) or c2w.ndim not in (2, 3):
        raise ValueError(f"rays_through: c2w has shape {tuple(c2w.shape)}; expected (4, 4) or (B, 4, 4).")
    if uv.shape[-1] != 2 or (c2w.ndim == 3 and (uv.ndim < 2 or uv.shape[0] != c2w.shape[0])):
        raise ValueError(f"rays_through: uv has shape {tuple(uv.shape)}; expected (..., 2), "
                         f"or (B, ..., 2) with B = {c2w.shape[0] if c2w.ndim == 3 else '-'} cameras.")
    dirs = torch.stack([(uv[..., 0] - width / 2) / focal, -(uv[..., 1] - height / 2) / focal,
                        -torch.ones_like(uv[..., 0])], dim=-1)
    rotation, position = c2w[..., :3, :3], c2w[..., :3, 3]
    if c2w.ndim == 3:  # one camera per leading batch entry
        extra = (1,) * (uv.ndim - 2)
        rotation = rotation.reshape(c2w.shape[0], *extra, 3, 3)
        position = position.reshape(c2w.shape[0], *extra, 3)
    directions = (rotation @ dirs[..., None])[..., 0]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return position.expand_as(directions), directions


def intrinsic_matrix(focal: float, width: int, height: int) -> torch.Tensor:
    """K (3, 3) of this module's pinhole camera, for the OpenCV projection u = K · (x/z, y/z, 1).

    Principal point at the image centre (W/2, H/2) in the continuous pixel coordinates of
    ``rays_through``. K is written for OpenCV-style camera axes (x right, y down, z forward):
    convert poses with ``opencv_to_opengl`` before using them here.
    """
    return torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


_FLIP_YZ = (1.0, -1.0, -1.0)


def opencv_to_opengl(c2w):
    """Convert camera-to-world poses from the OpenCV convention to this course's (OpenGL) one.

    OpenCV / COLMAP cameras look down +z with y pointing down; OpenGL / Blender / NeRF-synthetic
    cameras look down −z with y up. The camera centre is the same; only the camera's y and z
    axes flip: c2w_gl = c2w_cv · diag(1, −1, −1, 1), i.e. the second and third columns change
    sign. The map is its own inverse (so it also converts back). Accepts numpy arrays or
    tensors of shape (..., 4, 4) or (..., 3, 4) and returns the same type.
    """
    shape = tuple(c2w.shape)
    if len(shape) < 2 or shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"opencv_to_opengl: poses have shape {shape}; expected (..., 4, 4) or (..., 3, 4).")
    if isinstance(c2w, torch.Tensor):
        out = c2w.clone() if c2w.is_floating_point() else c2w.double()
    else:
        c2w = np.asarray(c2w)
        out = np.array(c2w, dtype=c2w.dtype if c2w.dtype.kind == "f" else np.float64)
    for axis, sign in enumerate(_FLIP_YZ):
        out[..., :3, axis] = out[..., :3, axis] * sign
    return out


opengl_to_opencv = opencv_to_opengl
