"""Where a trained field is empty: a coarse occupancy grid, to skip samples that cannot matter.

Most samples of a ray fall in empty space or behind the first surface, and each costs a full
field query. Instant-NGP and nerfacc skip both: an occupancy grid, derived once from the trained
density, says which cells can hold anything, and a ray stops querying once its transmittance is
spent (``render.rays.render_rays(..., occupancy=grid, min_transmittance=...)``). The image is
the same up to what the skipped samples could add: α < 1 − exp(−threshold·δ) each in empty
cells, and less than ``min_transmittance`` altogether behind a surface.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class OccupancyGrid:
    """A boolean res³ grid of cells over ``bounds``: True where ``density`` may exceed ``threshold``.

    The density is evaluated at the (res + 1)³ cell corners; a cell is occupied when any of its
    corners is above the threshold, and the occupied set is grown by one cell in every direction,
    so a thin surface that passes between corners is still inside an occupied cell.
    """

    def __init__(self, density, bounds, res: int = 64, threshold: float = 0.01, chunk: int = 65536):
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.res = res
        axis = torch.linspace(self.bounds[0], self.bounds[1], res + 1)
        corners = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        with torch.no_grad():
            sigma = torch.cat([density(corners[i:i + chunk]).reshape(-1).cpu()
                               for i in range(0, len(corners), chunk)])
        above = (sigma > threshold).float().reshape(1, 1, res + 1, res + 1, res + 1)
        cells = F.max_pool3d(above, kernel_size=2, stride=1)                  # any corner of a cell
        self.cells = F.max_pool3d(cells, kernel_size=3, stride=1, padding=1)[0, 0].bool()  # grow by one

    @property
    def fraction(self) -> float:
        """The share of the box that is occupied (what is left to query)."""
        return float(self.cells.float().mean())

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) bool for points (N, 3): inside the box and in an occupied cell."""
        lo, hi = self.bounds
        scaled = (points - lo) / (hi - lo) * self.res
        inside = ((scaled >= 0) & (scaled <= self.res)).all(dim=-1)
        index = scaled.long().clamp(0, self.res - 1)
        cells = self.cells.to(points.device)
        return inside & cells[index[:, 0], index[:, 1], index[:, 2]]
