"""GRAF: a generative radiance field trained as a GAN on unposed 2D images (Schwarz et al. 2020).

A 2D GAN maps noise to pixels; nothing in it *is* the camera or the object, so it cannot render
the same object from another side. GRAF's generator is instead a radiance field conditioned on
two codes and rendered by a camera:

    σ(x; z_s) = density of the shape code z_s at the point x            (geometry)
    c(x, d; z_s, z_a) = colour there, seen along d, with appearance z_a  (texture)

The shape MLP reads [γ(x), z_s]; the colour head reads [h(x, z_s), γ(d), z_a]. Because the
density never sees z_a, changing the appearance code cannot move the silhouette — a
disentanglement by construction, which the lecture measures.

Training (one step, ``adversarial_step``; ``fit`` draws the batches):
  * draw codes z_s, z_a ~ N(0, I), a camera ξ ~ p_ξ (``render.patches.PoseDistribution``) and a
    patch pattern ν = (centre u, scale s) ~ p_ν;
  * shoot the P×P rays of the patch (intrinsics K, pose ξ), sample S points on each inside the
    world box, volume-render the conditional field (``render.volume``) → a fake patch;
  * take a real patch from a training image with its own ν, read bilinearly at the same kind
    of continuous pixel coordinates;
  * a convolutional patch discriminator D scores both; non-saturating GAN loss
    L_D = softplus(−D(real)) + softplus(D(fake)) + (γ/2)·E‖∇_x D(real)‖²   (R1 penalty),
    L_G = softplus(−D(fake))
    (``models.gans`` holds the two logistic losses of unit 02).

Scaled for a CPU, against the paper's 64² / 128² images (256² for CelebA-HQ): 32×32 images,
16×16 patches instead of 32×32 (K = 32 is the patch's side), a 3 × 64 MLP instead of 8 × 256,
16 samples per ray instead of 64 (the released configs have no fine pass either,
``N_importance: 0``), 16 + 8 dimensional codes instead of 128 + 128, a 4-layer discriminator; the patch scale anneals from 1
(the whole image at half resolution) down to 0.5 (native pixels), as in the paper's schedule.
A moving average of the generator's weights (β = 0.99) gives the samples, as in GRAF's code.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from ..render.cameras import focal_from_fov, rays_through
from ..render.encoding import encoding_size, positional_encoding
from ..render.patches import (PoseDistribution, full_image_coordinates, patch_coordinates,
                              sample_image_patches, sample_patch_pattern)
from ..render.occupancy import OccupancyGrid
from ..render.rays import render_rays
from ..train import History, on_device, train
from .gans import discriminator_loss, generator_loss
from .nerf import box_scale, relu_trunk, to_unit_cube


# ------------------------------------------------------------------ configuration
@dataclass
class GRAFConfig:
    """Every size of a GRAF model (the shipped checkpoint records it in the manifest)."""

    z_shape: int = 16
    z_app: int = 8
    width: int = 64
    depth: int = 3
    pos_freqs: int = 4
    dir_freqs: int = 2
    n_samples: int = 16
    image_size: int = 32
    patch_size: int = 16
    fov_deg: float = 40.0
    radius: float = 1.8
    azimuth_range: tuple = (0.0, 360.0)
    elevation_range: tuple = (10.0, 40.0)
    density_scale: float = 10.0
    density_shift: float = -5.0
    disc_base: int = 32

    @property
    def poses(self) -> PoseDistribution:
        return PoseDistribution(tuple(self.azimuth_range), tuple(self.elevation_range), self.radius)

    @property
    def focal(self) -> float:
        return float(focal_from_fov(self.image_size, self.fov_deg))


# ------------------------------------------------------------------ the conditional field's inputs
def _check_codes(name: str, points: torch.Tensor, code: torch.Tensor, label: str) -> None:
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name}: points/directions must be (B, N, 3), got {tuple(points.shape)}.")
    if code.ndim != 2 or code.shape[0] != points.shape[0]:
        raise ValueError(f"{name}: {label} must be (B, D) with B = {points.shape[0]} (one code per "
                         f"batch entry), got {tuple(code.shape)}.")


def shape_input(points: torch.Tensor, z_shape: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """[γ(x), z_s] for the density MLP: points (B, N, 3), z_shape (B, Ds) → (B, N, 3(1 + 2L) + Ds).

    Every point of batch entry b gets the same shape code z_s[b] appended to its encoding.
    """
    _check_codes("shape_input", points, z_shape, "z_shape")
    codes = z_shape[:, None, :].expand(-1, points.shape[1], -1)
    return torch.cat([positional_encoding(points, n_freqs), codes], dim=-1)


def appearance_input(features: torch.Tensor, directions: torch.Tensor, z_app: torch.Tensor,
                     n_freqs: int) -> torch.Tensor:
    """[h, γ(d), z_a] for the colour head: features (B, N, F), directions (B, N, 3), z_app (B, Da)
    → (B, N, F + 3(1 + 2L) + Da)."""
    _check_codes("appearance_input", directions, z_app, "z_app")
    if features.shape[:2] != directions.shape[:2]:
        raise ValueError(f"appearance_input: features {tuple(features.shape)} and directions "
                         f"{tuple(directions.shape)} must agree in (B, N).")
    codes = z_app[:, None, :].expand(-1, directions.shape[1], -1)
    return torch.cat([features, positional_encoding(directions, n_freqs), codes], dim=-1)


class ConditionalField(nn.Module):
    """(x, d, z_s, z_a) → (σ, rgb): GRAF's conditional radiance field.

    σ = density_scale · softplus(raw + density_shift) (non-negative, nearly empty at the start),
    rgb = sigmoid(colour head). Points are world coordinates; they are mapped from the box
    ``bounds`` (the world cube) to [−1, 1]³ before the encoding, and σ is divided by the box's
    ``box_scale`` as NeRF's is.
    """

    def __init__(self, z_shape: int = 16, z_app: int = 8, width: int = 64, depth: int = 3,
                 pos_freqs: int = 4, dir_freqs: int = 2, density_scale: float = 10.0,
                 density_shift: float = -5.0, bounds=config.WORLD):
        super().__init__()
        self.z_shape, self.z_app = z_shape, z_app
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        self.bounds = tuple(float(b) for b in bounds)
        self.density_scale, self.density_shift = density_scale / box_scale(self.bounds), density_shift
        self.trunk = relu_trunk(encoding_size(3, pos_freqs) + z_shape, width, depth)
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.color_head = nn.Sequential(
            nn.Linear(width + encoding_size(3, dir_freqs) + z_app, width // 2), nn.ReLU(),
            nn.Linear(width // 2, 3))

    def _trunk(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        return self.trunk(shape_input(to_unit_cube(points, self.bounds), z_shape, self.pos_freqs))

    def _activate(self, raw: torch.Tensor) -> torch.Tensor:
        return self.density_scale * F.softplus(raw + self.density_shift)

    def density(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        """σ (B, N) at world points (B, N, 3): the geometry, which only z_s controls."""
        return self._activate(self.sigma_head(self._trunk(points, z_shape))[..., 0])

    def forward(self, points, directions, z_shape, z_app, density_noise: float = 0.0,
                generator: torch.Generator | None = None):
        """σ (B, N) and rgb (B, N, 3) for points and unit directions (B, N, 3).

        ``density_noise`` > 0 adds N(0, noise²) to the raw density before the activation (NeRF's and
        GRAF's training-time regulariser: half-transparent fog becomes unreliable, surfaces win).
        """
        if directions.shape != points.shape:
            raise ValueError(f"ConditionalField: points {tuple(points.shape)} and directions "
                             f"{tuple(directions.shape)} must have the same (B, N, 3) shape.")
        h = self._trunk(points, z_shape)
        raw = self.sigma_head(h)[..., 0]
        if density_noise > 0:
            raw = raw + density_noise * torch.randn(raw.shape, generator=generator).to(raw.device)
        sigma = self._activate(raw)
        rgb = torch.sigmoid(self.color_head(appearance_input(self.feature(h), directions, z_app,
                                                             self.dir_freqs)))
        return sigma, rgb


# ------------------------------------------------------------------ generator
class Generator(nn.Module):
    """Codes + camera + patch pattern → a volume-rendered patch (white background)."""

    def __init__(self, cfg: GRAFConfig | None = None, field: nn.Module | None = None):
        """``field``: any module called as ``ConditionalField`` is (e.g. ``voxel_graf.VoxelField``,
        a PlatonicGAN-style grid); default GRAF's conditional radiance field."""
        super().__init__()
        self.cfg = cfg = GRAFConfig() if cfg is None else cfg
        self.field = field if field is not None else ConditionalField(
            cfg.z_shape, cfg.z_app, cfg.width, cfg.depth, cfg.pos_freqs, cfg.dir_freqs, cfg.density_scale,
            cfg.density_shift)
        self.poses = cfg.poses
        self.register_buffer("background", torch.ones(3))

    def sample_codes(self, n: int, generator: torch.Generator | None = None):
        """z_s (n, Ds), z_a (n, Da) ~ N(0, I)."""
        return (torch.randn(n, self.cfg.z_shape, generator=generator),
                torch.randn(n, self.cfg.z_app, generator=generator))

    def object_field(self, z_shape, z_app):
        """One object's radiance field, codes (1, ·) bound: (points (N, 3), directions (N, 3)) →
        (σ (N,), rgb (N, 3)), with the field's ``bounds``: what ``render.rays`` and
        ``render.compose`` take."""
        if z_shape.shape[0] != 1 or z_app.shape[0] != 1:
            raise ValueError(f"object_field: codes of one object, (1, ·), got {tuple(z_shape.shape)} "
                             f"and {tuple(z_app.shape)}.")

        def field(points, directions):
            sigma, rgb = self.field(points[None], directions[None], z_shape, z_app)
            return sigma[0], rgb[0]

        field.bounds = self.field.bounds
        return field

    def occupancy(self, z_shape, z_app, res: int = 16, threshold: float = 0.01) -> OccupancyGrid:
        """Where one object (codes (1, ·)) can be seen: its density on a coarse grid, so a render
        can skip empty samples (``render.occupancy``; the sliders' speed-up). Any field works: the
        density is read through :meth:`object_field`."""
        field = self.object_field(z_shape, z_app)
        return OccupancyGrid(lambda points: field(points, torch.zeros_like(points))[0], self.field.bounds,
                             res=res, threshold=threshold)

    def render_rays(self, origins, directions, z_shape, z_app, *, perturb: bool = True,
                    generator: torch.Generator | None = None, n_samples: int | None = None,
                    density_noise: float = 0.0, occupancy=None, min_transmittance: float = 0.0) -> dict:
        """Volume-render rays (B, R, 3) of batch entry b with codes b: rgb (B, R, 3), acc and depth (B, R).

        ``render.rays.render_rays`` with the codes bound in a closure: S samples per ray,
        stratified inside the field's box (a ray that misses it shows the background).
        ``occupancy`` (one object's, see :meth:`occupancy`) and ``min_transmittance`` skip samples
        that cannot change a pixel, as for NeRF.
        """
        B, R = origins.shape[:2]

        def coded_field(points, directions):  # (B·R·S, 3), entry b's rays first → (B, R·S, 3)
            sigma, rgb = self.field(points.reshape(B, -1, 3), directions.reshape(B, -1, 3), z_shape,
                                    z_app, density_noise, generator)
            return sigma.reshape(-1), rgb.reshape(-1, 3)

        out = render_rays(coded_field, origins.reshape(-1, 3), directions.reshape(-1, 3),
                          n_samples=self.cfg.n_samples if n_samples is None else n_samples,
                          bounds=self.field.bounds, perturb=perturb, background=self.background,
                          generator=generator, occupancy=occupancy, min_transmittance=min_transmittance)
        return {"rgb": out["rgb"].reshape(B, R, 3), "acc": out["acc"].reshape(B, R),
                "depth": out["depth"].reshape(B, R)}

    def forward(self, z_shape, z_app, c2w, uv, *, perturb: bool = True,
                generator: torch.Generator | None = None, density_noise: float = 0.0) -> torch.Tensor:
        """Patches (B, 3, P, P) in [0, 1] for codes (B, ·), cameras (B, 4, 4), pixel coords (B, P, P, 2)."""
        B, P = uv.shape[0], uv.shape[1]
        size = self.cfg.image_size
        origins, directions = rays_through(c2w, uv, size, size, self.cfg.focal)
        out = self.render_rays(origins.reshape(B, -1, 3), directions.reshape(B, -1, 3), z_shape,
                               z_app, perturb=perturb, generator=generator, density_noise=density_noise)
        return out["rgb"].reshape(B, P, uv.shape[2], 3).permute(0, 3, 1, 2)

    @torch.no_grad()
    def render(self, z_shape, z_app, c2w, size: int | None = None, chunk: int = 16,
               n_samples: int | None = None, **skip) -> dict:
        """Whole images at ``size`` (default: the training size), deterministic samples:
        {"images" (B, 3, H, W), "acc" (B, H, W), "depth" (B, H, W)}. ``skip``: ``occupancy`` and
        ``min_transmittance`` of :meth:`render_rays`."""
        size = self.cfg.image_size if size is None else size
        focal = self.cfg.focal * size / self.cfg.image_size
        c2w = torch.as_tensor(c2w, dtype=torch.float32).reshape(-1, 4, 4)
        if c2w.shape[0] == 1 and z_shape.shape[0] > 1:
            c2w = c2w.expand(z_shape.shape[0], 4, 4)
        parts = {"images": [], "acc": [], "depth": []}
        for i in range(0, len(c2w), chunk):
            sl = slice(i, i + chunk)
            uv = full_image_coordinates(size, len(c2w[sl]))
            origins, directions = rays_through(c2w[sl], uv, size, size, focal)
            n = len(c2w[sl])
            out = self.render_rays(origins.reshape(n, -1, 3), directions.reshape(n, -1, 3),
                                   z_shape[sl], z_app[sl], perturb=False, n_samples=n_samples, **skip)
            parts["images"].append(out["rgb"].reshape(n, size, size, 3).permute(0, 3, 1, 2))
            parts["acc"].append(out["acc"].reshape(n, size, size))
            parts["depth"].append(out["depth"].reshape(n, size, size))
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, angles=None, size: int | None = None) -> dict:
        """n random objects from random cameras ξ ~ p_ξ (or the given (n, 2) angles):
        {"images", "acc", "depth", "z_shape", "z_app", "angles"}."""
        generator = torch.Generator().manual_seed(seed)
        z_s, z_a = self.sample_codes(n, generator)
        if angles is None:
            c2w, angles = self.poses.sample(n, generator)
        else:
            angles = torch.as_tensor(angles, dtype=torch.float32).reshape(n, 2)
            c2w = self.poses.poses(angles)
        out = self.render(z_s, z_a, c2w, size)
        out.update(z_shape=z_s, z_app=z_a, angles=angles)
        return out


# ------------------------------------------------------------------ discriminator
class PatchDiscriminator(nn.Module):
    """Convolutional discriminator for P×P patches (P a power of two ≥ 8): logits (B,).

    Strided 4×4 convolutions halve the size down to 2×2 with LeakyReLU(0.2) and no
    normalisation (the R1 penalty does the regularising); inputs in [0, 1] are mapped to [−1, 1].
    """

    def __init__(self, patch_size: int = 16, base: int = 32):
        super().__init__()
        levels = int(round(math.log2(patch_size))) - 1
        if 2 ** (levels + 1) != patch_size or levels < 2:
            raise ValueError(f"PatchDiscriminator: patch_size must be a power of two >= 8, got {patch_size}.")
        layers, channels = [], 3
        for k in range(levels):
            out = base * 2 ** min(k, 2)
            layers += [nn.Conv2d(channels, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            channels = out
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(channels * 4, 1)
        self.patch_size = patch_size

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.ndim != 4 or patches.shape[1:] != (3, self.patch_size, self.patch_size):
            raise ValueError(f"PatchDiscriminator: expected (B, 3, {self.patch_size}, {self.patch_size}) "
                             f"patches, got {tuple(patches.shape)}.")
        return self.head(self.net(2 * patches - 1).flatten(1))[:, 0]


def r1_penalty(real: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """R1 = E‖∇_x D(x)‖² on real samples (Mescheder et al. 2018): keeps D flat on the data, which
    makes the GAN game converge locally. ``real`` must require grad and ``logits`` = D(real); the
    gradient is built with create_graph so that D can descend the penalty."""
    if not real.requires_grad:
        raise ValueError("r1_penalty: call real.requires_grad_(True) before computing D(real).")
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


# ------------------------------------------------------------------ training
@dataclass
class GRAF:
    """A generator, its moving average (for samples), a discriminator, and their optimisers."""

    cfg: GRAFConfig
    G: Generator
    D: PatchDiscriminator
    G_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    steps_done: int = 0
    history: list = field(default_factory=list)

    @classmethod
    def create(cls, cfg: GRAFConfig | None = None, lr_g: float = 1e-3, lr_d: float = 4e-4,
               seed: int = 0, make_generator=None) -> "GRAF":
        """``make_generator()`` builds another generator (after seeding, e.g. ``voxel_graf``'s);
        default GRAF's."""
        cfg = GRAFConfig() if cfg is None else cfg
        torch.manual_seed(seed)
        G = Generator(cfg) if make_generator is None else make_generator()
        D = PatchDiscriminator(cfg.patch_size, cfg.disc_base)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.0, 0.99))
        return cls(cfg, G, D, G_ema, opt_g, opt_d)


def min_scale_at(step: int, final: float = 0.5, rate: float = 0.002) -> float:
    """GRAF's annealing of the smallest patch scale: max(final, exp(−rate · step)).

    Early on every patch covers the whole image (global shape first); later smaller, denser
    patches bring in fine detail.
    """
    return max(final, math.exp(-rate * step))


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - beta)


def adversarial_step(model: GRAF, real: torch.Tensor, z_shape, z_app, c2w, uv, *, r1_gamma: float = 1.0,
                     density_noise: float = 0.0, generator: torch.Generator | None = None) -> dict:
    """One GRAF update on a given batch: D on real vs rendered patches (+ R1), then G through the renderer.

    ``real`` (B, 3, P, P) patches read from training images; the generator's inputs are codes
    z_s, z_a (B, ·), cameras ξ (B, 4, 4) and patch coordinates uv (B, P, P, 2) from ν. The fake
    patches are rendered once (with their graph): D scores them detached, then the updated D
    scores them again for G's non-saturating loss. ``fit`` draws the batches and calls this;
    the lecture writes it out and checks the two agree. Returns the losses and the mean logits.
    """
    G, D = model.G, model.D
    fake = G(z_shape, z_app, c2w, uv, generator=generator, density_noise=density_noise)
    real = real.detach().requires_grad_(True)
    d_real = D(real)
    d_fake = D(fake.detach())
    loss_d = discriminator_loss(d_real, d_fake)
    r1 = r1_penalty(real, d_real)
    model.opt_d.zero_grad(set_to_none=True)
    (loss_d + 0.5 * r1_gamma * r1).backward()
    model.opt_d.step()
    D.requires_grad_(False)  # G's loss needs gradients through D, not into D's weights
    loss_g = generator_loss(D(fake))
    model.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    model.opt_g.step()
    D.requires_grad_(True)
    return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "r1": r1.item(),
            "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}


def fit(model: GRAF, images: torch.Tensor, steps: int, *, batch: int = 8, r1_gamma: float = 1.0,
        final_scale: float = 0.5, anneal_rate: float = 0.002, ema_beta: float = 0.99,
        density_noise: float = 0.0, seed: int = 0, max_seconds: float | None = None,
        progress: bool = True, desc: str = "GRAF", device=None) -> History:
    """Adversarial training of ``model`` on ``images`` (N, 3, H, W) in [0, 1]; continues where a
    previous call stopped (steps, schedule, optimiser state). Returns the ``train`` history with
    "d_loss", "g_loss", "r1", "d_real", "d_fake" (mean logits) and "min_scale".

    Runs on ``device`` (default ``config.pick_device()``, see ``train.on_device``): codes,
    cameras, patches and images are drawn on the CPU with one generator and moved there, so a
    CPU run draws what it always drew."""
    cfg = model.cfg
    if images.ndim != 4 or images.shape[1:] != (3, cfg.image_size, cfg.image_size):
        raise ValueError(f"GRAF fit: images must be (N, 3, {cfg.image_size}, {cfg.image_size}), "
                         f"got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError("GRAF fit: the images contain NaN or inf.")
    G, D, G_ema = model.G, model.D, model.G_ema
    rng = torch.Generator().manual_seed(seed + 1000 * model.steps_done)
    P, size = cfg.patch_size, cfg.image_size
    start_step = model.steps_done

    def step(i):
        k = start_step + i
        min_scale = min_scale_at(k, final_scale, anneal_rate)
        # real patches with their own ν, then the generator's inputs: codes, cameras ξ, patterns ν
        idx = torch.randint(len(images), (batch,), generator=rng)
        centers, scales = sample_patch_pattern(batch, min_scale, 1.0, rng)
        real = sample_image_patches(images[idx], patch_coordinates(centers, scales, P, size, size))
        z_s, z_a = G.sample_codes(batch, rng)
        c2w, _ = G.poses.sample(batch, rng)
        centers, scales = sample_patch_pattern(batch, min_scale, 1.0, rng)
        uv = patch_coordinates(centers, scales, P, size, size)
        real, z_s, z_a, c2w, uv = (x.to(device) for x in (real, z_s, z_a, c2w, uv))
        out = adversarial_step(model, real, z_s, z_a, c2w, uv, r1_gamma=r1_gamma,
                               density_noise=density_noise, generator=rng)
        _update_ema(G_ema, G, ema_beta if k > 100 else 0.0)  # follow G exactly at the start
        model.steps_done = k + 1
        return {**out, "min_scale": min_scale}

    with on_device(G, D, G_ema, device=device) as device:
        history = train(step, steps, desc=desc, max_seconds=max_seconds, progress=progress)
    model.history.append(history)
    return history
