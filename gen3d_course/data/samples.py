"""Every representation of one shape, from its signed distance: voxels, surface points with
normals, SDF and occupancy samples, and a mesh.

All functions take anything with an ``sdf(points) -> distances`` method (a procedural
``Shape`` or a ``MeshShape`` loaded from a file) and return numpy arrays in world coordinates
(the cube [-0.5, 0.5]³). Random draws come from a seed, so the same call gives the same samples.
"""
from __future__ import annotations

import numpy as np
import trimesh

from ..config import WORLD
from ..geometry.extract import evaluate_field, marching_cubes
from ..geometry.narrowband import narrow_band_grid
from ..render.sphere_tracing import sdf_gradient


def cell_centers(res: int, bounds=WORLD) -> np.ndarray:
    """(res³, 3) centres of the res³ voxels tiling ``bounds``, in ``grid[ix, iy, iz]`` order."""
    size = (bounds[1] - bounds[0]) / res
    axis = (bounds[0] + (np.arange(res) + 0.5) * size).astype(np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def voxelize(shape, res: int = 32) -> np.ndarray:
    """Boolean (res, res, res) occupancy: a voxel is full when its centre is inside the shape."""
    return (evaluate_field(shape.sdf, cell_centers(res)) < 0).reshape(res, res, res)


def mesh_of(shape, res: int = 64) -> trimesh.Trimesh:
    """The shape's surface by marching cubes on a res³ grid of its signed distance.

    The distance is exact (or a CSG bound on it), so a narrow band (coarse to fine, exact values
    only near the surface) gives the dense grid's mesh from about a third of the queries: the
    gallery slider re-meshes in a fraction of the time."""
    return marching_cubes(narrow_band_grid(shape.sdf, res)[0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def surface_points(shape, n: int = 2048, seed: int = 0, res: int = 64):
    """n points on the surface and their outward unit normals, each (n, 3) float32.

    Points are drawn uniformly by area on the marching-cubes mesh, then projected onto the exact
    zero level set with two Newton steps p ← p − sdf(p)·∇sdf(p); normals are ∇sdf there.
    A shape that is a mesh already (``meshes.MeshShape``) is sampled on its own triangles.
    """
    if isinstance(getattr(shape, "mesh", None), trimesh.Trimesh):
        points, faces = trimesh.sample.sample_surface(shape.mesh, n, seed=seed)
        return points.astype(np.float32), shape.mesh.face_normals[faces].astype(np.float32)
    mesh = mesh_of(shape, res)
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    for _ in range(2):
        points = points - shape.sdf(points)[:, None] * _unit(sdf_gradient(shape, points))
    normals = _unit(sdf_gradient(shape, points))
    return points.astype(np.float32), normals.astype(np.float32)


def sdf_samples(shape, n: int = 4096, seed: int = 0, near_fraction: float = 0.8,
                sigmas=(0.005, 0.03)):
    """(points (n, 3), sdf (n,)) for training an SDF regressor (DeepSDF's recipe).

    ``near_fraction`` of the points are surface points jittered by Gaussian noise (half with
    each sigma): that is where the network must be accurate. The rest are uniform in the
    world cube, so the field is also right far away.
    """
    rng = np.random.default_rng(seed)
    n_near = int(round(n * near_fraction))
    surface, _ = surface_points(shape, n_near, seed=seed)
    sigma = np.where(np.arange(n_near) % 2 == 0, sigmas[0], sigmas[1])[:, None]
    near = surface + rng.normal(size=surface.shape) * sigma
    uniform = rng.uniform(WORLD[0], WORLD[1], size=(n - n_near, 3))
    points = np.clip(np.concatenate([near, uniform]), WORLD[0], WORLD[1]).astype(np.float32)
    return points, shape.sdf(points).astype(np.float32)


def occupancy_samples(shape, n: int = 2048, seed: int = 0, near_fraction: float = 0.5,
                      sigma: float = 0.02):
    """(points (n, 3), inside (n,) bool) for training an occupancy network.

    Uniform points alone rarely land near thin parts, so ``near_fraction`` are jittered
    surface points (Occupancy Networks sample uniformly; the near points make small budgets
    learn the boundary faster).
    """
    points, distances = sdf_samples(shape, n, seed, near_fraction, sigmas=(sigma, sigma))
    return points, distances < 0
