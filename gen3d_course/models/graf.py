"""GRAF: a generative radiance field trained as a GAN on unposed 2D images (Schwarz et al. 2020).

A 2D GAN maps noise to pixels; nothing in it *is* the camera or the object, so it cannot render
the same object from another side. GRAF's generator is instead a radiance field conditioned on
two codes and rendered by a camera:

    σ(x; z_s) = density of the shape code z_s at the point x            (geometry)
    c(x, d; z_s, z_a) = colour there, seen along d, with appearance z_a  (texture)

The shape MLP reads [γ(x), z_s]; the colour head reads [h(x, z_s), γ(d), z_a]. Because the
density never sees z_a, changing the appearance code cannot move the silhouette — a
disentanglement by construction, which the lecture measures.

Training (one step):
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

Scaled for a CPU, against the paper's 64² / 128² images: 32×32 images, 16×16 patches, a 3 × 64
MLP instead of 8 × 256, 16 samples per ray instead of 64 (no hierarchical pass), 16 + 8
dimensional codes instead of 128 + 128, a 4-layer discriminator; the patch scale anneals from 1
(the whole image at half resolution) down to 0.5 (native pixels), as in the paper's schedule.
A moving average of the generator's weights (β = 0.99) gives the samples, as in GRAF's code.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from ..render.cameras import focal_from_fov, rays_through
from ..render.encoding import encoding_size, positional_encoding
from ..render.patches import (PoseDistribution, full_image_coordinates, patch_coordinates,
                              sample_image_patches, sample_patch_pattern)
from ..render.rays import render_rays
from ..train import History, train
from .gans import discriminator_loss, generator_loss
from .nerf import relu_trunk, to_unit_cube

CHECKPOINT = "graf"


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
    rgb = sigmoid(colour head). Points are world coordinates; they are mapped from the world
    cube to [−1, 1]³ before the encoding.
    """

    def __init__(self, z_shape: int = 16, z_app: int = 8, width: int = 64, depth: int = 3,
                 pos_freqs: int = 4, dir_freqs: int = 2, density_scale: float = 10.0,
                 density_shift: float = -5.0, bounds=config.WORLD):
        super().__init__()
        self.z_shape, self.z_app = z_shape, z_app
        self.pos_freqs, self.dir_freqs = pos_freqs, dir_freqs
        self.density_scale, self.density_shift = density_scale, density_shift
        self.bounds = tuple(float(b) for b in bounds)
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
            raw = raw + density_noise * torch.randn(raw.shape, generator=generator)
        sigma = self._activate(raw)
        rgb = torch.sigmoid(self.color_head(appearance_input(self.feature(h), directions, z_app,
                                                             self.dir_freqs)))
        return sigma, rgb


# ------------------------------------------------------------------ generator
class Generator(nn.Module):
    """Codes + camera + patch pattern → a volume-rendered patch (white background)."""

    def __init__(self, cfg: GRAFConfig | None = None):
        super().__init__()
        self.cfg = cfg = GRAFConfig() if cfg is None else cfg
        self.field = ConditionalField(cfg.z_shape, cfg.z_app, cfg.width, cfg.depth, cfg.pos_freqs,
                                      cfg.dir_freqs, cfg.density_scale, cfg.density_shift)
        self.poses = cfg.poses
        self.register_buffer("background", torch.ones(3))

    def sample_codes(self, n: int, generator: torch.Generator | None = None):
        """z_s (n, Ds), z_a (n, Da) ~ N(0, I)."""
        return (torch.randn(n, self.cfg.z_shape, generator=generator),
                torch.randn(n, self.cfg.z_app, generator=generator))

    def render_rays(self, origins, directions, z_shape, z_app, *, perturb: bool = True,
                    generator: torch.Generator | None = None, n_samples: int | None = None,
                    density_noise: float = 0.0) -> dict:
        """Volume-render rays (B, R, 3) of batch entry b with codes b: rgb (B, R, 3), acc and depth (B, R).

        ``render.rays.render_rays`` with the codes bound in a closure: S samples per ray,
        stratified inside the world box (a ray that misses it shows the background).
        """
        B, R = origins.shape[:2]

        def coded_field(points, directions):  # (B·R·S, 3), entry b's rays first → (B, R·S, 3)
            sigma, rgb = self.field(points.reshape(B, -1, 3), directions.reshape(B, -1, 3), z_shape,
                                    z_app, density_noise, generator)
            return sigma.reshape(-1), rgb.reshape(-1, 3)

        out = render_rays(coded_field, origins.reshape(-1, 3), directions.reshape(-1, 3),
                          n_samples=self.cfg.n_samples if n_samples is None else n_samples,
                          perturb=perturb, background=self.background, generator=generator)
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
               n_samples: int | None = None) -> dict:
        """Whole images at ``size`` (default: the training size), deterministic samples:
        {"images" (B, 3, H, W), "acc" (B, H, W), "depth" (B, H, W)}."""
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
                                   z_shape[sl], z_app[sl], perturb=False, n_samples=n_samples)
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
               seed: int = 0) -> "GRAF":
        cfg = GRAFConfig() if cfg is None else cfg
        torch.manual_seed(seed)
        G, D = Generator(cfg), PatchDiscriminator(cfg.patch_size, cfg.disc_base)
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


def fit(model: GRAF, images: torch.Tensor, steps: int, *, batch: int = 8, r1_gamma: float = 1.0,
        final_scale: float = 0.5, anneal_rate: float = 0.002, ema_beta: float = 0.99,
        density_noise: float = 0.0, seed: int = 0, max_seconds: float | None = None,
        progress: bool = True, desc: str = "GRAF") -> History:
    """Adversarial training of ``model`` on ``images`` (N, 3, H, W) in [0, 1]; continues where a
    previous call stopped (steps, schedule, optimiser state). Returns the ``train`` history with
    "d_loss", "g_loss", "r1", "d_real", "d_fake" (mean logits) and "min_scale"."""
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

    def fake_patches(n, min_scale):
        z_s, z_a = G.sample_codes(n, rng)
        c2w, _ = G.poses.sample(n, rng)
        centers, scales = sample_patch_pattern(n, min_scale, 1.0, rng)
        uv = patch_coordinates(centers, scales, P, size, size)
        return G(z_s, z_a, c2w, uv, generator=rng, density_noise=density_noise)

    def step(i):
        k = start_step + i
        min_scale = min_scale_at(k, final_scale, anneal_rate)
        # --- discriminator: real patches with their own ν, fake patches rendered without grad
        idx = torch.randint(len(images), (batch,), generator=rng)
        centers, scales = sample_patch_pattern(batch, min_scale, 1.0, rng)
        real = sample_image_patches(images[idx], patch_coordinates(centers, scales, P, size, size))
        fake = fake_patches(batch, min_scale)  # rendered once, with its graph, for both updates
        real.requires_grad_(True)
        d_real = D(real)
        d_fake = D(fake.detach())
        loss_d = discriminator_loss(d_real, d_fake)
        r1 = r1_penalty(real, d_real)
        model.opt_d.zero_grad(set_to_none=True)
        (loss_d + 0.5 * r1_gamma * r1).backward()
        model.opt_d.step()
        # --- generator: non-saturating loss, the same fakes scored by the updated D
        D.requires_grad_(False)
        loss_g = generator_loss(D(fake))
        model.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        model.opt_g.step()
        D.requires_grad_(True)
        _update_ema(G_ema, G, ema_beta if k > 100 else 0.0)  # follow G exactly at the start
        model.steps_done = k + 1
        return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "r1": r1.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item(), "min_scale": min_scale}

    history = train(step, steps, desc=desc, max_seconds=max_seconds, progress=progress)
    model.history.append(history)
    return history


# ------------------------------------------------------------------ evaluation helpers
def reprojection_error(rgb_a, depth_a, mask_a, c2w_a, rgb_b, depth_b, mask_b, c2w_b, focal: float,
                       depth_tol: float = 0.05) -> dict:
    """Multi-view consistency of two renders of one object: carry every pixel of view A to view B
    through its depth and compare colours where B sees the same point.

    rgb (3, H, W), depth (H, W) (distance along the unit ray), mask (H, W) bool (the object),
    c2w (4, 4). A pixel of A lands on the world point p = o_A + t·d_A; in B's camera frame
    (x, y, z) = R_Bᵀ(p − o_B) it projects to u = W/2 + f·x/(−z), v = H/2 − f·y/(−z). It counts
    as visible when it lands inside B's image, inside B's object (all four pixels around it are
    object pixels, so no background colour is mixed in), and B's depth there matches
    ‖p − o_B‖ within ``depth_tol`` (not hidden). Returns {"error": mean |c_A − c_B(u, v)| over
    visible pixels and channels, "visible": their share of A's object pixels}.
    """
    from ..render.cameras import pixel_rays

    H, W = depth_a.shape
    origins, dirs = pixel_rays(c2w_a, W, H, focal)
    p = (origins + depth_a[..., None] * dirs)[mask_a]  # (M, 3)
    colours_a = rgb_a.permute(1, 2, 0)[mask_a]
    R, o_b = c2w_b[:3, :3], c2w_b[:3, 3]
    cam = (p - o_b) @ R
    z = -cam[:, 2].clamp_max(-1e-6)
    u = W / 2 + focal * cam[:, 0] / z
    v = H / 2 - focal * cam[:, 1] / z
    grid = torch.stack([2 * u / W - 1, 2 * v / H - 1], -1)[None, None]  # (1, 1, M, 2)

    def read(image, mode="bilinear"):
        return F.grid_sample(image[None].float(), grid, mode=mode, align_corners=False)[0, :, 0]

    colours_b = read(rgb_b).T
    depth_seen = read(depth_b[None], "nearest")[0]
    on_object = read(mask_b[None].float())[0] > 0.99  # all four neighbours: no background mixed in
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    visible = inside & on_object & ((depth_seen - (p - o_b).norm(dim=-1)).abs() < depth_tol)
    if not visible.any():
        return {"error": float("nan"), "visible": 0.0}
    error = (colours_a[visible] - colours_b[visible]).abs().mean()
    return {"error": float(error), "visible": float(visible.float().mean())}


def _pair_errors(views: list, poses, focal: float) -> dict:
    """Mean reprojection error of view k into view k + 1 (renders as dicts of tensors)."""
    errors, visible = [], []
    for k in range(len(views) - 1):
        a, b = views[k], views[k + 1]
        out = reprojection_error(a["rgb"], a["depth"], a["mask"], poses[k], b["rgb"], b["depth"], b["mask"],
                                 poses[k + 1], focal)
        if out["visible"] > 0:
            errors.append(out["error"])
            visible.append(out["visible"])
    return {"error": float(np.mean(errors)) if errors else float("nan"),
            "visible": float(np.mean(visible)) if visible else 0.0}


def generated_consistency(G: Generator, z_shape, z_app, step_deg: float = 30.0, n_views: int = 6,
                          elevation: float = 25.0, size: int | None = None, swap_every: bool = False) -> dict:
    """Reprojection error between neighbouring views (``step_deg`` apart) of generated objects.

    ``z_shape``/``z_app`` (n, ·): n objects. ``swap_every=True`` renders every second view with
    the *next* object's codes — a stand-in for a generator whose content drifts with the view
    (HoloGAN's failure), which the measure must flag.
    """
    size = G.cfg.image_size if size is None else size
    focal = G.cfg.focal * size / G.cfg.image_size
    angles = torch.stack([torch.arange(n_views) * step_deg, torch.full((n_views,), float(elevation))], 1)
    poses = G.poses.poses(angles)
    errors = []
    for i in range(len(z_shape)):
        j = [(i + (k % 2 if swap_every else 0)) % len(z_shape) for k in range(n_views)]
        out = G.render(z_shape[j], z_app[j], poses, size)
        views = [{"rgb": out["images"][k], "depth": out["depth"][k], "mask": out["acc"][k] > 0.5}
                 for k in range(n_views)]
        errors.append(_pair_errors(views, poses, focal))
    return {"error": float(np.nanmean([e["error"] for e in errors])),
            "visible": float(np.mean([e["visible"] for e in errors]))}


@torch.no_grad()
def view_dependence(G: Generator, z_shape, z_app, step_deg: float = 30.0, elevation: float = 25.0) -> float:
    """How much the generated colour depends on the viewing direction alone: render each object
    from azimuth 0, lift its object pixels to their expected surface points p, and evaluate the
    field's colour there along the ray of that view, d_A, and along the ray from a camera
    ``step_deg`` further round, d_B: mean |c(p, d_A; z) − c(p, d_B; z)|. Zero for a Lambertian
    field; the data here is Lambertian, but a discriminator that sees one view at a time
    cannot punish a generator that recolours an object as the camera moves."""
    from ..render.cameras import pixel_rays

    size, differences = G.cfg.image_size, []
    pose_a = G.poses.pose(0.0, elevation)
    eye_b = G.poses.pose(step_deg, elevation)[:3, 3]
    out = G.render(z_shape, z_app, pose_a[None], size)
    origins, dirs = pixel_rays(pose_a, size, size, G.cfg.focal)
    for i in range(len(z_shape)):
        mask = out["acc"][i] > 0.5
        if not mask.any():
            continue
        p = (origins + out["depth"][i][..., None] * dirs)[mask][None]
        d_a = dirs[mask][None]
        d_b = F.normalize(p - eye_b, dim=-1)
        _, c_a = G.field(p, d_a, z_shape[i:i + 1], z_app[i:i + 1])
        _, c_b = G.field(p, d_b, z_shape[i:i + 1], z_app[i:i + 1])
        differences.append(float((c_a - c_b).abs().mean()))
    return float(np.mean(differences)) if differences else float("nan")


def real_consistency(category: str = "chair", seeds=range(4), step_deg: float = 30.0, n_views: int = 6,
                     elevation: float = 25.0, size: int = 32, poses: PoseDistribution | None = None,
                     fov_deg: float = 40.0) -> dict:
    """The same measure on exact sphere-traced renders of real shapes (one colour each): the floor
    that resampling a 32×32 image sets for a perfectly consistent object."""
    from ..data.graf_images import LIGHT, random_colors
    from ..data.shapes import make_shape
    from ..render.sphere_tracing import render_rgba

    poses = GRAFConfig().poses if poses is None else poses
    focal = float(focal_from_fov(size, fov_deg))
    angles = [(k * step_deg, elevation) for k in range(n_views)]
    c2w = poses.poses(angles)
    colors = random_colors(len(list(seeds)), seed=99)
    errors = []
    for colour, seed in zip(colors, seeds):
        views = []
        for pose in c2w:
            r = render_rgba(make_shape(category, seed), colour, pose, size, size, focal, light=LIGHT)
            rgb = torch.from_numpy(r["rgb"]).permute(2, 0, 1)
            alpha = torch.from_numpy(r["alpha"])
            views.append({"rgb": alpha * rgb + (1 - alpha), "depth": torch.from_numpy(r["depth"]),
                          "mask": alpha > 0.5})
        errors.append(_pair_errors(views, c2w, focal))
    return {"error": float(np.nanmean([e["error"] for e in errors])),
            "visible": float(np.mean([e["visible"] for e in errors]))}


def orbit(G: Generator, z_shape, z_app, n: int = 8, elevation: float = 25.0, size: int | None = None):
    """The same object (codes (1, ·)) from ``n`` azimuths 0 … 360° at one elevation: ``render``'s
    dict for the n views, plus "angles" (n, 2)."""
    angles = torch.stack([torch.linspace(0, 360, n + 1)[:-1], torch.full((n,), float(elevation))], 1)
    out = G.render(z_shape.expand(n, -1), z_app.expand(n, -1), G.poses.poses(angles), size)
    out["angles"] = angles
    return out


def image_renderer(G: Generator, size: int = 64, z_shape0=None, z_app0=None):
    """``render(azimuth, elevation, **codes) -> (H, W, 3)`` for ``viz.image_sliders``.

    Keyword arguments ``zs0``, ``zs1``, … and ``za0``, … replace entries of the base codes
    ``z_shape0`` / ``z_app0`` (default zeros: the "mean" object).
    """
    cfg = G.cfg
    zs = torch.zeros(1, cfg.z_shape) if z_shape0 is None else torch.as_tensor(z_shape0).reshape(1, -1).clone()
    za = torch.zeros(1, cfg.z_app) if z_app0 is None else torch.as_tensor(z_app0).reshape(1, -1).clone()

    def render(azimuth: float = 30.0, elevation: float = 25.0, **codes):
        z_s, z_a = zs.clone(), za.clone()
        for name, value in codes.items():
            target, index = (z_s, int(name[2:])) if name.startswith("zs") else (z_a, int(name[2:]))
            target[0, index] = float(value)
        out = G.render(z_s, z_a, G.poses.pose(azimuth, elevation)[None], size)
        return out["images"][0].permute(1, 2, 0)

    return render


def quality(G: Generator, real: torch.Tensor, seed: int = 0) -> dict:
    """Image quality of G against ``real`` (N, 3, H, W): pyramid sliced Wasserstein distance
    (``geometry.image_metrics.pyramid_swd``, ×10³) and mean object coverage (share of pixels
    that differ from the white background), for N samples from random cameras."""
    from ..geometry.image_metrics import foreground_fraction, pyramid_swd

    fake = G.sample(len(real), seed=seed)["images"]
    swd = pyramid_swd(fake, real, seed=seed)
    return {"swd": swd["mean"], "swd_levels": swd["levels"],
            "coverage_fake": float(foreground_fraction(fake).mean()),
            "coverage_real": float(foreground_fraction(real).mean())}


# ------------------------------------------------------------------ shipped checkpoint
CHECKPOINT_TRAIN = dict(n_images=1000, steps=8000, batch=8, r1_gamma=1.0, final_scale=0.5,
                        anneal_rate=0.002, ema_beta=0.99, lr_g=1e-3, lr_d=4e-4, seed=0,
                        max_seconds=2700, chunks=20)


def load_pretrained() -> Generator:
    """The shipped generator (moving-average weights), in eval mode."""
    from ..checkpoints import checkpoint_info, load_checkpoint

    info = checkpoint_info(CHECKPOINT)
    cfg = GRAFConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["config"]["model"].items()})
    G = Generator(cfg)
    load_checkpoint(CHECKPOINT, G)
    return G.eval().requires_grad_(False)


def train_checkpoint() -> dict:
    """``GEN3D_MODE=full gen3d-course train graf``: train on chair renders, ship the averaged G.

    Trains in chunks; after each, the pyramid SWD to 128 held-out images is recorded (the curve
    in the manifest) and the checkpoint is saved, so a run stopped early still leaves weights.
    Stops after ``steps`` or ``max_seconds`` of training, whichever comes first.
    """
    from ..checkpoints import save_checkpoint
    from ..data.graf_images import graf_images
    from ..geometry.image_metrics import pyramid_swd

    torch.set_num_threads(1)
    config.seed_everything(0)
    t = dict(CHECKPOINT_TRAIN)
    t["n_images"] = config.budget(lecture=200, fast=32, full=t["n_images"])
    t["steps"] = config.budget(lecture=150, fast=15, full=t["steps"])
    cfg = GRAFConfig()
    start = time.perf_counter()
    data = graf_images(t["n_images"], cfg.image_size, "chair", seed=0, poses=cfg.poses, fov_deg=cfg.fov_deg)
    held_out = graf_images(256, cfg.image_size, "chair", seed=1, poses=cfg.poses, fov_deg=cfg.fov_deg)
    render_seconds = time.perf_counter() - start
    model = GRAF.create(cfg, t["lr_g"], t["lr_d"], seed=t["seed"])
    untrained = copy.deepcopy(model.G_ema)
    real_vs_real = pyramid_swd(data.images[:256], held_out.images, seed=0)["mean"]
    curve, seconds, metrics = [], 0.0, {}
    per_chunk = max(t["steps"] // t["chunks"], 1)
    while model.steps_done < t["steps"] and seconds < t["max_seconds"]:
        history = fit(model, data.images, min(per_chunk, t["steps"] - model.steps_done), batch=t["batch"],
                      r1_gamma=t["r1_gamma"], final_scale=t["final_scale"], anneal_rate=t["anneal_rate"],
                      ema_beta=t["ema_beta"], seed=t["seed"], max_seconds=t["max_seconds"] - seconds,
                      desc="graf checkpoint")
        seconds += history.seconds
        swd = quality(model.G_ema, held_out.images[:128])["swd"]
        curve.append((model.steps_done, round(seconds, 1), round(swd, 1)))
        print(f"graf checkpoint: step {model.steps_done}, {seconds:.0f} s, SWD(128 held-out) {swd:.1f}", flush=True)
        metrics = {"steps": model.steps_done, "train_seconds": round(seconds, 1),
                   "render_seconds": round(render_seconds, 1), "curve_steps_seconds_swd": curve}
        save_checkpoint(CHECKPOINT, model.G_ema, command="GEN3D_MODE=full gen3d-course train graf",
                        seed=0, metrics=metrics, config={"model": asdict(cfg), "train": t,
                                                         "data": "graf_images(n_images, 32, 'chair', seed=0)"})
    trained_q, untrained_q = quality(model.G_ema, held_out.images), quality(untrained, held_out.images)
    metrics.update({"swd_x1e3": round(trained_q["swd"], 2), "swd_untrained_x1e3": round(untrained_q["swd"], 2),
                    "swd_real_vs_real_x1e3": round(real_vs_real, 2),
                    "coverage_fake": round(trained_q["coverage_fake"], 4),
                    "coverage_real": round(trained_q["coverage_real"], 4),
                    "wall_seconds": round(time.perf_counter() - start, 1)})
    save_checkpoint(CHECKPOINT, model.G_ema, command="GEN3D_MODE=full gen3d-course train graf", seed=0,
                    metrics=metrics, config={"model": asdict(cfg), "train": t,
                                             "data": "graf_images(n_images, 32, 'chair', seed=0)"})
    return metrics
