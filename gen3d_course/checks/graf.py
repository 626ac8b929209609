"""Checks for unit 09 (GRAF): the conditional field (its inputs and forward) and the patch rays.

Each compares the student's function with the library (``models.graf``, ``render.patches``) on
random inputs; when the values are wrong in a way a classic mistake explains (the code before
the encoding, a code that is not repeated per point, a density without its shift, the patch
leaving the image, the OpenCV axes left unflipped), the message says which.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from ..config import WORLD
from ..models.graf import ConditionalField
from ..models.graf import appearance_input as reference_appearance_input
from ..models.graf import shape_input as reference_shape_input
from ..models.nerf import to_unit_cube
from ..render.cameras import intrinsic_matrix, look_at
from ..render.encoding import positional_encoding
from ..render.patches import patch_coordinates, patch_grid, rays_from_intrinsics
from . import CheckFailure, check_function, check_gradients_flow, seeded
from .nerf import _with_hint

__all__ = ["check_shape_input", "check_appearance_input", "check_conditional_field",
           "check_patch_pattern", "check_patch_coordinates", "check_patch_rays"]


# ---------------------------------------------------------------- q1: [γ(x), z_s]
def _shape_inputs(generator: torch.Generator):
    B = int(torch.randint(1, 4, (), generator=generator))
    N = int(torch.randint(2, 6, (), generator=generator))
    Ds = int(torch.randint(2, 6, (), generator=generator))
    points = 2 * torch.rand(B, N, 3, generator=generator) - 1
    return points, torch.randn(B, Ds, generator=generator), int(torch.randint(1, 5, (), generator=generator))


def check_shape_input(shape_input) -> bool:
    """``shape_input(points (B, N, 3), z_shape (B, Ds), n_freqs) -> (B, N, 3(1 + 2L) + Ds)``."""
    def run():
        check_function(shape_input, reference_shape_input, _shape_inputs, name="shape_input", trials=6)
        points, z, n = _shape_inputs(seeded(1))
        return check_gradients_flow(shape_input, (points, z.requires_grad_(), n), name="shape_input")

    points, z, n = _shape_inputs(seeded(2))
    points, z = points[:1].expand(2, -1, -1).clone(), torch.randn(2, z.shape[1])

    def student():
        return shape_input(points.clone(), z.clone(), n)

    hints = [
        (lambda: torch.allclose(student(), torch.cat([z[:, None].expand(-1, points.shape[1], -1),
                                                      positional_encoding(points, n)], -1)),
         "append the code after the encoding: [γ(x), z_s], in that order."),
        (lambda: student().shape[-1] == z.shape[1] + 3 * 2 * n,
         "γ(x) keeps the raw coordinates first: use positional_encoding(points, n_freqs) as is."),
        (lambda: torch.allclose(student()[1], student()[0]),
         "batch entry b must get its own code z_shape[b]: expand z_shape[:, None, :] over the N points."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q2: [h, γ(d), z_a]
def _appearance_inputs(generator: torch.Generator):
    B = int(torch.randint(1, 4, (), generator=generator))
    N = int(torch.randint(2, 6, (), generator=generator))
    F = int(torch.randint(2, 6, (), generator=generator))
    Da = int(torch.randint(2, 5, (), generator=generator))
    d = torch.randn(B, N, 3, generator=generator)
    d = d / d.norm(dim=-1, keepdim=True)
    return (torch.randn(B, N, F, generator=generator), d, torch.randn(B, Da, generator=generator),
            int(torch.randint(1, 4, (), generator=generator)))


def check_appearance_input(appearance_input) -> bool:
    """``appearance_input(features (B, N, F), directions (B, N, 3), z_app (B, Da), n_freqs)``."""
    def run():
        check_function(appearance_input, reference_appearance_input, _appearance_inputs,
                       name="appearance_input", trials=6)
        h, d, z, n = _appearance_inputs(seeded(3))
        return check_gradients_flow(appearance_input, (h.requires_grad_(), d, z.requires_grad_(), n),
                                    name="appearance_input")

    h, d, z, n = _appearance_inputs(seeded(4))

    def student():
        return appearance_input(h.clone(), d.clone(), z.clone(), n)

    codes = z[:, None].expand(-1, d.shape[1], -1)
    hints = [
        (lambda: torch.allclose(student(), torch.cat([h, codes, positional_encoding(d, n)], -1)),
         "order: [features, γ(d), z_a] — the code comes last."),
        (lambda: torch.allclose(student(), torch.cat([h, d, codes], -1)) if n else False,
         "encode the direction too: γ(d) = positional_encoding(directions, n_freqs)."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q3: (x, d, z_s, z_a) → (σ, rgb)
def _random_field(generator: torch.Generator) -> ConditionalField:
    """A small field with random sizes and weights (drawn from ``generator``; global RNG untouched)."""
    def draw(lo, hi):
        return int(torch.randint(lo, hi, (), generator=generator))

    with torch.random.fork_rng():
        field = ConditionalField(z_shape=draw(2, 6), z_app=draw(2, 5), width=8, depth=draw(1, 3),
                                 pos_freqs=draw(1, 4), dir_freqs=draw(0, 3),
                                 density_scale=1.0 + 4.0 * float(torch.rand((), generator=generator)),
                                 density_shift=-3.0 * float(torch.rand((), generator=generator)))
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=generator))
    return field


def _field_inputs(generator: torch.Generator):
    field = _random_field(generator)
    B = int(torch.randint(1, 4, (), generator=generator))
    N = int(torch.randint(2, 6, (), generator=generator))
    lo, hi = WORLD
    points = lo + (hi - lo) * torch.rand(B, N, 3, generator=generator)
    directions = F.normalize(torch.randn(B, N, 3, generator=generator), dim=-1)
    return (field, points, directions, torch.randn(B, field.z_shape, generator=generator),
            torch.randn(B, field.z_app, generator=generator))


def _field_variant(field, points, directions, z_shape, z_app, *, unit_cube=True, shift=True,
                   feature=True, sigmoid=True):
    """The forward pass with one classic mistake switched on (what the hints compare against)."""
    x = to_unit_cube(points, field.bounds) if unit_cube else points
    h = field.trunk(reference_shape_input(x, z_shape, field.pos_freqs))
    sigma = field.density_scale * F.softplus(field.sigma_head(h)[..., 0]
                                             + (field.density_shift if shift else 0.0))
    logits = field.color_head(reference_appearance_input(field.feature(h) if feature else h,
                                                         directions, z_app, field.dir_freqs))
    return sigma, torch.sigmoid(logits) if sigmoid else logits


def check_conditional_field(conditional_field) -> bool:
    """``conditional_field(field, points, directions, z_shape, z_app, density_noise=0.0,
    generator=None) -> (σ (B, N), rgb (B, N, 3))``, the same numbers as ``field(...)``."""
    name = "conditional_field"

    def reference(field, points, directions, z_shape, z_app):
        return field(points, directions, z_shape, z_app)

    def with_noise(field, points, directions, z_shape, z_app, density_noise, generator_seed):
        return conditional_field(field, points, directions, z_shape, z_app, density_noise,
                                 seeded(generator_seed))

    def reference_with_noise(field, points, directions, z_shape, z_app, density_noise, generator_seed):
        return field(points, directions, z_shape, z_app, density_noise,
                     seeded(generator_seed))

    def noisy_inputs(generator):
        """Equal seeds give equal noise: the student must draw it from the generator."""
        return (*_field_inputs(generator), 0.5, int(torch.randint(0, 1000, (), generator=generator)))

    def run():
        check_function(conditional_field, reference, _field_inputs, name=name, trials=6)
        try:
            inspect.signature(conditional_field).bind(*_field_inputs(torch.Generator()), 0.5, None)
        except TypeError:
            raise CheckFailure(f"{name} must also take density_noise and generator (keep the "
                               "signature: ..., density_noise=0.0, generator=None).") from None
        check_function(with_noise, reference_with_noise, noisy_inputs, name=name, trials=3)
        field, points, directions, z_s, z_a = _field_inputs(seeded(5))
        return check_gradients_flow(conditional_field, (field, points, directions, z_s.requires_grad_(),
                                                        z_a.requires_grad_()), name=name)

    inputs = _field_inputs(seeded(6))

    def matches(**mistake):
        with torch.no_grad():
            got = conditional_field(*inputs)
            return all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, _field_variant(*inputs, **mistake)))

    def noise_ignores_generator():
        field, *rest = inputs
        first = conditional_field(field, *rest, 0.5, seeded(7))[0]
        second = conditional_field(field, *rest, 0.5, seeded(7))[0]
        return not torch.equal(first, second)

    hints = [
        (lambda: matches(unit_cube=False), "map the world points into [-1, 1]³ first: "
         "to_unit_cube(points, field.bounds), the range γ(x) is made for."),
        (lambda: matches(shift=False), "add field.density_shift to the raw density before the "
         "softplus (it starts the field nearly empty)."),
        (lambda: matches(feature=False), "the colour head reads field.feature(h), not the trunk's h."),
        (lambda: matches(sigmoid=False), "squash the colour into [0, 1] with torch.sigmoid."),
        (noise_ignores_generator, "draw the density noise from the generator: "
         "torch.randn(raw.shape, generator=generator)."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q4: ν ~ p_ν
def check_patch_pattern(sample_patch_pattern) -> bool:
    """``sample_patch_pattern(n, min_scale, max_scale, generator) -> (centers (n, 2), scales (n,))``:
    a distribution, so this checks its laws rather than exact values."""
    name = "sample_patch_pattern"
    n = 4000
    for lo, hi in ((0.5, 1.0), (0.25, 0.75)):
        generator = seeded(0)
        try:
            out = sample_patch_pattern(n, lo, hi, generator)
        except NotImplementedError:
            raise CheckFailure(f"{name} not implemented yet: replace the `raise NotImplementedError` "
                               "with your code") from None
        except Exception as exc:
            raise CheckFailure(f"{name} raised {type(exc).__name__}: {exc}\n  called as "
                               f"{name}({n}, {lo}, {hi}, generator)") from None
        if not isinstance(out, tuple) or len(out) != 2:
            raise CheckFailure(f"{name}: return a tuple (centers, scales), got {type(out).__name__}.")
        centers, scales = out
        if not isinstance(centers, torch.Tensor) or centers.shape != (n, 2):
            raise CheckFailure(f"{name}: centers must be a (n, 2) tensor, got "
                               f"{getattr(centers, 'shape', type(centers).__name__)}.")
        if not isinstance(scales, torch.Tensor) or scales.shape != (n,):
            raise CheckFailure(f"{name}: scales must be a (n,) tensor, got "
                               f"{getattr(scales, 'shape', type(scales).__name__)}.")
        if scales.min() < lo - 1e-6 or scales.max() > hi + 1e-6:
            raise CheckFailure(f"{name}: scales must lie in [min_scale, max_scale] = [{lo}, {hi}]; "
                               f"got values in [{scales.min():.3f}, {scales.max():.3f}].")
        if abs(float(scales.mean()) - (lo + hi) / 2) > 0.03 or float(scales.std()) < 0.2 * (hi - lo):
            raise CheckFailure(f"{name}: scales should be uniform on [{lo}, {hi}] (mean {(lo + hi) / 2}); "
                               f"got mean {scales.mean():.3f}, std {scales.std():.3f}.")
        limit = 1.0 - scales[:, None]
        if (centers.abs() > limit + 1e-5).any():
            raise CheckFailure(f"{name}: a patch leaves the image: each centre coordinate must satisfy "
                               "|u| <= 1 − s so that s·g + u stays in [−1, 1] for g in [−1, 1].")
        ratio = centers.abs() / limit.clamp_min(1e-6)
        if float(ratio.mean()) < 0.4 or float(ratio.max()) < 0.95:
            raise CheckFailure(f"{name}: centres must be uniform on the whole allowed square "
                               "[−(1 − s), 1 − s]² (they cluster near 0).")
        if (centers.mean(0).abs() > 0.03).any():
            raise CheckFailure(f"{name}: centres must be symmetric around 0 (mean {centers.mean(0).tolist()}).")
    again = sample_patch_pattern(10, 0.5, 1.0, seeded(0))
    again2 = sample_patch_pattern(10, 0.5, 1.0, seeded(0))
    if not (torch.equal(again[0], again2[0]) and torch.equal(again[1], again2[1])):
        raise CheckFailure(f"{name}: draw every random number from the given `generator`, so the same "
                           "seed gives the same patches.")
    print(f"✔ {name}: scales uniform in range, patches inside the image, seeded by the generator")
    return True


# ---------------------------------------------------------------- q5: pixel coordinates of a patch
def _pattern_inputs(generator: torch.Generator):
    n = int(torch.randint(1, 4, (), generator=generator))
    P = int(torch.randint(2, 7, (), generator=generator))
    W = int(torch.randint(8, 20, (), generator=generator))
    H = W + int(torch.randint(1, 4, (), generator=generator))
    scales = 0.3 + 0.7 * torch.rand(n, generator=generator)
    centers = (2 * torch.rand(n, 2, generator=generator) - 1) * (1 - scales)[:, None]
    return centers, scales, P, W, H


def check_patch_coordinates(patch_coordinates_fn) -> bool:
    """``patch_coordinates(centers (n, 2), scales (n,), P, width, height) -> uv (n, P, P, 2)``."""
    def run():
        return check_function(patch_coordinates_fn, patch_coordinates, _pattern_inputs,
                              name="patch_coordinates", trials=6)

    centers, scales, P, W, H = _pattern_inputs(seeded(5))

    def student():
        return patch_coordinates_fn(centers.clone(), scales.clone(), P, W, H)

    reference = patch_coordinates(centers, scales, P, W, H)
    hints = [
        (lambda: torch.allclose(student(), reference.flip(-1), atol=1e-5),
         "the last axis is (u, v) = (x to the right, y down): column index first."),
        (lambda: torch.allclose(student(), reference.transpose(1, 2), atol=1e-5),
         "rows of the patch run along y: meshgrid(c, c, indexing='ij') gives (y, x)."),
        (lambda: torch.allclose(student() + 0.5, reference, atol=1e-5) or
         torch.allclose(student() - 0.5, reference, atol=1e-5),
         "pixel units: uv = (x + 1)·W/2 with no extra half-pixel (g already holds the cell centres)."),
        (lambda: torch.allclose(student(), (scales[:, None, None, None] * (patch_grid(P) + centers[:, None, None])
                                            + 1) * torch.tensor([W, H]) / 2, atol=1e-4),
         "scale the grid only: x = s·g + u (s multiplies g, not the centre u)."),
    ]
    return _with_hint(run, hints)


# ---------------------------------------------------------------- q6: rays of a patch from K and ξ
def _ray_inputs(generator: torch.Generator):
    n = int(torch.randint(1, 4, (), generator=generator))
    W = int(torch.randint(8, 33, (), generator=generator))
    H = W + int(torch.randint(0, 5, (), generator=generator))
    f = float(W * (0.8 + 1.5 * torch.rand((), generator=generator)))
    poses = []
    for _ in range(n):
        eye = torch.randn(3, generator=generator)
        eye = eye / eye.norm() * 1.8
        if abs(float(eye[1])) > 0.95 * 1.8:
            eye[0] += 0.5
        poses.append(look_at(eye))
    P = int(torch.randint(2, 6, (), generator=generator))
    uv = torch.rand(n, P, P, 2, generator=generator) * torch.tensor([W, H])
    return intrinsic_matrix(f, W, H), torch.stack(poses), uv


def check_patch_rays(patch_rays) -> bool:
    """``patch_rays(K (3, 3), c2w (n, 4, 4), uv (n, P, P, 2)) -> (origins, directions)``, each (n, P, P, 3)."""
    def run():
        return check_function(patch_rays, rays_from_intrinsics, _ray_inputs, name="patch_rays", trials=6)

    K, c2w, uv = _ray_inputs(seeded(6))

    def student_dirs():
        return patch_rays(K.clone(), c2w.clone(), uv.clone())[1]

    def variant(flip, normalise=True, use_inverse=True):
        h = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
        d = h @ (torch.linalg.inv(K).T if use_inverse else K.T)
        d = d * torch.tensor(flip)
        d = (c2w[:, None, None, :3, :3] @ d[..., None])[..., 0]
        return d / d.norm(dim=-1, keepdim=True) if normalise else d

    hints = [
        (lambda: torch.allclose(student_dirs(), variant([1.0, 1.0, 1.0]), atol=1e-5),
         "K⁻¹(u, v, 1) is in OpenCV axes (y down, z forward); flip y and z to get the course's "
         "OpenGL camera axes before rotating."),
        (lambda: torch.allclose(student_dirs(), variant([1.0, -1.0, -1.0], normalise=False), atol=1e-5),
         "return unit directions: divide by their norm."),
        (lambda: torch.allclose(student_dirs(), variant([1.0, -1.0, -1.0], use_inverse=False), atol=1e-4),
         "pixels → directions needs the inverse of K (K maps directions to pixels)."),
    ]
    return _with_hint(run, hints)
