"""Autograder checks for unit 12 (score distillation): ``sds_loss`` and ``sample_views``.

``check_sds_loss`` renders a tiny grid field from one camera, calls the student's loss on it with
a seeded draw of (t, ε) and a small random U-Net prior, back-propagates, and compares the *field's*
gradient with the reference's (``models.score_distillation.sds_loss``). It names the usual slips:
back-propagating through the U-Net (the prior's weights then hold gradients), a missing or
inverted weight w(t), the residual's sign, the render not standardised, a mean over pixels.
``check_sample_views`` tests the cameras' distribution (the whole circle, the elevation band)
and geometry (radius, looking at the origin), and that they come from the given generator.
"""
from __future__ import annotations

import math

import torch

from ..models import diffusion as D
from ..models import score_distillation as ref
from ..models.nerf import GridField
from ..render.cameras import pose_from_angles
from . import CheckFailure, _call_student, seeded

__all__ = ["check_sample_views", "check_sds_loss"]


def _tiny_setup():
    """A random 8² U-Net prior (its zero-initialised last layer made non-zero), a 6³ grid field
    with some density, two cameras and a draw of (t, ε), all from ``checks.seeded`` (fresh in
    each grading run)."""
    g = seeded(0)
    with torch.random.fork_rng(devices=[]):  # the networks' initialisation draws from the global RNG
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=g)))
        prior = D.DiffusionModel(D.UNet(8, 8, cond_dim=3), D.cosine_schedule(50), 0.5, 0.5).eval()
        field = GridField(res=6, features=2, width=8, seed=int(torch.randint(0, 2**31 - 1, (), generator=g)))
    with torch.no_grad():
        prior.denoiser.out[-1].weight.normal_(0, 0.3, generator=g)
        field.density_grid.normal_(0.2, 0.3, generator=g)
    angles = torch.rand(2, 2, generator=g) * torch.tensor([360.0, 30.0]) + torch.tensor([0.0, 10.0])
    c2w = torch.stack([pose_from_angles(float(a), float(e), 1.8) for a, e in angles])
    t, noise = torch.randint(3, 47, (2,), generator=g), torch.randn(2, 3, 8, 8, generator=g)
    cond = torch.rand(1, 3, generator=g).expand(2, 3).clone()
    return prior, field, c2w, t, noise, cond


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal up to float rounding, measured on the whole gradient (under the grader the student's
    part of it comes back from the kernel, summed in another order)."""
    return bool((got - expected).norm() <= rtol * expected.norm() + 1e-12)


def _field_gradient(field, c2w, loss_of_image) -> torch.Tensor:
    """The field's gradient (all parameters, flattened) of ``loss_of_image(render)``."""
    field.zero_grad(set_to_none=True)
    image = ref.render_views(field, c2w, 8, n_samples=8, generator=seeded(0))
    loss = loss_of_image(image)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        return loss
    if not loss.requires_grad:
        return "no graph"
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in field.parameters()])


def _surrogate(prior, image, t, noise, cond, weight, sign=1.0, normalize=True, reduce="sum"):
    """Variants of the SDS surrogate, for naming a student's slip."""
    x = prior.normalize(image) if normalize else image
    with torch.no_grad():
        eps = ref.prior_epsilon(prior, D.q_sample(x, t, noise, prior.schedule), t, cond, 1.0)
        grad = weight.view(-1, 1, 1, 1) * sign * (eps - noise)
    total = grad * x
    return total.sum() / len(x) if reduce == "sum" else total.mean()


def check_sds_loss(sds_loss) -> bool:
    """``sds_loss(prior, image, t, noise, cond)``: a scalar whose gradient with respect to the
    standardised render x = prior.normalize(image) is w(t)(ε̂ − ε) per sample (averaged over the
    batch), w(t) = 1 − ᾱ_t, ε̂ = prior(x_t, t, cond) computed without a graph."""
    name = "sds_loss"
    prior, field, c2w, t, noise, cond = _tiny_setup()
    a = prior.schedule.alpha_bars[t]
    call = f"{name}(prior, image=render (2, 3, 8, 8) of a grid field, t=tensor({t.tolist()}), noise, cond)"

    def student(image):
        return _call_student(sds_loss, (prior, image, t.clone(), noise.clone(), cond.clone()), {}, name=name,
                             call=call)

    prior.zero_grad(set_to_none=True)
    got = _field_gradient(field, c2w, student)
    if isinstance(got, str):
        raise CheckFailure(f"{name}: the loss has no gradient with respect to the render (it was computed "
                           "under torch.no_grad() or from detached tensors); multiply the detached residual "
                           "w(t)(ε̂ − ε) by the render's standardised x, which keeps its graph.")
    if not isinstance(got, torch.Tensor):
        raise CheckFailure(f"{name} must return a scalar tensor (one number for the batch), got "
                           f"{type(got).__name__}{'' if not hasattr(got, 'shape') else ' of shape ' + str(tuple(got.shape))}.")
    if any(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.parameters()):
        raise CheckFailure(f"{name}: the backward pass went through the U-Net (the prior's weights received "
                           "gradients). SDS drops the U-Net's Jacobian: compute ε̂ under torch.no_grad() (or "
                           "detach it) and let the gradient reach the render only through x.")
    expected = _field_gradient(field, c2w, lambda im: ref.sds_loss(prior, im, t, noise, cond))
    if _close(got, expected):
        print(f"{name}: correct — the field's gradient matches w(t)(ε̂ − ε) pushed through the renderer.")
        return True
    ones = torch.ones(2)
    variants = {
        "no weight w(t): multiply the residual by w(t) = 1 − ᾱ_t (schedule.alpha_bars[t])":
            lambda im: _surrogate(prior, im, t, noise, cond, ones),
        "w(t) = ᾱ_t: DreamFusion's weight is 1 − ᾱ_t, the noise's variance":
            lambda im: _surrogate(prior, im, t, noise, cond, a),
        "w(t) = √(1 − ᾱ_t): the weight is the variance 1 − ᾱ_t, not the standard deviation":
            lambda im: _surrogate(prior, im, t, noise, cond, (1 - a).sqrt()),
        "ε − ε̂: the residual is ε̂ − ε (the direction that makes the render more likely)":
            lambda im: _surrogate(prior, im, t, noise, cond, 1 - a, sign=-1.0),
        "the raw render in [0, 1]: noise and denoise prior.normalize(image), the prior's units":
            lambda im: _surrogate(prior, im, t, noise, cond, 1 - a, normalize=False),
        "a mean over pixels: sum over the pixels (each pixel gets its own residual), average over the batch":
            lambda im: _surrogate(prior, im, t, noise, cond, 1 - a, reduce="mean"),
    }
    hint = next((f"\n  hint: your values match {text}" for text, fn in variants.items()
                 if _close(got, _field_gradient(field, c2w, fn), 1e-3)), "")
    ratio = float(got.norm() / expected.norm().clamp(min=1e-12))
    cosine = float(torch.nn.functional.cosine_similarity(got, expected, dim=0))
    raise CheckFailure(f"{name}: the field's gradient differs from the reference (norm ratio {ratio:.3g}, cosine "
                       f"{cosine:.3f}; called as {call}).{hint}")


def check_sample_views(sample_views, n: int = 4000) -> bool:
    """``sample_views(n, generator)`` → (c2w (n, 4, 4), angles (n, 2)): azimuth uniform in
    [0, 360), elevation uniform in [10, 40] degrees, cameras at radius 1.8 looking at the origin
    (``render.cameras.pose_from_angles``), drawn from ``generator``."""
    name = "sample_views"
    call = f"{name}(n={n}, generator=a seeded torch.Generator)"
    out = _call_student(sample_views, (n, seeded(0)), {}, name=name, call=call)
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)):
        raise CheckFailure(f"{name} must return two tensors (c2w, angles), got {type(out).__name__}.")
    c2w, angles = out
    if c2w.shape != (n, 4, 4) or angles.shape != (n, 2):
        raise CheckFailure(f"{name}: expected c2w ({n}, 4, 4) and angles ({n}, 2), got {tuple(c2w.shape)} and "
                           f"{tuple(angles.shape)}.")
    if not (torch.isfinite(c2w).all() and torch.isfinite(angles).all()):
        raise CheckFailure(f"{name}: NaN or inf in the output.")
    az, el = angles[:, 0].double(), angles[:, 1].double()
    if az.max() <= 2 * math.pi + 1e-6 and el.max() <= math.pi / 2:
        raise CheckFailure(f"{name}: the angles look like radians; return degrees (azimuth 0–360, elevation 10–40).")
    if az.min() < 0 or az.max() >= 360:
        raise CheckFailure(f"{name}: azimuths must lie in [0, 360), got {az.min():.1f} to {az.max():.1f}.")
    counts = torch.histc(az, bins=8, min=0, max=360)
    if counts.min() < 0.7 * n / 8:
        empty = [f"{45 * i}–{45 * (i + 1)}°" for i in range(8) if counts[i] < 0.7 * n / 8]
        raise CheckFailure(f"{name}: the azimuths do not cover the circle evenly (too few in {', '.join(empty)}). "
                           "SDS must see every side: draw the azimuth uniformly in [0, 360).")
    if el.min() < 10 - 1e-4 or el.max() > 40 + 1e-4:
        raise CheckFailure(f"{name}: elevations must lie in [10, 40] degrees, got {el.min():.1f} to {el.max():.1f}.")
    if el.std() < 0.8 * 30 / math.sqrt(12):
        raise CheckFailure(f"{name}: the elevations are not spread uniformly over [10, 40] (std {el.std():.2f}°; "
                           f"uniform gives {30 / math.sqrt(12):.2f}°).")
    eye = c2w[:, :3, 3].double()
    if not torch.allclose(eye.norm(dim=1), torch.full((n,), 1.8, dtype=torch.float64), atol=1e-4):
        raise CheckFailure(f"{name}: the cameras must sit at radius 1.8 from the origin (the prior's renders), got "
                           f"{eye.norm(dim=1).min():.3f} to {eye.norm(dim=1).max():.3f}.")
    idx = torch.linspace(0, n - 1, 20).long()
    expected = torch.stack([pose_from_angles(float(angles[i, 0]), float(angles[i, 1]), 1.8) for i in idx])
    if not torch.allclose(c2w[idx], expected, atol=1e-4):
        raise CheckFailure(f"{name}: c2w does not match the returned angles: build each camera with "
                           "pose_from_angles(azimuth, elevation, 1.8), which looks at the origin.")
    again = _call_student(sample_views, (n, seeded(0)), {}, name=name, call=call)
    other = _call_student(sample_views, (n, seeded(1)), {}, name=name, call=call)
    if not torch.equal(again[1], angles) or torch.equal(other[1], angles):
        raise CheckFailure(f"{name}: draw the angles from the given generator (torch.rand(..., generator=generator)), "
                           "so that a seed gives the same cameras and another seed other cameras.")
    print(f"{name}: correct — cameras all around (8 azimuth sectors, {int(counts.min())}–{int(counts.max())} each), "
          "elevation 10–40°, radius 1.8, looking at the origin.")
    return True
