"""Wasserstein GAN (Arjovsky et al. 2017; Gulrajani et al. 2017): a critic, not a classifier (unit 03).

The discriminator becomes a *critic* f (no sigmoid) and the Jensen-Shannon divergence the earth
mover's distance, by the Kantorovich-Rubinstein duality

    W(p, q) = max over 1-Lipschitz f of E_p[f(x)] - E_q[f(x)].

The critic maximises that difference (``critic_loss`` is its negative); the generator moves its
samples up the critic's slope (``wgan_generator_loss``). f is kept Lipschitz either by clipping
every weight to [-c, c] (``clip_weights``) or by penalising (‖∇f(x̂)‖ − 1)² on points between
real and fake samples (``gradient_penalty``); ``wgan_step`` is one round of n critic updates and
one generator update.
"""
from __future__ import annotations

import torch
from torch import nn


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss (to minimise): E[f(G(z))] - E[f(x)]. Its negative estimates W(p, q)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: -E[f(G(z))] (G moves its samples up the critic's slope)."""
    return -fake_scores.mean()


@torch.no_grad()
def clip_weights(critic: nn.Module, c: float = 0.01) -> None:
    """Clamp every parameter of ``critic`` to [-c, c] in place (WGAN, Arjovsky et al. 2017).

    Bounded weights bound the critic's Lipschitz constant (crudely: the bound is c-dependent and
    loose), which is what makes E[f(x)] - E[f(G(z))] an EMD estimate up to a constant factor.
    """
    if c <= 0:
        raise ValueError(f"clip_weights: the clip value c must be > 0, got {c}.")
    for p in critic.parameters():
        p.clamp_(-c, c)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty E[(||grad_x f(x_hat)||_2 - 1)^2] (Gulrajani et al. 2017).

    x_hat = alpha·real + (1 - alpha)·fake lies on straight lines between real and fake samples,
    where the optimal critic has gradient norm 1. ``real``, ``fake``: (B, ...) with one sample
    per row; ``alpha``: (B, 1, ..., 1) in [0, 1], drawn uniformly when None. The gradient is
    built with ``create_graph=True`` so that the penalty itself can be back-propagated into the
    critic's weights. The result is a scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} "
                         "must have the same shape.")
    if alpha is None:
        alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean()


def _flat_critic(critic, shape):
    """View an ensemble critic (K, B, d) as one taking rows (K·B, d), for the gradient penalty."""
    return lambda rows: critic(rows.reshape(shape)).reshape(-1)


def wgan_step(G, critic, opt_g, opt_c, real_batches, z_batches, z: torch.Tensor, *,
              clip: float | None = None, gp_weight: float | None = None) -> dict[str, float]:
    """One WGAN generator update preceded by ``len(real_batches)`` critic updates.

    Critic loss E[f(G(z))] - E[f(x)] (+ gp_weight·gradient_penalty), then ``clip_weights`` if
    ``clip`` is set; generator loss -E[f(G(z))]. Returns the last critic loss, its negative
    without the penalty ("w_estimate", the progress signal) and the generator loss.
    """
    for real, zc in zip(real_batches, z_batches):
        with torch.no_grad():
            fake = G(zc)
        opt_c.zero_grad(set_to_none=True)
        w_loss = critic_loss(critic(real), critic(fake))
        loss = w_loss
        if gp_weight:
            if real.ndim == 3:  # an ensemble: penalise each row of every member
                penalty = gradient_penalty(_flat_critic(critic, real.shape), real.reshape(-1, real.shape[-1]),
                                           fake.reshape(-1, fake.shape[-1]))
            else:
                penalty = gradient_penalty(critic, real, fake)
            loss = loss + gp_weight * penalty
        loss.backward()
        opt_c.step()
        if clip:
            clip_weights(critic, clip)
    opt_g.zero_grad(set_to_none=True)
    g_loss = wgan_generator_loss(critic(G(z)))
    g_loss.backward()
    opt_g.step()
    return {"c_loss": loss.item(), "w_estimate": -w_loss.item(), "g_loss": g_loss.item()}
