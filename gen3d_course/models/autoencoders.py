"""Autoencoders and variational autoencoders (unit 01): networks, losses and a training helper.

Autoencoder (AE): a code z = e(x), a reconstruction x̂ = d(z), loss ||x − x̂||². Nothing asks the
codes to fill any particular region, so a random code usually decodes to nonsense.

Variational autoencoder (VAE): the encoder returns a Gaussian q(z|x) = N(μ(x), diag σ²(x)) (as
μ and log σ², which is unconstrained and numerically safe); a code is drawn as z = μ + σ·ε with
ε ~ N(0, I) (the reparameterisation, so gradients reach μ and σ); the loss is

    C·||x − x̂||² + KL[N(μ, σ²) ‖ N(0, I)],   KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²),

summed over pixels / latent dimensions and averaged over the batch. The KL term pulls every
q(z|x) towards N(0, I), so codes drawn from N(0, I) at test time land where the decoder has
been trained. C trades reconstruction against that regularity: with a Gaussian decoder of
variance s², C = 1 / (2 s²).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..train import on_device, train

# --- losses ------------------------------------------------------------------------------------


def _tensor(x, name: str, fn: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {x.dtype}.")
    if x.dim() < 1:
        raise ValueError(f"{fn}: {name} must have a latent axis (shape (..., D)), got a scalar.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{fn}: {name} contains NaN or inf; check the encoder's output.")
    return x


def _gaussian(mu, logvar, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = _tensor(mu, "mu", fn), _tensor(logvar, "logvar", fn)
    if mu.shape != logvar.shape:
        raise ValueError(f"{fn}: mu has shape {tuple(mu.shape)} but logvar has shape "
                         f"{tuple(logvar.shape)}; they describe one Gaussian per code and must match.")
    return mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL[N(μ, diag σ²) ‖ N(0, I)] in closed form, one value per code: shape ``mu.shape[:-1]``.

    KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) with σ² = exp(logvar), summed over the last axis.
    It is 0 exactly when μ = 0 and σ = 1, and positive otherwise.
    """
    mu, logvar = _gaussian(mu, logvar, "kl_divergence")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A sample z ~ N(μ, diag σ²) written as z = μ + σ·ε, ε ~ N(0, I), σ = exp(½·logvar).

    The randomness sits in ε, which does not depend on the parameters, so z is a differentiable
    function of μ and logvar; ``torch.normal(mu, std)`` gives the same distribution with zero
    gradients.
    """
    mu, logvar = _gaussian(mu, logvar, "reparameterize")
    std = torch.exp(0.5 * logvar)
    return mu + std * torch.randn_like(std)


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x − x̂||² per example: squared error summed over every axis but the first, shape (B,)."""
    fn = "reconstruction_error"
    if not isinstance(x, torch.Tensor) or not isinstance(x_hat, torch.Tensor):
        raise TypeError(f"{fn}: x and x_hat must be torch tensors, got {type(x).__name__} and "
                        f"{type(x_hat).__name__}.")
    if x.shape != x_hat.shape:
        raise ValueError(f"{fn}: x has shape {tuple(x.shape)} but x_hat has shape "
                         f"{tuple(x_hat.shape)}; the decoder must output the data's shape.")
    if x.dim() < 1:
        raise ValueError(f"{fn}: x needs a batch axis first, got a scalar.")
    return (x - x_hat).pow(2).reshape(x.shape[0], -1).sum(dim=1)


def vae_loss(x: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             C: float = 1.0) -> torch.Tensor:
    """The VAE loss, a scalar: mean over the batch of C·||x − x̂||² + KL[N(μ, σ²) ‖ N(0, I)].

    ||x − x̂||² is summed over all pixels (voxels) of an example and KL over its latent
    dimensions, so both are "per example" quantities before the batch mean.
    """
    mu, logvar = _gaussian(mu, logvar, "vae_loss")
    rec = reconstruction_error(x, x_hat)
    if mu.dim() != 2 or mu.shape[0] != rec.shape[0]:
        raise ValueError(f"vae_loss: mu should be (batch, latent) with batch {rec.shape[0]} like x, "
                         f"got {tuple(mu.shape)}.")
    return (C * rec + kl_divergence(mu, logvar)).mean()


# --- networks ----------------------------------------------------------------------------------


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten x (B, \*data_shape) and map it through ReLU layers to ``out_dim`` numbers."""

    def __init__(self, data_shape, out_dim: int, hidden=(256, 128)):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.net = _mlp([math.prod(self.data_shape), *hidden, out_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.data_shape:
            shape = ", ".join(map(str, self.data_shape))
            raise ValueError(f"encoder: expected inputs of shape (B, {shape}), got {tuple(x.shape)}.")
        return self.net(x.reshape(x.shape[0], -1))


class MLPDecoder(nn.Module):
    """Map a code (B, latent_dim) through ReLU layers to values in (0, 1) of shape data_shape.

    The sigmoid output suits images in [0, 1] and voxel occupancies alike.
    """

    def __init__(self, latent_dim: int, data_shape, hidden=(128, 256)):
        super().__init__()
        self.latent_dim, self.data_shape = latent_dim, tuple(data_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(self.data_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decoder: expected codes of shape (B, {self.latent_dim}), "
                             f"got {tuple(z.shape)}.")
        return torch.sigmoid(self.net(z)).reshape(z.shape[0], *self.data_shape)


class AutoEncoder(nn.Module):
    """Deterministic autoencoder: ``encode(x) -> z``, ``decode(z) -> x̂``, ``forward(x) -> x̂``."""

    variational = False

    def __init__(self, data_shape, latent_dim: int = 8, hidden=(256, 128)):
        super().__init__()
        self.data_shape, self.latent_dim = tuple(data_shape), latent_dim
        self.encoder = MLPEncoder(data_shape, latent_dim, hidden)
        self.decoder = MLPDecoder(latent_dim, data_shape, tuple(reversed(hidden)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VAE(AutoEncoder):
    """Variational autoencoder with the same layers as :class:`AutoEncoder`, except that the
    encoder outputs 2·latent_dim numbers: μ and log σ².

    ``encode(x) -> (mu, logvar)``; ``forward(x) -> (x̂, mu, logvar)`` decodes a reparameterised
    sample in training mode and μ itself in eval mode; ``sample(n)`` decodes z ~ N(0, I).
    """

    variational = True

    def __init__(self, data_shape, latent_dim: int = 8, hidden=(256, 128)):
        super().__init__(data_shape, latent_dim, hidden)
        self.encoder = MLPEncoder(data_shape, 2 * latent_dim, hidden)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.decode(z)


# --- training and evaluation -------------------------------------------------------------------


def adam(params, lr: float = 2e-3, **kwargs) -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch build supports it (5× faster steps for
    small CPU models), plain otherwise."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


def train_step(model: AutoEncoder, optimiser: torch.optim.Optimizer, x: torch.Tensor,
               C: float = 1.0) -> dict:
    """One optimiser step on the batch ``x``: what :func:`fit` repeats, in one place so that a
    lecture can write it out and compare. AE: ||x − x̂||²; VAE: C·||x − x̂||² + KL, with x̂ decoded
    from a reparameterised sample (the global torch RNG draws ε). Returns the logged numbers."""
    if model.variational:
        x_hat, mu, logvar = model(x)
        rec, kl = reconstruction_error(x, x_hat).mean(), kl_divergence(mu, logvar).mean()
        loss = C * rec + kl
        logs = {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}
    else:
        loss = reconstruction_error(x, model(x)).mean()
        logs = {"loss": loss.item(), "rec": loss.item()}
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return logs


def fit(model: AutoEncoder, data: torch.Tensor, steps: int, *, C: float = 1.0,
        batch_size: int = 64, lr: float = 2e-3, seed: int = 0, desc: str | None = None,
        max_seconds: float | None = None, progress: bool = True, device=None):
    """Train an AE (loss ||x − x̂||²) or a VAE (loss C·||x − x̂||² + KL) with Adam on ``data``.

    Both losses are per-example sums averaged over the batch. Logs "loss" and "rec" (and "kl"
    for a VAE) per step; returns the :class:`~gen3d_course.train.History`. Trains on ``device``
    (default ``config.pick_device()``); the model comes back where it was.
    """
    if not isinstance(data, torch.Tensor) or tuple(data.shape[1:]) != model.data_shape:
        raise ValueError(f"fit: data must be a tensor of shape (N, {model.data_shape}) for this "
                         f"model, got {getattr(data, 'shape', type(data).__name__)}.")
    generator = torch.Generator().manual_seed(seed)
    optimiser = adam(model.parameters(), lr=lr)
    model.train()

    def step(_):
        x = data[torch.randint(0, len(data), (batch_size,), generator=generator)].to(device)
        return train_step(model, optimiser, x, C)

    torch.manual_seed(seed)  # the reparameterisation noise
    with on_device(model, device=device) as device:
        history = train(step, steps, desc=desc or type(model).__name__, max_seconds=max_seconds,
                        progress=progress)
    model.eval()
    return history


@torch.no_grad()
def encode_mean(model: AutoEncoder, x: torch.Tensor) -> torch.Tensor:
    """The code of each x: z for an AE, the mean μ of q(z|x) for a VAE."""
    model.eval()
    code = model.encode(x)
    return code[0] if model.variational else code


def decode_numpy(model: AutoEncoder, z) -> np.ndarray:
    """Decode one code given as a numpy/list vector (as widgets pass it) to a numpy array."""
    with torch.no_grad():
        z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(1, model.latent_dim)
        return model.decode(z)[0].numpy()


def nearest_neighbour_mse(samples: torch.Tensor, reference: torch.Tensor,
                          chunk: int = 512) -> torch.Tensor:
    """For each sample, the mean squared difference to its closest reference example, (N,).

    A generated image that resembles *some* training image scores low; one that lies between
    or outside the data scores high. (Low can also mean "copied": compare with held-out data.)
    """
    a = samples.reshape(samples.shape[0], -1).double()
    b = reference.reshape(reference.shape[0], -1).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"nearest_neighbour_mse: samples have {a.shape[1]} values each, the "
                         f"reference {b.shape[1]}.")
    out = [torch.cdist(a[i:i + chunk], b).pow(2).min(dim=1).values for i in range(0, len(a), chunk)]
    return (torch.cat(out) / a.shape[1]).float()
