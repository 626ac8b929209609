"""Volume rendering: turn densities and colours along a ray into one pixel.

For samples t_1 < … < t_S on a ray with densities σ_i and colours c_i::

    δ_i = t_{i+1} − t_i          (the last interval reaches ``far``: δ_S = far − t_S)
    α_i = 1 − exp(−σ_i δ_i)      (probability the ray stops in interval i, given it reached it)
    T_i = Π_{j<i} (1 − α_j)      (probability it reached interval i)
    w_i = T_i α_i                (probability it stops in interval i: unconditional)
    C = Σ w_i c_i + (1 − Σ w_i) · background,  depth = Σ w_i t_i

The weights are non-negative and sum to at most 1 (the rest is the background's share).
"""
from __future__ import annotations

import torch


def volume_render(sigmas: torch.Tensor, colors: torch.Tensor, t_vals: torch.Tensor,
                  far: float | None = None, background=1.0) -> dict[str, torch.Tensor]:
    """Composite (R, S) densities and (R, S, C) colours at (R, S) depths into (R, C) pixels.

    Returns ``rgb`` (R, C), ``depth`` (R,) (expected depth of the hit, over the opaque part),
    ``acc`` (R,) (accumulated opacity Σ w_i), ``weights`` (R, S), and the terms they are made
    of, ``alpha`` (R, S) and ``transmittance`` (R, S). ``far`` is a number or (R,) per ray.
    """
    if sigmas.shape != t_vals.shape or colors.shape[:2] != sigmas.shape:
        raise ValueError(
            f"volume_render: sigmas {tuple(sigmas.shape)}, colors {tuple(colors.shape)} and "
            f"t_vals {tuple(t_vals.shape)} must be (R, S), (R, S, C) and (R, S)."
        )
    if far is None:
        last = torch.full_like(t_vals[:, -1:], 1e10)
    else:  # a number, or one far distance per ray (R,)
        far = torch.as_tensor(far, dtype=t_vals.dtype)
        last = (far.reshape(-1, 1) if far.ndim else far) - t_vals[:, -1:]
    deltas = torch.cat([t_vals[:, 1:] - t_vals[:, :-1], last], dim=1)
    alphas = 1.0 - torch.exp(-torch.relu(sigmas) * deltas)
    # Exclusive cumulative product: T_1 = 1.
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alphas[:, :1]), 1.0 - alphas[:, :-1] + 1e-10], dim=1), dim=1)
    weights = transmittance * alphas
    acc = weights.sum(dim=1)
    background = torch.as_tensor(background, dtype=colors.dtype)
    rgb = (weights[..., None] * colors).sum(dim=1) + (1.0 - acc[:, None]) * background
    depth = (weights * t_vals).sum(dim=1) / acc.clamp_min(1e-10)
    return {"rgb": rgb, "depth": depth, "acc": acc, "weights": weights,
            "alpha": alphas, "transmittance": transmittance}
