"""Denoising diffusion (Ho et al. 2020, DDPM; Song et al. 2021, DDIM; Ho & Salimans 2022,
classifier-free guidance) for data of any shape (B, ...): 2D points, shape latents (unit 11), images (unit 12's U-Net).

The forward process adds Gaussian noise in T small steps, q(x_t | x_{t-1}) = N(√α_t x_{t-1}, β_t I)
with α_t = 1 − β_t, so that after all of them x_T is (almost) pure noise. With ᾱ_t = ∏_{s≤t} α_s
any step is reached in one draw (``q_sample``):

    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,   ε ~ N(0, I).

A network ε_θ(x_t, t, y) learns to predict the noise (``epsilon_loss``); since
∇ log p_t(x_t) ≈ −ε_θ / √(1 − ᾱ_t), it learns the score of every noised distribution at once.
Sampling runs the process backwards from x_T ~ N(0, I): ancestral DDPM steps (``ddpm_step``)
or deterministic DDIM steps that may skip most of the T steps (``ddim_step``). A class label y
with a *null* label ∅ dropped in at random during training gives both a conditional and an
unconditional model in one network, mixed at sampling time (``guided_epsilon``).

Indexing: time is a 0-based index t ∈ {0, …, T−1}; index t is the paper's step t + 1, so
``alpha_bars[0]`` = ᾱ_1 = 1 − β_1 and "ᾱ before the first step" (ᾱ_0 = 1) has no entry.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train import train

# --------------------------------------------------------------------------------------------
# Noise schedules
# --------------------------------------------------------------------------------------------


@dataclass
class Schedule:
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s, each a (T,) float tensor (index t = step t+1)."""

    betas: torch.Tensor

    def __post_init__(self):
        b = torch.as_tensor(self.betas, dtype=torch.float32)
        if b.ndim != 1 or len(b) < 1 or not ((b > 0) & (b < 1)).all():
            raise ValueError("Schedule: betas must be a non-empty 1D tensor with values in (0, 1).")
        self.betas = b
        self.alphas = 1 - b
        self.alpha_bars = torch.cumprod(self.alphas, 0)

    @property
    def T(self) -> int:
        return len(self.betas)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of x_t, per step."""
        return self.alpha_bars / (1 - self.alpha_bars)


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's schedule: β_t linear from 1e-4 to 0.02 over T = 1000 steps (scaled by 1000/T so
    that a shorter chain destroys the signal as much; β ≤ 0.999)."""
    scale = 1000 / T
    return Schedule(torch.linspace(beta_start * scale, beta_end * scale, T).clamp(max=0.999))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal (2021): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

    ᾱ falls slowly at both ends, so fewer steps are wasted on almost-clean or almost-pure-noise
    inputs; β_t = 1 − ᾱ_t/ᾱ_{t−1} is clipped at ``max_beta`` (the last step would be 1).
    """
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return Schedule(betas.float())


def make_schedule(kind: str = "cosine", T: int = 1000) -> Schedule:
    """``linear_schedule(T)`` or ``cosine_schedule(T)`` by name."""
    kinds = {"linear": linear_schedule, "cosine": cosine_schedule}
    if kind not in kinds:
        raise ValueError(f"make_schedule: kind {kind!r} must be 'linear' or 'cosine'.")
    return kinds[kind](T)


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, ..., 1) so that it broadcasts against x (B, ...)."""
    return values.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _check_t(t: torch.Tensor, x: torch.Tensor, schedule: Schedule, fn: str) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    if t.dtype.is_floating_point:
        raise TypeError(f"{fn}: t must hold integer step indices 0..T-1, got dtype {t.dtype}.")
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if t.shape != (x.shape[0],):
        raise ValueError(f"{fn}: t has shape {tuple(t.shape)}; expected ({x.shape[0]},), one step "
                         "per sample.")
    if (t < 0).any() or (t >= schedule.T).any():
        raise ValueError(f"{fn}: t must lie in 0..{schedule.T - 1} (T = {schedule.T}).")
    return t.cpu()


# --------------------------------------------------------------------------------------------
# Forward process, loss, score
# --------------------------------------------------------------------------------------------

def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε: a draw of q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I).

    x0, noise: (B, ...); t: (B,) step indices (or one index for the batch).
    """
    if noise.shape != x0.shape:
        raise ValueError(f"q_sample: noise {tuple(noise.shape)} must have x0's shape {tuple(x0.shape)}.")
    a = _per_sample(schedule.alpha_bars[_check_t(t, x0, schedule, "q_sample")], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def epsilon_loss(model, x0: torch.Tensor, schedule: Schedule, t: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM's simplified loss L = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖².

    t ~ U{0..T−1} and ε ~ N(0, I) are drawn unless given; the squared error is averaged over
    all elements. ``model(x_t, t, labels)`` predicts ε (labels only if given).
    """
    if t is None:
        t = torch.randint(schedule.T, (x0.shape[0],), generator=generator).to(x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    x_t = q_sample(x0, t, noise, schedule)
    pred = model(x_t, t) if labels is None else model(x_t, t, labels)
    return F.mse_loss(pred, noise)


def predicted_x0(x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t: ``q_sample`` solved for x_0."""
    a = _per_sample(schedule.alpha_bars[_check_t(t, x_t, schedule, "predicted_x0")], x_t)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def score(eps: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """∇_x log p_t(x) ≈ −ε_θ(x, t) / √(1 − ᾱ_t) (Song et al. 2021): the noise points away from
    the data, so the score points back at it, more strongly the less noise there is."""
    a = _per_sample(schedule.alpha_bars[_check_t(t, eps, schedule, "score")], eps)
    return -eps / (1 - a).sqrt()


# --------------------------------------------------------------------------------------------
# Reverse steps
# --------------------------------------------------------------------------------------------

def ddpm_step(x_t: torch.Tensor, t: int, eps: torch.Tensor, schedule: Schedule,
              noise: torch.Tensor) -> torch.Tensor:
    """One ancestral step x_t → x_{t−1} ~ p_θ(x_{t−1} | x_t) (Ho et al. 2020, Algorithm 2):

        x_{t−1} = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t)) + σ_t z,   z ~ N(0, I),

    with σ_t² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t, the variance of q(x_{t−1} | x_t, x_0); it is
    0 at the last step (index 0), which returns the mean.
    """
    if not 0 <= int(t) < schedule.T:
        raise ValueError(f"ddpm_step: t = {t} must lie in 0..{schedule.T - 1}.")
    t = int(t)
    alpha, beta, a = schedule.alphas[t], schedule.betas[t], schedule.alpha_bars[t]
    a_prev = schedule.alpha_bars[t - 1] if t > 0 else torch.tensor(1.0)
    mean = (x_t - beta / (1 - a).sqrt() * eps) / alpha.sqrt()
    sigma = ((1 - a_prev) / (1 - a) * beta).sqrt()
    return mean + sigma * noise


def ddim_step(x_t: torch.Tensor, t: int, t_prev: int, eps: torch.Tensor, schedule: Schedule,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip: float | None = None) -> torch.Tensor:
    """One DDIM step from index t to an earlier index t_prev (−1: to clean data) (Song et al. 2021):

        x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε_θ + σ z,
        σ = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}),

    i.e. predict x_0, then re-noise it to level t' with the *predicted* noise. η = 0 is
    deterministic (an ODE solver); η = 1 with t' = t − 1 is the DDPM step.

    ``clip`` clamps x̂_0 to [−clip, clip] and re-derives ε from it (Ho et al.'s ``clip_denoised``).
    Early on x̂_0 divides the network's error by √ᾱ_t ≈ 0, and a large jump carries that error on.
    """
    if not -1 <= int(t_prev) < int(t) < schedule.T:
        raise ValueError(f"ddim_step: need -1 <= t_prev < t < T, got t_prev={t_prev}, t={t}.")
    a = schedule.alpha_bars[int(t)]
    a_prev = schedule.alpha_bars[int(t_prev)] if t_prev >= 0 else torch.tensor(1.0)
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).sqrt()
    out = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs noise.")
        out = out + sigma * noise
    return out


def guided_epsilon(model, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, scale: float,
                   null_label: int) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022):

        ε̃ = ε_θ(x, t, ∅) + s · (ε_θ(x, t, y) − ε_θ(x, t, ∅)).

    s = 0 is the unconditional model, s = 1 the conditional one, s > 1 pushes past it towards
    what makes y likely (the paper's w is s − 1). Both predictions come from one batched call.
    """
    if scale == 1:
        return model(x, t, labels)
    null = torch.full_like(labels, null_label)
    if scale == 0:
        return model(x, t, null)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2)
    return uncond + scale * (cond - uncond)


def _device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _epsilon_fn(model, labels, guidance):
    """ε(x, t) for the samplers: unconditional, conditional or guided."""
    if labels is None:
        return lambda x, t: model(x, t)
    return lambda x, t: guided_epsilon(model, x, t, labels.to(x.device), guidance, model.null_label)


@torch.no_grad()
def ddpm_sample(model, shape, schedule: Schedule, labels: torch.Tensor | None = None,
                guidance: float = 1.0, generator: torch.Generator | None = None,
                trajectory: bool = False):
    """x_T ~ N(0, I), then ``ddpm_step`` for t = T−1, …, 0 (T network calls). Returns x_0
    (shape ``shape``), or (x_0, [x_T, …, x_0]) with ``trajectory``."""
    eps_fn = _epsilon_fn(model, labels, guidance)
    device = _device(model)
    x = torch.randn(shape, generator=generator).to(device)
    path = [x.cpu()]
    for t in reversed(range(schedule.T)):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x = ddpm_step(x, t, eps_fn(x, tt), schedule, torch.randn(shape, generator=generator).to(device))
        if trajectory:
            path.append(x.cpu())
    return (x, path) if trajectory else x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` indices from T−1 down to 0, evenly spaced (DDIM's sub-sequence τ)."""
    if not 1 <= steps <= T:
        raise ValueError(f"ddim_timesteps: steps must be in 1..{T}, got {steps}.")
    return sorted({round(v) for v in torch.linspace(0, T - 1, steps).tolist()}, reverse=True)


@torch.no_grad()
def ddim_sample(model, shape, schedule: Schedule, steps: int = 50, eta: float = 0.0,
                labels: torch.Tensor | None = None, guidance: float = 1.0,
                generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                trajectory: bool = False, clip: float | None = None):
    """DDIM from x_T (drawn unless given) along ``ddim_timesteps(T, steps)`` (``steps`` network
    calls), ending with a step to index −1 (clean data); ``clip`` as in ``ddim_step``.
    Returns x_0 or (x_0, path)."""
    eps_fn = _epsilon_fn(model, labels, guidance)
    device = _device(model)
    x = (torch.randn(shape, generator=generator) if x_T is None else x_T.clone()).to(device)
    path = [x.cpu()]
    taus = ddim_timesteps(schedule.T, steps)
    for t, t_prev in zip(taus, taus[1:] + [-1]):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
        noise = torch.randn(shape, generator=generator).to(device) if eta > 0 else None
        x = ddim_step(x, t, t_prev, eps_fn(x, tt), schedule, eta, noise, clip)
        if trajectory:
            path.append(x.cpu())
    return (x, path) if trajectory else x


# --------------------------------------------------------------------------------------------
# Denoisers
# --------------------------------------------------------------------------------------------

class GaussianDenoiser(nn.Module):
    """The exact ε-predictor when the data are N(μ, s² I): x_t ~ N(√ᾱ_t μ, (ᾱ_t s² + 1 − ᾱ_t) I), so

        E[ε | x_t] = √(1 − ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t).

    A denoiser with no training error: a sampler run with it must give back N(μ, s² I), which
    tests the sampler alone (the checks and tests use it)."""

    def __init__(self, schedule: Schedule, mu, s: float):
        super().__init__()
        self.register_buffer("alpha_bars", schedule.alpha_bars.clone())
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.s = float(s)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        a = _per_sample(self.alpha_bars[t], x)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s ** 2 + 1 - a)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoids of the step index: [cos(t ω_k), sin(t ω_k)], ω_k = max_period^(−k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], -1)


class ResidualBlock(nn.Module):
    """h + W₂ SiLU(W₁ SiLU(LN(h)) + W_e e): the embedding e (time and label) enters every block."""

    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(F.silu(self.norm(h))) + self.emb(e)))


class MLPDenoiser(nn.Module):
    """ε_θ(x, t, y) for flat data (2D points, shape codes): x (B, ...) with ``dim`` = prod(...)
    entries, flattened in and reshaped out.

    ``n_classes`` > 0 adds a label embedding with one extra row, the null label
    ``null_label = n_classes`` (∅, "no class"), which ``forward`` uses when labels are None.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, n_classes: int = 0,
                 emb_dim: int = 64):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1 or n_classes < 0:
            raise ValueError("MLPDenoiser: dim, hidden and depth must be >= 1 and n_classes >= 0.")
        self.dim, self.hidden, self.depth, self.n_classes, self.emb_dim = dim, hidden, depth, n_classes, emb_dim
        self.null_label = n_classes
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(n_classes + 1, emb_dim) if n_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth,
                "n_classes": self.n_classes, "emb_dim": self.emb_dim}

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser: x {tuple(x.shape)} has {flat.shape[1]} entries per sample; "
                             f"expected {self.dim}.")
        e = self.time(timestep_embedding(t, self.emb_dim))
        if self.label is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
            e = e + self.label(labels)
        elif labels is not None:
            raise ValueError("MLPDenoiser: labels given to an unconditional model (n_classes=0).")
        h = self.inp(flat)
        for block in self.blocks:
            h = block(h, e)
        return self.out(h).view_as(x)


class ConvBlock(nn.Module):
    """The U-Net's residual block: h + conv(SiLU(GN(conv(SiLU(GN(h)))) + W_e e)), with a 1×1
    convolution on the skip path when the channel count changes."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, c_in), nn.GroupNorm(8, c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        z = self.conv1(F.silu(self.norm1(h))) + self.emb(e)[:, :, None, None]
        return self.skip(h) + self.conv2(F.silu(self.norm2(z)))


class UNet(nn.Module):
    """ε_θ(x, t, c) for small square images (B, 3, S, S), S divisible by 4: two resolutions
    down (strided convolutions), two up (nearest upsampling), skip connections across
    (Ronneberger et al. 2015; DDPM's denoiser without attention, a few hundred k parameters).

    ``cond_dim`` > 0 adds a continuous condition c (B, cond_dim), e.g. a camera's
    (sin φ, cos φ, elevation): a linear embedding added to the time embedding. The null
    condition ∅ is a row of NaN (``null_label``), replaced by a learned vector, so that
    ``drop_labels`` and ``guided_epsilon`` work for it as for class labels.
    """

    null_label = float("nan")

    def __init__(self, size: int = 32, channels: int = 32, cond_dim: int = 0, emb_dim: int = 64):
        super().__init__()
        if size % 4 or size < 8 or channels % 8 or cond_dim < 0:
            raise ValueError(f"UNet: size {size} must be a multiple of 4 (>= 8), channels {channels} a "
                             f"multiple of 8 (GroupNorm), cond_dim {cond_dim} >= 0.")
        self.size, self.channels, self.cond_dim, self.emb_dim = size, channels, cond_dim, emb_dim
        self.shape = (3, size, size)
        c, c2 = channels, 2 * channels
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Linear(cond_dim, emb_dim) if cond_dim else None
        self.null = nn.Parameter(torch.zeros(emb_dim)) if cond_dim else None
        self.inp = nn.Conv2d(3, c, 3, padding=1)
        self.down1, self.pool1 = ConvBlock(c, c, emb_dim), nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.down2, self.pool2 = ConvBlock(c, c2, emb_dim), nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.mid1, self.mid2 = ConvBlock(c2, c2, emb_dim), ConvBlock(c2, c2, emb_dim)
        self.up2, self.up1 = ConvBlock(2 * c2, c2, emb_dim), ConvBlock(c2 + c, c, emb_dim)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # starts predicting ε = 0, the loss's plain baseline
        nn.init.zeros_(self.out[-1].bias)

    def config(self) -> dict:
        return {"size": self.size, "channels": self.channels, "cond_dim": self.cond_dim, "emb_dim": self.emb_dim}

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Time embedding plus the condition's (∅'s learned vector for NaN rows or no condition)."""
        e = self.time(timestep_embedding(t, self.emb_dim))
        if self.label is None:
            if cond is not None:
                raise ValueError("UNet: a condition given to an unconditional model (cond_dim=0).")
            return e
        if cond is None:
            return e + self.null
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"UNet: condition {tuple(cond.shape)} must be ({batch}, {self.cond_dim}).")
        null = torch.isnan(cond).any(1, keepdim=True)
        return e + torch.where(null, self.null, self.label(torch.nan_to_num(cond)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"UNet: x {tuple(x.shape)} must be (B, {', '.join(map(str, self.shape))}).")
        e = self.embed(t, labels, x.shape[0])
        h1 = self.down1(self.inp(x), e)                        # (B, c, S, S)
        h2 = self.down2(self.pool1(h1), e)                     # (B, 2c, S/2, S/2)
        h = self.mid2(self.mid1(self.pool2(h2), e), e)         # (B, 2c, S/4, S/4)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), e)   # (B, 2c, S/2, S/2)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), e)   # (B, c, S, S)
        return self.out(h)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

def drop_labels(labels: torch.Tensor, p_uncond: float, null_label,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample's label (a class, or a row of a continuous condition) by ∅ with
    probability ``p_uncond``: how one network learns ε(x, t, y) and ε(x, t, ∅) together for
    classifier-free guidance."""
    drop = torch.rand(labels.shape[0], generator=generator).to(labels.device) < p_uncond
    drop = drop.view(-1, *([1] * (labels.ndim - 1)))
    return torch.where(drop, torch.full_like(labels, null_label), labels)


class DiffusionModel(nn.Module):
    """A denoiser with its schedule and data normalisation: everything a checkpoint needs to sample.

    Data are standardised, x ↦ (x − mean)/std, before noising (so that "signal" and the unit-
    variance noise have the same scale whatever the data's units), and samples are mapped back.
    ``mean`` and ``std`` broadcast against one sample (e.g. per-feature statistics of a latent).
    ``clip`` bounds DDIM's x̂_0 in standardised units (3: three standard deviations).
    """

    def __init__(self, denoiser: nn.Module, schedule: Schedule, mean=0.0, std=1.0, clip: float | None = 3.0):
        super().__init__()
        self.denoiser = denoiser
        self.register_buffer("betas", schedule.betas.clone())
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())
        if (self.std <= 0).any():
            raise ValueError("DiffusionModel: std must be positive.")
        self.clip = clip

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.betas.cpu())

    @property
    def null_label(self) -> int:
        return self.denoiser.null_label

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """ε_θ(x_t, t, y) on standardised data."""
        return self.denoiser(x, t, labels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, eta: float = 0.0, labels: torch.Tensor | None = None,
               guidance: float = 1.0, seed: int = 0, trajectory: bool = False, clip: bool = True):
        """n samples in data units: DDPM over all T steps when ``steps`` is None, else DDIM with
        ``steps`` steps (x̂_0 clipped at ``self.clip`` unless ``clip`` is False). ``labels`` (n,)
        and ``guidance`` s condition a class-conditional model."""
        if hasattr(self.denoiser, "shape"):
            shape = (n, *self.denoiser.shape)
        else:
            shape = (n, *self.mean.shape) if self.mean.ndim else (n, self.denoiser.dim)
        generator = torch.Generator().manual_seed(seed)
        if steps is None:
            out = ddpm_sample(self, shape, self.schedule, labels, guidance, generator, trajectory)
        else:
            out = ddim_sample(self, shape, self.schedule, steps, eta, labels, guidance, generator,
                              trajectory=trajectory, clip=self.clip if clip else None)
        if trajectory:
            return self.denormalize(out[0]), [self.denormalize(x) for x in out[1]]
        return self.denormalize(out)


def fit(model: DiffusionModel, data: torch.Tensor, steps: int, *, labels: torch.Tensor | None = None,
        p_uncond: float = 0.1, batch: int = 256, lr: float = 2e-3, seed: int = 0,
        max_seconds: float | None = None, desc: str = "diffusion", progress: bool = True):
    """Minimise ``epsilon_loss`` on standardised minibatches of ``data`` (N, ...) with Adam; the
    learning rate decays along half a cosine to 5% (over the steps, or the seconds if those run
    out first). With ``labels`` (N,) classes or (N, C) conditions, each sample's is dropped to ∅
    with probability ``p_uncond``.
    Returns the training history ("loss")."""
    data = torch.as_tensor(data, dtype=torch.float32)
    if not torch.isfinite(data).all():
        raise ValueError("fit: data contains NaN or inf.")
    if labels is not None and (len(labels) != len(data) or getattr(model.denoiser, "label", None) is None):
        raise ValueError(f"fit: labels must have one row per sample ({len(data)}) and a conditional "
                         "denoiser (n_classes > 0 or cond_dim > 0).")
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.denoiser.parameters(), lr=lr)
    schedule = model.schedule
    start = time.perf_counter()

    def step(i):
        done = i / steps
        if max_seconds:
            done = max(done, (time.perf_counter() - start) / max_seconds)
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))
        idx = torch.randint(len(data), (min(batch, len(data)),), generator=generator)
        x0 = model.normalize(data[idx].to(device))
        y = None if labels is None else drop_labels(labels[idx], p_uncond, model.null_label, generator).to(device)
        loss = epsilon_loss(model, x0, schedule, labels=y, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    model.train()
    history = train(step, steps, desc=desc, log_every=10, max_seconds=max_seconds, progress=progress)
    model.eval()
    return history
