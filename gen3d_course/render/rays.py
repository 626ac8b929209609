"""The one ray renderer: rays → samples → field query → compositing, for any radiance field.

A radiance field is any callable ``field(points (N, 3), directions (N, 3)) → (σ (N,), rgb (N, 3))``
(as PyTorch3D's ``ImplicitRenderer`` takes a ``volumetric_function``): NeRF's MLP, a grid, a
GRAF generator with its codes bound in a closure, or a procedural scene's exact field. For each
ray r(t) = o + t·d the renderer

1. finds where the ray enters and leaves the scene's box (``sampling.ray_box``),
2. draws S stratified depths t_i between them (``sampling.stratified_samples``),
3. queries σ_i, c_i = field(r(t_i), d),
4. composites C = Σ T_i α_i c_i + (1 − Σ w_i)·background (``volume.volume_render``),
5. optionally draws more depths where the first pass's weights are large
   (``sampling.hierarchical_samples``), queries them too and composites all samples again.

For interactive renders of a trained field, step 3 can skip samples that cannot change the
pixel: those in cells an ``occupancy.OccupancyGrid`` marks empty, and those a ray reaches with
its transmittance already below ``min_transmittance`` (queried front to back, a block of
samples at a time). Skipped samples count as empty space.
"""
from __future__ import annotations

import math

import torch

from ..config import WORLD
from .cameras import pixel_rays
from .sampling import hierarchical_samples, points_along_rays, ray_box, stratified_samples
from .volume import volume_render


def query_field(field, origins: torch.Tensor, directions: torch.Tensor, t: torch.Tensor,
                active: torch.Tensor | None = None):
    """The field at the points o + t·d: σ (R, S) and rgb (R, S, 3) for rays (R, 3), depths (R, S).

    With ``active`` (R, S) bool, only those samples are queried; the others are empty (σ = 0).
    """
    points = points_along_rays(origins, directions, t)
    if active is None:
        dirs = directions[:, None, :].expand_as(points)
        sigma, rgb = field(points.reshape(-1, 3), dirs.reshape(-1, 3))
        return sigma.reshape(t.shape), rgb.reshape(*t.shape, 3)
    sigma, rgb = points.new_zeros(t.shape), points.new_zeros(*t.shape, 3)
    rows, cols = active.nonzero(as_tuple=True)
    if len(rows):
        sigma[rows, cols], rgb[rows, cols] = field(points[rows, cols], directions[rows])
    return sigma, rgb


SKIP_BLOCK = 8  # samples queried at once along a ray before its transmittance is checked


def _query_skipping(field, origins, directions, t, far, occupancy, min_transmittance):
    """``query_field`` without the samples in empty cells or behind a spent transmittance."""
    points = points_along_rays(origins, directions, t)
    active = (torch.ones_like(t, dtype=torch.bool) if occupancy is None
              else occupancy(points.reshape(-1, 3)).reshape(t.shape))
    if min_transmittance <= 0:
        return query_field(field, origins, directions, t, active)
    deltas = torch.cat([t[:, 1:] - t[:, :-1], far[:, None] - t[:, -1:]], dim=1)
    sigma, rgb = points.new_zeros(t.shape), points.new_zeros(*t.shape, 3)
    optical_depth = points.new_zeros(len(t))  # −log T so far
    for start in range(0, t.shape[1], SKIP_BLOCK):
        block = slice(start, start + SKIP_BLOCK)
        alive = optical_depth < -math.log(min_transmittance)
        sigma[:, block], rgb[:, block] = query_field(field, origins, directions, t[:, block],
                                                     active[:, block] & alive[:, None])
        optical_depth = optical_depth + (torch.relu(sigma[:, block]) * deltas[:, block]).sum(dim=1)
    return sigma, rgb


def _composite(sigma, rgb, t, far, background):
    out = volume_render(sigma, rgb, t, far=far, background=torch.as_tensor(background, dtype=rgb.dtype,
                                                                           device=rgb.device))
    out["t"] = t
    return out


def field_bounds(field, bounds=None) -> tuple:
    """The box to render ``field`` in: ``bounds`` if given, else the field's own ``bounds``
    attribute (a NeRF or grid knows the box it was built for), else the world cube."""
    return getattr(field, "bounds", WORLD) if bounds is None else bounds


def field_device(field) -> torch.device:
    """Where a field's parameters live (the CPU for a plain callable), so rays can be sent there."""
    parameters = getattr(field, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return torch.device("cpu") if first is None else first.device


def render_rays(field, origins: torch.Tensor, directions: torch.Tensor, *, n_samples: int = 32,
                n_importance: int = 0, bounds=None, perturb: bool = True, background=1.0,
                generator: torch.Generator | None = None, occupancy=None,
                min_transmittance: float = 0.0) -> dict[str, torch.Tensor]:
    """Render rays (R, 3) through ``field``: {"rgb" (R, 3), "depth", "acc" (R,), "weights", "t" (R, S)}.

    Samples lie between where each ray enters and leaves the box ``bounds`` (default: the
    field's own, see ``field_bounds``; rays that miss it see the background). With ``n_importance`` > 0 a coarse pass with ``n_samples`` stratified
    samples is followed by ``n_importance`` samples drawn from its weights, and the field is
    queried on those too (one field for both passes, the coarse values reused; the NeRF paper
    trains a second, "fine" network); the coarse result is under "coarse".
    ``occupancy`` (a callable points → bool, e.g. ``occupancy.OccupancyGrid``) and
    ``min_transmittance`` > 0 skip samples that cannot change the pixel (see the module notes).
    """
    if origins.shape != directions.shape or origins.ndim != 2 or origins.shape[-1] != 3:
        raise ValueError(f"render_rays: origins {tuple(origins.shape)} and directions "
                         f"{tuple(directions.shape)} must both be (R, 3).")
    near, far, _ = ray_box(origins, directions, field_bounds(field, bounds))
    t = stratified_samples(near, far, n_samples, perturb=perturb, generator=generator)
    skipping = occupancy is not None or min_transmittance > 0
    sigma, rgb = (_query_skipping(field, origins, directions, t, far, occupancy, min_transmittance)
                  if skipping else query_field(field, origins, directions, t))
    out = _composite(sigma, rgb, t, far, background)
    if n_importance > 0:
        _, t_fine = hierarchical_samples(t, out["weights"], n_importance, perturb=perturb,
                                         generator=generator)
        sigma_fine, rgb_fine = (_query_skipping(field, origins, directions, t_fine, far, occupancy, 0.0)
                                if skipping else query_field(field, origins, directions, t_fine))
        t_all, order = torch.sort(torch.cat([t, t_fine], dim=1), dim=1)
        sigma_all = torch.cat([sigma, sigma_fine], dim=1).gather(1, order)
        rgb_all = torch.cat([rgb, rgb_fine], dim=1).gather(1, order[..., None].expand(-1, -1, 3))
        coarse = out
        out = _composite(sigma_all, rgb_all, t_all, far, background)
        out["coarse"] = coarse
    return out


@torch.no_grad()
def render_image(field, c2w, width: int, height: int, focal: float, *, chunk: int = 4096,
                 **render_kw) -> dict[str, torch.Tensor]:
    """A full image: {"rgb" (H, W, 3), "depth" (H, W), "acc" (H, W)}; deterministic samples.

    Depth is 0 where the accumulated opacity is below one half (the ray saw mostly background).
    The rays go to the field's device and the image comes back on the CPU.
    """
    device = field_device(field)
    origins, directions = (x.reshape(-1, 3).to(device) for x in pixel_rays(c2w, width, height, focal))
    render_kw.setdefault("perturb", False)
    parts = [render_rays(field, origins[i:i + chunk], directions[i:i + chunk], **render_kw)
             for i in range(0, len(origins), chunk)]
    out = {k: torch.cat([p[k] for p in parts]).cpu() for k in ("rgb", "depth", "acc")}
    out["depth"] = torch.where(out["acc"] > 0.5, out["depth"], torch.zeros_like(out["depth"]))
    return {"rgb": out["rgb"].reshape(height, width, 3), "depth": out["depth"].reshape(height, width),
            "acc": out["acc"].reshape(height, width)}
