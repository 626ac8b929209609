"""Laws of score distillation (unit 12): the SDS gradient is w(t)(ε̂ − ε) with no U-Net Jacobian,
on a Gaussian prior (exact score) it pulls a render to the mean, the image U-Net's shapes and
errors, the null condition and its dropping, camera sampling, and the view classifier's labels."""
import pytest
import torch

from gen3d_course.checkpoints import checkpoint_info
from gen3d_course.checks import CheckFailure
from gen3d_course.checks import score_distillation as checks
from gen3d_course.experiments import score_distillation as experiments
from gen3d_course.models import diffusion as D
from gen3d_course.models import score_distillation as S
from gen3d_course.models.nerf import GridField
from gen3d_course.render.cameras import pose_from_angles


def gaussian_prior(mu, s=0.1, T=100):
    schedule = D.cosine_schedule(T)
    return D.DiffusionModel(D.GaussianDenoiser(schedule, mu, s), schedule, 0.5, 0.5)


def test_sds_gradient_is_weighted_noise_residual_without_the_jacobian():
    torch.manual_seed(0)
    prior = D.DiffusionModel(D.UNet(8, 8, cond_dim=3), D.cosine_schedule(50), 0.5, 0.5)
    with torch.no_grad():  # a non-trivial U-Net (its last layer starts at zero)
        prior.denoiser.out[-1].weight.normal_(0, 0.3)
    image = torch.rand(2, 3, 8, 8, requires_grad=True)
    t, noise, cond = torch.tensor([5, 40]), torch.randn(2, 3, 8, 8), torch.rand(2, 3)
    S.sds_loss(prior, image, t, noise, cond, guidance=4.0).backward()
    with torch.no_grad():
        x = prior.normalize(image)
        eps = S.prior_epsilon(prior, D.q_sample(x, t, noise, prior.schedule), t, cond, 4.0)
        w = (1 - prior.schedule.alpha_bars[t]).view(-1, 1, 1, 1)
    expected = w * (eps - noise) / 0.5 / 2  # d x / d image = 1/std; averaged over the batch of 2
    assert torch.allclose(image.grad, expected, atol=1e-6)
    no_param_grads = [p.grad for p in prior.parameters()]
    assert all(g is None for g in no_param_grads)  # the prior is never back-propagated into
    # back-propagating the denoising loss through the U-Net gives a different gradient
    image2 = image.detach().clone().requires_grad_(True)
    (S.denoising_loss(prior, image2, t, noise, cond, 4.0).sum() / 2 / 2).backward()
    assert not torch.allclose(image2.grad, image.grad, atol=1e-3)


def test_sds_on_a_gaussian_prior_moves_the_render_to_the_mean():
    mu = torch.linspace(-0.8, 0.8, 3 * 4 * 4).view(3, 4, 4)   # the prior's mean, standardised units
    prior = gaussian_prior(mu)
    image = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)
    optimizer = torch.optim.SGD([image], lr=0.05)
    g = torch.Generator().manual_seed(0)
    target = prior.denormalize(mu)
    start = (image - target).norm().item()
    for _ in range(300):
        t = S.sample_timesteps(1, 100, generator=g)
        noise = torch.randn(image.shape, generator=g)
        optimizer.zero_grad()
        S.sds_loss(prior, image, t, noise).backward()
        optimizer.step()
    assert (image - target).norm().item() < 0.1 * start


def test_sds_gradient_flows_into_a_grid_field_through_the_renderer():
    field = GridField(res=8, features=2, width=8, seed=0)
    prior = gaussian_prior(torch.zeros(3, 8, 8))
    c2w, _ = S.sample_views(2, torch.Generator().manual_seed(0))
    image = S.render_views(field, c2w, 8, n_samples=8)
    assert image.shape == (2, 3, 8, 8)
    S.sds_loss(prior, image, torch.tensor([10, 50]), torch.randn(2, 3, 8, 8)).backward()
    assert field.grid.grad is not None and field.grid.grad.abs().sum() > 0


def test_distill_runs_and_logs():
    field = GridField(res=8, features=2, width=8, seed=0)
    prior = D.DiffusionModel(D.UNet(8, 8, cond_dim=6), D.cosine_schedule(50), 0.5, 0.5)
    history = S.distill(field, prior, (0.8, 0.2, 0.2), 3, view_conditioned=True, size=8, n_samples=8,
                        progress=False)
    assert len(history["sds"]) == 2 and history.seconds > 0
    unconditional = gaussian_prior(torch.zeros(3, 8, 8))
    assert len(S.distill(field, unconditional, None, 2, view_conditioned=False, size=8, n_samples=8,
                         progress=False)["sds"]) == 2
    with pytest.raises(ValueError, match="colour"):
        S.distill(field, prior, None, 2, view_conditioned=True, size=8, progress=False)


def test_sample_views_cover_the_circle_and_look_at_the_origin():
    c2w, angles = S.sample_views(2000, torch.Generator().manual_seed(0), (10.0, 40.0), 1.8)
    az, el = angles[:, 0], angles[:, 1]
    assert az.min() >= 0 and az.max() < 360 and el.min() >= 10 and el.max() <= 40
    phi = torch.deg2rad(az)
    assert torch.hypot(phi.cos().mean(), phi.sin().mean()) < 0.05  # uniform around the circle
    eye = c2w[:, :3, 3]
    assert torch.allclose(eye.norm(dim=1), torch.full((2000,), 1.8), atol=1e-5)
    assert torch.allclose(c2w[:, :3, 2], eye / 1.8, atol=1e-5)    # "back" axis points away from the origin


def test_sample_timesteps_range_and_errors():
    t = S.sample_timesteps(5000, 1000, (0.02, 0.98), torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() < 980
    with pytest.raises(ValueError, match="t_range"):
        S.sample_timesteps(4, 1000, (0.9, 1.5))


def test_prompt_condition_layout():
    c = S.prompt_condition(torch.tensor([[0.2, 0.4, 0.6]]), torch.tensor([[90.0, 30.0], [180.0, 0.0]]))
    assert c.shape == (2, 6)
    assert torch.allclose(c[0], torch.tensor([0.2, 0.4, 0.6, 1.0, 0.0, torch.pi / 6]), atol=1e-6)
    assert torch.allclose(c[1, 3:], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)
    assert S.prompt_condition(torch.rand(4, 3)).shape == (4, 3)
    with pytest.raises(ValueError, match="colours"):
        S.prompt_condition(torch.rand(2, 3), torch.zeros(3, 2))


def test_unet_shapes_and_bad_inputs():
    net = D.UNet(16, 8, cond_dim=3)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 9])
    assert net(x, t, torch.rand(2, 3)).shape == x.shape
    assert net(x, t).shape == x.shape
    with pytest.raises(ValueError, match="multiple of 4"):
        D.UNet(18)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        net(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ValueError, match="condition"):
        net(x, t, torch.rand(2, 5))
    with pytest.raises(ValueError, match="unconditional"):
        D.UNet(16, 8)(x, t, torch.rand(2, 3))


def test_null_condition_is_nan_rows_and_equals_no_condition():
    torch.manual_seed(0)
    net = D.UNet(8, 8, cond_dim=3)
    with torch.no_grad():
        net.out[-1].weight.normal_(0, 0.3)
        net.null.normal_()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([1, 2, 3])
    cond = torch.rand(3, 3)
    cond[1] = float("nan")
    out = net(x, t, cond)
    assert torch.allclose(out[1], net(x[1:2], t[1:2])[0], atol=1e-5)
    assert not torch.allclose(out[0], net(x[:1], t[:1])[0], atol=1e-3)


def test_drop_labels_drops_whole_rows_at_the_rate():
    cond = torch.rand(20000, 6)
    out = D.drop_labels(cond, 0.2, float("nan"), torch.Generator().manual_seed(0))
    rows = torch.isnan(out)
    assert (rows.all(1) | ~rows.any(1)).all()                 # a row is dropped whole or kept whole
    assert abs(rows.all(1).float().mean().item() - 0.2) < 0.01
    kept = ~rows.any(1)
    assert torch.equal(out[kept], cond[kept])


def test_fit_with_continuous_conditions_lowers_the_loss():
    torch.manual_seed(0)
    data = torch.rand(64, 3, 8, 8) * 0.2 + torch.linspace(0, 0.8, 8).view(1, 1, 1, 8)
    model = D.DiffusionModel(D.UNet(8, 8, cond_dim=3), D.cosine_schedule(100), 0.5, 0.5)
    history = D.fit(model, data, 60, labels=torch.rand(64, 3), batch=32, lr=3e-3, progress=False)
    assert history.mean("loss") < 0.8 * history.mean("loss", first=True, window=2)
    assert model.sample(2, steps=5, labels=torch.rand(2, 3), guidance=2.0).shape == (2, 3, 8, 8)


def test_facing_labels_fold_the_mirror_symmetry():
    angles = torch.tensor([[0.0, 20], [30, 20], [-30, 20], [330, 20], [180, 20], [150, 20], [90, 20], [265, 20]])
    assert experiments.facing(angles).tolist() == [1, 1, 1, 1, 0, 0, -1, -1]


def test_view_classifier_and_janus_number_on_labels():
    classifier = experiments.ViewClassifier(4)
    images = torch.rand(4, 3, 32, 32)
    angles = torch.tensor([[0.0, 20], [180, 20], [10, 20], [190, 20]])
    jan = experiments.janus_number(classifier, images, angles)
    assert jan == pytest.approx(1 - experiments.facing_accuracy(classifier, images, angles))
    with pytest.raises(ValueError, match="32"):
        classifier(torch.rand(1, 3, 16, 16))


# --------------------------------------------------------------------------------------------
# The assignment's checks
# --------------------------------------------------------------------------------------------

def _reference_sds(prior, image, t, noise, cond):
    return S.sds_loss(prior, image, t, noise, cond)


def _reference_views(n, generator):
    return S.sample_views(n, generator)


def test_checks_pass_on_the_reference():
    assert checks.check_sds_loss(_reference_sds)
    assert checks.check_sample_views(_reference_views)


@pytest.mark.parametrize("check", [checks.check_sds_loss, checks.check_sample_views])
def test_checks_fail_on_the_untouched_assignment(check):
    def untouched(*args, **kwargs):
        raise NotImplementedError("write it")
    with pytest.raises(CheckFailure, match="not implemented"):
        check(untouched)


def _through_unet(prior, image, t, noise, cond):
    x = prior.normalize(image)
    eps = prior(D.q_sample(x, t, noise, prior.schedule), t, cond)
    w = (1 - prior.schedule.alpha_bars[t]).view(-1, 1, 1, 1)
    return (w * (eps - noise) ** 2).sum() / len(x)


def _no_weight(prior, image, t, noise, cond):
    x = prior.normalize(image)
    with torch.no_grad():
        eps = prior(D.q_sample(x, t, noise, prior.schedule), t, cond)
    return ((eps - noise) * x).sum() / len(x)


def _detached(prior, image, t, noise, cond):
    return S.sds_loss(prior, image.detach(), t, noise, cond)


@pytest.mark.parametrize("wrong, hint", [(_through_unet, "through the U-Net"), (_no_weight, "no weight w"),
                                         (_detached, "no gradient")])
def test_sds_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_sds_loss(wrong)


def _half_circle(n, generator):
    c2w, angles = S.sample_views(n, generator)
    angles = angles.clone()
    angles[:, 0] = angles[:, 0] / 2
    return torch.stack([pose_from_angles(float(a), float(e), 1.8) for a, e in angles]), angles


def _unseeded(n, generator):
    return S.sample_views(n, None)


def _wrong_radius(n, generator):
    _, angles = S.sample_views(n, generator)
    return torch.stack([pose_from_angles(float(a), float(e), 1.5) for a, e in angles]), angles


@pytest.mark.parametrize("wrong, hint", [(_half_circle, "cover the circle"), (_unseeded, "generator"),
                                         (_wrong_radius, "radius 1.8")])
def test_views_check_names_the_mistake(wrong, hint):
    with pytest.raises(CheckFailure, match=hint):
        checks.check_sample_views(wrong)


# --------------------------------------------------------------------------------------------
# The shipped checkpoints
# --------------------------------------------------------------------------------------------

def test_shipped_checkpoints_load_are_small_and_measured():
    for kind, name in experiments.PRIORS.items():
        info = checkpoint_info(name)
        assert info["bytes"] <= 5_000_000 and info["command"].startswith("GEN3D_MODE=full")
        prior = experiments.load_prior(kind)
        assert not prior.training and prior.denoiser.cond_dim == (6 if kind == "view" else 3)
    metrics = {kind: checkpoint_info(name)["metrics"] for kind, name in experiments.PRIORS.items()}
    assert metrics["view"]["facing_accuracy"] > metrics["agnostic"]["facing_accuracy"] + 0.2
    assert checkpoint_info(experiments.CLASSIFIER)["metrics"]["heldout_accuracy"] > 0.95
    assert experiments.load_pretrained().denoiser.cond_dim == 6
    with pytest.raises(ValueError, match="kind"):
        experiments.load_prior("front")


def test_guided_prior_is_the_guided_epsilon():
    torch.manual_seed(0)
    prior = D.DiffusionModel(D.UNet(8, 8, cond_dim=3), D.cosine_schedule(50), 0.5, 0.5)
    with torch.no_grad():
        prior.denoiser.out[-1].weight.normal_(0, 0.3)
    x, t, cond = torch.randn(2, 3, 8, 8), torch.tensor([3, 30]), torch.rand(2, 3)
    guided = S.GuidedPrior(prior, 7.5)
    assert torch.allclose(guided(x, t, cond), D.guided_epsilon(prior, x, t, cond, 7.5, prior.null_label))
    image = torch.rand(2, 3, 8, 8)
    assert torch.equal(guided.normalize(image), prior.normalize(image)) and guided.schedule.T == 50
