"""GRAF's camera and patch sampling: a pose ξ ~ p_ξ, a patch pattern ν ~ p_ν, rays for a P×P patch.

A generative radiance field is trained on *patches*, not whole images: rendering every pixel of
every image is what makes a NeRF step expensive, and a discriminator only needs a P×P patch.
The patch must still see the whole object sometimes (global shape) and single pixels other
times (fine detail), so its P×P rays are spread over the image with a random **scale** s (the
dilation between neighbouring rays) and **centre** u:

    grid  g_kl = (−1 + (2l + 1)/P, −1 + (2k + 1)/P)   the P×P cell centres of [−1, 1]²
    point x_kl = s · g_kl + u,  s ~ U[s_min, s_max],  u ~ U[−(1 − s), 1 − s]²

in normalised image coordinates (x right, y down, [−1, 1] spans the image), so the patch stays
inside the image. s = 1 covers the whole image at P/W of its resolution; s = P/W is a crop of
native pixels. In pixel units (the continuous coordinates of ``render.cameras.rays_through``:
pixel (i, j) spans [i, i+1] × [j, j+1]) a point is uv = ((x + 1)·W/2, (y + 1)·H/2).

The camera: intrinsics K = [[f, 0, W/2], [0, f, H/2], [0, 0, 1]] (``cameras.intrinsic_matrix``)
and a pose ξ drawn from p_ξ, here uniform on a cap of the sphere around the object
(``PoseDistribution``). Real patches are taken from the training images at exactly the same
continuous coordinates (bilinear interpolation, ``sample_image_patches``), so real and generated
patches differ only in content, never in how they were sampled.

Note on letters: the GRAF paper calls both the intrinsics and the patch size "K"; here the patch
is P×P and K is always the intrinsic matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import pose_from_angles, rays_through


# ------------------------------------------------------------------ pose distribution p_ξ
@dataclass(frozen=True)
class PoseDistribution:
    """p_ξ: cameras on a cap of the sphere of ``radius`` around ``target``, looking at it.

    Azimuth uniform in ``azimuth_range`` (degrees; 0 looks from +z, 90 from +x), elevation
    uniform in ``elevation_range`` (degrees above the horizontal plane). The up vector is +y,
    so there is no roll. A GRAF generator samples its cameras from the *same* p_ξ as the data
    was taken with: the distribution is an assumption the model is given, not learnt (CAMPARI
    learns it).
    """

    azimuth_range: tuple = (0.0, 360.0)
    elevation_range: tuple = (10.0, 40.0)
    radius: float = 1.8
    target: tuple = (0.0, 0.0, 0.0)

    def __post_init__(self):
        lo, hi = self.elevation_range
        if not -90.0 < lo <= hi < 90.0:
            raise ValueError(f"PoseDistribution: elevation_range {self.elevation_range} must satisfy "
                             f"-90 < low <= high < 90 degrees.")
        if self.azimuth_range[0] > self.azimuth_range[1]:
            raise ValueError(f"PoseDistribution: azimuth_range {self.azimuth_range} is decreasing.")
        if self.radius <= 0.87:
            raise ValueError(f"PoseDistribution: radius {self.radius} puts the camera inside the "
                             f"world cube [-0.5, 0.5]³; use a radius above 0.87.")

    def pose(self, azimuth_deg: float, elevation_deg: float) -> torch.Tensor:
        """c2w (4, 4) of the camera at these angles (OpenGL convention, ``cameras.look_at``)."""
        return pose_from_angles(azimuth_deg, elevation_deg, self.radius, target=self.target)

    def poses(self, angles) -> torch.Tensor:
        """(n, 4, 4) cameras for (n, 2) (azimuth, elevation) angles in degrees."""
        angles = np.asarray(angles, dtype=float).reshape(-1, 2)
        return torch.stack([self.pose(a, e) for a, e in angles])

    def sample_angles(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) (azimuth, elevation) in degrees, uniform in the ranges."""
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        lo = torch.tensor([self.azimuth_range[0], self.elevation_range[0]], dtype=torch.float64)
        hi = torch.tensor([self.azimuth_range[1], self.elevation_range[1]], dtype=torch.float64)
        return (lo + u * (hi - lo)).float()

    def sample(self, n: int, generator: torch.Generator | None = None):
        """ξ ~ p_ξ: (poses (n, 4, 4), angles (n, 2))."""
        angles = self.sample_angles(n, generator)
        return self.poses(angles), angles


# ------------------------------------------------------------------ patch pattern p_ν
def patch_grid(patch_size: int) -> torch.Tensor:
    """(P, P, 2) the cell centres of a P×P grid over [−1, 1]², as (x, y), row k = y index."""
    if patch_size < 1 or int(patch_size) != patch_size:
        raise ValueError(f"patch_grid: patch_size must be a positive int, got {patch_size}.")
    c = -1.0 + (2.0 * torch.arange(patch_size, dtype=torch.float32) + 1.0) / patch_size
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x, y], dim=-1)


def sample_patch_pattern(n: int, min_scale: float = 0.5, max_scale: float = 1.0,
                         generator: torch.Generator | None = None):
    """ν ~ p_ν: scales (n,) ~ U[min_scale, max_scale] and centres (n, 2) ~ U[−(1 − s), 1 − s]²."""
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(f"sample_patch_pattern: need 0 < min_scale <= max_scale <= 1, got "
                         f"{min_scale}, {max_scale}.")
    scales = min_scale + (max_scale - min_scale) * torch.rand(n, generator=generator)
    centers = (2.0 * torch.rand(n, 2, generator=generator) - 1.0) * (1.0 - scales)[:, None]
    return centers, scales


def patch_coordinates(centers: torch.Tensor, scales: torch.Tensor, patch_size: int,
                      width: int, height: int) -> torch.Tensor:
    """(n, P, P, 2) continuous pixel coordinates (u right, v down) of the patches' rays.

    x = s·g + u in normalised coordinates, then uv = ((x + 1)·W/2, (y + 1)·H/2).
    """
    centers, scales = torch.as_tensor(centers, dtype=torch.float32), torch.as_tensor(scales, dtype=torch.float32)
    if centers.ndim != 2 or centers.shape[-1] != 2 or scales.shape != centers.shape[:1]:
        raise ValueError(f"patch_coordinates: centers {tuple(centers.shape)} and scales "
                         f"{tuple(scales.shape)} must be (n, 2) and (n,).")
    points = scales[:, None, None, None] * patch_grid(patch_size) + centers[:, None, None, :]
    size = torch.tensor([width, height], dtype=torch.float32)
    return (points + 1.0) * size / 2.0


def full_image_coordinates(size: int, n: int = 1) -> torch.Tensor:
    """(n, size, size, 2) pixel centres of a whole square image (scale 1, centre 0, P = size)."""
    return patch_coordinates(torch.zeros(n, 2), torch.ones(n), size, size, size)


def patch_rays(c2w: torch.Tensor, uv: torch.Tensor, width: int, height: int, focal: float):
    """Origins and unit directions (n, P, P, 3) of the rays through ``uv`` (n, P, P, 2), one
    camera c2w (n, 4, 4) per patch (``cameras.rays_through``, OpenGL convention)."""
    return rays_through(c2w, uv, width, height, focal)


def sample_image_patches(images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Real patches (n, C, P, P): ``images`` (n, C, H, W) read bilinearly at ``uv`` (n, P, P, 2).

    A pixel's value sits at its centre (i + 0.5, j + 0.5); ``grid_sample`` with
    ``align_corners=False`` uses exactly that convention for normalised coordinates
    x = 2u/W − 1. At scale 1 with P = W/2 each sample falls between four pixels and averages
    them (an anti-aliased half-resolution image), which is what a ray through that point of the
    image plane sees of a piecewise-smooth image.
    """
    if images.ndim != 4 or uv.ndim != 4 or uv.shape[0] != images.shape[0] or uv.shape[-1] != 2:
        raise ValueError(f"sample_image_patches: images {tuple(images.shape)} and uv {tuple(uv.shape)} "
                         f"must be (n, C, H, W) and (n, P, P, 2).")
    height, width = images.shape[-2:]
    size = torch.tensor([width, height], dtype=images.dtype)
    grid = 2.0 * uv.to(images.dtype) / size - 1.0
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rays_from_intrinsics(K: torch.Tensor, c2w: torch.Tensor, uv: torch.Tensor):
    """Rays through pixel coordinates ``uv`` (B, ..., 2) of cameras with intrinsics K (3, 3) and
    poses c2w (B, 4, 4): origins and unit directions (B, ..., 3).

    K maps OpenCV camera coordinates (x right, y down, z forward) to pixels, so the direction
    through (u, v) is K⁻¹·(u, v, 1) in OpenCV axes; flipping y and z turns it into this course's
    OpenGL camera axes (``cameras.opencv_to_opengl``), and R = c2w[:3, :3] takes it to the world.
    For K = ``cameras.intrinsic_matrix(f, W, H)`` this equals ``cameras.rays_through``.
    """
    K, c2w, uv = (torch.as_tensor(a, dtype=torch.float32) for a in (K, c2w, uv))
    if K.shape != (3, 3) or c2w.ndim != 3 or c2w.shape[-2:] != (4, 4) or uv.shape[0] != c2w.shape[0]:
        raise ValueError(f"rays_from_intrinsics: K {tuple(K.shape)}, c2w {tuple(c2w.shape)}, uv "
                         f"{tuple(uv.shape)} must be (3, 3), (B, 4, 4), (B, ..., 2).")
    homogeneous = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    d_cv = homogeneous @ torch.linalg.inv(K).T
    d_gl = d_cv * torch.tensor([1.0, -1.0, -1.0])
    extra = (1,) * (uv.ndim - 2)
    R = c2w[:, :3, :3].reshape(c2w.shape[0], *extra, 3, 3)
    directions = (R @ d_gl[..., None])[..., 0]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = c2w[:, :3, 3].reshape(c2w.shape[0], *extra, 3).expand_as(directions)
    return origins, directions
