"""Autograder checks for unit 01 (VAE): ``kl_divergence``, ``reparameterize``, ``vae_loss``.

Each compares the student's function with the reference in
:mod:`gen3d_course.models.autoencoders` on random inputs and, for the usual slips (a missing ½,
a mean where a sum belongs, σ² used as σ, ``torch.normal``), says which one it looks like.
"""
from __future__ import annotations

import contextlib
import io
import math

import torch

from ..models import autoencoders as ref
from . import CheckFailure, _call_student, _mistake_hint, check_function, check_gradients_flow, seeded

__all__ = ["check_kl_divergence", "check_reparameterize", "check_vae_loss"]


def _gaussian_inputs(generator: torch.Generator, batch=None, dim=None):
    batch = batch or int(torch.randint(2, 7, (), generator=generator))
    dim = dim or int(torch.randint(2, 6, (), generator=generator))
    mu = torch.randn(batch, dim, generator=generator)
    logvar = 2.0 * torch.rand(batch, dim, generator=generator) - 1.5  # σ² in [e^-1.5, e^0.5]
    return mu, logvar


def check_kl_divergence(kl_divergence) -> bool:
    """``kl_divergence(mu, logvar)`` -> (B,): ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), σ² = exp(logvar)."""
    name = "kl_divergence"
    mu, logvar = _gaussian_inputs(seeded(1), batch=4, dim=3)
    got = _call_student(kl_divergence, (mu.clone(), logvar.clone()), {}, name=name,
                        call=f"{name}(mu=Tensor(4, 3), logvar=Tensor(4, 3))")
    terms = mu.pow(2) + logvar.exp() - 1 - logvar
    hint = _mistake_hint(got, {
        "the KL without the factor ½": terms.sum(-1),
        "the KL per latent dimension; sum over the last axis to get one value per code": 0.5 * terms,
        "the batch mean; return one KL per code, shape (B,)": 0.5 * terms.sum(-1).mean(),
        "the batch sum; return one KL per code, shape (B,)": 0.5 * terms.sum(-1).sum(),
        "a KL that treats logvar as log σ (it is log σ²)":
            0.5 * (mu.pow(2) + (2 * logvar).exp() - 1 - 2 * logvar).sum(-1),
        "a KL with the sign of the bracket flipped":
            -0.5 * terms.sum(-1),
    })
    try:
        check_function(kl_divergence, ref.kl_divergence, _gaussian_inputs, name=name, trials=5)
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None
    return True


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(dim=0), z.std(dim=0)


def check_reparameterize(reparameterize, n: int = 20000) -> bool:
    """``reparameterize(mu, logvar)``: a sample μ + σ·ε, same shape and dtype as ``mu``.

    Checked by (1) shape and dtype against the reference, (2) the mean and standard deviation of
    ``n`` draws against those of the reference's draws (and against μ and σ = exp(½·logvar)),
    (3) gradients reaching both ``mu`` and ``logvar``, (4) fresh noise on every call.
    """
    name = "reparameterize"
    generator = seeded(2)
    mu = torch.tensor([[-1.5, 0.0, 2.0, 0.5]])
    logvar = torch.tensor([[-3.0, 0.0, 1.0, -1.0]])
    call = f"{name}(mu=Tensor({n}, 4), logvar=Tensor({n}, 4))"
    mus, logvars = mu.repeat(n, 1), logvar.repeat(n, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
        expected = ref.reparameterize(mus, logvars)
        got = _call_student(reparameterize, (mus.clone(), logvars.clone()), {}, name=name, call=call)
    if got is None:
        raise CheckFailure(f"{name} returned None; did you forget the `return`?\n  called as {call}")
    if not isinstance(got, torch.Tensor):
        raise CheckFailure(f"{name}: expected a torch.Tensor, got {type(got).__name__}")
    if got.shape != expected.shape or got.dtype != expected.dtype:
        raise CheckFailure(f"{name}: expected a {tuple(expected.shape)} {expected.dtype} tensor "
                           f"(the shape of mu), got {tuple(got.shape)} {got.dtype}\n  called as {call}")
    if not torch.isfinite(got).all():
        raise CheckFailure(f"{name}: the sample contains NaN or inf\n  called as {call}")
    got_mean, got_std = _moments(got.detach())
    ref_mean, ref_std = _moments(expected)
    sigma = torch.exp(0.5 * logvar[0])
    mean_tol = 6 * sigma / math.sqrt(n)
    bad_mean = ((got_mean - ref_mean).abs() > mean_tol + (ref_mean - mu[0]).abs()).nonzero()
    if len(bad_mean):
        j = int(bad_mean[0])
        raise CheckFailure(
            f"{name}: over {n} draws with mu[{j}] = {mu[0, j]:.2f}, the samples average "
            f"{got_mean[j]:.4f}; the reference's average {ref_mean[j]:.4f} (the mean must be mu)")
    if (got_std < 1e-6).all():
        raise CheckFailure(f"{name}: every draw is the same; add noise ε ~ N(0, I) "
                           "(torch.randn_like) scaled by σ")
    ratio = got_std / ref_std
    bad_std = ((ratio - 1).abs() > 0.05).nonzero()
    if len(bad_std):
        j = int(bad_std[0])
        hint = ""
        if abs(got_std[j] - sigma[j] ** 2) < 0.05 * sigma[j] ** 2:
            hint = " You used σ² = exp(logvar); the standard deviation is σ = exp(½·logvar)."
        elif abs(got_std[j] - logvar[0, j].abs()) < 0.05 * logvar[0, j].abs():
            hint = " logvar is log σ², not σ: take σ = exp(½·logvar)."
        raise CheckFailure(
            f"{name}: with logvar[{j}] = {logvar[0, j]:.1f} the standard deviation of {n} draws is "
            f"{got_std[j]:.4f}; expected σ = exp(½·logvar) = {sigma[j]:.4f} (reference draws: "
            f"{ref_std[j]:.4f}).{hint}")
    mu_small, logvar_small = _gaussian_inputs(generator, batch=3, dim=4)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check_gradients_flow(reparameterize, (mu_small.requires_grad_(),
                                                  logvar_small.requires_grad_()), name=name)
    except CheckFailure as failure:
        hint = ("\n  hint: torch.normal(mu, std) and Normal(...).sample() draw from the right "
                "distribution but pass no gradient; write the sample as mu + std * eps with "
                "eps = torch.randn_like(std).") if "zero everywhere" in str(failure) else ""
        raise CheckFailure(f"{failure}{hint}") from None
    a = reparameterize(mu_small.detach(), logvar_small.detach())
    b = reparameterize(mu_small.detach(), logvar_small.detach())
    if torch.equal(a, b):
        raise CheckFailure(f"{name}: two calls returned the same sample; draw new noise on every "
                           "call (do not fix a seed inside the function)")
    print(f"✔ {name}: mean and spread of {n} draws match the reference, gradients reach mu and logvar")
    return True


def _loss_inputs(generator: torch.Generator):
    batch = int(torch.randint(2, 6, (), generator=generator))
    x = torch.rand(batch, 1, 4, 4, generator=generator)
    x_hat = torch.rand(batch, 1, 4, 4, generator=generator)
    mu, logvar = _gaussian_inputs(generator, batch=batch)
    C = round(float(torch.empty(()).uniform_(0.5, 20.0, generator=generator)), 2)
    return x, x_hat, mu, logvar, C


def check_vae_loss(vae_loss) -> bool:
    """``vae_loss(x, x_hat, mu, logvar, C)`` -> scalar: batch mean of C·||x − x̂||² + KL."""
    name = "vae_loss"
    x, x_hat, mu, logvar, C = _loss_inputs(seeded(3))
    got = _call_student(vae_loss, (x, x_hat, mu, logvar, C), {}, name=name,
                        call=f"{name}(x=Tensor{tuple(x.shape)}, ..., C={C:.3g})")
    sse = (x - x_hat).pow(2).flatten(1).sum(1)
    mse = (x - x_hat).pow(2).flatten(1).mean(1)
    kl = ref.kl_divergence(mu, logvar)
    hint = _mistake_hint(got, {
        "a loss with the batch *sum*; average over the batch instead": (C * sse + kl).sum(),
        "a loss with the *mean* squared error per pixel; sum over pixels instead": (C * mse + kl).mean(),
        "a loss without the weight C on the reconstruction": (sse + kl).mean(),
        "a loss with C on the KL term instead of the reconstruction": (sse + C * kl).mean(),
        "the reconstruction term alone; add the KL": (C * sse).mean(),
        "a per-example loss; return its batch mean (a scalar)": C * sse + kl,
    })
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            check_function(vae_loss, ref.vae_loss, _loss_inputs, name=name, trials=5)
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None
    inputs = (x, x_hat.clone().requires_grad_(), mu.clone().requires_grad_(),
              logvar.clone().requires_grad_(), C)
    with contextlib.redirect_stdout(io.StringIO()):
        check_gradients_flow(vae_loss, inputs, name=name)
    print(f"✔ {name}: matches the reference on 5 random inputs, gradients reach x_hat, mu and logvar")
    return True
