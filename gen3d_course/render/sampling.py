"""Where to evaluate a radiance field along a ray: the box, stratified and hierarchical samples.

A ray r(t) = o + t·d only needs samples where the scene can be: between the distances where it
enters and leaves the scene's box (``ray_box``). Inside, NeRF draws

* stratified samples: split [near, far] into S equal bins and draw one uniform sample per bin,
  so every region is covered yet, over many steps, the network sees every depth (not only S
  fixed ones) — a fixed grid of depths would let it learn a field that is only right there;
* hierarchical (importance) samples: treat a first, coarse pass's weights w_i as a piecewise
  constant density along the ray, normalise it (pdf_i = w_i / Σ w), and draw more samples by
  inverting its cumulative distribution. They land where the surface is, which is where the
  colour is decided.
"""
from __future__ import annotations

import torch

from ..config import WORLD


def points_along_rays(origins: torch.Tensor, directions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """r(t) = o + t·d for rays (R, 3) and depths (R, S) → points (R, S, 3)."""
    if origins.shape != directions.shape or origins.shape[-1] != 3 or t.shape[:-1] != origins.shape[:-1]:
        raise ValueError(f"points_along_rays: origins {tuple(origins.shape)}, directions "
                         f"{tuple(directions.shape)} and t {tuple(t.shape)} must be (R, 3), (R, 3), (R, S).")
    return origins[..., None, :] + t[..., None] * directions[..., None, :]


def ray_box(origins: torch.Tensor, directions: torch.Tensor, bounds=WORLD):
    """Distances (near, far) (R,) where rays enter and leave an axis-aligned box, and hit (R,).

    ``bounds`` is (lo, hi), each a number or a 3-vector. Slab method: per axis the ray is inside
    between (lo − o)/d and (hi − o)/d; the box interval is the intersection of the three.
    near is clamped to 0 (a camera inside the box); rays that miss get near = far.
    """
    lo = torch.as_tensor(bounds[0], dtype=origins.dtype, device=origins.device).expand(3)
    hi = torch.as_tensor(bounds[1], dtype=origins.dtype, device=origins.device).expand(3)
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0, t1 = (lo - origins) / safe, (hi - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    return near, torch.where(hit, far, near), hit


def _as_rays(value, n_rays) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32)
    return value.expand(n_rays) if value.ndim == 0 else value


def stratified_samples(near, far, n_samples: int, n_rays: int | None = None, perturb: bool = True,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(R, S) sorted depths: one sample per equal bin of [near, far] (bin centres if not perturb).

    ``near``/``far`` are (R,) tensors, or numbers together with ``n_rays``. Random numbers are
    drawn on the CPU (where ``generator`` lives) and moved to the rays' device, so a run on a
    CPU draws exactly what it always drew.
    """
    if n_samples < 1:
        raise ValueError(f"stratified_samples: n_samples must be ≥ 1, got {n_samples}.")
    if n_rays is None:
        if not isinstance(near, torch.Tensor) or near.ndim != 1:
            raise ValueError("stratified_samples: pass near/far as (R,) tensors or give n_rays.")
        n_rays = len(near)
    near, far = _as_rays(near, n_rays), _as_rays(far, n_rays)
    edges = torch.linspace(0.0, 1.0, n_samples + 1, dtype=near.dtype, device=near.device)
    lower, width = edges[:-1], edges[1] - edges[0]
    u = (torch.rand(n_rays, n_samples, generator=generator, dtype=near.dtype).to(near.device) if perturb
         else torch.full((n_rays, n_samples), 0.5, dtype=near.dtype, device=near.device))
    fraction = lower + width * u
    return near[:, None] + (far - near)[:, None] * fraction


def sample_pdf(bin_edges: torch.Tensor, weights: torch.Tensor, n_samples: int,
               perturb: bool = True, generator: torch.Generator | None = None,
               u: torch.Tensor | None = None) -> torch.Tensor:
    """(R, n_samples) sorted depths drawn from the piecewise-constant density of ``weights``.

    ``bin_edges`` (R, S+1), ``weights`` (R, S) ≥ 0. Inverse transform sampling: with the CDF
    F at the edges, a uniform u falls in the bin i with F_i ≤ u < F_{i+1} and maps linearly
    inside it. ``perturb=False`` uses evenly spaced u (deterministic renders). Rays whose
    weights are all zero get samples spread uniformly over their bins (a small constant is
    added to every weight). ``u`` (R, n_samples) in [0, 1), sorted along each ray, replaces the
    drawn numbers (so a hand-written sampler can be compared on the same draws).
    """
    if bin_edges.shape[:-1] != weights.shape[:-1] or bin_edges.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(f"sample_pdf: bin_edges {tuple(bin_edges.shape)} must be (R, S+1) for "
                         f"weights {tuple(weights.shape)} (R, S).")
    weights = weights.detach().clamp_min(0.0) + 1e-5
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1)
    cdf[..., -1] = 1.0
    shape = (*cdf.shape[:-1], n_samples)
    if u is not None:
        if tuple(u.shape) != shape:
            raise ValueError(f"sample_pdf: u {tuple(u.shape)} must be {shape} (rays, n_samples).")
        u = u.to(cdf)
    elif perturb:
        u = torch.rand(shape, generator=generator, dtype=cdf.dtype).to(cdf.device).sort(dim=-1).values
    else:
        u = torch.linspace(0.5 / n_samples, 1 - 0.5 / n_samples, n_samples, dtype=cdf.dtype,
                           device=cdf.device).expand(shape)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    edge_lo, edge_hi = bin_edges.gather(-1, below), bin_edges.gather(-1, above)
    span = torch.where(cdf_hi - cdf_lo < 1e-8, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return (edge_lo + (u - cdf_lo) / span * (edge_hi - edge_lo)).detach()


def hierarchical_samples(t_coarse: torch.Tensor, weights: torch.Tensor, n_fine: int,
                         perturb: bool = True, generator: torch.Generator | None = None,
                         u: torch.Tensor | None = None):
    """Coarse-to-fine: ``n_fine`` new depths where the coarse ``weights`` are large.

    The coarse samples' bins have edges at the midpoints between samples (and the first and
    last samples at the ends). Returns (t_all (R, S + n_fine) sorted, t_fine (R, n_fine)); the
    fine depths carry no gradient (NeRF treats the sampling as fixed). ``u``: see ``sample_pdf``.
    """
    mids = 0.5 * (t_coarse[..., 1:] + t_coarse[..., :-1])
    edges = torch.cat([t_coarse[..., :1], mids, t_coarse[..., -1:]], dim=-1)
    t_fine = sample_pdf(edges.detach(), weights, n_fine, perturb=perturb, generator=generator, u=u)
    t_all = torch.sort(torch.cat([t_coarse.detach(), t_fine], dim=-1), dim=-1).values
    return t_all, t_fine
