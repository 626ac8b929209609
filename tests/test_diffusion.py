"""Laws of the diffusion module: schedules, the forward process in closed form, the reverse
steps on a Gaussian (where the perfect denoiser is known), guidance, training and the checkpoint."""
import math

import pytest
import torch

from gen3d_course.models import diffusion as D


class GaussianEpsilon(torch.nn.Module):
    """The exact ε-predictor for data N(μ, s² I): E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ μ)/(ᾱ s² + 1 − ᾱ)."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the samplers a device

    def forward(self, x, t, labels=None):
        a = self.schedule.alpha_bars[t].view(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s ** 2 + 1 - a)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_decreases_in_unit_interval(kind):
    s = D.make_schedule(kind, 200)
    a = s.alpha_bars
    assert (a > 0).all() and (a <= 1).all() and (a[1:] < a[:-1]).all()
    assert a[0] > 0.99 and a[-1] < 0.01  # almost clean at the start, almost pure noise at the end
    assert torch.allclose(s.snr(), a / (1 - a))
    assert (s.snr()[1:] < s.snr()[:-1]).all()


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="kind"):
        D.make_schedule("quadratic")
    s = D.cosine_schedule(10)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="0..9"):
        D.q_sample(x, torch.full((4,), 10), x, s)
    with pytest.raises(TypeError, match="integer"):
        D.q_sample(x, torch.zeros(4), x, s)
    with pytest.raises(ValueError, match="shape"):
        D.q_sample(x, torch.zeros(4, dtype=torch.long), torch.zeros(4, 3), s)


def test_q_sample_moments_match_closed_form():
    s = D.linear_schedule(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -2.0, 0.5]).expand(200_000, 3)
    t = torch.full((len(x0),), 40)
    xt = D.q_sample(x0, t, torch.randn(x0.shape, generator=g), s)
    a = s.alpha_bars[40]
    assert torch.allclose(xt.mean(0), a.sqrt() * x0[0], atol=0.01)
    assert torch.allclose(xt.var(0), (1 - a).expand(3), rtol=0.02)


def test_q_sample_any_rank_and_predicted_x0_inverts_it():
    s = D.cosine_schedule(50)
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 20, 49])
    xt = D.q_sample(x0, t, eps, s)
    assert xt.shape == x0.shape
    assert torch.allclose(D.predicted_x0(xt, t, eps, s), x0, atol=1e-3)
    assert torch.allclose(D.score(eps, t, s) * -(1 - s.alpha_bars[t]).sqrt().view(3, 1, 1, 1), eps)


def test_perfect_epsilon_on_a_gaussian_reproduces_it():
    s = D.cosine_schedule(200)
    mu, sd = torch.tensor([2.0, -1.0]), 0.3
    model = GaussianEpsilon(s, mu, sd)
    x = D.ddpm_sample(model, (20_000, 2), s, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mu, atol=0.02)
    assert torch.allclose(x.std(0), torch.full((2,), sd), rtol=0.05)


def test_ddim_full_steps_matches_the_ode_and_is_deterministic():
    s = D.cosine_schedule(1000)
    mu, sd = torch.tensor([1.0, 0.0]), 0.5
    model = GaussianEpsilon(s, mu, sd)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    x0 = D.ddim_sample(model, x_T.shape, s, steps=1000, x_T=x_T)
    # the probability-flow ODE of a Gaussian keeps x_t's standardised value: an affine map
    a = s.alpha_bars[-1]
    exact = mu + sd * (x_T - a.sqrt() * mu) / (a * sd ** 2 + 1 - a).sqrt()
    assert (x0 - exact).abs().max() < 0.01
    again = D.ddim_sample(model, x_T.shape, s, steps=1000, x_T=x_T, generator=torch.Generator().manual_seed(9))
    assert torch.equal(x0, again)
    # DDIM is a first-order ODE solver: fewer, larger steps, larger error
    errors = [(D.ddim_sample(model, x_T.shape, s, steps=n, x_T=x_T) - exact).abs().max() for n in (10, 50)]
    assert errors[0] > errors[1] > (x0 - exact).abs().max()


def test_ddpm_step_mean_and_last_step_has_no_noise():
    s = D.linear_schedule(10)
    x, eps, z = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    t = 6
    mean = (x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * eps) / s.alphas[t].sqrt()
    var = (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * s.betas[t]
    assert torch.allclose(D.ddpm_step(x, t, eps, s, z), mean + var.sqrt() * z, atol=1e-6)
    assert torch.equal(D.ddpm_step(x, 0, eps, s, z), D.ddpm_step(x, 0, eps, s, torch.zeros_like(z)))
    # DDIM with eta = 1 and one step back is the same ancestral step
    assert torch.allclose(D.ddim_step(x, t, t - 1, eps, s, eta=1.0, noise=z), mean + var.sqrt() * z, atol=1e-5)


def test_guidance_scale_0_is_unconditional_and_1_conditional():
    torch.manual_seed(0)
    net = D.MLPDenoiser(3, hidden=16, depth=1, n_classes=4)
    x, t, y = torch.randn(6, 3), torch.randint(100, (6,)), torch.randint(4, (6,))
    assert torch.allclose(D.guided_epsilon(net, x, t, y, 0.0, net.null_label), net(x, t))
    assert torch.allclose(D.guided_epsilon(net, x, t, y, 1.0, net.null_label), net(x, t, y))
    both = D.guided_epsilon(net, x, t, y, 3.0, net.null_label)
    assert torch.allclose(both, net(x, t) + 3 * (net(x, t, y) - net(x, t)), atol=1e-5)


def test_drop_labels_rate():
    y = torch.zeros(10_000, dtype=torch.long)
    dropped = D.drop_labels(y, 0.2, 7, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 7}
    assert abs((dropped == 7).float().mean().item() - 0.2) < 0.02


def test_short_fit_lowers_the_loss():
    torch.set_num_threads(1)
    data = torch.randn(2000, 2) * 0.1 + torch.tensor([1.0, -1.0])
    model = D.DiffusionModel(D.MLPDenoiser(2, 32, 2), D.cosine_schedule(50), data.mean(0), data.std(0))
    history = D.fit(model, data, 300, batch=128, progress=False)
    assert history.mean("loss") < 0.8 * history.mean("loss", first=True)
    assert not model.training
    x = model.sample(100, steps=10)
    assert x.shape == (100, 2) and torch.isfinite(x).all()


def test_fit_rejects_labels_for_an_unconditional_model():
    model = D.DiffusionModel(D.MLPDenoiser(2, 8, 1), D.cosine_schedule(10))
    with pytest.raises(ValueError, match="conditional"):
        D.fit(model, torch.randn(10, 2), 1, labels=torch.zeros(10, dtype=torch.long), progress=False)


def test_ddim_timesteps():
    assert D.ddim_timesteps(1000, 1) == [0]
    taus = D.ddim_timesteps(1000, 10)
    assert taus[0] == 999 and taus[-1] == 0 and len(taus) == 10
    with pytest.raises(ValueError):
        D.ddim_timesteps(10, 11)
