"""Unit 01: AE/VAE losses (laws and formulas), networks, training, the autograder checks, the
voxel mesher and the image slider panel."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.checks import CheckFailure
from gen3d_course.checks.vae import check_kl_divergence, check_reparameterize, check_vae_loss
from gen3d_course.data import samples
from gen3d_course.data.images import digits
from gen3d_course.geometry.extract import voxel_mesh
from gen3d_course.models import autoencoders as A

torch.set_num_threads(1)


# --- KL -----------------------------------------------------------------------------------------


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(A.kl_divergence(mu, logvar), expected)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=4, max_size=4), st.lists(st.floats(-3, 3), min_size=4, max_size=4))
def test_kl_is_nonnegative_and_zero_only_at_the_prior(mu, logvar):
    kl = A.kl_divergence(torch.tensor([mu]), torch.tensor([logvar]))
    assert kl.shape == (1,)
    assert kl.item() >= -1e-6
    if max(map(abs, mu + logvar)) > 0.1:
        assert kl.item() > 0
    assert A.kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def test_kl_agrees_with_a_monte_carlo_estimate():
    mu, logvar = torch.tensor([[0.8, -0.5]]), torch.tensor([[-1.0, 0.4]])
    torch.manual_seed(0)
    z = A.reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(0.0, 1.0)
    estimate = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    assert estimate.item() == pytest.approx(A.kl_divergence(mu, logvar).item(), abs=0.01)


# --- reparameterisation --------------------------------------------------------------------------


def test_reparameterize_has_the_right_moments_and_gradients():
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0]).repeat(50_000, 1).requires_grad_()
    logvar = torch.tensor([0.0, -2.0]).repeat(50_000, 1).requires_grad_()
    z = A.reparameterize(mu, logvar)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, math.exp(-1.0)]), atol=0, rtol=0.02)
    z.sum().backward()
    assert torch.all(mu.grad == 1)  # dz/dμ = 1
    assert logvar.grad.abs().sum() > 0


def test_torch_normal_passes_no_gradient():
    """The lecture's claim: sampling with torch.normal gives zero gradients."""
    mu, logvar = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    torch.normal(mu, torch.exp(0.5 * logvar)).pow(2).sum().backward()
    assert not mu.grad.any() and not logvar.grad.any()


# --- loss ---------------------------------------------------------------------------------------


def test_vae_loss_is_the_batch_mean_of_weighted_sse_plus_kl():
    g = torch.Generator().manual_seed(1)
    x, x_hat = torch.rand(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    mu, logvar = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    sse = ((x - x_hat) ** 2).sum(dim=(1, 2, 3))
    expected = (7.0 * sse + A.kl_divergence(mu, logvar)).mean()
    torch.testing.assert_close(A.vae_loss(x, x_hat, mu, logvar, C=7.0), expected)
    assert A.vae_loss(x, x, torch.zeros(3, 2), torch.zeros(3, 2)).item() == 0


def test_clear_errors_for_wrong_inputs():
    with pytest.raises(ValueError, match="mu has shape .* logvar has shape"):
        A.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        A.reparameterize(torch.tensor([[float("nan")]]), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="x_hat has shape"):
        A.vae_loss(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="batch 2"):
        A.vae_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        A.kl_divergence(np.zeros((2, 2)), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(B, 1, 8, 8\)"):
        A.VAE((1, 8, 8), 2)(torch.zeros(3, 64))
    with pytest.raises(ValueError, match=r"expected codes of shape \(B, 2\)"):
        A.VAE((1, 8, 8), 2).decode(torch.zeros(3, 5))


# --- networks and training -----------------------------------------------------------------------


def test_shapes_of_ae_and_vae():
    x = torch.rand(5, 1, 8, 8)
    ae, vae = A.AutoEncoder((1, 8, 8), 3), A.VAE((1, 8, 8), 3)
    assert ae(x).shape == x.shape and ae.encode(x).shape == (5, 3)
    x_hat, mu, logvar = vae(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (5, 3)
    assert vae.sample(4).shape == (4, 1, 8, 8)
    assert A.encode_mean(vae, x).shape == (5, 3)
    assert A.decode_numpy(vae, np.zeros(3)).shape == (1, 8, 8)
    vae.eval()  # eval mode decodes the mean: deterministic
    torch.testing.assert_close(vae(x)[0], vae(x)[0])


def test_a_short_training_run_beats_the_mean_image():
    images, _ = digits()
    train, test = images[:1400], images[1400:]
    baseline = ((test - train.mean(0)) ** 2).mean().item()
    for model in (A.AutoEncoder((1, 8, 8), 4, (32,)), A.VAE((1, 8, 8), 4, (32,))):
        torch.manual_seed(0)
        history = A.fit(model, train, 200, C=10.0, lr=5e-3, progress=False)
        assert history.mean("loss") < 0.7 * history.mean("loss", first=True)
        with torch.no_grad():
            error = ((model.decode(A.encode_mean(model, test)) - test) ** 2).mean().item()
        assert error < 0.6 * baseline, (type(model).__name__, error, baseline)
    assert 0 < history.mean("kl") < 100


def test_train_step_is_the_loss_written_out_and_fit_repeats_it():
    """train_step = forward, C·rec + KL, backward, Adam step; fit's first step is train_step."""
    import copy

    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    hand = A.VAE((1, 8, 8), 3, (16,))
    lib = copy.deepcopy(hand)
    opt_hand, opt_lib = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (hand, lib))
    torch.manual_seed(1)
    mu, logvar = hand.encode(x)
    x_hat = hand.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
    loss = (2.0 * ((x - x_hat) ** 2).flatten(1).sum(1) + A.kl_divergence(mu, logvar)).mean()
    opt_hand.zero_grad()
    loss.backward()
    opt_hand.step()
    torch.manual_seed(1)
    logs = A.train_step(lib, opt_lib, x, C=2.0)
    assert logs["loss"] == pytest.approx(loss.item(), abs=1e-5)
    assert logs["loss"] == pytest.approx(2.0 * logs["rec"] + logs["kl"], rel=1e-6)
    for a, b in zip(hand.parameters(), lib.parameters()):
        torch.testing.assert_close(a, b)
    ae = A.AutoEncoder((1, 8, 8), 3, (16,))
    before = [p.clone() for p in ae.parameters()]
    logs = A.train_step(ae, torch.optim.SGD(ae.parameters(), lr=0.1), x)
    assert set(logs) == {"loss", "rec"} and any(not torch.equal(a, b) for a, b in zip(before, ae.parameters()))


def test_fit_rejects_data_of_the_wrong_shape():
    with pytest.raises(ValueError, match="data must be a tensor of shape"):
        A.fit(A.VAE((1, 8, 8), 2), torch.zeros(10, 64), 1)


def test_nearest_neighbour_mse():
    ref = torch.rand(6, 1, 4, 4)
    assert A.nearest_neighbour_mse(ref, ref).abs().max() < 1e-6
    shifted = ref[:2] + 0.1
    torch.testing.assert_close(A.nearest_neighbour_mse(shifted, ref), torch.full((2,), 0.01))


# --- checks -------------------------------------------------------------------------------------


def test_checks_pass_on_the_reference(capsys):
    assert check_kl_divergence(A.kl_divergence)
    assert check_reparameterize(A.reparameterize)
    assert check_vae_loss(A.vae_loss)
    assert capsys.readouterr().out.count("✔") == 3


def _not_implemented(*args, **kwargs):
    raise NotImplementedError("Question q1: implement this and remove the raise")


def _kl_no_half(mu, logvar):
    return (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)


def _kl_batch_mean(mu, logvar):
    return A.kl_divergence(mu, logvar).mean()


def _reparam_torch_normal(mu, logvar):
    return torch.normal(mu, torch.exp(0.5 * logvar))


def _reparam_variance_as_std(mu, logvar):
    return mu + torch.exp(logvar) * torch.randn_like(mu)


def _reparam_no_noise(mu, logvar):
    return mu + 0 * logvar


def _loss_pixel_mean(x, x_hat, mu, logvar, C=1.0):
    return (C * ((x - x_hat) ** 2).flatten(1).mean(1) + A.kl_divergence(mu, logvar)).mean()


def _loss_without_c(x, x_hat, mu, logvar, C=1.0):
    return A.vae_loss(x, x_hat, mu, logvar, C=1.0)


def _returns_none(*args, **kwargs):
    return None


@pytest.mark.parametrize("check, wrong, message", [
    (check_kl_divergence, _not_implemented, "not implemented yet"),
    (check_kl_divergence, _returns_none, "returned None"),
    (check_kl_divergence, _kl_no_half, "without the factor ½"),
    (check_kl_divergence, _kl_batch_mean, r"wrong shape(.|\n)*one KL per code"),
    (check_reparameterize, _not_implemented, "not implemented yet"),
    (check_reparameterize, _returns_none, "returned None"),
    (check_reparameterize, _reparam_torch_normal, "zero everywhere(.|\n)*torch.normal"),
    (check_reparameterize, _reparam_variance_as_std, "You used σ² = exp"),
    (check_reparameterize, _reparam_no_noise, "every draw is the same"),
    (check_vae_loss, _not_implemented, "not implemented yet"),
    (check_vae_loss, _loss_pixel_mean, "sum over pixels"),
    (check_vae_loss, _loss_without_c, "without the weight C"),
])
def test_checks_explain_the_usual_mistakes(check, wrong, message):
    with pytest.raises(CheckFailure, match=message):
        check(wrong)


def test_reparameterize_check_accepts_other_noise_sources():
    """Any correct sampler passes, not only one that draws the reference's exact numbers."""
    rng = np.random.default_rng(0)

    def numpy_noise(mu, logvar):
        eps = torch.from_numpy(rng.standard_normal(mu.shape).astype(np.float32))
        return mu + torch.exp(0.5 * logvar) * eps

    assert check_reparameterize(numpy_noise)


# --- voxel mesh and image panel ------------------------------------------------------------------


def test_voxel_mesh_of_a_voxelised_sphere_has_the_right_radius():
    res = 24
    centres = samples.cell_centers(res)
    ball = (np.linalg.norm(centres, axis=1) < 0.3).reshape(res, res, res).astype(np.float32)
    for upsample in (1, 2):
        mesh = voxel_mesh(ball, upsample=upsample)
        radius = np.linalg.norm(mesh.vertices, axis=1).mean()
        assert abs(radius - 0.3) < 0.5 / res, (upsample, radius)
        assert mesh.volume > 0  # outward normals
    assert len(voxel_mesh(np.zeros((8, 8, 8))).faces) == 0
    with pytest.raises(ValueError, match="expected a"):
        voxel_mesh(np.zeros((8, 8)))
