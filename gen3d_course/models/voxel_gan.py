"""3D-GAN and 3D-VAE-GAN on voxel grids (Wu, Zhang, Xue, Freeman, Tenenbaum, NeurIPS 2016).

A generator maps a latent code z to an occupancy grid with strided *transposed* 3D convolutions
(each doubles the resolution), batch norm and ReLU, and a sigmoid at the end; a discriminator
mirrors it with strided 3D convolutions and LeakyReLU and outputs one logit. The 3D-VAE-GAN adds
an image encoder E that gives q(z | y) = N(mu(y), diag(sigma(y)^2)) for a rendered view y, and
trains with

    L = L_GAN + alpha1 * KL(q(z|y) || N(0, I)) + alpha2 * ||G(E(y)) - x||^2

Scaling against the paper (what two CPU cores train): the paper generates 64^3 grids from a
200-d z through 512-256-128-64 channels (batch 100); the shipped model here makes 32^3 grids from
a 64-d z through 64-32-16 channels (batch 32): 1/8 of the voxels, 1/41 of the generator's
weights (430k instead of 17.6M).

Shapes of a convolution along one axis (kernel k, stride s, padding p), worked out in
:func:`conv_output_size`:

    Conv3d:          n_out = floor((n + 2p - k) / s) + 1
    ConvTranspose3d: n_out = (n - 1) * s - 2p + k          (+ output_padding)

so k = 4, s = 2, p = 1 halves (Conv3d) or doubles (ConvTranspose3d) every side exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.images import shape_images
from ..data.samples import voxelize
from ..data.shapes import CATEGORIES, make_shape
from ..train import on_device, train
from .autoencoders import kl_divergence, reparameterize
from .gans import discriminator_loss, generator_loss

# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0,
                     transposed: bool = False, output_padding: int = 0) -> int:
    """Side length after a (transposed) convolution along one axis.

    Conv:       floor((n + 2 p - k) / s) + 1     (slide a k-window in steps of s over n + 2p)
    Transposed: (n - 1) s - 2 p + k + output_padding  (each input cell stamps a k-window, s apart;
    p trims both ends)

    The transposed formula inverts the conv formula when (n + 2p - k) is divisible by s, which is
    why a transposed convolution is the "shape inverse" (not the inverse) of a convolution.
    """
    for name, value in (("n", n), ("kernel", kernel), ("stride", stride)):
        if int(value) != value or value < 1:
            raise ValueError(f"conv_output_size: {name} must be a positive integer, got {value!r}.")
    if padding < 0 or output_padding < 0:
        raise ValueError("conv_output_size: padding and output_padding must be >= 0.")
    if transposed:
        return (n - 1) * stride - 2 * padding + kernel + output_padding
    size = (n + 2 * padding - kernel) // stride + 1
    if size < 1:
        raise ValueError(f"conv_output_size: a kernel of {kernel} does not fit in n={n} with "
                         f"padding {padding}; the output would be empty.")
    return size


def layer_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, tuple]]:
    """(name, layer type, output shape) of every leaf module, in call order, for input ``x``.

    Used by the lecture to print the shape table and by the assignment check to compare a
    student's generator with the reference layer by layer.
    """
    records, hooks = [], []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: records.append((name, type(m).__name__, tuple(o.shape)))))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return records


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class VoxelShuffle(nn.Module):
    """(B, C r^3, D, H, W) -> (B, C, rD, rH, rW): interleave channels into space.

    A stride-r transposed convolution is a plain convolution at the low resolution that
    produces r^3 outputs per cell, written into the r x r x r block of that cell. Computing it
    that way (Shi et al. 2016's sub-pixel convolution, here in 3D) avoids the slow scatter of a
    transposed convolution with one output channel on CPUs.
    """

    def __init__(self, r: int = 2):
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        r = self.r
        if c % r**3:
            raise ValueError(f"VoxelShuffle: {c} channels is not a multiple of r^3 = {r**3}.")
        x = x.view(b, c // r**3, r, r, r, d, h, w)
        return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c // r**3, d * r, h * r, w * r)


def resolution_of(channels) -> int:
    """Grid side of a generator with these hidden channels: 4 * 2^len(channels)."""
    return 4 * 2 ** len(channels)


class VoxelGenerator(nn.Module):
    """z (B, z_dim) -> occupancy probabilities (B, 1, R, R, R), R = 4 * 2^len(channels).

    Paper: z in R^200 -> 4^3 x 512 -> 8^3 x 256 -> 16^3 x 128 -> 32^3 x 64 -> 64^3 x 1, every
    layer a 4x4x4 transposed convolution (stride 1 for the first, 2 after), batch norm + ReLU
    between, sigmoid at the end. ``channels=(64, 32, 16)`` gives the course's 32^3 model.
    ``output="shuffle"`` computes the last (stride-2, one-channel) layer as a 3x3x3 convolution
    to 8 channels + :class:`VoxelShuffle` (same output shape, faster on a CPU).
    """

    def __init__(self, z_dim: int = 64, channels=(64, 32, 16), output: str = "transposed"):
        super().__init__()
        if output not in ("transposed", "shuffle"):
            raise ValueError(f"VoxelGenerator: output must be 'transposed' or 'shuffle', got {output!r}.")
        self.z_dim, self.channels, self.output = z_dim, tuple(channels), output
        self.resolution = resolution_of(channels)
        layers = [nn.ConvTranspose3d(z_dim, channels[0], 4, 1, 0, bias=False),
                  nn.BatchNorm3d(channels[0]), nn.ReLU()]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.ConvTranspose3d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm3d(c_out), nn.ReLU()]
        if output == "transposed":
            layers += [nn.ConvTranspose3d(channels[-1], 1, 4, 2, 1)]
        else:
            layers += [nn.Conv3d(channels[-1], 8, 3, 1, 1), VoxelShuffle(2)]
        layers += [nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"VoxelGenerator: z has shape {tuple(z.shape)}; expected (B, {self.z_dim}).")
        return self.net(z[:, :, None, None, None])


class VoxelDiscriminator(nn.Module):
    """Voxels (B, 1, R, R, R) in [0, 1] -> one logit per grid (B,); mirrors the generator.

    4x4x4 convolutions with stride 2 halve the grid down to 4^3, LeakyReLU(0.2) after each (batch
    norm on all but the first, as in DCGAN), and a final 4x4x4 convolution to one logit (the
    sigmoid of the paper's discriminator is folded into the loss for numerical safety).
    ``channels`` are listed as for the generator (deepest first) so the two mirror each other.
    """

    def __init__(self, channels=(64, 32, 16), norm: bool = True):
        super().__init__()
        self.channels, self.resolution = tuple(channels), resolution_of(channels)
        widths = list(channels[::-1])
        blocks = [nn.Sequential(nn.Conv3d(1, widths[0], 4, 2, 1), nn.LeakyReLU(0.2))]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks.append(nn.Sequential(
                nn.Conv3d(c_in, c_out, 4, 2, 1, bias=not norm),
                nn.BatchNorm3d(c_out) if norm else nn.Identity(), nn.LeakyReLU(0.2)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv3d(widths[-1], 1, 4, 1, 0)

    def _check(self, x):
        r = self.resolution
        if x.ndim != 5 or tuple(x.shape[1:]) != (1, r, r, r):
            raise ValueError(f"VoxelDiscriminator: input has shape {tuple(x.shape)}; "
                             f"expected (B, 1, {r}, {r}, {r}).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x).flatten()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unsupervised features (B, F): every block's activations, max-pooled to 2^3 cells
        and concatenated (the paper pools its discriminator's layers the same way before a
        linear SVM)."""
        self._check(x)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(F.adaptive_max_pool3d(x, 2).flatten(1))
        return torch.cat(feats, dim=1)


class ImageEncoder(nn.Module):
    """Image (B, 1, S, S) -> (mu, logvar), each (B, z_dim): the 3D-VAE-GAN's q(z | y).

    Strided 2D convolutions halve the image to 4 x 4 (batch norm + ReLU), then a linear layer
    outputs the Gaussian's mean and log-variance.
    """

    def __init__(self, z_dim: int = 64, image_size: int = 32, width: int = 16):
        super().__init__()
        n_layers = int(round(math.log2(image_size / 4)))
        if n_layers < 1 or image_size != 4 * 2 ** n_layers:
            raise ValueError(f"ImageEncoder: image_size must be 4 * 2^k (8, 16, 32, 64...), got {image_size}.")
        channels = [width * 2 ** i for i in range(n_layers)]
        self.z_dim, self.image_size = z_dim, image_size
        layers, c_in = [], 1
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 16, 2 * z_dim)

    def forward(self, y: torch.Tensor):
        s = self.image_size
        if y.ndim != 4 or tuple(y.shape[1:]) != (1, s, s):
            raise ValueError(f"ImageEncoder: images have shape {tuple(y.shape)}; expected (B, 1, {s}, {s}).")
        mu, logvar = self.head(self.conv(y).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


# --------------------------------------------------------------------------------------------
# Losses and the paper's training tricks
# --------------------------------------------------------------------------------------------


def discriminator_accuracy(real_logits, fake_logits) -> float:
    """Fraction of the batch D classifies right: real with logit > 0, fake with logit < 0."""
    correct = (real_logits > 0).sum() + (fake_logits < 0).sum()
    return float(correct) / (real_logits.numel() + fake_logits.numel())


def discriminator_update(D, optimizer, real, fake, last_accuracy: float, threshold: float = 0.8,
                         real_label: float = 1.0):
    """The paper's gated discriminator step: returns (loss, accuracy, updated).

    Always computes D's loss and accuracy on this batch (real vs ``fake``, which must already be
    detached from G), but takes an optimiser step only if D's accuracy on the *previous* batch,
    ``last_accuracy``, is not higher than ``threshold`` (0.8 in the paper): a discriminator that
    already wins is left alone so that G's gradients stay informative. ``threshold=None``
    switches the gate off (D is updated on every batch).
    """
    real_logits, fake_logits = D(real), D(fake)
    loss = discriminator_loss(real_logits, fake_logits, real_label)
    accuracy = discriminator_accuracy(real_logits, fake_logits)
    updated = threshold is None or last_accuracy <= threshold
    if updated:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.detach(), accuracy, updated


def vae_gan_loss(fake_logits, mu, logvar, recon, target, alpha1: float, alpha2: float) -> dict:
    """The 3D-VAE-GAN objective for the encoder and generator, as a dict of 0-d tensors.

        gan   = -log D(G(z)),  z ~ N(0, I)            (non-saturating GAN term)
        kl    = KL(q(z|y) || N(0, I))                 (batch mean of the sum over dims)
        recon = ||G(E(y)) - x||^2                     (batch mean of the sum over voxels)
        total = gan + alpha1 * kl + alpha2 * recon
    """
    gan = generator_loss(fake_logits)
    kl = kl_divergence(mu, logvar).mean()
    rec = (recon - target).pow(2).flatten(1).sum(dim=1).mean()
    return {"total": gan + alpha1 * kl + alpha2 * rec, "gan": gan, "kl": kl, "recon": rec}


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class VoxelGANConfig:
    """Everything that defines a model and its training; saved in the checkpoint manifest.

    Paper: lr_g = 0.0025, lr_d = 1e-5, batch 100, Adam beta1 = 0.5, D gated at 80 % accuracy.
    """

    z_dim: int = 64
    channels: tuple = (64, 32, 16)
    output: str = "shuffle"
    image_size: int = 32
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    beta1: float = 0.5
    batch: int = 32
    d_threshold: float | None = 0.8  # None switches the gate off
    real_label: float = 0.9        # one-sided label smoothing; 1.0 switches it off
    encoder: bool = False          # train an image encoder (3D-VAE-GAN)
    alpha1: float = 1.0            # KL weight
    alpha2: float = 0.1            # reconstruction weight (squared error summed over voxels)

    @property
    def resolution(self) -> int:
        return resolution_of(self.channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VoxelGANConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class VoxelGAN(nn.Module):
    """Generator, discriminator and (for the 3D-VAE-GAN) an image encoder, with their optimisers.

    ``step(real, images=None)`` does one training iteration and returns the logged numbers:

    1. fake = G(z), z ~ N(0, I);
    2. D step on (real, fake) through :func:`discriminator_update` (gated by the previous
       batch's accuracy when ``cfg.d_threshold`` is set);
    3. G step on -log D(G(z)); with an encoder, E and G step together on the 3D-VAE-GAN loss
       :func:`vae_gan_loss` with z ~ q(z | y) for the reconstruction term.
    """

    def __init__(self, cfg: VoxelGANConfig | None = None, device=None):
        super().__init__()
        self.cfg = cfg = cfg or VoxelGANConfig()
        self.G = VoxelGenerator(cfg.z_dim, cfg.channels, cfg.output)
        self.D = VoxelDiscriminator(cfg.channels)
        self.E = ImageEncoder(cfg.z_dim, cfg.image_size) if cfg.encoder else None
        self.to(device or "cpu")
        betas = (cfg.beta1, 0.999)
        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E else [])
        self.opt_g = torch.optim.Adam(g_params, lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.last_accuracy = 0.5
        self.steps_done = 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def step(self, real: torch.Tensor, images: torch.Tensor | None = None) -> dict:
        cfg, b = self.cfg, real.shape[0]
        z = torch.randn(b, cfg.z_dim, device=real.device)
        fake = self.G(z)
        d_loss, accuracy, updated = discriminator_update(
            self.D, self.opt_d, real, fake.detach(), self.last_accuracy, cfg.d_threshold, cfg.real_label)
        self.last_accuracy = accuracy
        fake_logits = self.D(fake)
        log = {"d_loss": d_loss.item(), "d_acc": accuracy, "d_updated": float(updated)}
        if self.E is not None:
            if images is None:
                raise ValueError("VoxelGAN.step: this model has an encoder; pass the rendered images too.")
            mu, logvar = self.E(images)
            recon = self.G(reparameterize(mu, logvar))
            parts = vae_gan_loss(fake_logits, mu, logvar, recon, real, cfg.alpha1, cfg.alpha2)
            loss = parts["total"]
            log.update(kl=parts["kl"].item(), recon=parts["recon"].item() / real[0].numel())
        else:
            loss = generator_loss(fake_logits)
        self.opt_g.zero_grad()
        loss.backward()
        self.opt_g.step()
        log["g_loss"] = generator_loss(fake_logits.detach()).item()
        self.steps_done += 1
        return log

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Occupancy probabilities (n, R, R, R) on the CPU for z ~ N(0, I) drawn from ``seed``."""
        if z is None:
            z = torch.randn(n, self.cfg.z_dim, generator=torch.Generator().manual_seed(seed))
        return generate(self.G, z)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Single-image reconstruction G(mu(y)) (the posterior mean), (n, R, R, R) on the CPU."""
        if self.E is None:
            raise ValueError("VoxelGAN.reconstruct: this model has no encoder (encoder=False).")
        return generate(self.G, self.encode(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Posterior means mu(y) (n, z_dim) on the CPU: the codes of rendered views."""
        if self.E is None:
            raise ValueError("VoxelGAN.encode: this model has no encoder (encoder=False).")
        was_training = self.E.training
        self.E.eval()
        mu = torch.cat([self.E(images[i:i + 128].to(self.device))[0].cpu() for i in range(0, len(images), 128)])
        self.E.train(was_training)
        return mu


@torch.no_grad()
def generate(G: VoxelGenerator, z: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """G(z) in eval mode (batch-norm running statistics), (n, R, R, R) float32 on the CPU."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = torch.cat([G(z[i:i + chunk].to(device)).cpu() for i in range(0, len(z), chunk)])
    G.train(was_training)
    return out[:, 0]


def fit(model: VoxelGAN, voxels: torch.Tensor, steps: int, images: torch.Tensor | None = None,
        seed: int = 0, desc: str = "3D-GAN", max_seconds: float | None = None, progress=True,
        callback=None, callback_every: int = 0, device=None):
    """Train ``model`` on ``voxels`` (N, R, R, R) bool/float for ``steps`` random minibatches.

    Returns the :class:`gen3d_course.train.History`. ``callback(i)`` runs every
    ``callback_every`` steps (e.g. to save samples for a "samples improving" figure). Trains on
    ``device`` (default ``config.pick_device()``); the model comes back where it was.
    """
    data = torch.as_tensor(voxels).float()
    if data.ndim != 4:
        raise ValueError(f"fit: voxels have shape {tuple(data.shape)}; expected (N, R, R, R).")
    if data.shape[-1] != model.cfg.resolution:
        raise ValueError(f"fit: the grids are {data.shape[-1]}^3 but the model makes "
                         f"{model.cfg.resolution}^3 grids; voxelize at the model's resolution.")
    data = data[:, None]
    imgs = None if images is None else torch.as_tensor(images).float()
    generator = torch.Generator().manual_seed(seed)
    batch = min(model.cfg.batch, len(data))

    def step(i):
        idx = torch.randint(0, len(data), (batch,), generator=generator)
        log = model.step(data[idx].to(device), None if imgs is None else imgs[idx].to(device))
        if callback is not None and callback_every and (i + 1) % callback_every == 0:
            callback(i)
        return log

    with on_device(model, device=device) as device:
        return train(step, steps, desc=desc, max_seconds=max_seconds, progress=progress,
                     log_every=max(1, steps // 200))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def voxel_dataset(per_category: int, res: int = 32, start_seed: int = 0, categories=None):
    """(voxels (N, res, res, res) bool tensor, labels (N,) int64) from the shape collection,
    category-major, seeds start_seed .. start_seed + per_category - 1."""
    categories = categories or CATEGORIES
    grids, labels = [], []
    for label, category in enumerate(categories):
        for seed in range(start_seed, start_seed + per_category):
            grids.append(voxelize(make_shape(category, seed), res))
            labels.append(label)
    return torch.from_numpy(np.stack(grids)), torch.tensor(labels)


def image_dataset(per_category: int, size: int = 32, start_seed: int = 0):
    """Rendered shaded views (N, 1, size, size) of the same shapes as :func:`voxel_dataset`."""
    return shape_images(per_category=per_category, size=size, kind="shaded", start_seed=start_seed)
