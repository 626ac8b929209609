"""PlatonicGAN-style generator at GRAF's scale: codes → a voxel grid of density + colour, rendered.

PlatonicGAN (Henzler et al. 2019) generates a voxel grid and renders it with a fixed,
differentiable image-formation model from a random camera; a 2D discriminator judges the
renders. Here the grid is decoded from GRAF's two codes by 3D transposed convolutions
(4³ → 8³ → 16³), read trilinearly wherever a ray sample falls, and rendered by the course's
one renderer (emission–absorption, ``render.rays``): it plugs into ``models.graf.Generator`` as
its field, so it trains with GRAF's patches, discriminator and loop, and is measured with the
same SWD and re-projection consistency. What differs is only the representation: R³ cells
instead of a continuous MLP, colour that does not depend on the view.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from .graf import GRAF, GRAFConfig
from .nerf import box_scale, to_unit_cube


class VoxelField(nn.Module):
    """(x, d, z_s, z_a) → (σ, rgb) read from a decoded R³ grid (R = 4·2^k): the same call as
    ``graf.ConditionalField``. σ = density_scale · softplus(g_σ + shift), rgb = sigmoid(g_rgb)."""

    def __init__(self, z_shape: int = 16, z_app: int = 8, res: int = 16, base: int = 32,
                 density_scale: float = 10.0, density_shift: float = -5.0, bounds=config.WORLD):
        super().__init__()
        levels = (res // 4).bit_length() - 1
        if 4 * 2 ** levels != res:
            raise ValueError(f"VoxelField: res must be 4·2^k (4, 8, 16, 32), got {res}.")
        self.res, self.bounds = res, tuple(float(b) for b in bounds)
        self.density_scale, self.density_shift = density_scale / box_scale(self.bounds), density_shift
        width = base * 2 ** levels
        self.stem = nn.Linear(z_shape + z_app, width * 4 ** 3)
        layers = []
        for _ in range(levels):
            layers += [nn.ConvTranspose3d(width, width // 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            width //= 2
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv3d(width, 4, 3, padding=1)
        self.width0 = base * 2 ** levels

    def grid(self, z_shape: torch.Tensor, z_app: torch.Tensor) -> torch.Tensor:
        """(B, 4, R, R, R): raw density and colour logits of each object's voxels."""
        h = F.leaky_relu(self.stem(torch.cat([z_shape, z_app], 1)), 0.2).reshape(-1, self.width0, 4, 4, 4)
        return self.out(self.up(h))

    def forward(self, points, directions, z_shape, z_app, density_noise: float = 0.0,
                generator: torch.Generator | None = None):
        """σ (B, N) and rgb (B, N, 3) at world points (B, N, 3); the view direction is unused."""
        if directions.shape != points.shape or points.ndim != 3:
            raise ValueError(f"VoxelField: points {tuple(points.shape)} and directions "
                             f"{tuple(directions.shape)} must both be (B, N, 3).")
        coords = to_unit_cube(points, self.bounds)[:, :, None, None, :]  # (B, N, 1, 1, 3) in [−1, 1]
        values = F.grid_sample(self.grid(z_shape, z_app), coords, align_corners=True,
                               padding_mode="border")[:, :, :, 0, 0]       # (B, 4, N)
        raw = values[:, 0]
        if density_noise > 0:
            raw = raw + density_noise * torch.randn(raw.shape, generator=generator).to(raw.device)
        sigma = self.density_scale * F.softplus(raw + self.density_shift)
        return sigma, torch.sigmoid(values[:, 1:].transpose(1, 2))


def create(cfg: GRAFConfig | None = None, res: int = 16, base: int = 32, lr_g: float = 1e-3,
           lr_d: float = 4e-4, seed: int = 0) -> GRAF:
    """A GRAF training state (G, its average, D, optimisers) whose generator's field is a voxel grid."""
    cfg = GRAFConfig() if cfg is None else cfg
    return GRAF.create(cfg, lr_g, lr_d, seed, make_field=lambda: VoxelField(
        cfg.z_shape, cfg.z_app, res, base, cfg.density_scale, cfg.density_shift))
