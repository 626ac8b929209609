"""Generative adversarial networks: networks, losses and one alternating update (unit 02).

A GAN trains a generator G (noise z -> sample) against a discriminator D (sample -> "real?"
logit). The minimax value is

    V(G, D) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],

D ascends it, G descends it. For a fixed G the best D is D*(x) = p(x) / (p(x) + q(x)), and
then V = 2·JS(p, q) - log 4: the original GAN minimises a Jensen-Shannon divergence.
(The Wasserstein GAN of unit 03 is ``models.wgan``.)

Contents:

- toy networks for 1D/2D data (``ToyGenerator``, ``ToyDiscriminator``). Both take an optional
  *ensemble* size: ``members=K`` holds K independent networks in one set of batched weight
  tensors, so K seeds train for the price of about one to two (Adam is element-wise, so the
  members never interact). Inputs are then (K, B, d) instead of (B, d);
- an image DCGAN (``DCGenerator``, ``DCDiscriminator``) following Radford et al. (2016);
- losses: ``discriminator_loss``, ``generator_loss`` (saturating / non-saturating), ``mmd``;
- one alternating update each: ``gan_step``, ``infogan_step``;
- ``minibatch_stddev`` (a remedy for mode collapse) and ``adain`` (StyleGAN's style input).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..train import on_device, train


def _check_finite(x: torch.Tensor, name: str, fn: str) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(f"{fn}: {name} contains NaN or inf; the training run has diverged "
                         "(lower the learning rate) or the data is broken.")


# --------------------------------------------------------------------------------------------
# Toy networks (1D / 2D data), optionally an ensemble of K independent members
# --------------------------------------------------------------------------------------------
class EnsembleLinear(nn.Module):
    """K independent linear maps at once: x (K, B, in) -> x @ W_k + b_k, shape (K, B, out).

    Initialised like ``nn.Linear`` (uniform in ±1/sqrt(in)), member by member.
    """

    def __init__(self, in_features: int, out_features: int, members: int = 1):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def minibatch_stddev(h: torch.Tensor) -> torch.Tensor:
    """Append one feature: the batch's standard deviation, averaged over features.

    h (..., B, F) -> (..., B, F + 1). The discriminator then sees a statistic of the *whole*
    batch: a collapsed generator produces batches with a small spread, which D can now detect
    even when every single sample looks real (Karras et al., ProGAN, 2018).
    """
    std = h.std(dim=-2, unbiased=False, keepdim=True).mean(dim=-1, keepdim=True)
    return torch.cat([h, std.expand(*h.shape[:-1], 1)], dim=-1)


class _ToyMLP(nn.Module):
    """in -> [Linear, activation] x depth -> (minibatch stddev) -> Linear -> out, for K members."""

    def __init__(self, in_dim, out_dim, hidden, depth, members, activation, minibatch_std=False):
        super().__init__()
        if members < 1 or depth < 1:
            raise ValueError(f"{type(self).__name__}: members ({members}) and depth ({depth}) must be >= 1.")
        self.in_dim, self.out_dim, self.members = in_dim, out_dim, members
        # one flag per member: a plain member gets the feature multiplied by 0, which makes it
        # exactly a network without it (the weight on a constant-zero input never moves)
        flags = [minibatch_std] * members if isinstance(minibatch_std, bool) else list(minibatch_std)
        if len(flags) != members:
            raise ValueError(f"{type(self).__name__}: minibatch_std has {len(flags)} flags for "
                             f"{members} members.")
        self.minibatch_std = any(flags)
        self.register_buffer("minibatch_mask", torch.tensor(flags, dtype=torch.float32).reshape(-1, 1, 1))
        dims = [in_dim] + [hidden] * depth
        self.hidden = nn.ModuleList(EnsembleLinear(a, b, members) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(hidden + int(self.minibatch_std), out_dim, members)
        self.activation = activation

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        single = x.ndim == 2
        if single:
            if self.members != 1:
                raise ValueError(f"{type(self).__name__}: an ensemble of {self.members} members "
                                 f"expects input (K={self.members}, B, {self.in_dim}), got {tuple(x.shape)}.")
            x = x[None]
        if x.ndim != 3 or x.shape[0] != self.members or x.shape[2] != self.in_dim:
            raise ValueError(f"{type(self).__name__}: expected input (B, {self.in_dim}) or "
                             f"(K={self.members}, B, {self.in_dim}), got {tuple(x.shape)}.")
        h = x
        for layer in self.hidden:
            h = self.activation(layer(h))
        if self.minibatch_std:
            h = minibatch_stddev(h)
            h = torch.cat([h[..., :-1], h[..., -1:] * self.minibatch_mask], dim=-1)
        return self.out(h), single


class ToyGenerator(_ToyMLP):
    """An MLP transform of noise: z (B, latent_dim) -> x (B, out_dim), or (K, B, ·) for K members."""

    def __init__(self, latent_dim: int = 2, out_dim: int = 2, hidden: int = 128, depth: int = 3,
                 members: int = 1):
        super().__init__(latent_dim, out_dim, hidden, depth, members, torch.relu)
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out, single = self._features(z)
        return out[0] if single else out

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal z of the shape ``forward`` expects: (n, latent) or (K, n, latent)."""
        shape = (n, self.latent_dim) if self.members == 1 else (self.members, n, self.latent_dim)
        return torch.randn(shape, generator=generator, device=self.out.weight.device)


class ToyDiscriminator(_ToyMLP):
    """An MLP classifier/critic with LeakyReLU(0.2): x (B, in_dim) -> logits (B,) (or (K, B)).

    ``outputs > 1`` returns (B, outputs): column 0 is the real/fake logit, the others can serve
    as an auxiliary head (InfoGAN's Q). ``minibatch_std=True`` appends the batch spread as a
    feature before the last layer (``minibatch_stddev``); a list of K flags switches it per
    member, so plain and remedied discriminators can train side by side in one ensemble.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3, members: int = 1,
                 minibatch_std: bool | list[bool] = False, outputs: int = 1):
        # a partial, not a lambda: the network pickles (the grader sends it to a student's kernel)
        super().__init__(in_dim, outputs, hidden, depth, members,
                         functools.partial(F.leaky_relu, negative_slope=0.2), minibatch_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, single = self._features(x)
        out = out[0] if single else out
        return out.squeeze(-1) if self.out_dim == 1 else out


# --------------------------------------------------------------------------------------------
# DCGAN for small images
# --------------------------------------------------------------------------------------------
def _levels(size: int, fn: str) -> int:
    levels = int(round(math.log2(size / 4)))
    if size < 8 or 4 * 2 ** levels != size:
        raise ValueError(f"{fn}: image size {size} must be 4·2^k with k >= 1 (8, 16, 32, 64…).")
    return levels


class DCGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, channels, size, size) in [-1, 1].

    The DCGAN rules: a transposed convolution (kernel 4, stride 2) doubles the resolution at
    each level, batch norm + ReLU after every layer but the last, tanh at the output, no
    pooling and no fully connected hidden layers. Channels halve as resolution doubles.
    """

    def __init__(self, latent_dim: int = 32, size: int = 32, channels: int = 1, base: int = 16):
        super().__init__()
        levels = _levels(size, "DCGenerator")
        self.latent_dim, self.size = latent_dim, size
        width = base * 2 ** (levels - 1)
        layers = [nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False),  # 1x1 -> 4x4
                  nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"DCGenerator: expected z of shape (B, {self.latent_dim}), got {tuple(z.shape)}.")
        return self.net(z[:, :, None, None])

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator, device=self.net[0].weight.device)

    def mix_styles(self, z_content: torch.Tensor, z_style: torch.Tensor, level: int) -> torch.Tensor:
        """Generate from ``z_content``, but give the feature maps after block ``level`` (0: 4x4,
        1: 8x8, ...) the per-channel mean and std of ``z_style``'s maps there (``adain``), then
        continue. Which attributes follow the style shows what a layer's channel statistics
        carry; StyleGAN makes this the generator's only input of the style."""
        blocks = [i for i, m in enumerate(self.net) if isinstance(m, nn.ReLU)]
        if not 0 <= level < len(blocks):
            raise ValueError(f"mix_styles: level must be in 0..{len(blocks) - 1}, got {level}.")
        cut = blocks[level] + 1
        head, tail = self.net[:cut], self.net[cut:]
        content, style = head(z_content[:, :, None, None]), head(z_style[:, :, None, None])
        sigma = style.var(dim=(2, 3), unbiased=False).add(1e-5).sqrt()
        return tail(adain(content, sigma, style.mean(dim=(2, 3))))


class DCDiscriminator(nn.Module):
    """images (B, channels, size, size) -> logits (B,): the generator mirrored.

    Strided convolutions halve the resolution, LeakyReLU(0.2), batch norm on all but the first
    layer, and a final 4x4 convolution to one logit (no sigmoid: the loss applies it).
    """

    def __init__(self, size: int = 32, channels: int = 1, base: int = 16):
        super().__init__()
        levels = _levels(size, "DCDiscriminator")
        self.size, self.channels = size, channels
        layers = [nn.Conv2d(channels, base, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = base
        for _ in range(levels - 1):
            layers += [nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.channels, self.size, self.size):
            raise ValueError(f"DCDiscriminator: expected images (B, {self.channels}, {self.size}, "
                             f"{self.size}), got {tuple(x.shape)}.")
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> nn.Module:
    """The DCGAN paper's initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       real_label: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy of D: -E[log D(x)] - E[log(1 - D(G(z)))], with D = sigmoid(logit).

    Written with softplus for stability: -log sigmoid(l) = softplus(-l) and
    -log(1 - sigmoid(l)) = softplus(l). Minimising it is D's ascent on V(G, D).
    ``real_label`` < 1 is one-sided label smoothing (3D-GAN, unit 04): real targets 0.9 instead
    of 1, so D is never rewarded for infinite confidence.
    """
    real = real_label * F.softplus(-real_logits) + (1.0 - real_label) * F.softplus(real_logits)
    return real.mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """The generator's loss on D's logits for its samples.

    saturating=True:  E[log(1 - D(G(z)))] = -E[softplus(l)]   (the minimax game itself)
    saturating=False: -E[log D(G(z))]     =  E[softplus(-l)]  (the non-saturating heuristic)
    Where D confidently rejects the samples (l << 0) the first has gradient sigmoid(l) -> 0 with
    respect to l; the second has sigmoid(l) - 1 -> -1 and keeps G learning.
    """
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.05, 0.2, 1.0, 5.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (biased V-statistic).

    MMD²(p, q) = E k(x, x') + E k(y, y') - 2 E k(x, y), k(a, b) = sum_s exp(-|a-b|² / (2 s²)).
    Zero iff p = q (for a characteristic kernel); needs no discriminator, but costs O(B²·d)
    per batch: every pair of samples is compared. x: (B, d), y: (B', d) -> scalar.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd: expected (B, d) and (B', d) samples, got {tuple(x.shape)} and {tuple(y.shape)}.")
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


# --------------------------------------------------------------------------------------------
# One alternating update
# --------------------------------------------------------------------------------------------
def gan_step(G, D, opt_g, opt_d, real: torch.Tensor, z: torch.Tensor,
             saturating: bool = False) -> dict[str, float]:
    """One alternating GAN update: first D (one step on real vs detached fakes), then G.

    G's step uses the *updated* D on the same fakes. ``.detach()`` keeps D's loss from
    reaching G; D's gradients from G's step are cleared by D's ``zero_grad`` next time.
    Returns the two losses as floats.
    """
    fake = G(z)
    opt_d.zero_grad(set_to_none=True)
    d_loss = discriminator_loss(D(real), D(fake.detach()))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    g_loss = generator_loss(D(fake), saturating=saturating)
    g_loss.backward()
    opt_g.step()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


def infogan_step(G, D, opt_g, opt_d, real: torch.Tensor, z: torch.Tensor, codes: torch.Tensor,
                 n_codes: int, info_weight=1.0) -> dict[str, float]:
    """One InfoGAN update with a categorical code c (Chen et al. 2016).

    G sees [z, onehot(c)]; D has 1 + n_codes outputs: the real/fake logit and Q(c | x)'s
    logits. Both players also minimise info_weight·CE(Q(G(z, c)), c), a lower bound on
    -I(c; G(z, c)) up to the constant H(c): G learns to make c *recoverable* from its sample.
    ``info_weight`` is a number, or one per member of an ensemble (0 = a plain GAN that is fed
    the code but never asked to make it recoverable). The returned info_loss is the weighted one.
    """
    g_in = torch.cat([z, F.one_hot(codes, n_codes).to(z.dtype)], dim=-1)
    fake = G(g_in)
    weight = torch.as_tensor(info_weight, dtype=z.dtype)
    weight = weight.reshape(-1, *([1] * (codes.ndim - 1))) if weight.ndim else weight

    def info(out):  # the weighted cross-entropy of Q; a weight per member for an ensemble
        ce = F.cross_entropy(out[..., 1:].reshape(-1, n_codes), codes.reshape(-1), reduction="none")
        return (weight * ce.reshape(codes.shape)).mean()

    opt_d.zero_grad(set_to_none=True)
    out_fake = D(fake.detach())
    d_loss = discriminator_loss(D(real)[..., 0], out_fake[..., 0]) + info(out_fake)
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    out_fake = D(fake)
    info_loss = info(out_fake)
    g_loss = generator_loss(out_fake[..., 0]) + info_loss
    g_loss.backward()
    opt_g.step()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "info_loss": info_loss.item()}


# --------------------------------------------------------------------------------------------
# AdaIN
# --------------------------------------------------------------------------------------------
def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: AdaIN(x, y) = y_s · (x - mu(x)) / sigma(x) + y_b.

    x (B, C, H, W); mu, sigma per image and channel over H, W; scale, bias (B, C) (the style).
    The normalisation erases x's own per-channel statistics, so after AdaIN every channel has
    exactly mean y_b and standard deviation |y_s|: the style sets them, the content keeps
    only the spatial pattern (Huang & Belongie 2017; StyleGAN, Karras et al. 2019).
    """
    if x.ndim != 4:
        raise ValueError(f"adain: expected x of shape (B, C, H, W), got {tuple(x.shape)}.")
    if scale.shape != x.shape[:2] or bias.shape != x.shape[:2]:
        raise ValueError(f"adain: scale {tuple(scale.shape)} and bias {tuple(bias.shape)} must both "
                         f"be (B, C) = {tuple(x.shape[:2])}.")
    mu = x.mean(dim=(2, 3), keepdim=True)
    sigma = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt()
    return scale[:, :, None, None] * (x - mu) / sigma + bias[:, :, None, None]


class AdaIN(nn.Module):
    """StyleGAN's style input: a learned affine map A turns a style vector w into (y_s, y_b).

    y_s is parameterised as 1 + A_s(w) so that a zero style leaves the normalised map unscaled.
    """

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.affine(w).chunk(2, dim=1)
        return adain(x, 1 + scale, bias)


# --------------------------------------------------------------------------------------------
# DCGAN on the rendered shape images
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(G: DCGenerator, n: int, seed: int = 0) -> torch.Tensor:
    """n images in [0, 1] from G in eval mode (batch norm uses its running statistics)."""
    was_training = G.training
    G.eval()
    images = (G(G.noise(n, torch.Generator(device=G.net[0].weight.device).manual_seed(seed))) + 1) / 2
    G.train(was_training)
    return images.cpu()


def train_dcgan(images: torch.Tensor, *, steps: int, latent_dim: int = 32, base: int = 16,
                batch: int = 32, lr: float = 5e-4, seed: int = 0, progress: bool = True,
                max_seconds: float | None = None, device=None):
    """Train a DCGAN on ``images`` (N, C, H, W) in [0, 1]; returns (G, D, history).

    Adam with beta1 = 0.5 and the DCGAN initialisation, one D step per G step (``gan_step``).
    Trains on ``device`` (default ``config.pick_device()``); G and D come back on the CPU."""
    if images.ndim != 4:
        raise ValueError(f"train_dcgan: images must be (N, C, H, W), got {tuple(images.shape)}.")
    _check_finite(images, "images", "train_dcgan")
    x = images.float() * 2 - 1
    torch.manual_seed(seed)
    G = dcgan_init(DCGenerator(latent_dim, x.shape[-1], x.shape[1], base))
    D = dcgan_init(DCDiscriminator(x.shape[-1], x.shape[1], base))
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(seed + 1)

    def step(i):
        real = x[torch.randint(len(x), (batch,), generator=rng)].to(device)
        return gan_step(G, D, opt_g, opt_d, real, torch.randn(batch, latent_dim, generator=rng).to(device))

    with on_device(G, D, device=device) as device:
        history = train(step, steps, desc="DCGAN", log_every=5, progress=progress, max_seconds=max_seconds)
    return G, D, history
