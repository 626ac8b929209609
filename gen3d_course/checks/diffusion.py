"""Autograder checks for unit 11 (diffusion): ``q_sample``, ``epsilon_loss``, ``ddpm_step`` and
``ddim_step``.

Each compares the student's function with the reference in :mod:`gen3d_course.models.diffusion`
on random inputs and, for the usual slips (ᾱ indexed one step off, α_t where ᾱ_t belongs, a
missing square root, the sign of the noise term, ``alpha_bars[-1]`` read as "ᾱ before the first
step"), says which one it looks like. ``check_ddpm_step`` also runs the student's step through a
whole reverse chain with the exact denoiser of a Gaussian, which must give that Gaussian back.
"""
from __future__ import annotations

import torch

from ..models import diffusion as ref
from . import CheckFailure, _append_hint, _call_student, _mistake_hint, check_function, seeded

__all__ = ["check_ddim_step", "check_ddpm_step", "check_epsilon_loss", "check_q_sample"]

T = 50


def _schedule(generator: torch.Generator) -> ref.Schedule:
    kind = ["linear", "cosine"][int(torch.randint(2, (), generator=generator))]
    return ref.make_schedule(kind, T)


def _data(generator: torch.Generator) -> torch.Tensor:
    """(B, 2) points or (B, 2, 3, 3) "images": the functions must work for any rank."""
    batch = int(torch.randint(3, 7, (), generator=generator))
    shape = (batch, 2) if torch.rand((), generator=generator) < 0.5 else (batch, 2, 3, 3)
    return torch.randn(shape, generator=generator)


def _matches(got, expected: torch.Tensor) -> bool:
    return isinstance(got, torch.Tensor) and got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


def _shift(t: torch.Tensor, by: int) -> torch.Tensor:
    return (t + by).clamp(0, T - 1)


def check_q_sample(q_sample) -> bool:
    """``q_sample(x0, t, noise, schedule)``: √ᾱ_t x0 + √(1 − ᾱ_t) ε, ᾱ_t = ``schedule.alpha_bars[t]``."""
    name = "q_sample"
    s = ref.cosine_schedule(T)
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor([0, 7, 20, 49])
    a = s.alpha_bars[t][:, None]
    got = _call_student(q_sample, (x0.clone(), t.clone(), noise.clone(), s), {}, name=name,
                        call=f"{name}(x0=Tensor(4, 3), t=tensor({t.tolist()}), noise=Tensor(4, 3), schedule)")
    hint = _mistake_hint(got, {
        "ᾱ one step late (alpha_bars[t + 1]); index t is the paper's step t + 1, use alpha_bars[t]":
            ref.q_sample(x0, _shift(t, 1), noise, s),
        "ᾱ one step early (alpha_bars[t - 1]); index t already is the paper's step t + 1, use alpha_bars[t]":
            ref.q_sample(x0, _shift(t, -1), noise, s),
        "α_t (schedule.alphas) where ᾱ_t (schedule.alpha_bars, the product) belongs":
            s.alphas[t][:, None].sqrt() * x0 + (1 - s.alphas[t][:, None]).sqrt() * noise,
        "ᾱ x0 + (1 − ᾱ) ε: the coefficients are the square roots √ᾱ and √(1 − ᾱ)":
            a * x0 + (1 - a) * noise,
        "√ᾱ x0 − √(1 − ᾱ) ε: the noise is added, not subtracted":
            a.sqrt() * x0 - (1 - a).sqrt() * noise,
        "√ᾱ x0 + (1 − ᾱ) ε: the noise's coefficient is the standard deviation √(1 − ᾱ), "
        "not the variance":
            a.sqrt() * x0 + (1 - a) * noise,
    })

    def inputs(g):
        x = _data(g)
        return x, torch.randint(T, (len(x),), generator=g), torch.randn(x.shape, generator=g), _schedule(g)

    return _append_hint(lambda: check_function(q_sample, ref.q_sample, inputs, name=name, trials=6), hint)


def check_epsilon_loss(epsilon_loss) -> bool:
    """``epsilon_loss(model, x0, t, noise, schedule)``: mean of (ε − model(x_t, t))² over all
    elements, x_t = ``q_sample(x0, t, noise)``."""
    name = "epsilon_loss"
    torch.manual_seed(seeded(0).initial_seed())
    model = ref.MLPDenoiser(2, 16, 1).eval()

    def reference(model, x0, t, noise, schedule):
        return ref.epsilon_loss(model, x0, schedule, t=t, noise=noise)

    s = ref.cosine_schedule(T)
    x0, noise, t = torch.randn(5, 2), torch.randn(5, 2), torch.tensor([0, 3, 10, 30, 49])
    with torch.no_grad():
        x_t = ref.q_sample(x0, t, noise, s)
        pred = model(x_t, t)
        got = _call_student(epsilon_loss, (model, x0.clone(), t.clone(), noise.clone(), s), {}, name=name,
                            call=f"{name}(model, x0=Tensor(5, 2), t=tensor({t.tolist()}), "
                                 "noise=Tensor(5, 2), schedule)")
        hint = _mistake_hint(got.detach() if isinstance(got, torch.Tensor) else got, {
            "a loss against x0: the network predicts the noise ε, so compare its output with `noise`":
                (pred - x0).pow(2).mean(),
            "a loss against x_t: the target is the noise ε that made x_t":
                (pred - x_t).pow(2).mean(),
            "the network applied to x0: feed it the noised x_t = q_sample(x0, t, noise)":
                (model(x0, t) - noise).pow(2).mean(),
            "a sum over elements: take the mean (F.mse_loss's default)":
                (pred - noise).pow(2).sum(),
            "a sum over the feature axis, mean over the batch: take the mean over all elements":
                (pred - noise).pow(2).sum(-1).mean(),
            "an L1 loss: DDPM's loss is the squared error":
                (pred - noise).abs().mean(),
        })

    def inputs(g):
        x = torch.randn(int(torch.randint(3, 9, (), generator=g)), 2, generator=g)
        return model, x, torch.randint(T, (len(x),), generator=g), torch.randn(x.shape, generator=g), _schedule(g)

    return _append_hint(lambda: check_function(epsilon_loss, reference, inputs, name=name, trials=5), hint)


def _ddpm_variants(x, t, eps, s, z) -> dict:
    """Outputs of the usual wrong ancestral steps, for hints."""
    alpha, beta, a = s.alphas[t], s.betas[t], s.alpha_bars[t]
    mean = (x - beta / (1 - a).sqrt() * eps) / alpha.sqrt()
    a_prev = s.alpha_bars[t - 1]  # a deliberate slip only for t > 0
    tilde = ((1 - a_prev) / (1 - a) * beta).sqrt()
    return {
        "the noise subtracted: x_{t−1} = mean + σ_t z, with a plus": mean - tilde * z,
        "σ_t² = β_t (Ho et al.'s other choice); this assignment asks for "
        "β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t":
            mean + beta.sqrt() * z,
        "σ_t = β̃_t: the noise is scaled by the standard deviation √β̃_t": mean + tilde ** 2 * z,
        "no noise: an ancestral step adds σ_t z (only the last step, t = 0, has σ = 0)": mean,
        "the mean with √(1 − ᾱ_t) in the numerator: ε's coefficient is β_t / √(1 − ᾱ_t)":
            (x - beta * (1 - a).sqrt() * eps) / alpha.sqrt() + tilde * z,
        "ᾱ_t where α_t belongs in 1/√α_t": (x - beta / (1 - a).sqrt() * eps) / a.sqrt() + tilde * z,
        "the mean of x_t − ε without the 1/√α_t factor": x - beta / (1 - a).sqrt() * eps + tilde * z,
    }


def check_ddpm_step(ddpm_step, n: int = 4000) -> bool:
    """``ddpm_step(x_t, t, eps, schedule, noise)``: 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε) + σ_t z with
    σ_t² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t, and ᾱ_{t−1} = 1 at t = 0 (no noise on the last step).

    Checked against the reference on random inputs, at t = 0, and then through a whole chain of
    T steps with the exact denoiser of N(μ, s²): the samples must have mean μ and std s.
    """
    name = "ddpm_step"
    s = ref.linear_schedule(T)
    x, eps, z = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    t = 17
    got = _call_student(ddpm_step, (x.clone(), t, eps.clone(), s, z.clone()), {}, name=name,
                        call=f"{name}(x_t=Tensor(4, 2), t={t}, eps=Tensor(4, 2), schedule, noise=Tensor(4, 2))")
    hint = _mistake_hint(got, _ddpm_variants(x, t, eps, s, z))

    def inputs(g):
        x = _data(g)
        return x, int(torch.randint(1, T, (), generator=g)), torch.randn(x.shape, generator=g), _schedule(g), \
            torch.randn(x.shape, generator=g)

    _append_hint(lambda: check_function(ddpm_step, ref.ddpm_step, inputs, name=name, trials=6), hint)

    last = _call_student(ddpm_step, (x.clone(), 0, eps.clone(), s, z.clone()), {}, name=name,
                         call=f"{name}(x_t=Tensor(4, 2), t=0, eps=Tensor(4, 2), schedule, noise=Tensor(4, 2))")
    expected = ref.ddpm_step(x, 0, eps, s, z)
    if not _matches(last, expected):
        wrapped = (x - s.betas[0] / (1 - s.alpha_bars[0]).sqrt() * eps) / s.alphas[0].sqrt() + \
            ((1 - s.alpha_bars[-1]) / (1 - s.alpha_bars[0]) * s.betas[0]).sqrt() * z
        why = _mistake_hint(last, {"alpha_bars[t − 1] read at t = 0: index −1 is the *last* ᾱ; ᾱ before "
                                   "the first step is 1 (no entry), so σ_0 = 0": wrapped})
        raise CheckFailure(f"{name}: wrong at the last step t = 0, which must return the mean with no "
                           f"noise (σ_0² = β̃ = 0 because ᾱ_{{-1}} := 1){why}")

    mu, sd, chain = torch.tensor([1.0, -2.0]), 0.5, 200
    s = ref.cosine_schedule(chain)
    model = ref.GaussianDenoiser(s, mu, sd)
    g = seeded(3)
    x = torch.randn(n, 2, generator=g)
    with torch.no_grad():
        for step in reversed(range(chain)):
            x = ddpm_step(x, step, model(x, torch.full((n,), step)), s, torch.randn(n, 2, generator=g))
    if not torch.isfinite(x).all() or (x.mean(0) - mu).abs().max() > 0.06 or (x.std(0) / sd - 1).abs().max() > 0.08:
        raise CheckFailure(f"{name}: a chain of {chain} of your steps with the exact denoiser of N({mu.tolist()}, "
                           f"{sd}²) gave mean {x.mean(0).tolist()} and std {x.std(0).tolist()}; the "
                           "reverse process should give that Gaussian back.")
    print(f"✔ {name}: a chain of {chain} steps with the exact denoiser recovers N(μ, s²) "
          f"(mean {[round(v, 2) for v in x.mean(0).tolist()]}, std {[round(v, 2) for v in x.std(0).tolist()]})")
    return True


def check_ddim_step(ddim_step) -> bool:
    """``ddim_step(x_t, t, t_prev, eps, schedule)`` with η = 0: √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'}) ε,
    x̂_0 = (x_t − √(1 − ᾱ_t) ε)/√ᾱ_t, and ᾱ_{t'} = 1 for t' = −1."""
    name = "ddim_step"
    s = ref.cosine_schedule(T)
    x, eps = torch.randn(4, 2), torch.randn(4, 2)
    t, t_prev = 30, 20
    a, a_prev = s.alpha_bars[t], s.alpha_bars[t_prev]
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    got = _call_student(ddim_step, (x.clone(), t, t_prev, eps.clone(), s), {}, name=name,
                        call=f"{name}(x_t=Tensor(4, 2), t={t}, t_prev={t_prev}, eps=Tensor(4, 2), schedule)")
    hint = _mistake_hint(got, {
        "x̂_0 returned: re-noise it to level t_prev with the predicted ε": x0,
        "ᾱ_{t_prev − 1} and ᾱ_{t − 1}: index t is already the paper's step t + 1":
            ref.ddim_step(x, t - 1, t_prev - 1, eps, s),
        "a fresh-noise sign: x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'}) ε, with a plus":
            a_prev.sqrt() * x0 - (1 - a_prev).sqrt() * eps,
        "α_t (schedule.alphas) where ᾱ_t (schedule.alpha_bars) belongs":
            s.alphas[t_prev].sqrt() * (x - (1 - s.alphas[t]).sqrt() * eps) / s.alphas[t].sqrt()
            + (1 - s.alphas[t_prev]).sqrt() * eps,
    })

    def inputs(g):
        x = _data(g)
        t = int(torch.randint(1, T, (), generator=g))
        return x, t, int(torch.randint(-1, t, (), generator=g)), torch.randn(x.shape, generator=g), _schedule(g)

    if hint:
        raise CheckFailure(f"{name}: wrong at t = {t}, t_prev = {t_prev}{hint}")
    last = _call_student(ddim_step, (x.clone(), 5, -1, eps.clone(), s), {}, name=name,
                         call=f"{name}(x_t=Tensor(4, 2), t=5, t_prev=-1, eps=Tensor(4, 2), schedule)")
    expected = ref.ddim_step(x, 5, -1, eps, s)
    if not _matches(last, expected):
        raise CheckFailure(f"{name}: wrong for t_prev = −1 (the step to clean data), which must return x̂_0: "
                           "ᾱ before the first step is 1, not alpha_bars[-1] (the last entry).")
    _append_hint(lambda: check_function(ddim_step, ref.ddim_step, inputs, name=name, trials=6), hint)
    print(f"✔ {name}: also right for the final step to t_prev = −1")
    return True
