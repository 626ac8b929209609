"""Autograder checks for units 02 (GAN) and 03 (WGAN).

Each check runs the student's function and the library's reference (``gen3d_course.models.gans``)
on the same random inputs and explains any difference. Losses are compared as values *and* by
their gradients where a wrong detach or a missing ``create_graph`` would give the right number
with the wrong training signal.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..models import gans, wgan
from . import CheckFailure, _call_student, check_function, check_gradients_flow, seeded

__all__ = [
    "check_discriminator_loss", "check_generator_loss", "check_gan_step", "check_critic_loss",
    "check_clip_weights", "check_gradient_penalty",
]


def _logits(g: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    n = int(torch.randint(3, 17, (), generator=g))
    return (scale * torch.randn(n, generator=g)).requires_grad_(True)


def _logit_pair(g: torch.Generator):
    return _logits(g), _logits(g)


def _confident(fn, reference, make_inputs, name: str) -> None:
    """Compare on logits of a very confident D (|logit| up to 150), with a hint on failure."""
    try:
        check_function(fn, reference, make_inputs, name=f"{name} (confident D, |logit| up to 150)",
                       trials=1, rtol=1e-3)
    except CheckFailure as failure:
        raise CheckFailure(
            f"{failure}\n  Hint: sigmoid(-150) underflows to 0 in float32, so log(sigmoid(l)) and "
            "log(1 - sigmoid(l)) become -inf. Work on the logits: -log sigmoid(l) = softplus(-l), "
            "-log(1 - sigmoid(l)) = softplus(l) (or F.binary_cross_entropy_with_logits)."
        ) from None


def check_discriminator_loss(fn) -> bool:
    """``fn(real_logits, fake_logits)`` = -E[log D(x)] - E[log(1 - D(G(z)))], D = sigmoid."""
    check_function(fn, gans.discriminator_loss, _logit_pair, name="discriminator_loss", rtol=1e-3)
    # logits far in the tails: a naive log(sigmoid(l)) gives -inf where softplus stays finite
    _confident(fn, gans.discriminator_loss,
               lambda g: (torch.tensor([40.0, -3.0, -120.0]), torch.tensor([-150.0, 2.0, 120.0])),
               "discriminator_loss")
    return check_gradients_flow(fn, _logit_pair(seeded(3)),
                                name="discriminator_loss")


def check_generator_loss(fn) -> bool:
    """``fn(fake_logits, saturating)``: both generator losses, on logits incl. very confident ones."""
    for saturating in (False, True):
        label = f"generator_loss(saturating={saturating})"
        check_function(fn, gans.generator_loss, lambda g: (_logits(g), saturating), name=label,
                       rtol=1e-3)
        _confident(fn, gans.generator_loss,
                   lambda g: (torch.tensor([-150.0, -30.0, 0.0, 5.0, 150.0]), saturating), label)
    # the lesson of the saturating loss is its gradient where D rejects the sample
    logits = torch.tensor([-8.0, -4.0, 0.0, 4.0], requires_grad=True)
    for saturating in (False, True):
        student = _call_student(fn, (logits, saturating), {}, name="generator_loss",
                                call=f"generator_loss(logits, saturating={saturating})")
        if not isinstance(student, torch.Tensor) or not student.requires_grad:
            raise CheckFailure(f"generator_loss(saturating={saturating}) returned no differentiable "
                               "tensor; keep the computation in torch.")
        (grad,) = torch.autograd.grad(student, logits)
        (expected,) = torch.autograd.grad(gans.generator_loss(logits, saturating), logits)
        if not torch.allclose(grad, expected, rtol=1e-4, atol=1e-6):
            raise CheckFailure(
                f"generator_loss(saturating={saturating}): the gradient with respect to the logits "
                f"is {[round(v, 4) for v in grad.tolist()]}, expected "
                f"{[round(v, 4) for v in expected.tolist()]} (logits {logits.tolist()})."
            )
    print("✔ generator_loss: both forms match, gradients included")
    return True


def _toy_pair(seed: int):
    torch.manual_seed(seeded(seed).initial_seed())
    G = gans.ToyGenerator(latent_dim=2, out_dim=2, hidden=16, depth=2)
    D = gans.ToyDiscriminator(in_dim=2, hidden=16, depth=2)
    return G, D


def _loss_value(out, key):
    value = out[key]
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _first_difference(ref: nn.Module, student: nn.Module) -> tuple[str, float] | None:
    theirs = dict(student.named_parameters())
    for name, p in ref.named_parameters():
        q = theirs[name].detach()
        if not torch.allclose(p.detach(), q, rtol=1e-4, atol=1e-6):
            return name, float((p.detach() - q).abs().max())
    return None


_HINTS = {
    "d_loss": "d_loss is D's loss on D(real) and D(fake.detach()), before D's update",
    "g_loss": "g_loss is G's non-saturating loss on the *updated* D's logits for G(z): update D "
              "first, then G",
    "D": "update D first, on D(real) vs D(fake.detach()), and call opt_d.zero_grad() before its "
         "backward (G's backward also leaves gradients in D)",
    "G": "after D's step, compute the non-saturating loss on the updated D's logits for G(z), then "
         "opt_g.zero_grad(), backward, opt_g.step()",
}


def check_gan_step(fn) -> bool:
    """``fn(G, D, opt_g, opt_d, real, z)`` does one D update then one G update, returns the losses.

    Runs two consecutive steps of the student's function and of the reference in lockstep, from
    identical networks and SGD optimisers, and compares the returned losses and every weight of
    D and G after each step.
    """
    call = "gan_step(G, D, opt_g, opt_d, real, z)"
    for trial in range(3):
        g = seeded(100 + trial)
        (G_ref, D_ref), (G_st, D_st) = _toy_pair(trial), _toy_pair(trial)
        opts_ref = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (G_ref, D_ref)]
        opts_st = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (G_st, D_st)]
        for step in (1, 2):
            real, z = 2 * torch.randn(12, 2, generator=g), torch.randn(12, 2, generator=g)
            expected = gans.gan_step(G_ref, D_ref, *opts_ref, real.clone(), z.clone())
            out = _call_student(fn, (G_st, D_st, *opts_st, real.clone(), z.clone()), {},
                                name="gan_step", call=call)
            if out is None:
                raise CheckFailure(f"gan_step returned None; it should return a dict with 'd_loss' and "
                                   f"'g_loss' (floats).\n  called as {call}")
            if not isinstance(out, dict) or not {"d_loss", "g_loss"} <= set(out):
                raise CheckFailure(f"gan_step should return a dict with 'd_loss' and 'g_loss' "
                                   f"(floats), got {type(out).__name__}: {out!r}")
            for key, player, ref, st in (("d_loss", "D", D_ref, D_st), ("g_loss", "G", G_ref, G_st)):
                value = _loss_value(out, key)
                if not isinstance(value, float) or not math.isclose(value, expected[key], rel_tol=1e-4,
                                                                    abs_tol=1e-6):
                    raise CheckFailure(f"gan_step: step {step} returned {key}={value!r}, expected "
                                       f"{expected[key]:.6f}; {_HINTS[key]}.")
                wrong = _first_difference(ref, st)
                if wrong:
                    raise CheckFailure(f"gan_step: after step {step}, {player}.{wrong[0]} differs from "
                                       f"the reference (max abs error {wrong[1]:.3g}); {_HINTS[player]}.")
    print("✔ gan_step: two alternating updates match the reference on 3 random setups")
    return True


def check_critic_loss(fn) -> bool:
    """``fn(real_scores, fake_scores)`` = E[f(G(z))] - E[f(x)] (to minimise)."""
    check_function(fn, wgan.critic_loss, _logit_pair, name="critic_loss")
    return check_gradients_flow(fn, _logit_pair(seeded(4)), name="critic_loss")


def check_clip_weights(fn) -> bool:
    """``fn(critic, c)`` clamps every parameter (weights *and* biases) to [-c, c] in place."""
    for trial, c in enumerate((0.01, 0.05, 0.3)):
        torch.manual_seed(seeded(trial).initial_seed())
        critic = gans.ToyDiscriminator(in_dim=2, hidden=8, depth=2)
        with torch.no_grad():
            for p in critic.parameters():
                p.mul_(3.0)
        expected = copy.deepcopy(critic)
        wgan.clip_weights(expected, c)
        before = {k: id(p) for k, p in critic.named_parameters()}
        _call_student(fn, (critic, c), {}, name="clip_weights", call=f"clip_weights(critic, c={c})")
        for name, p in critic.named_parameters():
            if id(p) != before[name]:
                raise CheckFailure(f"clip_weights replaced the parameter {name} with a new object; "
                                   "the optimiser still holds the old one. Clamp in place "
                                   "(p.clamp_(-c, c) under torch.no_grad()).")
            ref = dict(expected.named_parameters())[name]
            if p.requires_grad is False:
                raise CheckFailure(f"clip_weights: {name} no longer requires grad.")
            if not torch.allclose(p.detach(), ref.detach()):
                worst = p.detach().abs().max().item()
                raise CheckFailure(f"clip_weights(c={c}): parameter {name} has max |value| "
                                   f"{worst:.4g} after clipping (expected every parameter of every "
                                   "layer, biases included, in [-c, c] and the others unchanged).")
    print("✔ clip_weights: every parameter clamped in place for 3 values of c")
    return True


def check_gradient_penalty(fn) -> bool:
    """``fn(critic, real, fake, alpha)`` = E[(||grad f(x_hat)|| - 1)^2], x_hat = a·real + (1-a)·fake.

    Compares the value, then back-propagates it: the critic's weights must receive the same
    gradient as from the reference (which needs ``create_graph=True``).
    """
    for trial in range(4):
        g = seeded(200 + trial)
        torch.manual_seed(seeded(trial).initial_seed())
        critic = gans.ToyDiscriminator(in_dim=2, hidden=16, depth=2)
        n = int(torch.randint(4, 20, (), generator=g))
        real, fake = 2 * torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
        alpha = torch.rand(n, 1, generator=g)
        call = f"gradient_penalty(critic, real=Tensor({n}, 2), fake=Tensor({n}, 2), alpha=Tensor({n}, 1))"
        critic.zero_grad()
        expected = wgan.gradient_penalty(critic, real, fake, alpha)
        expected.backward()
        ref_grads = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                     for k, p in critic.named_parameters()}  # the last bias gets none
        critic.zero_grad()
        got = _call_student(fn, (critic, real.clone(), fake.clone(), alpha.clone()), {},
                            name="gradient_penalty", call=call)
        if got is None:
            raise CheckFailure(f"gradient_penalty returned None; did you forget the `return`?\n  called as {call}")
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise CheckFailure(f"gradient_penalty should return a scalar tensor, got "
                               f"{type(got).__name__}{tuple(getattr(got, 'shape', ()))}\n  called as {call}")
        if not torch.isfinite(got).all():
            raise CheckFailure(f"gradient_penalty returned {got.item()} (NaN or inf)\n  called as {call}")
        if not torch.isclose(got.reshape(()), expected.detach(), rtol=1e-4, atol=1e-6):
            raise CheckFailure(
                f"gradient_penalty: value {got.item():.6g}, expected {expected.item():.6g}. Interpolate "
                "x_hat = alpha*real + (1-alpha)*fake, take the gradient of critic(x_hat).sum() with "
                f"respect to x_hat, its L2 norm per sample, then mean((norm - 1)**2).\n  called as {call}")
        if not got.requires_grad:
            raise CheckFailure("gradient_penalty: the value is right but it cannot be back-propagated to "
                               "the critic's weights. Pass create_graph=True to torch.autograd.grad.")
        got.reshape(()).backward()
        for name, p in critic.named_parameters():
            grad = torch.zeros_like(p) if p.grad is None else p.grad
            if not torch.allclose(grad, ref_grads[name], rtol=1e-3, atol=1e-6):
                raise CheckFailure(
                    f"gradient_penalty: the value is right but the gradient it sends to the critic's "
                    f"{name} differs from the reference. Use create_graph=True and do not detach the "
                    "gradient before taking its norm.")
    print("✔ gradient_penalty: value and critic gradients match the reference on 4 random inputs")
    return True
