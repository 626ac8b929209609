"""The course's experiments with AtlasNet (unit 06): normals and surface variation of point sets,
correspondences across shapes, held-out evaluation, checkerboard colours, and the shipped
checkpoint's recipe. The method is in ``models.atlasnet``."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, save_checkpoint
from ..data.shapes import CATEGORIES, shape_collection
from ..geometry.metrics import chamfer_distance, fscore, normal_consistency
from ..models.atlasnet import (AutoEncoder, PatchDecoder, PointSetDecoder, chamfer_step, make_model,
                               point_clouds, sample_uv, sphere_points)
from ..train import on_device, train

CHECKPOINT = "atlasnet"
DEFAULT_CONFIG = dict(code_dim=64, n_points=512, n_patches=8, hidden=[128, 128, 128],
                      psg_hidden=[128, 128], radius=0.3)
HELDOUT_SEED = 1000   # held-out shapes are seeds 1000, 1001, ... of every category


def estimate_normals(points, k: int = 12) -> torch.Tensor:
    """Unoriented normals of a bare cloud (B, N, 3) by PCA of each point's k nearest neighbours.

    The normal is the eigenvector of the neighbourhood covariance with the smallest
    eigenvalue. A cloud without connectivity has no other way to get normals, and this one
    fails wherever neighbours straddle two surfaces.
    """
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.ndim == 2:
        return estimate_normals(points[None], k)[0]
    with torch.no_grad():
        idx = torch.cdist(points, points).topk(k, dim=-1, largest=False).indices
        nbrs = points[torch.arange(points.shape[0])[:, None, None], idx]   # (B, N, k, 3)
        centred = nbrs - nbrs.mean(dim=2, keepdim=True)
        cov = centred.transpose(-1, -2) @ centred
        return torch.linalg.eigh(cov).eigenvectors[..., 0]


def knn_edges(points, k: int = 6) -> np.ndarray:
    """Undirected edges (E, 2) joining each point of a bare cloud (N, 3) to its k nearest.

    The naive way to give a cloud "connectivity"; where two surfaces are closer than the
    point spacing, such edges bridge the gap through the inside or the air.
    """
    points = torch.as_tensor(points, dtype=torch.float32)
    idx = torch.cdist(points, points).topk(k + 1, largest=False).indices[:, 1:]
    edges = torch.stack([torch.arange(len(points)).repeat_interleave(k), idx.reshape(-1)], 1)
    return np.unique(np.sort(edges.numpy(), axis=1), axis=0)


def surface_variation(points, k: int = 16) -> torch.Tensor:
    """Local "thickness" of a cloud (B, N, 3) -> (B, N): lambda_0 / (lambda_0 + lambda_1 + lambda_2).

    lambda_0 <= lambda_1 <= lambda_2 are the eigenvalues of the covariance of each point's k
    nearest neighbours (Pauly et al. 2002). Points sampled on a smooth surface give ~0 (the
    neighbourhood is flat); an isotropic blob gives 1/3.
    """
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.ndim == 2:
        return surface_variation(points[None], k)[0]
    with torch.no_grad():
        idx = torch.cdist(points, points).topk(k, dim=-1, largest=False).indices
        nbrs = points[torch.arange(points.shape[0])[:, None, None], idx]
        centred = nbrs - nbrs.mean(dim=2, keepdim=True)
        eig = torch.linalg.eigvalsh(centred.transpose(-1, -2) @ centred)
        return eig[..., 0] / eig.sum(-1).clamp_min(1e-20)


def correspondence_agreement(verts_a, verts_b) -> float:
    """How consistently template vertex i lands on "the same place" of two shapes, in [-1, 1].

    Both (V, 3) vertex sets are normalised by their bounding boxes; the result is the mean over
    x, y, z of the Pearson correlation between the two shapes' coordinates of the same vertex
    ids: 1 if vertex i has the same relative position on both shapes, ~0 for a random matching.
    """
    a, b = (np.asarray(v, dtype=np.float64) for v in (verts_a, verts_b))
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"correspondence_agreement: got shapes {a.shape} and {b.shape}; "
                         "expected two (V, 3) vertex sets of the same template")
    a = (a - a.min(0)) / np.ptp(a, axis=0).clip(1e-12)
    b = (b - b.min(0)) / np.ptp(b, axis=0).clip(1e-12)
    return float(np.mean([np.corrcoef(a[:, d], b[:, d])[0, 1] for d in range(3)]))


def decode_with_normals(model: AutoEncoder, cloud: torch.Tensor, n: int, seed: int = 0, h=1e-3):
    """Decoded points (B, n, 3) and unit normals (B, n, 3) for any of the three decoders.

    Patches and templates are surfaces, so their normals come from the map itself:
    n = (f(u+h, v) - f(u-h, v)) x (f(u, v+h) - f(u, v-h)) for a patch, and the deformed
    tangent plane for the sphere. A bare cloud has only PCA normals (``estimate_normals``).
    """
    generator = torch.Generator().manual_seed(seed)
    dec = model.decoder
    with torch.no_grad():
        code = model.encoder(cloud)
        if isinstance(dec, PointSetDecoder):
            pts = dec.points(code, n)
            return pts, estimate_normals(pts)
        if isinstance(dec, PatchDecoder):
            per = math.ceil(n / dec.n_patches)
            uv = sample_uv(dec.n_patches * per, generator).view(dec.n_patches, per, 2)
            uv = uv.clamp(h, 1 - h)
            du, dv = torch.tensor([h, 0.0]), torch.tensor([0.0, h])
            tu = dec(code, uv + du) - dec(code, uv - du)
            tv = dec(code, uv + dv) - dec(code, uv - dv)
            pts = dec(code, uv)
        else:
            p = sphere_points(n, dec.radius, generator)
            a = torch.linalg.cross(p, torch.randn(1, 3, generator=generator).expand_as(p))
            a = a / a.norm(dim=1, keepdim=True)
            c = torch.linalg.cross(p / dec.radius, a)
            tu = dec(code, p + h * a) - dec(code, p - h * a)
            tv = dec(code, p + h * c) - dec(code, p - h * c)
            pts = dec(code, p)
        normals = torch.linalg.cross(tu, tv, dim=-1)
        b = code.shape[0]
        pts, normals = pts.reshape(b, -1, 3)[:, :n], normals.reshape(b, -1, 3)[:, :n]
        length = normals.norm(dim=-1, keepdim=True)
        normals = torch.where(length > 1e-12, normals / length.clamp_min(1e-12),
                              torch.tensor([1.0, 0.0, 0.0]))
        return pts, normals


def evaluate(model: AutoEncoder, clouds, normals, *, n: int = 512, n_input: int = 512,
             tau: float = 0.03, seed: int = 0) -> dict:
    """Mean Chamfer (squared, both ways), F-score@tau and normal consistency over shapes.

    Each shape is encoded from its first ``n_input`` points and compared with its whole pool.
    """
    model.eval()
    pts, nrm = decode_with_normals(model, clouds[:, :n_input], n, seed=seed)
    return {
        "chamfer": chamfer_distance(pts, clouds).item(),
        "fscore": fscore(pts, clouds, tau).mean().item(),
        "normal_consistency": normal_consistency(pts, nrm, clouds, normals).mean().item(),
    }


def checker_colors(uv, patch=None, cells: int = 8):
    """RGB (V, 3) in [0, 1]: a checkerboard in (u, v), tinted per patch, as a texture."""
    uv = np.asarray(uv)
    black = (np.floor(uv[:, 0] * cells - 1e-9).astype(int) + np.floor(uv[:, 1] * cells - 1e-9).astype(int)) % 2
    patch = np.zeros(len(uv), int) if patch is None else np.asarray(patch)
    hues = np.array([[0.9, 0.35, 0.3], [0.3, 0.6, 0.9], [0.35, 0.75, 0.4], [0.95, 0.75, 0.25],
                     [0.65, 0.45, 0.85], [0.3, 0.8, 0.8], [0.9, 0.5, 0.75], [0.6, 0.6, 0.6]])
    tint = hues[patch % len(hues)]
    return np.where(black[:, None] == 1, 0.25 * tint, tint)


def build_models(overrides: dict | None = None) -> dict[str, AutoEncoder]:
    """The compared models, by name: 'pointset', 'atlas_1', 'atlas_K' (K = n_patches), 'sphere'.

    Every one has the same PointNet encoder and outputs n_points points per shape; the two
    AtlasNets have the same MLP per patch, so 1 patch and K patches cost the same per point.
    """
    c = dict(DEFAULT_CONFIG, **(overrides or {}))
    k = c["n_patches"]
    return {
        "pointset": make_model("pointset", c["code_dim"], n_points=c["n_points"],
                               hidden=tuple(c["psg_hidden"])),
        "atlas_1": make_model("atlas", c["code_dim"], n_patches=1, hidden=tuple(c["hidden"])),
        f"atlas_{k}": make_model("atlas", c["code_dim"], n_patches=k, hidden=tuple(c["hidden"])),
        "sphere": make_model("sphere", c["code_dim"], hidden=tuple(c["hidden"]),
                             radius=c["radius"]),
    }


def load_pretrained(device=None) -> nn.ModuleDict:
    """The shipped models by name (``gen3d-course train atlasnet``), in eval mode."""
    models = nn.ModuleDict(build_models(checkpoint_info(CHECKPOINT)["config"]["models"]))
    return load_checkpoint(CHECKPOINT, models, device=device).eval()


def train_checkpoint() -> dict:
    """Train the four models with one budget and save them as ``weights/atlasnet.pt``.

    Same training shapes, same steps, batch, points and learning rate for all four, so the
    held-out metrics recorded in the manifest compare decoders, not budgets.
    """
    torch.set_num_threads(1)
    seed = 0
    config.seed_everything(seed)
    per_category = config.budget(fast=3, lecture=12, full=40)
    steps = config.budget(fast=30, lecture=300, full=1200)
    schedule = dict(batch_size=8, n_points=DEFAULT_CONFIG["n_points"], lr=1e-3,
                    decay_at=int(0.8 * steps))
    clouds, _ = point_clouds(shape_collection(per_category), n=2048, seed=seed)
    test_clouds, test_normals = point_clouds(shape_collection(4, start_seed=HELDOUT_SEED),
                                             n=4096, seed=HELDOUT_SEED)
    models = build_models()
    metrics = {}
    for name, model in models.items():
        config.seed_everything(seed)
        with on_device(model):
            history = train(chamfer_step(model, clouds, seed=seed, **schedule), steps, desc=name)
        scores = evaluate(model, test_clouds, test_normals, n=DEFAULT_CONFIG["n_points"],
                          n_input=DEFAULT_CONFIG["n_points"], tau=0.03)
        metrics[name] = {**{k: round(v, 5) for k, v in scores.items()},
                         "train_loss": round(history.mean("loss"), 5),
                         "seconds": round(history.seconds, 1)}
        print(name, metrics[name], flush=True)
    save_checkpoint(
        CHECKPOINT, nn.ModuleDict(models), command="GEN3D_MODE=full gen3d-course train atlasnet",
        seed=seed, metrics=metrics,
        config={"models": DEFAULT_CONFIG, "train": {**schedule, "steps": steps,
                "shapes_per_category": per_category, "categories": list(CATEGORIES)},
                "held_out": {"seed": HELDOUT_SEED, "per_category": 4, "tau": 0.03,
                             "points": DEFAULT_CONFIG["n_points"]}},
    )
    return metrics
