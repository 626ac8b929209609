"""DeepSDF (Park et al., CVPR 2019): one MLP for many shapes, each shape a latent code.

The decoder f_θ(z, x) → s regresses the signed distance s at point x of the shape whose code
is z. Training is an *auto-decoder*: there is no encoder; every training shape i owns a code z_i,
and the codes are optimised together with θ:

    min_{θ, z_1..z_S}  mean_{i,k} |clamp(f_θ(z_i, x_ik), δ) − clamp(s_ik, δ)|  +  λ · mean_i ||z_i||²

clamp(s, δ) = min(δ, max(−δ, s)) spends the capacity near the surface, where meshing needs it;
the second term is minus the log of a Gaussian prior N(0, σ²I) on codes (λ plays 1/σ², up to the
number of samples per shape) and keeps the latent space compact, so codes can be interpolated.
Inference on a new shape optimises a fresh code with θ frozen (:func:`fit_code`), from whatever
SDF samples are observed — all of them, or only those a camera saw (shape completion).

Scaled for a CPU: 4 hidden layers of 128 (the paper: 8 of 512) with (z, x) re-injected at the
middle layer as in the paper, a 32-d code (the paper: 256) and a shape collection of ~100.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import trimesh

from .. import config
from ..data import samples
from ..geometry.extract import evaluate_grid, marching_cubes
from ..geometry.narrowband import narrow_band_grid
from ..train import on_device, train

LATENT_DIM = 32
DELTA = 0.1          # clamp of the SDF loss (the paper's δ = 0.1, for shapes in the unit sphere)
CODE_REG = 1e-4      # λ, weight of mean ||z||² (the released DeepSDF code uses 1e-4)


# --------------------------------------------------------------------------------------------
# Input checks with messages a student can act on
# --------------------------------------------------------------------------------------------

def _check_points(points: torch.Tensor, fn: str) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{fn}: points must be a torch.Tensor, got {type(points).__name__}.")
    if points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"{fn}: points have shape {tuple(points.shape)}; expected (..., N, 3).")
    if not torch.isfinite(points).all():
        raise ValueError(f"{fn}: points contain NaN or inf.")


def _check_pair(points: torch.Tensor, sdf: torch.Tensor, fn: str) -> None:
    _check_points(points, fn)
    if not isinstance(sdf, torch.Tensor) or sdf.shape != points.shape[:-1]:
        got = tuple(sdf.shape) if isinstance(sdf, torch.Tensor) else type(sdf).__name__
        raise ValueError(f"{fn}: sdf has shape {got}; expected {tuple(points.shape[:-1])}, one "
                         "value per point.")
    if not torch.isfinite(sdf).all():
        raise ValueError(f"{fn}: sdf contains NaN or inf.")


# --------------------------------------------------------------------------------------------
# Networks and losses
# --------------------------------------------------------------------------------------------

class SDFDecoder(nn.Module):
    """f_θ(z, x): ReLU MLP on the concatenation [z, x]; [z, x] is appended again to the input of
    hidden layer ``skip`` (the middle one), so deep layers still see the code and the point
    directly. A final tanh bounds the output like the paper's. Points are first multiplied by
    ``input_scale`` (2 maps the world cube onto [-1, 1]³, the input range PyTorch's default
    initialisation suits; raw ±0.5 coordinates trained visibly slower in our runs).

    ``forward(z, points)``: z (..., L) and points (..., N, 3) → sdf (..., N); the code is shared
    by the N points of its shape.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden: int = 128, layers: int = 4,
                 skip: int | None = None, input_scale: float = 2.0):
        super().__init__()
        self.input_scale = float(input_scale)
        if layers < 2:
            raise ValueError(f"SDFDecoder: layers must be at least 2, got {layers}.")
        self.latent_dim, self.hidden, self.n_layers = latent_dim, hidden, layers
        self.skip = layers // 2 if skip is None else skip
        if not 0 < self.skip < layers:
            raise ValueError(f"SDFDecoder: skip must be in 1..{layers - 1}, got {self.skip}.")
        d_in = latent_dim + 3
        self.layers = nn.ModuleList(
            nn.Linear(d_in if i == 0 else hidden + (d_in if i == self.skip else 0), hidden)
            for i in range(layers))
        self.out = nn.Linear(hidden, 1)

    def config(self) -> dict:
        return {"latent_dim": self.latent_dim, "hidden": self.hidden, "layers": self.n_layers,
                "skip": self.skip, "input_scale": self.input_scale}

    def forward(self, z: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        _check_points(points, "SDFDecoder")
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"SDFDecoder: z has shape {tuple(z.shape)}; expected (..., "
                             f"{self.latent_dim}) (the decoder's latent_dim).")
        if z.shape[:-1] != points.shape[:-2]:
            raise ValueError(f"SDFDecoder: z {tuple(z.shape)} and points {tuple(points.shape)} do "
                             "not match: expected z (..., L) with points (..., N, 3).")
        points = points * self.input_scale
        zx = torch.cat([z.unsqueeze(-2).expand(*points.shape[:-1], self.latent_dim), points], -1)
        h = zx
        for i, layer in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, zx], -1)
            h = F.relu(layer(h))
        return torch.tanh(self.out(h)).squeeze(-1)

    def field(self, z):
        """``points (N, 3) numpy → sdf (N,) numpy`` for one code, for grids and marching cubes.

        The code is the same for every point, so its share of the two layers that read it
        (W_z·z + b) is computed once: the same function as ``forward``, about 15% cheaper.
        """
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor)
                            else z, dtype=torch.float32).detach().reshape(-1)
        if z.numel() != self.latent_dim:
            raise ValueError(f"SDFDecoder.field: z has {z.numel()} entries; expected "
                             f"{self.latent_dim}.")
        L, H = self.latent_dim, self.hidden
        with torch.no_grad():
            first, mid = self.layers[0], self.layers[self.skip]
            w0, b0 = first.weight[:, L:].T.contiguous(), first.weight[:, :L] @ z + first.bias
            wh = mid.weight[:, :H].T.contiguous()
            wx = mid.weight[:, H + L:].T.contiguous()
            bm = mid.weight[:, H:H + L] @ z + mid.bias

        def sdf(points):
            x = torch.as_tensor(points, dtype=torch.float32) * self.input_scale
            with torch.no_grad():
                h = F.relu(torch.addmm(b0, x, w0))
                for i in range(1, self.n_layers):
                    if i == self.skip:
                        h = F.relu(torch.addmm(bm, h, wh) + x @ wx)
                    else:
                        h = F.relu(self.layers[i](h))
                return torch.tanh(self.out(h)).squeeze(-1).numpy()

        return sdf


class AutoDecoder(nn.Module):
    """A decoder plus a table of codes, one row per training shape: ``model(idx, points)``."""

    def __init__(self, n_shapes: int, latent_dim: int = LATENT_DIM, hidden: int = 128,
                 layers: int = 4, code_init_std: float = 0.01, input_scale: float = 2.0):
        super().__init__()
        self.decoder = SDFDecoder(latent_dim, hidden, layers, input_scale=input_scale)
        self.codes = nn.Embedding(n_shapes, latent_dim)
        nn.init.normal_(self.codes.weight, 0.0, code_init_std)  # the paper's N(0, 0.01²) start

    def config(self) -> dict:
        return {**self.decoder.config(), "n_shapes": self.codes.num_embeddings}

    def forward(self, idx: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.codes(idx), points)


class SDFEncoder(nn.Module):
    """The auto-*encoder* alternative: a PointNet over observed SDF samples (x, s) → z.

    A shared MLP embeds each sample (x, y, z, s), a max over samples makes the result
    independent of their order and number, and a linear layer gives the code. Trained jointly
    with a decoder it replaces the code table; inference is one forward pass instead of an
    optimisation, but only for inputs that look like the training inputs.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden: int = 128):
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                       nn.ReLU(), nn.Linear(hidden, hidden))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, latent_dim))

    def forward(self, points: torch.Tensor, sdf: torch.Tensor) -> torch.Tensor:
        _check_pair(points, sdf, "SDFEncoder")
        features = self.point_mlp(torch.cat([points, sdf.unsqueeze(-1)], -1))
        return self.head(features.max(dim=-2).values)


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, delta: float = DELTA) -> torch.Tensor:
    """mean |clamp(pred, −δ, δ) − clamp(target, −δ, δ)|: DeepSDF's loss.

    Errors count only where the prediction or the target lies within δ of the surface; far away
    it is enough to get the sign (and a value beyond δ) right.
    """
    if pred.shape != target.shape:
        raise ValueError(f"clamped_l1: pred {tuple(pred.shape)} and target {tuple(target.shape)} "
                         "must have the same shape.")
    return (pred.clamp(-delta, delta) - target.clamp(-delta, delta)).abs().mean()


def code_regularization(codes: torch.Tensor, weight: float = CODE_REG) -> torch.Tensor:
    """λ · mean_i ||z_i||²: minus the log of a Gaussian prior on codes, up to a constant."""
    return weight * codes.pow(2).sum(-1).mean()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class SDFData:
    """SDF samples of S shapes: points (S, N, 3) and sdf (S, N), float32 tensors."""

    points: torch.Tensor
    sdf: torch.Tensor
    shapes: list

    def __len__(self) -> int:
        return len(self.points)


def sdf_dataset(shapes, n_points: int = 8192, seed: int = 0) -> SDFData:
    """DeepSDF's samples (80% near the surface, 20% uniform) of every shape, stacked."""
    points, sdf = zip(*(samples.sdf_samples(s, n_points, seed=seed + i) for i, s in enumerate(shapes)))
    return SDFData(torch.from_numpy(np.stack(points)), torch.from_numpy(np.stack(sdf)), list(shapes))


def sdf_samples_from_mesh(mesh_shape, n: int = 4096, seed: int = 0, near_fraction: float = 0.8,
                          sigmas=(0.005, 0.03)):
    """SDF samples of a loaded mesh (:class:`~gen3d_course.data.meshes.MeshShape`), like
    :func:`~gen3d_course.data.samples.sdf_samples` but drawing surface points from the mesh's
    own triangles: ``sdf_samples`` would first mesh the shape through a 64³ grid of its SDF,
    and a winding-number SDF costs about 2,000 points per second per 5,000 faces.
    """
    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_fraction))
    surface, _ = trimesh.sample.sample_surface(mesh_shape.mesh, n_near, seed=seed)
    sigma = np.where(np.arange(n_near) % 2 == 0, sigmas[0], sigmas[1])[:, None]
    near = surface + rng.normal(size=surface.shape) * sigma
    uniform = rng.uniform(config.WORLD[0], config.WORLD[1], size=(n - n_near, 3))
    points = np.clip(np.concatenate([near, uniform]), config.WORLD[0], config.WORLD[1]).astype(np.float32)
    return points, mesh_shape.sdf(points).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Training (auto-decoder and, for contrast, auto-encoder)
# --------------------------------------------------------------------------------------------

def _cosine(progress: float, floor: float = 0.05) -> float:
    """Learning-rate factor: 1 at progress 0, down to ``floor`` at 1 (half a cosine)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _progress(steps: int, max_seconds: float | None):
    """Fraction of the run done at step i: of the steps, or of the seconds if those run out first."""
    start = time.perf_counter()

    def progress(i: int) -> float:
        done = i / max(steps, 1)
        if max_seconds:
            done = max(done, (time.perf_counter() - start) / max_seconds)
        return done

    return progress


def _descend(optimizer, fit: torch.Tensor, codes: torch.Tensor, code_reg: float) -> dict:
    """One optimiser step on the SDF fit plus the Gaussian prior on the codes that produced it."""
    reg = code_regularization(codes, code_reg)
    loss = fit + reg
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "sdf": fit.item(), "reg": reg.item()}


def autodecoder_optimizer(model: AutoDecoder, lr: float = 2e-3, code_lr: float = 1e-2) -> torch.optim.Adam:
    """Adam over the decoder's weights *and* the code table, each with its own learning rate:
    an auto-decoder learns its codes by gradient descent, so they must be in the optimiser."""
    return torch.optim.Adam([{"params": model.decoder.parameters(), "lr": lr},
                             {"params": model.codes.parameters(), "lr": code_lr}])


def autodecoder_step(model: AutoDecoder, optimizer: torch.optim.Optimizer, idx: torch.Tensor,
                     points: torch.Tensor, sdf: torch.Tensor, delta: float = DELTA,
                     code_reg: float = CODE_REG, loss_fn=clamped_l1) -> dict:
    """One joint update of the weights θ and the codes z_i of the shapes ``idx`` (B,):
    loss = loss_fn(f_θ(z_i, x_ik), s_ik, δ) + λ·mean_i ||z_i||², backward, one optimiser step.

    ``points`` (B, K, 3) and ``sdf`` (B, K) are samples of those shapes; ``optimizer`` must hold
    the codes too (:func:`autodecoder_optimizer`). Returns the logged "loss", "sdf" and "reg"."""
    codes = model.codes(idx)  # (B, L): rows of the table, so the gradient reaches them
    fit = loss_fn(model.decoder(codes, points), sdf, delta)
    return _descend(optimizer, fit, codes, code_reg)


def train_autodecoder(model: AutoDecoder, data: SDFData, steps: int, *, shapes_per_batch: int = 16,
                      points_per_shape: int = 256, lr: float = 2e-3, code_lr: float = 1e-2,
                      delta: float = DELTA, code_reg: float = CODE_REG, loss_fn=clamped_l1,
                      max_seconds: float | None = None, seed: int = 0, desc: str = "auto-decoder",
                      progress: bool = True, device=None):
    """Optimise the decoder's weights and every training code jointly (Adam, cosine decay).

    Each step draws ``shapes_per_batch`` shapes and ``points_per_shape`` of their samples. For a
    fixed CPU budget, many small steps beat few large ones in our runs (3 shapes, ~3 s: 400 steps
    of 256 points per shape reached IoU 0.72, 150 steps of 512 points 0.41).
    ``loss_fn(pred, target, delta)`` is the reconstruction loss (the assignment plugs its own
    clamped L1 in here). With ``max_seconds`` the learning rates decay over whichever runs out
    first, steps or seconds, so a slow machine still ends its run at the small final rate.
    Trains on ``device`` (default ``config.pick_device()``); the model comes back where it was.
    Returns the :class:`~gen3d_course.train.History` ("loss", "sdf", "reg").
    """
    if model.codes.num_embeddings != len(data):
        raise ValueError(f"train_autodecoder: the model has {model.codes.num_embeddings} codes for "
                         f"{len(data)} shapes; build AutoDecoder(n_shapes={len(data)}).")
    generator = torch.Generator().manual_seed(seed)
    optimizer = autodecoder_optimizer(model, lr, code_lr)
    base = [g["lr"] for g in optimizer.param_groups]
    S, N = data.sdf.shape
    B, K = min(shapes_per_batch, S), min(points_per_shape, N)
    progress_of = _progress(steps, max_seconds)

    def step(i):
        for group, lr0 in zip(optimizer.param_groups, base):
            group["lr"] = lr0 * _cosine(progress_of(i))
        idx = torch.randperm(S, generator=generator)[:B]
        pick = torch.randint(0, N, (B, K), generator=generator)
        points = torch.gather(data.points[idx], 1, pick[..., None].expand(B, K, 3)).to(device)
        target = torch.gather(data.sdf[idx], 1, pick).to(device)
        return autodecoder_step(model, optimizer, idx.to(device), points, target, delta, code_reg, loss_fn)

    model.train()
    with on_device(model, device=device) as device:
        history = train(step, steps, desc=desc, log_every=10, max_seconds=max_seconds, progress=progress)
    model.eval()
    return history


def train_autoencoder(encoder: SDFEncoder, decoder: SDFDecoder, data: SDFData, steps: int, *,
                      shapes_per_batch: int = 16, points_per_shape: int = 256,
                      observed: int = 512, lr: float = 2e-3, delta: float = DELTA,
                      code_reg: float = CODE_REG, max_seconds: float | None = None,
                      seed: int = 0, desc: str = "auto-encoder", progress: bool = True, device=None):
    """The contrast: codes come from an encoder reading ``observed`` samples of the shape.

    Same decoder, loss, prior, schedule and device as :func:`train_autodecoder`; the only
    change is where z comes from. Returns the training history.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    S, N = data.sdf.shape
    B, K = min(shapes_per_batch, S), min(points_per_shape, N)
    progress_of = _progress(steps, max_seconds)

    def step(i):
        for group in optimizer.param_groups:
            group["lr"] = lr * _cosine(progress_of(i))
        idx = torch.randperm(S, generator=generator)[:B]
        seen = torch.randint(0, N, (B, observed), generator=generator)
        pick = torch.randint(0, N, (B, K), generator=generator)
        pts, sdf = data.points[idx], data.sdf[idx]
        codes = encoder(torch.gather(pts, 1, seen[..., None].expand(B, observed, 3)).to(device),
                        torch.gather(sdf, 1, seen).to(device))
        points = torch.gather(pts, 1, pick[..., None].expand(B, K, 3)).to(device)
        fit = clamped_l1(decoder(codes, points), torch.gather(sdf, 1, pick).to(device), delta)
        return _descend(optimizer, fit, codes, code_reg)

    encoder.train(), decoder.train()
    with on_device(encoder, decoder, device=device) as device:
        history = train(step, steps, desc=desc, log_every=10, max_seconds=max_seconds, progress=progress)
    encoder.eval(), decoder.eval()
    return history


# --------------------------------------------------------------------------------------------
# Inference: a new code with the decoder frozen
# --------------------------------------------------------------------------------------------

def code_objective(decoder: SDFDecoder, z: torch.Tensor, points: torch.Tensor, sdf: torch.Tensor,
                   delta: float = DELTA, code_reg: float = CODE_REG) -> torch.Tensor:
    """The test-time objective J(z) = clamped L1 of f_θ(z, ·) on the samples + λ·||z||²."""
    return clamped_l1(decoder(z, points), sdf, delta) + code_reg * z.pow(2).sum(-1).mean()


def fit_code(decoder: SDFDecoder, points: torch.Tensor, sdf: torch.Tensor, *, steps: int = 300,
             lr: float = 1e-2, delta: float = DELTA, code_reg: float = CODE_REG,
             points_per_step: int | None = None, seed: int = 0) -> torch.Tensor:
    """argmin_z J(z) with θ frozen: auto-decoder inference (Adam from z = 0, the prior's mean).

    points (N, 3) and sdf (N,) give one code (L,); points (B, N, 3) and sdf (B, N) fit B codes
    at once (one batched network call per step). ``points_per_step`` samples a random subset
    each step (all points by default). The decoder's weights receive no gradient and its
    ``requires_grad`` flags are restored afterwards. Returns the detached code(s).
    """
    _check_pair(points, sdf, "fit_code")
    if steps < 1:
        raise ValueError(f"fit_code: steps must be at least 1, got {steps}.")
    generator = torch.Generator().manual_seed(seed)
    z = torch.zeros(*points.shape[:-2], decoder.latent_dim, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=lr)
    flags = [p.requires_grad for p in decoder.parameters()]
    was_training = decoder.training
    decoder.eval()
    try:
        for p in decoder.parameters():
            p.requires_grad_(False)
        n = points.shape[-2]
        for _ in range(steps):
            if points_per_step is not None and points_per_step < n:
                pick = torch.randint(0, n, (points_per_step,), generator=generator)
                p, s = points[..., pick, :], sdf[..., pick]
            else:
                p, s = points, sdf
            loss = code_objective(decoder, z, p, s, delta, code_reg)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        for p, flag in zip(decoder.parameters(), flags):
            p.requires_grad_(flag)
        decoder.train(was_training)
    return z.detach()


# --------------------------------------------------------------------------------------------
# From a code to a mesh, and how good it is
# --------------------------------------------------------------------------------------------

def sdf_grid(decoder: SDFDecoder, z, res: int = 64, narrow_band: bool = True, band: float = 0.4):
    """(values (res,)*3, network queries) of f_θ(z, ·) on the world node grid.

    ``narrow_band`` evaluates exactly only near the surface (coarse to fine from 8³, see
    :mod:`gen3d_course.geometry.narrowband`); otherwise every one of the res³ nodes. ``band``
    0.4 re-evaluates nodes within 0.8 fine-cell diagonals of the surface (the lecture measures
    the mesh against a dense grid); 1.0 is the bound that is safe for any exact distance.
    """
    field = decoder.field(z)
    if narrow_band:
        return narrow_band_grid(field, res, start=8, band=band)
    return evaluate_grid(field, res), res ** 3


def reconstruct(decoder: SDFDecoder, z, res: int = 64, narrow_band: bool = True):
    """The mesh of {x : f_θ(z, x) = 0} by marching cubes on a res³ grid."""
    return marching_cubes(sdf_grid(decoder, z, res, narrow_band)[0])


def mesh_decoder(decoder: SDFDecoder, res: int = 64):
    """``decode(z) -> trimesh`` for the latent widgets; an empty mesh when nothing is inside."""
    def decode(z):
        values, _ = sdf_grid(decoder, z, res)
        if values.min() >= 0 or values.max() <= 0:
            return trimesh.Trimesh()
        return marching_cubes(values)

    return decode
