"""Voxel generators at GRAF's scale: PlatonicGAN-style (a rendered grid) and HoloGAN-style (a
learnt projection), both trained with GRAF's patches, discriminator and loop.

PlatonicGAN (Henzler et al. 2019) generates a voxel grid and renders it with a fixed,
differentiable image-formation model from a random camera; a 2D discriminator judges the
renders. Here the grid is decoded from GRAF's two codes by 3D transposed convolutions
(4³ → 8³ → 16³), read trilinearly wherever a ray sample falls, and rendered by the course's
one renderer (emission–absorption, ``render.rays``): it plugs into ``models.graf.Generator`` as
its field, so it trains with GRAF's patches, discriminator and loop, and is measured with the
same SWD and re-projection consistency. What differs is only the representation: R³ cells
instead of a continuous MLP, colour that does not depend on the view.

HoloGAN (Nguyen-Phuoc et al. 2019) generates a grid of learnt *features*, rotates it into the
camera's frame, and a learnt projection unit (depth folded into channels, 1×1 convolution) and a
2D CNN turn it into the whole image (``HoloGenerator``): sharp at low 3D resolution, but nothing
ties a pixel to a 3D point, and it has no depth to re-project. Its fake patches are read from
its image at the patch's coordinates, as real patches are read from real images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from ..render.patches import sample_image_patches
from .graf import GRAF, Generator, GRAFConfig
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
    return GRAF.create(cfg, lr_g, lr_d, seed, make_generator=lambda: Generator(cfg, VoxelField(
        cfg.z_shape, cfg.z_app, res, base, cfg.density_scale, cfg.density_shift)))


class HoloGenerator(Generator):
    """HoloGAN-style: codes → a C×R³ feature volume → rotated into the camera's frame → projected
    (depth into channels, 1×1 convolution) → 2D transposed convolutions → the image. Same calls as
    ``graf.Generator`` (``render`` gives "images" only: there is no density, hence no depth)."""

    def __init__(self, cfg: GRAFConfig | None = None, res: int = 16, channels: int = 16, base: int = 64):
        super().__init__(cfg, field=nn.Identity())  # no radiance field: the network draws the image
        cfg = self.cfg
        if cfg.image_size != 2 * res:
            raise ValueError(f"HoloGenerator: image_size must be 2·res, got {cfg.image_size} and res {res}.")
        self.res, self.channels = res, channels
        self.stem = nn.Linear(cfg.z_shape + cfg.z_app, channels * 2 * (res // 2) ** 3)
        self.up3d = nn.Sequential(nn.ConvTranspose3d(channels * 2, channels, 4, 2, 1), nn.LeakyReLU(0.2))
        self.project = nn.Sequential(nn.Conv2d(channels * res, base, 1), nn.LeakyReLU(0.2))
        self.decode = nn.Sequential(nn.ConvTranspose2d(base, base // 2, 4, 2, 1), nn.LeakyReLU(0.2),
                                    nn.Conv2d(base // 2, 3, 3, padding=1))
        lin = torch.linspace(-1.0, 1.0, res)
        # camera-frame points (x right, y up, z back) of the volume the decoder reads, indexed
        # [depth (0 nearest the camera: +z), row (0 at the top: +y), column (0 at the left: −x)]
        zz, yy, xx = torch.meshgrid(-lin, -lin, lin, indexing="ij")
        self.register_buffer("camera_lattice", torch.stack([xx, yy, zz], -1))  # (R, R, R, 3)

    def volume(self, z_shape, z_app) -> torch.Tensor:
        """(B, C, R, R, R) world-aligned features of each object."""
        r = self.res // 2
        h = F.leaky_relu(self.stem(torch.cat([z_shape, z_app], 1)), 0.2).reshape(-1, self.channels * 2, r, r, r)
        return self.up3d(h)

    def draw(self, z_shape, z_app, c2w) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1]: rotate each volume into its camera's frame, project, decode."""
        c2w = torch.as_tensor(c2w, dtype=torch.float32).reshape(-1, 4, 4).to(z_shape.device)
        rot = c2w[:, :3, :3]  # camera axes (right, up, back) as world columns
        world = torch.einsum("bij,nj->bni", rot, self.camera_lattice.reshape(-1, 3))
        world = world.reshape(-1, self.res, self.res, self.res, 3)  # grid_sample reads (x, y, z) → (W, H, D)
        aligned = F.grid_sample(self.volume(z_shape, z_app), world, align_corners=True)  # (B, C, D, H, W)
        B = aligned.shape[0]
        return torch.sigmoid(self.decode(self.project(aligned.reshape(B, -1, self.res, self.res))))

    def forward(self, z_shape, z_app, c2w, uv, *, perturb: bool = True, generator=None,
                density_noise: float = 0.0) -> torch.Tensor:
        """Patches (B, 3, P, P): the drawn image read at pixel coordinates uv, as real patches are."""
        return sample_image_patches(self.draw(z_shape, z_app, c2w), uv)

    def render_rays(self, *args, **kwargs):
        raise TypeError("HoloGenerator shoots no rays: it draws whole images (draw, render); there is no "
                        "field to query and no depth.")

    def object_field(self, *args, **kwargs):
        raise TypeError("HoloGenerator has no radiance field to bind or compose: its 2D decoder draws the image.")

    @torch.no_grad()
    def render(self, z_shape, z_app, c2w, size: int | None = None, chunk: int = 64, n_samples=None) -> dict:
        """{"images" (B, 3, H, W)} at the training size (a 2D decoder has one output size)."""
        if size not in (None, self.cfg.image_size):
            raise ValueError(f"HoloGenerator.render: draws {self.cfg.image_size}² images only, asked {size}.")
        c2w = torch.as_tensor(c2w, dtype=torch.float32).reshape(-1, 4, 4)
        if c2w.shape[0] == 1 and z_shape.shape[0] > 1:
            c2w = c2w.expand(z_shape.shape[0], 4, 4)
        return {"images": torch.cat([self.draw(z_shape[i:i + chunk], z_app[i:i + chunk], c2w[i:i + chunk])
                                     for i in range(0, len(c2w), chunk)])}


def create_holo(cfg: GRAFConfig | None = None, res: int = 16, channels: int = 16, lr_g: float = 1e-3,
                lr_d: float = 4e-4, seed: int = 0) -> GRAF:
    """A GRAF training state whose generator is a ``HoloGenerator``."""
    cfg = GRAFConfig() if cfg is None else cfg
    return GRAF.create(cfg, lr_g, lr_d, seed, make_generator=lambda: HoloGenerator(cfg, res, channels))
