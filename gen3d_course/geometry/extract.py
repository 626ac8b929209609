"""From an implicit field to an explicit mesh: evaluate on a grid, then marching cubes.

Grid convention (used everywhere in the course): a field sampled at ``res`` nodes per axis,
``np.linspace(lo, hi, res)`` on each of x, y, z, stored as ``values[ix, iy, iz]``. Node spacing
is (hi − lo) / (res − 1), so vertex = lo + index · spacing. Getting spacing and origin right
is what puts the extracted surface back in world coordinates.
"""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from skimage import measure

from ..config import WORLD


def grid_nodes(res: int, bounds=WORLD) -> np.ndarray:
    """(res³, 3) float32 node coordinates in ``values[ix, iy, iz]`` order."""
    axis = np.linspace(bounds[0], bounds[1], res, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def edge_crossing(x0, x1, f0, f1, level: float = 0.0):
    """Where the field crosses ``level`` on the edges x0 → x1, by linear interpolation.

    x = x0 + t·(x1 − x0) with t = (level − f0) / (f1 − f0): the vertex rule of marching cubes
    (scikit-image applies it in C); (N, 3) ends, (N,) values. Exact when f is linear on the edge.
    """
    t = (level - f0) / (f1 - f0)
    return x0 + t[..., None] * (x1 - x0)


def grid_to_world(vertices, shape, bounds=WORLD):
    """Grid-index coordinates (V, 3) of a node grid with ``shape`` nodes per axis → world.

    x = lo + index · spacing with spacing = (hi − lo) / (n − 1): n nodes span n − 1 intervals,
    and node 0 sits at lo.
    """
    lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
    spacing = (hi - lo) / (np.asarray(shape, dtype=np.float64) - 1)
    return vertices * spacing + lo


def _to_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32).reshape(-1)


def evaluate_field(field, points: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``field`` on (N, 3) points, in chunks so memory stays flat.

    ``field`` takes float32 (N, 3) points (a numpy array) and returns N values as a numpy
    array or a torch tensor; a torch module is called under ``torch.no_grad`` on tensors.
    """
    if isinstance(field, torch.nn.Module):
        module = field

        def field(p):
            with torch.no_grad():
                return module(torch.from_numpy(p))

    out = np.concatenate([_to_numpy(field(points[i:i + chunk])) for i in range(0, len(points), chunk)])
    if out.shape[0] != points.shape[0]:
        raise ValueError(
            f"evaluate_field: the field returned {out.shape[0]} values for {points.shape[0]} points; "
            "it must return one value per point."
        )
    return out


def evaluate_grid(field, res: int, bounds=WORLD, chunk: int = 65536) -> np.ndarray:
    """The field on the (res, res, res) node grid over ``bounds``."""
    return evaluate_field(field, grid_nodes(res, bounds), chunk).reshape(res, res, res)


def marching_cubes(values, level: float = 0.0, bounds=WORLD) -> trimesh.Trimesh:
    """Triangle mesh of {x : f(x) = level} from a node grid, in world coordinates.

    The field is taken to be *smaller inside* (an SDF, or minus an occupancy probability); faces
    then come out oriented with normals pointing outward (positive volume). Fields that never cross ``level`` have no
    surface: that is reported clearly instead of as scikit-image's error.
    """
    values = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                        dtype=np.float32)
    if values.ndim != 3 or min(values.shape) < 2:
        raise ValueError(f"marching_cubes: values have shape {values.shape}; expected a 3D grid "
                         "with at least 2 nodes per axis.")
    if not np.isfinite(values).all():
        raise ValueError("marching_cubes: the field contains NaN or inf; check the model's output.")
    lo, hi = float(values.min()), float(values.max())
    if not lo < level < hi:
        side = "outside (all values above)" if lo >= level else "inside (all values below)"
        raise ValueError(
            f"marching_cubes: the field never crosses level {level} (min {lo:.4g}, max {hi:.4g}): "
            f"every node is {side} the surface, so there is nothing to extract. "
            "Check the level, the bounds, or whether the model has learned a surface yet."
        )
    verts, faces, _, _ = measure.marching_cubes(values, level=level)
    return trimesh.Trimesh(grid_to_world(verts, values.shape, bounds), faces, process=True)


def extract_mesh(field, res: int = 64, level: float = 0.0, bounds=WORLD,
                 chunk: int = 65536) -> trimesh.Trimesh:
    """Mesh of the level set of any callable field, sampled densely on a res³ node grid."""
    return marching_cubes(evaluate_grid(field, res, bounds, chunk), level, bounds)


def voxel_mesh(probabilities, level: float = 0.5, bounds=WORLD, upsample: int = 1) -> trimesh.Trimesh:
    """Surface of a voxel grid (occupancy or decoded probabilities) by marching cubes.

    Voxel values live at cell *centres* (as ``data.samples.voxelize`` makes them), not at grid
    nodes: the grid is padded with one empty cell per side, so surfaces touching the border
    close, and the nodes then span ``bounds`` widened by half a cell. ``upsample`` > 1
    interpolates trilinearly first, which smooths the staircase of a coarse grid (a 16³ grid
    with ``upsample=2`` is meshed at 35³ nodes). Returns an empty mesh when nothing crosses
    ``level`` (an all-empty decoding is a legitimate answer for a slider panel).
    """
    values = torch.as_tensor(np.asarray(probabilities.detach().cpu() if isinstance(
        probabilities, torch.Tensor) else probabilities, dtype=np.float32))
    values = values.reshape(values.shape[-3:]) if values.dim() > 3 else values
    if values.dim() != 3:
        raise ValueError(f"voxel_mesh: expected a (R, R, R) grid, got shape {tuple(values.shape)}.")
    size = (np.asarray(bounds[1], float) - bounds[0]) / np.asarray(values.shape)
    padded = torch.nn.functional.pad(values, (1, 1, 1, 1, 1, 1))
    if upsample > 1:
        nodes = [(n - 1) * upsample + 1 for n in padded.shape]
        padded = torch.nn.functional.interpolate(padded[None, None], size=nodes, mode="trilinear",
                                                 align_corners=True)[0, 0]
    grid = padded.numpy()
    if not grid.min() < level < grid.max():
        return trimesh.Trimesh()
    lo = np.asarray(bounds[0], float) - size / 2
    hi = np.asarray(bounds[1], float) + size / 2
    return marching_cubes(-grid, -level, bounds=(lo, hi))
