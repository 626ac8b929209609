"""Score distillation sampling (Poole et al. 2022, DreamFusion): a 3D field optimised so that its
renders look likely to a 2D diffusion prior (unit 12), and view conditioning (Liu et al. 2023,
Zero-1-to-3; Shi et al. 2023, MVDream) as the fix for its multi-faced "Janus" objects.

A render x = g(θ) of the field θ from a random camera is noised, x_t = √ᾱ_t x + √(1 − ᾱ_t) ε,
and the prior's denoising loss L = w(t) ‖ε̂_φ(x_t, t, y) − ε‖² would pull it towards the data.
Its gradient has the U-Net's Jacobian in it,

    ∇_θ L = E[ w(t) (ε̂ − ε) · ∂ε̂/∂x_t · ∂x_t/∂x · ∂x/∂θ ],

and SDS drops that factor (the U-Net is a frozen prior, its Jacobian is expensive and poorly
conditioned at small noise):

    ∇_θ L_SDS = E[ w(t) (ε̂ − ε) ∂x/∂θ ].

``sds_loss`` returns a surrogate whose gradient with respect to the render is exactly
w(t)(ε̂ − ε), with ε̂ computed under ``torch.no_grad``: back-propagating it through the renderer
gives ∇_θ L_SDS. The prompt y here is the object's colour (the course's "text"), and for a
view-conditioned prior also the camera's angles (``prompt_condition``), so the prior knows which
side of the object it should see.
"""
from __future__ import annotations

import math

import torch

from ..render.cameras import focal_from_fov, pixel_rays
from ..render.patches import PoseDistribution
from ..render.rays import render_rays
from ..train import train
from .diffusion import DiffusionModel, guided_epsilon, q_sample

FOV = 40.0  # the prior's training renders' field of view (``data.graf_images.DEFAULT_FOV``)


def prompt_condition(colors: torch.Tensor, angles: torch.Tensor | None = None) -> torch.Tensor:
    """The prior's condition: the object's RGB colour (n, 3) in [0, 1], followed for a
    view-conditioned prior by the camera's (sin φ, cos φ, elevation in radians) from ``angles``
    (n, 2) (azimuth φ, elevation in degrees). sin and cos make azimuths 359° and 1° neighbours."""
    colors = torch.as_tensor(colors, dtype=torch.float32).reshape(-1, 3)
    if angles is None:
        return colors
    angles = torch.as_tensor(angles, dtype=torch.float32).reshape(-1, 2)
    if len(angles) != len(colors):
        if len(colors) != 1:
            raise ValueError(f"prompt_condition: {len(colors)} colours for {len(angles)} cameras.")
        colors = colors.expand(len(angles), 3)
    phi, elevation = torch.deg2rad(angles[:, 0]), torch.deg2rad(angles[:, 1])
    return torch.cat([colors, phi.sin()[:, None], phi.cos()[:, None], elevation[:, None]], 1)


def sample_views(n: int, generator: torch.Generator | None = None, elevation_range=(10.0, 40.0),
                 radius: float = 1.8):
    """n cameras for SDS: azimuth uniform over the whole circle (every side must be seen, or the
    unseen ones stay empty), elevation uniform in ``elevation_range``, on a sphere of ``radius``
    looking at the origin: the distribution the prior's renders came from.
    Returns (c2w (n, 4, 4), angles (n, 2) in degrees)."""
    return PoseDistribution((0.0, 360.0), tuple(elevation_range), radius).sample(n, generator)


def render_views(field, c2w: torch.Tensor, size: int, n_samples: int = 32, background=1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 3, size, size) differentiable renders of ``field`` from the cameras ``c2w`` (n, 4, 4)
    with the prior's field of view, through the course's renderer (``render.rays.render_rays``)."""
    focal = focal_from_fov(size, FOV)
    rays = [pixel_rays(pose, size, size, focal) for pose in c2w]
    origins = torch.cat([o.reshape(-1, 3) for o, _ in rays])
    directions = torch.cat([d.reshape(-1, 3) for _, d in rays])
    out = render_rays(field, origins, directions, n_samples=n_samples, background=background,
                      generator=generator)
    return out["rgb"].reshape(len(c2w), size, size, 3).permute(0, 3, 1, 2)


def sds_weight(alpha_bars: torch.Tensor) -> torch.Tensor:
    """DreamFusion's w(t) = 1 − ᾱ_t (= σ_t², the noise variance): small at small noise, where
    ε̂ − ε is dominated by the prior's error on fine detail."""
    return 1 - alpha_bars


def prior_epsilon(prior: DiffusionModel, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None,
                  guidance: float) -> torch.Tensor:
    """ε̂_φ(x_t, t, y), classifier-free guided with scale ``guidance`` when there is a condition."""
    if cond is None:
        return prior(x_t, t)
    return guided_epsilon(prior, x_t, t, cond.to(x_t.device), guidance, prior.null_label)


class GuidedPrior(torch.nn.Module):
    """``prior`` with its ε̂ classifier-free guided at ``scale``: ``GuidedPrior(prior, 30)(x_t, t, y)``
    is ``prior_epsilon(prior, x_t, t, y, 30)``, with the prior's ``normalize`` and ``schedule``, so
    code written for a plain prior (the assignment's ``sds_loss``) runs guided."""

    def __init__(self, prior: DiffusionModel, scale: float):
        super().__init__()
        self.prior, self.scale = prior, float(scale)

    @property
    def schedule(self):
        return self.prior.schedule

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return self.prior.normalize(image)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return prior_epsilon(self.prior, x_t, t, cond, self.scale)


def sds_loss(prior: DiffusionModel, image: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             cond: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """The SDS surrogate for renders ``image`` (B, 3, H, W) in [0, 1], differentiable w.r.t. the
    field: its gradient with respect to the standardised render x is w(t)(ε̂ − ε) per sample,
    ε̂ computed without a graph, so ``backward`` never enters the U-Net. t (B,) step indices,
    noise (B, 3, H, W) the ε added, ``cond`` (B, C) the prompt, ``guidance`` the CFG scale.
    Its value is not a loss that falls (only its gradient means something); summed over pixels,
    averaged over the batch."""
    if image.shape != noise.shape:
        raise ValueError(f"sds_loss: noise {tuple(noise.shape)} must have the render's shape "
                         f"{tuple(image.shape)}.")
    x = prior.normalize(image)
    schedule = prior.schedule
    with torch.no_grad():
        eps_hat = prior_epsilon(prior, q_sample(x, t, noise, schedule), t, cond, guidance)
        w = sds_weight(schedule.alpha_bars[t.cpu()]).to(x.device).view(-1, 1, 1, 1)
        grad = w * (eps_hat - noise)
    return (grad * x).sum() / len(x)


def denoising_loss(prior: DiffusionModel, image: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   cond: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """w(t) ‖ε̂_φ(x_t, t, y) − ε‖² per sample (B,), with the graph through the U-Net kept: the
    loss SDS is the gradient of once the Jacobian ∂ε̂/∂x_t is dropped. Averaged over many
    (t, ε) it also scores how likely renders are under the prior (lower: more like its data)."""
    x = prior.normalize(image)
    schedule = prior.schedule
    eps_hat = prior_epsilon(prior, q_sample(x, t, noise, schedule), t, cond, guidance)
    w = sds_weight(schedule.alpha_bars[t.cpu()]).to(x.device)
    return w * (eps_hat - noise).pow(2).flatten(1).sum(1)


def sample_timesteps(n: int, T: int, t_range=(0.02, 0.98), generator: torch.Generator | None = None):
    """t ~ U{t_min·T, …, t_max·T} (DreamFusion: 0.02–0.98): without the smallest steps, whose
    gradient is the prior's fine-detail error, and the largest, where the render is drowned."""
    lo, hi = int(t_range[0] * T), max(int(t_range[1] * T), int(t_range[0] * T) + 1)
    if not 0 <= lo < hi <= T:
        raise ValueError(f"sample_timesteps: t_range {t_range} must lie in [0, 1] with low < high.")
    return torch.randint(lo, hi, (n,), generator=generator)


def distill(field, prior: DiffusionModel, color, steps: int, *, view_conditioned: bool, guidance: float = 20.0,
            size: int = 32, views: int = 2, lr: float = 1e-3, t_range=(0.02, 0.98), tv_weight: float = 0.0,
            elevation_range=(10.0, 40.0), n_samples: int = 32, seed: int = 0, max_seconds: float | None = None,
            desc: str = "SDS", progress: bool = True):
    """Optimise ``field`` (a ``models.nerf.GridField``) by SDS alone: each step renders ``views``
    random cameras (``sample_views``) at ``size``², draws t (``sample_timesteps``) and ε, and
    steps Adam along ``sds_loss`` (+ ``tv_weight`` · the grid's total variation). The prompt is the
    colour ``color`` (3,), with the cameras' angles too when ``view_conditioned``; ``color`` None
    means no prompt (an unconditional prior, e.g. ``diffusion.GaussianDenoiser``).
    Returns the training history ("sds" surrogate, "tv")."""
    if color is None and view_conditioned:
        raise ValueError("distill: a view-conditioned prompt needs a colour too (the prior's prompt is colour + camera).")
    generator = torch.Generator().manual_seed(seed)
    color = None if color is None else torch.as_tensor(color, dtype=torch.float32).reshape(1, 3)
    optimizer = torch.optim.Adam(field.param_groups(lr), lr=lr)

    def step(i):
        c2w, angles = sample_views(views, generator, elevation_range)
        image = render_views(field, c2w, size, n_samples, generator=generator)
        t = sample_timesteps(views, prior.schedule.T, t_range, generator)
        noise = torch.randn(image.shape, generator=generator)
        cond = None if color is None else prompt_condition(color.expand(views, 3), angles if view_conditioned else None)
        loss = sds_loss(prior, image, t, noise, cond, guidance)
        tv = field.tv_loss() if tv_weight else torch.zeros(())
        optimizer.zero_grad(set_to_none=True)
        (loss + tv_weight * tv).backward()
        optimizer.step()
        return {"sds": loss.item(), "tv": tv.item()}

    field.train()
    history = train(step, steps, desc=desc, log_every=10, max_seconds=max_seconds, progress=progress)
    field.eval()
    return history


def prior_score(prior: DiffusionModel, images: torch.Tensor, cond: torch.Tensor | None = None, draws: int = 16,
                seed: int = 0) -> float:
    """Mean ``denoising_loss`` per pixel of ``images`` over ``draws`` fixed (t, ε) pairs each (t
    uniform over the whole chain, no guidance): how unlikely the prior finds them. Lower is more
    like its data; an empty white render is easy to denoise, so compare like with like."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            t = torch.randint(prior.schedule.T, (len(images),), generator=generator)
            noise = torch.randn(images.shape, generator=generator)
            total += float(denoising_loss(prior, images, t, noise, cond).mean())
    return total / draws / math.prod(images.shape[1:])


def prompt_score(prior: DiffusionModel, images: torch.Tensor, cond: torch.Tensor, draws: int = 16,
                 seed: int = 0) -> float:
    """How much better the prior denoises ``images`` when told the prompt ``cond`` than with the
    null prompt: ``prior_score`` without minus with it. By Bayes, p(y | x_t) ∝ p(x_t | y)/p(x_t),
    and the two denoising errors estimate the two scores, so this is the classifier-free
    guidance's implicit classifier: > 0 when the renders look like what the prompt asks for
    (colour, and the camera's side for a view-conditioned prior); about 0 for a blank render."""
    return prior_score(prior, images, None, draws, seed) - prior_score(prior, images, cond, draws, seed)
