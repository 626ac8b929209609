"""Occupancy Networks (Mescheder et al. 2019), unit 07: networks, losses, data and evaluation.

An occupancy network is a classifier of space: f_θ(p, z) is the logit of "point p is inside the
shape", conditioned on a code z of an observation x (here a noisy point cloud of ~300 surface
points). The surface is the decision boundary {p : σ(f_θ(p, z)) = 0.5}, i.e. f_θ = 0, found at
any resolution with marching cubes or MISE (``geometry.mise``).

Conditional model: z = e(x) by a PointNet encoder (a shared per-point MLP with max-pooling, so
the code does not depend on the order of the points). Training draws K points p_j per shape with
their true occupancy o_j ∈ {0, 1} and minimises the binary cross-entropy

    L = 1/(B·K) Σ_i Σ_j BCE(f_θ(p_ij, z_i), o_ij),
    BCE(l, o) = −[o·log σ(l) + (1 − o)·log(1 − σ(l))] = softplus(l) − o·l

(the paper sums over the K = 2048 points; the mean differs by the constant K).

Variational model (unconditional): an encoder q_ψ(z | {(p_j, o_j)}) = N(μ, diag σ²) sees the
labelled training points, z = μ + σ·ε, and the loss is the negative ELBO

    L = Σ_j BCE(f_θ(p_j, z), o_j) + KL[q_ψ(z | ·) ‖ N(0, I)]   (per shape, averaged over shapes).

At test time z ~ N(0, I) decodes to a new shape: an unconditional generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from ..data import samples
from ..geometry import mise as mise_module
from ..train import on_device, train
from .autoencoders import kl_divergence, reparameterize

# Sizes of the shipped model; notebooks build a model with OccupancyNetwork(**DEFAULTS) to load it.
DEFAULTS = dict(z_dim=64, hidden=64, blocks=3, encoder_hidden=64, frequencies=4, film=True)


# --- the loss -----------------------------------------------------------------------------------


def occupancy_bce(logits: torch.Tensor, occupancy: torch.Tensor, reduction: str = "mean"):
    """Binary cross-entropy between predicted logits and true occupancies in {0, 1}.

    Per point, BCE(l, o) = softplus(l) − o·l, which equals −[o log σ(l) + (1−o) log(1−σ(l))]
    but stays finite for large |l| (log σ(l) of a float32 sigmoid underflows to −inf).
    reduction "mean": average over all points (B·K); "sum": sum over each shape's K points,
    then the mean over shapes (the paper's per-shape sum); "none": per point.
    """
    fn = "occupancy_bce"
    if not isinstance(logits, torch.Tensor) or not isinstance(occupancy, torch.Tensor):
        raise TypeError(f"{fn}: logits and occupancy must be torch tensors.")
    if logits.shape != occupancy.shape:
        raise ValueError(f"{fn}: logits have shape {tuple(logits.shape)} but occupancy has shape "
                         f"{tuple(occupancy.shape)}; expected one occupancy per predicted logit.")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{fn}: logits contain NaN or inf; lower the learning rate or check "
                         "the inputs.")
    occupancy = occupancy.to(logits.dtype)
    per_point = F.softplus(logits) - occupancy * logits
    if reduction == "none":
        return per_point
    if reduction == "sum":
        return per_point.sum(-1).mean() if per_point.ndim > 1 else per_point.sum()
    if reduction == "mean":
        return per_point.mean()
    raise ValueError(f"{fn}: reduction={reduction!r}; expected 'mean', 'sum' or 'none'.")


# --- networks -----------------------------------------------------------------------------------


class ResnetBlockFC(nn.Module):
    """x + W2·relu(W1·relu(x)) (with a linear shortcut when widths differ): deep MLPs train well."""

    def __init__(self, size_in: int, size_out: int | None = None):
        super().__init__()
        size_out = size_out or size_in
        self.fc0, self.fc1 = nn.Linear(size_in, size_out), nn.Linear(size_out, size_out)
        nn.init.zeros_(self.fc1.weight)  # each block starts as the identity
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None

    def forward(self, x):
        dx = self.fc1(F.relu(self.fc0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class PointNetEncoder(nn.Module):
    """A set of points (B, N, C) → a code (B, out_dim), invariant to the order of the points.

    A shared per-point MLP, then max-pooling over the points (a symmetric function); as in the
    Occupancy Networks' ResNet-PointNet, the pooled feature is concatenated back to every point
    between blocks so that points see the whole set. C = 3 for a point cloud, 4 for labelled
    points (p, o) in the variational encoder.
    """

    def __init__(self, in_dim: int = 3, out_dim: int = 128, hidden: int = 128, blocks: int = 3):
        super().__init__()
        self.in_dim = in_dim
        self.fc_in = nn.Linear(in_dim, 2 * hidden)
        self.blocks = nn.ModuleList([ResnetBlockFC(2 * hidden, hidden) for _ in range(blocks)])
        self.fc_out = nn.Linear(hidden, out_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != self.in_dim:
            raise ValueError(f"PointNetEncoder: input has shape {tuple(points.shape)}; expected "
                             f"(B, N, {self.in_dim}).")
        h = self.fc_in(points)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                pooled = h.max(dim=1, keepdim=True).values
                h = torch.cat([h, pooled.expand_as(h)], dim=-1)
        return self.fc_out(F.relu(h.max(dim=1).values))


def fourier_features(points: torch.Tensor, frequencies: int) -> torch.Tensor:
    """γ(p) = [p, sin(2^k π p), cos(2^k π p)] for k = 0 … frequencies − 1 (per coordinate).

    An MLP on raw coordinates is biased towards smooth functions and needs many steps to draw
    the sharp boundary of a thin part; the sinusoids hand it the fine scales directly.
    """
    if frequencies == 0:
        return points
    scales = (2.0 ** torch.arange(frequencies, dtype=points.dtype)) * math.pi
    angles = (points.unsqueeze(-1) * scales).flatten(-2)
    return torch.cat([points, torch.sin(angles), torch.cos(angles)], dim=-1)


class OccupancyDecoder(nn.Module):
    """f_θ(p, z): query points (B, M, 3) and codes (B, D) → occupancy logits (B, M).

    The code enters every ResNet block: additively (h ← h + W_i z before block i, the simple
    decoder of the paper) or, with ``film=True``, as a per-channel scale and shift
    (h ← (1 + A_i z)·h + W_i z), a cheap relative of the paper's conditional batch norm. With z
    fixed the code terms are constants, so meshing one shape costs one MLP pass per point.
    """

    def __init__(self, z_dim: int = 128, hidden: int = 128, blocks: int = 4, frequencies: int = 0,
                 film: bool = False):
        super().__init__()
        self.z_dim, self.frequencies, self.film = z_dim, frequencies, film
        self.fc_p = nn.Linear(3 * (1 + 2 * frequencies), hidden)
        self.fc_z = nn.ModuleList([nn.Linear(z_dim, hidden) for _ in range(blocks)])
        self.fc_scale = (nn.ModuleList([nn.Linear(z_dim, hidden) for _ in range(blocks)])
                         if film else None)
        if film:
            for layer in self.fc_scale:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden) for _ in range(blocks)])
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, points: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"OccupancyDecoder: points have shape {tuple(points.shape)}; "
                             "expected (B, M, 3).")
        if z.ndim != 2 or z.shape[0] != points.shape[0] or z.shape[1] != self.z_dim:
            raise ValueError(f"OccupancyDecoder: z has shape {tuple(z.shape)}; expected "
                             f"({points.shape[0]}, {self.z_dim}), one code per shape.")
        h = self.fc_p(fourier_features(points, self.frequencies))
        for i, block in enumerate(self.blocks):
            if self.film:
                h = h * (1 + self.fc_scale[i](z).unsqueeze(1))
            h = block(h + self.fc_z[i](z).unsqueeze(1))
        return self.fc_out(F.relu(h)).squeeze(-1)


class _FieldMixin:
    def field(self, z) -> callable:
        """The field minus-logit(p) for one code z: smaller inside, level 0 ↔ probability 0.5.

        This is what ``geometry.extract`` and ``geometry.mise`` mesh: numpy (N, 3) in, N out.
        """
        z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(1, -1)

        def minus_logit(points: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                p = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None]
                return (-self.decoder(p, z)[0]).numpy()

        return minus_logit

    def mesh(self, z, start_res: int = 33, levels: int = 2, dilate: int = 0):
        """The decision boundary of code z, meshed by MISE; returns (mesh, queries)."""
        return mise_module.mise(self.field(z), start_res, levels, 0.0, dilate=dilate)


class OccupancyNetwork(_FieldMixin, nn.Module):
    """Conditional occupancy network: f_θ(p, e(x)) for a point-cloud observation x."""

    def __init__(self, z_dim: int = 128, hidden: int = 128, blocks: int = 4,
                 encoder_hidden: int = 128, frequencies: int = 0, film: bool = False):
        super().__init__()
        self.config = dict(z_dim=z_dim, hidden=hidden, blocks=blocks, encoder_hidden=encoder_hidden,
                           frequencies=frequencies, film=film)
        self.encoder = PointNetEncoder(3, z_dim, encoder_hidden)
        self.decoder = OccupancyDecoder(z_dim, hidden, blocks, frequencies, film)

    def encode(self, cloud: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) observed points → (B, z_dim) codes."""
        return self.encoder(cloud)

    def forward(self, points: torch.Tensor, cloud: torch.Tensor) -> torch.Tensor:
        """Logits (B, M) of the occupancy of (B, M, 3) query points given (B, N, 3) clouds."""
        return self.decoder(points, self.encode(cloud))


class OccupancyVAE(_FieldMixin, nn.Module):
    """Unconditional, variational occupancy network: q_ψ(z | labelled points) and f_θ(p, z)."""

    def __init__(self, z_dim: int = 32, hidden: int = 128, blocks: int = 4,
                 encoder_hidden: int = 128, frequencies: int = 0, film: bool = False):
        super().__init__()
        self.config = dict(z_dim=z_dim, hidden=hidden, blocks=blocks, encoder_hidden=encoder_hidden,
                           frequencies=frequencies, film=film)
        self.z_dim = z_dim
        self.encoder = PointNetEncoder(4, 2 * z_dim, encoder_hidden)
        self.decoder = OccupancyDecoder(z_dim, hidden, blocks, frequencies, film)

    def encode(self, points: torch.Tensor, occupancy: torch.Tensor):
        """(μ, log σ²), each (B, z_dim), of q(z | {(p_j, o_j)}): (B, K, 3) points, (B, K) labels."""
        h = self.encoder(torch.cat([points, occupancy.to(points.dtype).unsqueeze(-1)], dim=-1))
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(-10, 10)

    def loss(self, points: torch.Tensor, occupancy: torch.Tensor, beta: float = 1.0,
             n_encode: int | None = 512) -> dict:
        """The negative ELBO per shape: Σ_j BCE + β·KL, and its parts (BCE as a per-point mean).

        The encoder sees the first ``n_encode`` of the (randomly drawn) points, which is enough to
        identify the shape and makes its cost independent of K; the BCE uses all K points.
        """
        mu, logvar = self.encode(points[:, :n_encode], occupancy[:, :n_encode])
        z = reparameterize(mu, logvar)
        logits = self.decoder(points, z)
        rec = occupancy_bce(logits, occupancy, reduction="sum")
        kl = kl_divergence(mu, logvar).mean()
        return {"loss": rec + beta * kl, "bce": rec / points.shape[1], "kl": kl}

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from the prior N(0, I): decode them for unconditional samples."""
        return torch.randn(n, self.z_dim, generator=generator)


# --- data ---------------------------------------------------------------------------------------


@dataclass
class OccupancyData:
    """Training tensors for a list of shapes.

    points (S, P, 3) and occupancy (S, P): a pool of labelled query points per shape (half
    uniform in the world cube, half near the surface); surface (S, Q, 3): surface points from
    which each step draws a fresh noisy observation.
    """

    shapes: list
    points: torch.Tensor
    occupancy: torch.Tensor
    surface: torch.Tensor

    def __len__(self) -> int:
        return len(self.shapes)


def make_occupancy_data(shapes, n_points: int = 16384, n_surface: int = 2048, near_fraction=0.5,
                        sigma: float = 0.02, seed: int = 0) -> OccupancyData:
    """Sample the training pools of every shape (one surface sampling per shape)."""
    rng = np.random.default_rng(seed)
    pts, occ, surf = [], [], []
    for i, shape in enumerate(shapes):
        n_near = int(round(n_points * near_fraction))
        surface, _ = samples.surface_points(shape, n_surface + n_near, seed=seed + i)
        near = surface[n_surface:] + rng.normal(scale=sigma, size=(n_near, 3))
        uniform = rng.uniform(config.WORLD[0], config.WORLD[1], size=(n_points - n_near, 3))
        p = np.clip(np.concatenate([uniform, near]), *config.WORLD).astype(np.float32)
        pts.append(p)
        occ.append(shape.sdf(p) < 0)
        surf.append(surface[:n_surface])
    return OccupancyData(list(shapes), torch.from_numpy(np.stack(pts)),
                         torch.from_numpy(np.stack(occ)).float(), torch.from_numpy(np.stack(surf)))


def noisy_cloud(surface: torch.Tensor, n: int = 300, noise: float = 0.01,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """n random points of each (B, Q, 3) surface pool plus Gaussian noise of std ``noise``."""
    idx = torch.rand(surface.shape[0], surface.shape[1], generator=generator).argsort(1)[:, :n]
    cloud = torch.gather(surface, 1, idx.unsqueeze(-1).expand(-1, -1, 3))
    return cloud + noise * torch.randn(cloud.shape, generator=generator)


def sample_batch(data: OccupancyData, batch: int, k: int, n_cloud: int = 300, noise: float = 0.01,
                 generator: torch.Generator | None = None):
    """(cloud (B, n_cloud, 3), points (B, K, 3), occupancy (B, K)) for B random shapes."""
    shape_idx = torch.randint(len(data), (batch,), generator=generator)
    point_idx = torch.randint(data.points.shape[1], (batch, k), generator=generator)
    points = torch.gather(data.points[shape_idx], 1, point_idx.unsqueeze(-1).expand(-1, -1, 3))
    occupancy = torch.gather(data.occupancy[shape_idx], 1, point_idx)
    cloud = noisy_cloud(data.surface[shape_idx], n_cloud, noise, generator)
    return cloud, points, occupancy


# --- training -----------------------------------------------------------------------------------


def fit(model: OccupancyNetwork, data: OccupancyData, steps: int, *, batch: int = 16, k: int = 2048,
        lr: float = 5e-4, noise: float = 0.01, n_cloud: int = 300, seed: int = 0,
        max_seconds: float | None = None, loss_fn=occupancy_bce, desc: str = "occnet",
        progress: bool = True, device=None):
    """Train the conditional model with BCE on k points per shape; returns the History.

    ``loss_fn(logits, occupancy)`` can be swapped (the assignment plugs in its own BCE).
    The learning rate decays by cosine to 10% over the run. Trains on ``device`` (default
    ``config.pick_device()``); the model comes back where it was.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i / steps, 1.0))))
    model.train()

    def step(i):
        cloud, points, occupancy = (t.to(device) for t in sample_batch(data, batch, k, n_cloud, noise,
                                                                       generator))
        logits = model(points, cloud)
        loss = loss_fn(logits, occupancy)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            accuracy = ((logits > 0) == (occupancy > 0.5)).float().mean()
        return {"loss": loss.item(), "accuracy": accuracy.item()}

    with on_device(model, device=device) as device:
        history = train(step, steps, desc=desc, log_every=max(1, steps // 200), max_seconds=max_seconds,
                        progress=progress)
    model.eval()
    return history


def fit_vae(model: OccupancyVAE, data: OccupancyData, steps: int, *, batch: int = 16, k: int = 2048,
            lr: float = 5e-4, beta: float = 1.0, seed: int = 0, max_seconds: float | None = None,
            progress: bool = True, device=None):
    """Train the variational model on the negative ELBO; logs loss, per-point BCE and KL (on
    ``device``, as :func:`fit`)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()

    def step(i):
        shape_idx = torch.randint(len(data), (batch,), generator=generator)
        point_idx = torch.randint(data.points.shape[1], (batch, k), generator=generator)
        points = torch.gather(data.points[shape_idx], 1, point_idx.unsqueeze(-1).expand(-1, -1, 3))
        occupancy = torch.gather(data.occupancy[shape_idx], 1, point_idx)
        parts = model.loss(points.to(device), occupancy.to(device), beta)
        optimiser.zero_grad()
        parts["loss"].backward()
        optimiser.step()
        return {k: v.item() for k, v in parts.items()}

    with on_device(model, device=device) as device:
        history = train(step, steps, desc="occupancy VAE", log_every=max(1, steps // 200),
                        max_seconds=max_seconds, progress=progress)
    model.eval()
    return history
