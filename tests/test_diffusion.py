"""Laws of the diffusion module: schedules, the forward process in closed form, the reverse
steps on a Gaussian (where the perfect denoiser is known), guidance, training and the checkpoint."""
import pytest
import torch

from gen3d_course import checkpoints
from gen3d_course.checks import CheckFailure
from gen3d_course.checks import diffusion as checks
from gen3d_course.data.samples import cell_centers
from gen3d_course.experiments import diffusion as experiments
from gen3d_course.models import diffusion as D


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
    model = D.GaussianDenoiser(s, mu, sd)
    x = D.ddpm_sample(model, (20_000, 2), s, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x.mean(0), mu, atol=0.02)
    assert torch.allclose(x.std(0), torch.full((2,), sd), rtol=0.05)


def test_ddim_full_steps_matches_the_ode_and_is_deterministic():
    s = D.cosine_schedule(1000)
    mu, sd = torch.tensor([1.0, 0.0]), 0.5
    model = D.GaussianDenoiser(s, mu, sd)
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


# --------------------------------------------------------------------------------------------
# Autograder checks: pass on the reference, fail with a useful message on the classic mistakes
# --------------------------------------------------------------------------------------------

def _unimplemented(*args, **kwargs):
    raise NotImplementedError("write it")


def _loss_reference(model, x0, t, noise, schedule):
    return D.epsilon_loss(model, x0, schedule, t=t, noise=noise)


def test_checks_pass_on_the_reference():
    assert checks.check_q_sample(D.q_sample)
    assert checks.check_epsilon_loss(_loss_reference)
    assert checks.check_ddpm_step(D.ddpm_step)
    assert checks.check_ddim_step(lambda x, t, tp, eps, s: D.ddim_step(x, t, tp, eps, s))


@pytest.mark.parametrize("check", [checks.check_q_sample, checks.check_epsilon_loss,
                                   checks.check_ddpm_step, checks.check_ddim_step])
def test_checks_fail_on_the_untouched_assignment(check):
    with pytest.raises(CheckFailure, match="not implemented"):
        check(_unimplemented)


def _bar(s, t, x):
    return s.alpha_bars[t].view(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda x0, t, e, s: _bar(s, (t + 1).clamp(max=s.T - 1), x0).sqrt() * x0
     + (1 - _bar(s, (t + 1).clamp(max=s.T - 1), x0)).sqrt() * e, "one step late"),
    (lambda x0, t, e, s: _bar(s, t, x0).sqrt() * x0 - (1 - _bar(s, t, x0)).sqrt() * e, "added, not subtracted"),
    (lambda x0, t, e, s: _bar(s, t, x0) * x0 + (1 - _bar(s, t, x0)) * e, "square roots"),
    (lambda x0, t, e, s: s.alphas[t].view(-1, *([1] * (x0.ndim - 1))).sqrt() * x0
     + (1 - s.alphas[t].view(-1, *([1] * (x0.ndim - 1)))).sqrt() * e, "schedule.alphas"),
])
def test_q_sample_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_q_sample(wrong)


def test_q_sample_check_catches_a_rank_2_only_answer():
    def only_2d(x0, t, noise, s):
        a = s.alpha_bars[t][:, None]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise
    with pytest.raises(CheckFailure):
        checks.check_q_sample(only_2d)


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, x0, t, e, s: (m(D.q_sample(x0, t, e, s), t) - x0).pow(2).mean(), "against x0"),
    (lambda m, x0, t, e, s: (m(D.q_sample(x0, t, e, s), t) - e).pow(2).sum(), "sum over elements"),
    (lambda m, x0, t, e, s: (m(x0, t) - e).pow(2).mean(), "noised x_t"),
])
def test_epsilon_loss_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_epsilon_loss(wrong)


def _ddpm_plain_sigma(x, t, eps, s, z):
    mean = (x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * eps) / s.alphas[t].sqrt()
    return mean + s.betas[t].sqrt() * z


def _ddpm_wrapped_index(x, t, eps, s, z):
    mean = (x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * eps) / s.alphas[t].sqrt()
    return mean + ((1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * s.betas[t]).sqrt() * z


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, t, e, s, z: 2 * D.ddpm_step(x, t, e, s, torch.zeros_like(z)) - D.ddpm_step(x, t, e, s, z),
     "noise subtracted"),
    (_ddpm_plain_sigma, "other choice"),
    (lambda x, t, e, s, z: D.ddpm_step(x, t, e, s, torch.zeros_like(z)), "no noise"),
    (_ddpm_wrapped_index, "index −1 is the \\*last\\*"),
])
def test_ddpm_step_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_ddpm_step(wrong)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, t, tp, e, s: D.predicted_x0(x, torch.tensor(t), e, s), "re-noise"),
    (lambda x, t, tp, e, s: D.ddim_step(x, t - 1, tp - 1, e, s) if tp >= 0 else D.ddim_step(x, t - 1, -1, e, s),
     "already"),
    (lambda x, t, tp, e, s: (s.alpha_bars[tp].sqrt() * D.predicted_x0(x, torch.tensor(t), e, s)
                             + (1 - s.alpha_bars[tp]).sqrt() * e), "t_prev = −1"),
])
def test_ddim_step_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_ddim_step(wrong)


# --------------------------------------------------------------------------------------------
# Experiments and the shipped checkpoint
# --------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    codes = torch.randn(20, 4)
    model = experiments.latent_model(codes, hidden=16, depth=1, T=50)
    checkpoints.save_checkpoint("toy", model, command="test", seed=0, directory=tmp_path)
    again = experiments.latent_model(codes, hidden=16, depth=1, T=50)
    checkpoints.load_checkpoint("toy", again, directory=tmp_path)
    x, t, y = torch.randn(3, 4), torch.tensor([0, 10, 49]), torch.tensor([0, 2, 5])
    assert torch.equal(model(x, t, y), again(x, t, y))
    assert torch.equal(model.sample(5, steps=5, labels=torch.arange(5)), again.sample(5, steps=5, labels=torch.arange(5)))


def test_shipped_checkpoint_loads_in_eval_mode_and_samples_codes():
    model = experiments.load_pretrained()
    assert not model.training and checkpoints.checkpoint_info(experiments.CHECKPOINT)["bytes"] < 5e6
    latents = experiments.load_latents()
    z = model.sample(5, steps=10, labels=torch.arange(5))
    assert z.shape == (5, latents["codes"].shape[1]) and torch.isfinite(z).all()
    # samples lie where the codes lie: no farther from a training code than codes are from each other
    nearest = torch.cdist(z, latents["codes"]).min(1).values
    spread = torch.pdist(latents["codes"]).median()
    assert (nearest < spread).all()


def test_decode_voxels_matches_dense_voxelization():
    decoder = experiments.deepsdf_experiments.load_pretrained().decoder
    code = experiments.shipped_codes()[0][:1]
    dense = torch.from_numpy(decoder.field(code[0])(cell_centers(32)).reshape(32, 32, 32) < 0)
    assert torch.equal(experiments.decode_voxels(decoder, code)[0], dense)


def test_noised_mixture_score_is_the_gradient_of_the_log_density():
    centers, std, a = torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), 0.2, 0.6
    mean, scale = torch.tensor([0.1, 0.2]), torch.tensor([1.5, 0.8])
    x = torch.randn(7, 2, requires_grad=True)
    c = (centers - mean) / scale
    var = a * (std / scale) ** 2 + 1 - a
    log_p = torch.logsumexp(-0.5 * ((x[:, None] - a ** 0.5 * c) ** 2 / var).sum(-1), 1)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    assert torch.allclose(experiments.noised_mixture_score(x.detach(), centers, std, a, mean, scale), grad, atol=1e-5)


def test_guidance_metrics_on_copies_of_the_held_out_set():
    held = torch.zeros(4, 8, 8, 8, dtype=torch.bool)
    for i in range(4):
        held[i, i:i + 3, :4, :4] = True
    labels = torch.tensor([0, 0, 1, 1])
    m = experiments.guidance_metrics(held.clone(), labels, held, labels)
    assert m["accuracy"] == 1.0 and m["MMD"] == 0.0 and m["COV"] == 1.0 and m["diversity"] > 0
