"""Several radiance fields in one scene, as GIRAFFE composes them (Niemeyer & Geiger 2021).

Each object is a field in its own frame, placed in the world by a translation t and a scale s
(GIRAFFE also rotates; a rotation would turn the view directions too). Object k is queried at
x_k = (x − t_k) / s_k, is empty outside its own box, and its density is divided by s_k so that
a ray crossing the shrunk object meets the same optical depth. At a world point the fields are
combined by density-weighted averaging,

    σ(x) = Σ_k σ_k(x),        c(x, d) = Σ_k σ_k(x) c_k(x, d) / σ(x),

which is how overlapping media act on a ray: the chance of stopping at x is shared among the
objects in proportion to their densities. The result is one field, rendered by ``render.rays``
like any other.
"""
from __future__ import annotations

import torch

from ..config import WORLD


def place_field(field, translation=(0.0, 0.0, 0.0), scale: float = 1.0, bounds=None):
    """``field`` (points (N, 3), directions (N, 3)) → (σ, rgb), moved from its own frame to the
    world: x_obj = (x − translation) / scale; σ = 0 outside ``bounds`` (default: the field's own
    ``bounds``, else the world cube) in the object's frame. The placed field carries the world
    box it occupies as ``bounds``."""
    if scale <= 0:
        raise ValueError(f"place_field: scale must be > 0, got {scale}.")
    lo, hi = (torch.as_tensor(b, dtype=torch.float32).expand(3)
              for b in (getattr(field, "bounds", WORLD) if bounds is None else bounds))
    t = torch.as_tensor(translation, dtype=torch.float32).reshape(3)

    def placed(points, directions):
        local = (points - t.to(points.device)) / scale
        inside = ((local >= lo.to(points.device)) & (local <= hi.to(points.device))).all(-1)
        sigma, rgb = field(local, directions)
        return torch.where(inside, sigma / scale, torch.zeros_like(sigma)), rgb

    placed.bounds = (t + scale * lo, t + scale * hi)
    return placed


def compose_fields(fields, bounds=None):
    """One field from several: σ = Σ σ_k, rgb = Σ σ_k rgb_k / σ (black where every σ_k is 0,
    where it carries no weight). ``bounds``: the box to render (default: the smallest box that
    holds every field's ``bounds``)."""
    fields = list(fields)
    if not fields:
        raise ValueError("compose_fields: give at least one field.")

    def composed(points, directions):
        sigmas, rgbs = zip(*(f(points, directions) for f in fields))
        sigma = torch.stack(sigmas)                                   # (K, N)
        rgb = (sigma[..., None] * torch.stack(rgbs)).sum(0) / sigma.sum(0).clamp_min(1e-10)[:, None]
        return sigma.sum(0), rgb

    if bounds is None:
        boxes = [[torch.as_tensor(b, dtype=torch.float32).expand(3) for b in getattr(f, "bounds", WORLD)]
                 for f in fields]
        bounds = (torch.stack([b[0] for b in boxes]).amin(0), torch.stack([b[1] for b in boxes]).amax(0))
    composed.bounds = bounds
    return composed
