"""Point and surface decoders: PointSetGen, AtlasNet and a deformed sphere template (3D-CODED).

All three are auto-encoders of point clouds. A PointNet-style encoder turns an input cloud
(B, N, 3) into a shape code z (B, C); the decoders differ in *what* they output:

* ``PointSetDecoder`` (Fan et al. 2017): an MLP z -> N·3 numbers, read as N points. The count N
  is fixed by the last layer, the points have no connectivity and nothing ties them to a surface.
* ``PatchDecoder`` (AtlasNet, Groueix et al. 2018): K small MLPs f_k(u, v, z) -> R³, each one a
  learned map of the unit square [0, 1]² onto a piece ("patch", "chart") of the surface. Any
  number of (u, v) samples gives any number of points; a triangulated square mapped through
  f_k gives a mesh; (u, v) is a parametrisation (texture coordinates) of the output.
* ``TemplateDecoder`` (the 3D-CODED idea, Groueix et al. 2018b): one MLP g(p, z) -> R³ that
  deforms the points p of a template surface (here a sphere). The same template vertex lands
  on "the same place" of every shape, which gives correspondences between shapes.

All are trained with the Chamfer distance (``geometry.metrics.chamfer_distance``, squared,
both directions summed) between decoded points and points sampled on the true surface.
Points live in the world cube [-0.5, 0.5]³, y up.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import trimesh
from torch import nn

from ..data import samples

# --------------------------------------------------------------------------
# Data: point clouds with normals from the shape collection
# --------------------------------------------------------------------------

def point_clouds(shapes, n: int = 4096, seed: int = 0, res: int = 48):
    """Surface points and unit normals of each shape: two float32 tensors (S, n, 3).

    A fixed pool per shape; training draws random subsets of it (the input to the encoder and
    the Chamfer target), so no step sees exactly the same cloud twice. ``res`` is the
    marching-cubes grid the samples start from (they are then projected onto the exact
    surface), 48 keeps the course's thinnest parts (chair legs).
    """
    pts, nrm = zip(*(samples.surface_points(s, n, seed=seed + i, res=res)
                     for i, s in enumerate(shapes)))
    return torch.from_numpy(np.stack(pts)), torch.from_numpy(np.stack(nrm))


# --------------------------------------------------------------------------
# The (u, v) domain: the unit square, sampled and triangulated
# --------------------------------------------------------------------------

def uv_grid(res: int) -> torch.Tensor:
    """The res x res regular grid on [0, 1]², as (res², 2) float32.

    Row i*res + j holds (u, v) = (i / (res - 1), j / (res - 1)): u varies slowest.
    """
    if int(res) != res or res < 2:
        raise ValueError(f"uv_grid: res={res!r}; expected an integer >= 2 (points per side)")
    t = torch.linspace(0.0, 1.0, int(res))
    u, v = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


def triangulate_square(res: int) -> torch.Tensor:
    """Triangles (2 (res-1)², 3) int64 over ``uv_grid(res)``: two per grid cell.

    Cell (i, j) has corners a = i*res + j, b = a + res (u + 1), c = a + 1 (v + 1), d = b + 1.
    It is split along the diagonal b-c into (a, b, c) and (b, d, c), both counter-clockwise in
    the (u, v) plane, so every face normal of the flat square points the same way (+w).
    """
    if int(res) != res or res < 2:
        raise ValueError(f"triangulate_square: res={res!r}; expected an integer >= 2")
    res = int(res)
    i, j = torch.meshgrid(torch.arange(res - 1), torch.arange(res - 1), indexing="ij")
    a = (i * res + j).reshape(-1)
    b, c = a + res, a + 1
    d = b + 1
    return torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)]).to(torch.int64)


def sample_uv(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points uniform in [0, 1]², (n, 2): AtlasNet's training samples (fresh every step)."""
    return torch.rand(int(n), 2, generator=generator)


def sphere_points(n: int, radius: float = 0.3, generator: torch.Generator | None = None):
    """n points uniform on the sphere of ``radius`` (normalised Gaussians), (n, 3)."""
    g = torch.randn(int(n), 3, generator=generator)
    return radius * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)


def sphere_template(subdivisions: int = 3, radius: float = 0.3) -> trimesh.Trimesh:
    """An icosphere: 10·4^s + 2 vertices spread almost evenly, the template to deform."""
    return trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------

def _mlp(sizes, last_activation=False) -> nn.Sequential:
    layers = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if k < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _check_points(points, fn):
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        shape = tuple(points.shape) if hasattr(points, "shape") else type(points).__name__
        raise ValueError(f"{fn}: points has shape {shape}; expected a (B, N, 3) tensor")
    if not torch.isfinite(points).all():
        raise ValueError(f"{fn}: points contains NaN or inf")


def _check_code(code, dim, fn):
    if not isinstance(code, torch.Tensor) or code.ndim != 2 or code.shape[1] != dim:
        shape = tuple(code.shape) if hasattr(code, "shape") else type(code).__name__
        raise ValueError(f"{fn}: code has shape {shape}; expected a (B, {dim}) tensor of codes")


class PointNetEncoder(nn.Module):
    """Cloud (B, N, 3) -> code (B, C): a shared per-point MLP, then a max over the points.

    The max makes the code independent of the points' order and (roughly) of their number,
    which a cloud requires (PointNet, Qi et al. 2017).
    """

    def __init__(self, code_dim: int = 64, widths=(64, 128, 256)):
        super().__init__()
        self.code_dim = code_dim
        self.point_mlp = _mlp([3, *widths], last_activation=True)
        self.head = nn.Linear(widths[-1], code_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        _check_points(points, "PointNetEncoder")
        return self.head(self.point_mlp(points).max(dim=1).values)


class PointSetDecoder(nn.Module):
    """PointSetGen-style decoder: code (B, C) -> exactly n_points points (B, n_points, 3).

    x = reshape(W_L relu(... relu(W_1 z)), (n_points, 3)): the last layer has 3·n_points
    outputs, so the count is part of the architecture.
    """

    def __init__(self, code_dim: int = 64, n_points: int = 1024, hidden=(128, 128)):
        super().__init__()
        self.code_dim, self.n_points = code_dim, n_points
        self.net = _mlp([code_dim, *hidden, 3 * n_points])

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        _check_code(code, self.code_dim, "PointSetDecoder")
        return self.net(code).view(code.shape[0], self.n_points, 3)

    def points(self, code, n=None, generator=None):
        """The decoded cloud; asking for another count is an error: the count is fixed."""
        if n is not None and n != self.n_points:
            raise ValueError(
                f"PointSetDecoder outputs exactly {self.n_points} points (its last layer has "
                f"{3 * self.n_points} outputs); it cannot give {n}. Retrain with n_points={n}."
            )
        return self(code)


class PatchDecoder(nn.Module):
    """AtlasNet decoder: K MLPs f_k: (u, v, z) -> R³, one per patch of the unit square.

    forward(code (B, C), uv (M, 2) or (K, M, 2)) -> (B, K, M, 3), where::

        out[b, k, m] = f_k( concat(uv_k[m], code[b]) )

    The same uv samples are used for every shape of the batch; (M, 2) is used for every patch.
    """

    def __init__(self, code_dim: int = 64, n_patches: int = 8, hidden=(128, 128, 128)):
        super().__init__()
        self.code_dim, self.n_patches = code_dim, n_patches
        self.patches = nn.ModuleList(_mlp([2 + code_dim, *hidden, 3]) for _ in range(n_patches))

    def forward(self, code: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        _check_code(code, self.code_dim, "PatchDecoder")
        k = self.n_patches
        if uv.ndim == 2:
            uv = uv.expand(k, *uv.shape)
        if uv.ndim != 3 or uv.shape[0] != k or uv.shape[-1] != 2:
            raise ValueError(f"PatchDecoder: uv has shape {tuple(uv.shape)}; expected (M, 2) "
                             f"or ({k}, M, 2) (one set of (u, v) samples per patch)")
        b, m = code.shape[0], uv.shape[1]
        z = code[:, None, :].expand(b, m, self.code_dim)
        out = [f(torch.cat([uv[i].to(code).expand(b, m, 2), z], dim=-1))
               for i, f in enumerate(self.patches)]
        return torch.stack(out, dim=1)

    def points(self, code, n, generator=None):
        """n points (B, n, 3): ceil(n / K) random (u, v) per patch, the surplus dropped."""
        per_patch = math.ceil(n / self.n_patches)
        uv = sample_uv(self.n_patches * per_patch, generator).view(self.n_patches, per_patch, 2)
        return self(code, uv).reshape(code.shape[0], -1, 3)[:, :n]


class TemplateDecoder(nn.Module):
    """Template deformation: g(p, z) = p + MLP(p, z) moves each template point p (B, M, 3).

    The residual form starts training from the template itself (a sphere of ``radius``), and a
    template point keeps its identity across shapes: that is the correspondence.
    """

    def __init__(self, code_dim: int = 64, hidden=(128, 128, 128), radius: float = 0.3):
        super().__init__()
        self.code_dim, self.radius = code_dim, radius
        self.net = _mlp([3 + code_dim, *hidden, 3])

    def forward(self, code: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        _check_code(code, self.code_dim, "TemplateDecoder")
        b, m = code.shape[0], template.shape[0]
        p = template.to(code).expand(b, m, 3)
        return p + self.net(torch.cat([p, code[:, None, :].expand(b, m, self.code_dim)], -1))

    def points(self, code, n, generator=None):
        return self(code, sphere_points(n, self.radius, generator))


class AutoEncoder(nn.Module):
    """encoder + one of the decoders above; ``forward(cloud, n)`` -> (B, n, 3) decoded points."""

    def __init__(self, encoder: PointNetEncoder, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, cloud, n=None, generator=None):
        return self.decoder.points(self.encoder(cloud), n, generator)


def make_model(kind: str, code_dim: int = 64, **kw) -> AutoEncoder:
    """'pointset' | 'atlas' (kw n_patches) | 'sphere', each with a PointNet encoder."""
    decoders = {"pointset": PointSetDecoder, "atlas": PatchDecoder, "sphere": TemplateDecoder}
    if kind not in decoders:
        raise ValueError(f"make_model: kind={kind!r}; expected one of {sorted(decoders)}")
    return AutoEncoder(PointNetEncoder(code_dim), decoders[kind](code_dim, **kw))


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def chamfer_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch-mean Chamfer distance (squared, both directions summed), for training.

    The same value and gradient as ``geometry.metrics.chamfer_distance(pred, target)``, about
    3x faster on a CPU: the neighbours of both directions come from ONE distance matrix,
    computed without autograd as |a|^2 + |b|^2 - 2 a.b (a matrix product); only the distances
    to the chosen neighbours are then recomputed, exactly and differentiably, from coordinates.
    (The expanded formula loses ~1e-7 to rounding, which can only swap near-tied neighbours.)
    pred (B, N, 3), target (B, M, 3) -> 0-d tensor.
    """
    _check_points(pred, "chamfer_loss")
    _check_points(target, "chamfer_loss")
    target = target.to(pred)
    with torch.no_grad():
        d = torch.baddbmm((target * target).sum(-1)[:, None, :], pred, target.transpose(1, 2),
                          alpha=-2).add_((pred * pred).sum(-1)[:, :, None])
        to_target, to_pred = d.argmin(dim=2), d.argmin(dim=1)
    near_t = torch.take_along_dim(target, to_target[..., None], dim=1)
    near_p = torch.take_along_dim(pred, to_pred[..., None], dim=1)
    return (((pred - near_t) ** 2).sum(-1).mean(-1) + ((target - near_p) ** 2).sum(-1).mean(-1)).mean()


def chamfer_step(model: AutoEncoder, clouds: torch.Tensor, *, batch_size: int = 8,
                 n_points: int = 512, lr: float = 1e-3, decay_at: int | None = None,
                 seed: int = 0):
    """A ``step(i)`` for ``gen3d_course.train.train``: one Adam step on the Chamfer loss.

    Each step takes ``batch_size`` random shapes, encodes a random subset of n_points of each
    cloud, decodes n_points and compares them with another random subset:

        loss = mean over the batch of CD(decoded, target)   (squared distances, both ways)

    From step ``decay_at`` on, the learning rate is lr / 5 (a late drop settles the points).
    Batches are drawn on the CPU and moved to the model's device (see ``train.on_device``).
    """
    _check_points(clouds, "chamfer_step")
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_shapes, pool = clouds.shape[:2]
    if pool < n_points:
        raise ValueError(f"chamfer_step: the clouds hold {pool} points per shape; "
                         f"n_points={n_points} needs at least that many")

    def subset(idx):
        cols = torch.rand(len(idx), pool, generator=generator).argsort(dim=1)[:, :n_points]
        return clouds[idx[:, None], cols]

    def step(i):
        if decay_at is not None and i == decay_at:
            for group in opt.param_groups:
                group["lr"] = lr / 5
        model.train()
        idx = torch.randint(n_shapes, (min(batch_size, n_shapes),), generator=generator)
        device = next(model.parameters()).device
        source, target = subset(idx).to(device), subset(idx).to(device)
        loss = chamfer_loss(model(source, n_points, generator), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    step.optimizer = opt
    return step


# --------------------------------------------------------------------------
# Meshes, normals, colours
# --------------------------------------------------------------------------

def patch_mesh(decoder: PatchDecoder, code: torch.Tensor, res: int = 16):
    """Each patch's triangulated square mapped to 3D, as one trimesh of K disconnected sheets.

    code (C,) or (1, C). Returns (mesh, uv (V, 2), patch (V,)): the (u, v) and patch index of
    every vertex, e.g. for texture colours. Vertex order is kept (process=False).
    """
    code = code.reshape(1, -1)
    uv, faces = uv_grid(res), triangulate_square(res)
    with torch.no_grad():
        verts = decoder(code, uv)[0]                           # (K, res², 3)
    k = decoder.n_patches
    offsets = (torch.arange(k) * res * res)[:, None, None]
    mesh = trimesh.Trimesh(verts.reshape(-1, 3).numpy(), (faces[None] + offsets).reshape(-1, 3).numpy(),
                           process=False)
    return mesh, uv.repeat(k, 1).numpy(), np.repeat(np.arange(k), res * res)


def template_mesh(decoder: TemplateDecoder, code: torch.Tensor, subdivisions: int = 3):
    """The icosphere with every vertex moved by the decoder: (mesh, template vertices (V, 3))."""
    sphere = sphere_template(subdivisions, decoder.radius)
    template = torch.as_tensor(sphere.vertices, dtype=torch.float32)
    with torch.no_grad():
        verts = decoder(code.reshape(1, -1), template)[0]
    return trimesh.Trimesh(verts.numpy(), sphere.faces, process=False), sphere.vertices
