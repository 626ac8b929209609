"""Checks for unit 08 (NeRF): rays, compositing weights, volume rendering, positional encoding,
hierarchical (inverse-transform) sampling.

Each compares the student's function with the library's reference on random inputs; when the
values are wrong but match a classic mistake (a flipped axis, no pixel-centre offset, an
inclusive transmittance, a missing π), the message says which one.
"""
from __future__ import annotations

import contextlib
import io
import math

import torch

from ..render.cameras import look_at, pixel_rays
from ..render.encoding import positional_encoding as reference_encoding
from ..render.sampling import hierarchical_samples as reference_hierarchical
from ..render.volume import volume_render
from . import CheckFailure, check_function, check_gradients_flow

__all__ = ["check_get_rays", "check_compositing_weights", "check_render_ray_colors",
           "check_positional_encoding", "check_hierarchical_samples"]


def _with_hint(run, hints):
    """Run a check; on failure, append the first hint whose wrong variant the student matches."""
    try:
        return run()
    except CheckFailure as failure:
        for matches, text in hints:
            try:
                if matches():
                    raise CheckFailure(f"{failure}\n  Hint: {text}") from None
            except CheckFailure:
                raise
            except Exception:  # noqa: BLE001 - a hint probe must never hide the real failure
                continue
        raise


# ---------------------------------------------------------------- q1: rays through pixel centres
def _camera_inputs(generator: torch.Generator):
    eye = torch.randn(3, generator=generator)
    eye = eye / eye.norm() * (1.0 + 2.0 * torch.rand((), generator=generator))
    if abs(float(eye[1])) > 0.95 * float(eye.norm()):
        eye[0] += 0.5
    width = int(torch.randint(3, 9, (), generator=generator))
    height = int(torch.randint(3, 9, (), generator=generator))
    if width == height:
        width += 1
    focal = float(2.0 + 8.0 * torch.rand((), generator=generator))
    return look_at(eye), width, height, focal


def _rays_variant(c2w, width, height, focal, *, y_sign=-1.0, z_sign=-1.0, offset=0.5, normalise=True):
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                          torch.arange(width, dtype=torch.float32), indexing="ij")
    dirs = torch.stack([(i + offset - width / 2) / focal, y_sign * (j + offset - height / 2) / focal,
                        z_sign * torch.ones_like(i)], -1) @ c2w[:3, :3].T
    return dirs / dirs.norm(dim=-1, keepdim=True) if normalise else dirs


def check_get_rays(get_rays) -> bool:
    """``get_rays(c2w, width, height, focal) -> (origins (H, W, 3), directions (H, W, 3))``."""
    def run():
        return check_function(get_rays, pixel_rays, _camera_inputs, name="get_rays", trials=6)

    c2w, width, height, focal = _camera_inputs(torch.Generator().manual_seed(0))

    def student_dirs():
        return get_rays(c2w.clone(), width, height, focal)[1]

    def matches(**variant):
        return lambda: torch.allclose(student_dirs(), _rays_variant(c2w, width, height, focal, **variant),
                                      atol=1e-5)

    hints = [
        (matches(y_sign=1.0), "the image row index j grows downwards but the camera's y axis points "
                              "up: use −(j + 0.5 − H/2)/f for y."),
        (matches(z_sign=1.0), "in the OpenGL convention the camera looks down its −z axis: z = −1."),
        (matches(offset=0.0), "a ray goes through the pixel's centre: use i + 0.5 and j + 0.5."),
        (matches(normalise=False), "return unit directions: divide by their norm."),
        (lambda: torch.allclose(student_dirs(), (_rays_variant(c2w, width, height, focal) @ c2w[:3, :3]) @ c2w[:3, :3], atol=1e-5),
         "rotate camera-space directions into the world with c2w[:3, :3] (d_world = R · d_cam, "
         "i.e. dirs @ R.T for row vectors)."),
        (lambda: student_dirs().shape == (width, height, 3),
         "the output is (H, W, 3): rows first (meshgrid with indexing='ij' over (j, i))."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q2: alpha, transmittance, weights
def _ray_inputs(generator: torch.Generator, channels: int = 3):
    rays = int(torch.randint(2, 7, (), generator=generator))
    samples = int(torch.randint(3, 12, (), generator=generator))
    t = torch.sort(0.5 + 2.0 * torch.rand(rays, samples, generator=generator), dim=1).values
    sigmas = 5.0 * torch.rand(rays, samples, generator=generator) ** 2
    sigmas[torch.rand(rays, samples, generator=generator) < 0.3] = 0.0
    far = float(t.max()) + 0.1 + float(torch.rand((), generator=generator))
    colors = torch.rand(rays, samples, channels, generator=generator)
    return sigmas, t, far, colors


def _far_per_ray(generator: torch.Generator, t: torch.Tensor) -> torch.Tensor:
    """(R, 1) far distances, one per ray, the shape the training cell passes (``far[:, None]``)."""
    return t[:, -1:] + 0.1 + torch.rand(len(t), 1, generator=generator)


def _check_far_as_tensor(fn, reference, inputs, *, name: str) -> None:
    """Re-run a check that passed with ``far`` a number, now with ``far`` an (R, 1) tensor."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check_function(fn, reference, inputs, name=name, trials=4, atol=1e-5)
    except CheckFailure as failure:
        raise CheckFailure(
            f"{failure}\n  Your function works with `far` a number but not with `far` an (R, 1) tensor "
            "(one far distance per ray), which is what the training cell passes (`far[:, None]` from "
            "`ray_box`). Write the last interval as `far - t_vals[:, -1:]`: broadcasting makes it "
            "(R, 1) for both; `torch.full_like(t, far)` accepts only a number.") from None


def _reference_weights(sigmas, t_vals, far):
    out = volume_render(sigmas, torch.zeros(*sigmas.shape, 1), t_vals, far=far)
    return out["alpha"], out["transmittance"], out["weights"]


def check_compositing_weights(compositing_weights) -> bool:
    """``compositing_weights(sigmas (R, S), t_vals (R, S), far) -> (alpha, transmittance, weights)``,
    with ``far`` a number or an (R, 1) tensor (the training cell's shape)."""
    def inputs(generator):
        sigmas, t, far, _ = _ray_inputs(generator)
        return sigmas, t, far

    def run():
        check_function(compositing_weights, _reference_weights, inputs, name="compositing_weights",
                       trials=6, atol=1e-5)
        def tensor_far(generator):
            sigmas, t, _ = inputs(generator)
            return sigmas, t, _far_per_ray(generator, t)

        _check_far_as_tensor(compositing_weights, _reference_weights, tensor_far, name="compositing_weights")
        sigmas, t, far = inputs(torch.Generator().manual_seed(1))
        return check_gradients_flow(compositing_weights, (sigmas.requires_grad_(), t, far),
                                    name="compositing_weights")

    sigmas, t, far = inputs(torch.Generator().manual_seed(2))

    def transmittance_is_inclusive():
        _, trans, _ = compositing_weights(sigmas.clone(), t.clone(), far)
        alpha = 1 - torch.exp(-sigmas * torch.cat([t[:, 1:] - t[:, :-1], far - t[:, -1:]], 1))
        return torch.allclose(trans, torch.cumprod(1 - alpha, 1), atol=1e-5)

    def last_delta_wrong():
        alpha, _, _ = compositing_weights(sigmas.clone(), t.clone(), far)
        ref = _reference_weights(sigmas, t, far)[0]
        return torch.allclose(alpha[:, :-1], ref[:, :-1], atol=1e-5) and not torch.allclose(alpha, ref, atol=1e-5)

    hints = [
        (transmittance_is_inclusive, "T_i is the product over j < i only (exclusive): T_1 = 1."),
        (last_delta_wrong, "the last interval δ_S runs from the last sample to `far`: δ_S = far − t_S."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q3: colour, depth, opacity
def _reference_render(sigmas, colors, t_vals, far, background):
    out = volume_render(sigmas, colors, t_vals, far=far, background=background)
    return out["rgb"], out["depth"], out["acc"]


def check_render_ray_colors(render_ray_colors) -> bool:
    """``render_ray_colors(sigmas, colors, t_vals, far, background) -> (rgb (R, 3), depth (R,), acc (R,))``."""
    def inputs(generator):
        sigmas, t, far, colors = _ray_inputs(generator)
        background = torch.rand(3, generator=generator)
        return sigmas, colors, t, far, background

    def run():
        check_function(render_ray_colors, _reference_render, inputs, name="render_ray_colors",
                       trials=6, atol=1e-5, rtol=1e-4)
        def tensor_far(generator):
            sigmas, colors, t, _, background = inputs(generator)
            return sigmas, colors, t, _far_per_ray(generator, t), background

        _check_far_as_tensor(render_ray_colors, _reference_render, tensor_far, name="render_ray_colors")
        sigmas, colors, t, far, background = inputs(torch.Generator().manual_seed(3))
        return check_gradients_flow(render_ray_colors, (sigmas.requires_grad_(), colors.requires_grad_(),
                                                        t, far, background), name="render_ray_colors")

    sigmas, colors, t, far, background = inputs(torch.Generator().manual_seed(4))

    def no_background():
        rgb = render_ray_colors(sigmas.clone(), colors.clone(), t.clone(), far, background.clone())[0]
        return torch.allclose(rgb, _reference_render(sigmas, colors, t, far, 0.0)[0], atol=1e-5)

    def depth_not_normalised():
        depth = render_ray_colors(sigmas.clone(), colors.clone(), t.clone(), far, background.clone())[1]
        _, _, weights = _reference_weights(sigmas, t, far)
        return torch.allclose(depth, (weights * t).sum(1), atol=1e-5)

    hints = [
        (no_background, "the light that is not stopped (1 − Σ w_i) shows the background: "
                        "C = Σ w_i c_i + (1 − Σ w_i)·background."),
        (depth_not_normalised, "the expected depth is over the opaque part: Σ w_i t_i / Σ w_i "
                               "(guard the division for empty rays)."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q4: positional encoding
def _encoding_inputs(generator: torch.Generator):
    dims = int(torch.randint(1, 4, (), generator=generator))
    batch = (int(torch.randint(1, 5, (), generator=generator)), int(torch.randint(1, 4, (), generator=generator)))
    x = 2 * torch.rand(*batch, dims, generator=generator) - 1
    return x, int(torch.randint(1, 7, (), generator=generator))


def check_positional_encoding(positional_encoding) -> bool:
    """``positional_encoding(x (..., D), n_freqs) -> (..., D·(1 + 2·n_freqs))``."""
    def run():
        check_function(positional_encoding, reference_encoding, _encoding_inputs,
                       name="positional_encoding", trials=6, atol=1e-5)
        x, n = _encoding_inputs(torch.Generator().manual_seed(5))
        return check_gradients_flow(positional_encoding, (x.requires_grad_(), n), name="positional_encoding")

    x = torch.tensor([[0.3, -0.7]])

    def student():
        return positional_encoding(x.clone(), 2)

    def variant(scale=math.pi, interleave=False, include=True):
        parts = [x] if include else []
        for k in range(2):
            a = 2.0 ** k * scale * x
            parts += [torch.sin(a), torch.cos(a)]
        out = torch.cat(parts, -1)
        if interleave:
            out = torch.cat([x] + [torch.stack([torch.sin(2.0 ** k * math.pi * x),
                                                torch.cos(2.0 ** k * math.pi * x)], -1).reshape(1, -1)
                                   for k in range(2)], -1)
        return out

    hints = [
        (lambda: torch.allclose(student(), variant(scale=1.0), atol=1e-5),
         "the frequencies are 2^k·π (k = 0 … L−1): multiply by π."),
        (lambda: student().shape[-1] == 8, "keep the raw input x as the first D features."),
        (lambda: torch.allclose(student(), variant(interleave=True), atol=1e-5),
         "order: for each k, all D sines, then all D cosines (blocks, not interleaved per coordinate)."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q5: hierarchical sampling
def _hierarchical_inputs(generator: torch.Generator):
    """Coarse depths (R, S) sorted, weights (R, S) with one all-zero ray, sorted uniforms (R, n)."""
    rays = int(torch.randint(3, 7, (), generator=generator))
    samples = int(torch.randint(4, 12, (), generator=generator))
    n_fine = int(torch.randint(3, 10, (), generator=generator))
    t_coarse = torch.sort(0.5 + 2.0 * torch.rand(rays, samples, generator=generator), dim=1).values
    weights = torch.rand(rays, samples, generator=generator) ** 3
    weights[torch.rand(rays, samples, generator=generator) < 0.4] = 0.0
    weights[0] = 0.0  # a ray that saw nothing: its samples spread over the whole interval
    u = torch.sort(torch.rand(rays, n_fine, generator=generator), dim=1).values
    return t_coarse, weights, u


def _reference_hierarchical(t_coarse, weights, u):
    return reference_hierarchical(t_coarse, weights, u.shape[-1], u=u)


def _hierarchical_variant(t_coarse, weights, u, *, normalise=True, floor=1e-5, interpolate=True,
                          midpoints=True, merge=True):
    """The reference written out, with one classic mistake switched on (for the hints)."""
    if midpoints:
        mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
        edges = torch.cat([t_coarse[:, :1], mids, t_coarse[:, -1:]], dim=1)
    else:  # the coarse samples as edges: S − 1 bins, the last weight dropped
        edges, weights = t_coarse, weights[:, :-1]
    pdf = weights + floor
    if normalise:
        pdf = pdf / pdf.sum(dim=1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=1)], dim=1)
    above = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, cdf.shape[1] - 1)
    below = above - 1
    lo, hi = cdf.gather(1, below), cdf.gather(1, above)
    t_fine = edges.gather(1, below)
    if interpolate:
        t_fine = t_fine + (u - lo) / (hi - lo) * (edges.gather(1, above) - t_fine)
    t_all = torch.cat([t_coarse, t_fine], dim=1)
    return (torch.sort(t_all, dim=1).values if merge else t_all), t_fine


def check_hierarchical_samples(hierarchical_samples) -> bool:
    """``hierarchical_samples(t_coarse (R, S), weights (R, S), u (R, n)) -> (t_all (R, S + n), t_fine (R, n))``."""
    def run():
        return check_function(hierarchical_samples, _reference_hierarchical, _hierarchical_inputs,
                              name="hierarchical_samples", trials=6, atol=1e-4)

    t_coarse, weights, u = _hierarchical_inputs(torch.Generator().manual_seed(6))

    def student():
        return hierarchical_samples(t_coarse.clone(), weights.clone(), u.clone())

    def matches(part, **variant):
        def probe():
            mine, wrong = student()[part], _hierarchical_variant(t_coarse, weights, u, **variant)[part]
            return mine.shape == wrong.shape and torch.allclose(mine[1:], wrong[1:], atol=1e-4)
        return probe

    def only_empty_ray_wrong():
        mine, right = student()[1], _reference_hierarchical(t_coarse, weights, u)[1]
        return (torch.allclose(mine[1:], right[1:], atol=1e-4)
                and not torch.allclose(mine[:1], right[:1], atol=1e-4))

    hints = [
        (matches(1, normalise=False), "normalise the weights into a pdf (divide by their sum) before "
                                      "the cumulative sum: the CDF must end at 1, where u does."),
        (matches(1, interpolate=False), "inside its bin, place the sample by linear interpolation: "
                                        "t = e_k + (u − F_k) / (F_{k+1} − F_k) · (e_{k+1} − e_k), "
                                        "not at the bin's left edge."),
        (matches(1, midpoints=False), "the bins' edges are the midpoints between coarse samples, with the "
                                      "first and last samples at the ends: S + 1 edges for S weights."),
        (matches(0, merge=False), "t_all is the coarse and fine depths together, sorted along each ray "
                                  "(torch.sort(torch.cat(...), dim=-1).values): compositing needs them in order."),
        (only_empty_ray_wrong, "a ray whose weights are all zero has no pdf: add 1e-5 to every weight "
                               "before normalising (its samples then spread evenly over the interval)."),
    ]
    return _with_hint(run, hints)
