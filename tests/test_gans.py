"""GAN / WGAN library (units 02-03): losses against their formulas, Lipschitz tools, networks,
ensembles that train like independent runs, a toy run that learns, and the autograder checks
(pass on the reference, fail with a useful message on typical mistakes)."""
import math

import pytest
import torch
import torch.nn.functional as F

from gen3d_course.checks import CheckFailure
from gen3d_course.checks import gan as checks
from gen3d_course.data import toy2d
from gen3d_course.experiments import gans as experiments
from gen3d_course.models import gans, wgan


# --- losses -------------------------------------------------------------------------------------
def test_losses_match_their_probability_formulas():
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, generator=generator) * 3, torch.randn(50, generator=generator) * 3
    # The formulas in float64: in float32, 1 − sigmoid(x) loses its digits for large x (the
    # library's softplus form does not), and an unseeded draw made this test flaky.
    d_real, d_fake = torch.sigmoid(real.double()), torch.sigmoid(fake.double())
    expected = -(d_real.log().mean() + (1 - d_fake).log().mean())
    assert torch.isclose(gans.discriminator_loss(real, fake).double(), expected, atol=1e-5)
    assert torch.isclose(gans.generator_loss(fake, saturating=True).double(), (1 - d_fake).log().mean(), atol=1e-5)
    assert torch.isclose(gans.generator_loss(fake).double(), -d_fake.log().mean(), atol=1e-5)
    assert torch.isclose(wgan.critic_loss(real, fake), fake.mean() - real.mean())
    assert torch.isclose(wgan.wgan_generator_loss(fake), -fake.mean())


def test_losses_stay_finite_for_a_very_confident_discriminator():
    logits = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(gans.discriminator_loss(logits, logits))
    assert torch.isfinite(gans.generator_loss(logits)) and torch.isfinite(gans.generator_loss(logits, True))


def test_saturating_loss_vanishes_where_d_rejects_and_non_saturating_does_not():
    logits = torch.tensor([-10.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(gans.generator_loss(logits, saturating=True), logits)
    (g_ns,) = torch.autograd.grad(gans.generator_loss(logits), logits)
    assert abs(g_sat.item()) < 1e-4 and abs(g_ns.item() + 1) < 1e-4


def test_optimal_discriminator_value_is_js_minus_log4():
    # discrete p, q: with D* = p / (p + q), V = 2 JS(p, q) - log 4
    p, q = torch.tensor([0.5, 0.3, 0.2, 0.0]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    d = p / (p + q)
    v = (p * d.clamp_min(1e-30).log()).sum() + (q * (1 - d).clamp_min(1e-30).log()).sum()
    m = (p + q) / 2

    def kl(a, b):
        mask = a > 0
        return (a[mask] * (a[mask] / b[mask]).log()).sum()

    js = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert torch.isclose(v, 2 * js - math.log(4), atol=1e-5)


def test_mmd_is_zero_on_identical_sets_and_grows_with_the_shift():
    x = torch.randn(200, 2)
    assert gans.mmd(x, x).abs() < 1e-6
    assert gans.mmd(x, x + 0.5) < gans.mmd(x, x + 2.0)
    with pytest.raises(ValueError, match="expected \\(B, d\\)"):
        gans.mmd(x, torch.randn(10, 3))


# --- Lipschitz constraints --------------------------------------------------------------------
def test_clip_weights_clamps_every_parameter_in_place():
    critic = gans.ToyDiscriminator(hidden=8, depth=2)
    ids = [id(p) for p in critic.parameters()]
    wgan.clip_weights(critic, 0.01)
    assert [id(p) for p in critic.parameters()] == ids
    assert all(p.abs().max() <= 0.01 for p in critic.parameters())
    with pytest.raises(ValueError, match="must be > 0"):
        wgan.clip_weights(critic, 0)


def test_gradient_penalty_is_zero_for_a_unit_slope_and_trains_the_critic():
    class Linear(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(w))

        def forward(self, x):
            return x @ self.w

    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    assert wgan.gradient_penalty(Linear([0.6, 0.8]), real, fake).item() == pytest.approx(0, abs=1e-10)
    critic = Linear([3.0, 4.0])  # slope 5: penalty (5 - 1)^2 = 16 and a gradient on w
    penalty = wgan.gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(16.0, rel=1e-5)
    penalty.backward()
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        wgan.gradient_penalty(critic, real, fake[:3])


def test_gradient_penalty_on_images_uses_one_norm_per_image():
    critic = gans.DCDiscriminator(size=8, base=4)
    real, fake = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    assert wgan.gradient_penalty(critic, real, fake).ndim == 0


# --- networks ---------------------------------------------------------------------------------
def test_network_shapes_and_input_validation():
    G, D = gans.ToyGenerator(latent_dim=3), gans.ToyDiscriminator()
    assert G(torch.randn(5, 3)).shape == (5, 2) and D(torch.randn(5, 2)).shape == (5,)
    E = gans.ToyDiscriminator(members=4, outputs=3, minibatch_std=True)
    assert E(torch.randn(4, 7, 2)).shape == (4, 7, 3)
    with pytest.raises(ValueError, match="expects input \\(K=4"):
        E(torch.randn(7, 2))
    with pytest.raises(ValueError, match="expected input"):
        D(torch.randn(5, 3))
    dg, dd = gans.DCGenerator(latent_dim=8, size=32), gans.DCDiscriminator(size=32)
    images = dg(torch.randn(2, 8))
    assert images.shape == (2, 1, 32, 32) and images.abs().max() <= 1
    assert dd(images).shape == (2,)
    with pytest.raises(ValueError, match="4·2\\^k"):
        gans.DCGenerator(size=24)
    with pytest.raises(ValueError, match="expected images"):
        dd(torch.randn(2, 1, 16, 16))


def test_minibatch_stddev_sees_the_batch_spread():
    h = torch.randn(2, 10, 4)
    out = gans.minibatch_stddev(h)
    assert out.shape == (2, 10, 5)
    assert torch.allclose(out[0, :, -1], h[0].std(0, unbiased=False).mean().expand(10))
    collapsed = torch.ones(1, 10, 4)
    assert gans.minibatch_stddev(collapsed)[..., -1].abs().max() == 0
    # per-member flags: the plain member judges each sample alone, the other sees the batch
    D = gans.ToyDiscriminator(members=2, minibatch_std=[False, True])
    x = torch.randn(2, 8, 2)
    y = x.clone()
    y[:, 1:] *= 5  # change every sample but the first
    out_x, out_y = D(x), D(y)
    assert torch.isclose(out_x[0, 0], out_y[0, 0]) and not torch.isclose(out_x[1, 0], out_y[1, 0])
    with pytest.raises(ValueError, match="3 flags for 2 members"):
        gans.ToyDiscriminator(members=2, minibatch_std=[True, True, False])


def test_ensemble_members_train_like_independent_runs():
    """Member k of an ensemble follows the same trajectory as a lone network with its weights."""
    torch.manual_seed(0)
    ens = gans.ToyGenerator(latent_dim=2, hidden=8, depth=2, members=3)
    solo = gans.ToyGenerator(latent_dim=2, hidden=8, depth=2, members=1)
    with torch.no_grad():
        for p_s, p_e in zip(solo.parameters(), ens.parameters()):
            p_s.copy_(p_e[1:2])
    opt_e, opt_s = torch.optim.Adam(ens.parameters(), 1e-2), torch.optim.Adam(solo.parameters(), 1e-2)
    target = torch.tensor([1.0, -1.0])
    for _ in range(20):
        z = torch.randn(3, 16, 2)
        opt_e.zero_grad()
        ((ens(z) - target) ** 2).mean().backward()  # mean over members = each member's loss / 3
        opt_e.step()
        opt_s.zero_grad()
        ((solo(z[1]) - target) ** 2).mean().backward()
        opt_s.step()
    z = torch.randn(3, 5, 2)
    assert torch.allclose(ens(z)[1], solo(z[1]), atol=1e-4)


def test_adain_sets_the_style_statistics():
    x = 5 * torch.randn(2, 3, 8, 8) + 2
    scale, bias = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 1.0]]), torch.tensor([[0.0, -1.0, 4.0], [1.0, 1.0, 1.0]])
    y = gans.adain(x, scale, bias)
    assert torch.allclose(y.mean(dim=(2, 3)), bias, atol=1e-4)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), scale, atol=1e-3)
    # the content's own statistics are erased: shifting/scaling x changes nothing
    assert torch.allclose(gans.adain(3 * x - 7, scale, bias), y, atol=1e-4)
    with pytest.raises(ValueError, match="must both be \\(B, C\\)"):
        gans.adain(x, scale[:, :2], bias)
    layer = gans.AdaIN(style_dim=4, channels=3)
    assert layer(x, torch.randn(2, 4)).shape == x.shape


# --- training ---------------------------------------------------------------------------------
def test_gan_step_updates_both_players_and_a_toy_gan_learns():
    data = toy2d.ring_of_gaussians(4000, std=0.05)
    G, D, history = experiments.train_toy_gan(data, members=2, steps=300, lr=3e-3, hidden=32, batch=64,
                                       progress=False, log_every=5)
    stats = experiments.member_mode_statistics(G, toy2d.ring_centers(), 0.05)
    untrained = experiments.member_mode_statistics(gans.ToyGenerator(members=2), toy2d.ring_centers(), 0.05)
    # within 300 steps the samples move onto the ring: far more high-quality samples than at init
    assert min(s["high_quality"] for s in stats) > max(s["high_quality"] for s in untrained) + 0.03
    assert len(history["d_loss"]) == 61 and history.ms_per_step > 0


def test_wgan_gp_critic_estimate_rises_then_the_generator_closes_the_gap():
    data = toy2d.ring_of_gaussians(4000, std=0.05)
    G, _, history = experiments.train_toy_gan(data, method="wgan-gp", members=2, steps=60, lr=1e-3,
                                       hidden=32, batch=64, progress=False, log_every=1)
    w = history["w_estimate"]
    assert max(w) > 0.3 and sum(w[-10:]) / 10 < max(w)
    for method in ("gan", "wgan-clip", "wgan-gp", "infogan"):  # a single GAN takes (B, d) batches
        G1, _, _ = experiments.train_toy_gan(data, method=method, members=1, steps=2, hidden=8, progress=False)
        assert G1(G1.noise(5)).shape == (5, 2)
    with pytest.raises(ValueError, match="method"):
        experiments.train_toy_gan(data, method="lsgan", steps=1)


def test_clipped_wgan_trains_with_rmsprop_as_the_paper_prescribes():
    data = toy2d.ring_of_gaussians(4000, std=0.05)
    runs = {opt: experiments.train_toy_gan(data, method="wgan-clip", clip=0.05, optimizer=opt, members=1, steps=3,
                                           hidden=8, seed=0, progress=False)[0] for opt in ("adam", "rmsprop")}
    z = runs["adam"].noise(5, torch.Generator().manual_seed(0))
    assert not torch.allclose(runs["adam"](z), runs["rmsprop"](z))  # the option reaches the optimiser
    with pytest.raises(ValueError, match="optimizer"):
        experiments.train_toy_gan(data, method="wgan-clip", optimizer="sgd", steps=1)


def test_infogan_code_information_is_zero_for_an_ignored_code_and_one_for_a_perfect_code():
    class Perfect(torch.nn.Module):  # the code picks the mode, z is ignored
        latent_dim, n_codes, members = 10, 8, 1

        def noise(self, n, generator=None):
            return torch.randn(n, 10, generator=generator)

        def forward(self, zc):
            return toy2d.ring_centers()[zc[:, 2:].argmax(1)]

    class Ignored(Perfect):
        def forward(self, zc):
            return toy2d.ring_centers()[(zc[:, 0] > 0).long()]

    assert experiments.code_information(Perfect(), toy2d.ring_centers()) == [pytest.approx(1.0)]
    assert experiments.code_information(Ignored(), toy2d.ring_centers())[0] < 0.01
    # a zero weight per member switches the information term off for that member only
    torch.manual_seed(0)
    G, D = gans.ToyGenerator(latent_dim=4, members=2, hidden=8), gans.ToyDiscriminator(members=2, outputs=3, hidden=8)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (G, D)]
    out = gans.infogan_step(G, D, *opts, torch.randn(2, 6, 2), torch.randn(2, 6, 2), torch.randint(2, (2, 6)),
                            n_codes=2, info_weight=[0.0, 1.0])
    assert out["info_loss"] > 0
    head = D.out.weight.grad  # D's Q-head columns (1, 2) get a gradient from member 1 only
    assert head[0, :, 1:].abs().sum() == 0 and head[1, :, 1:].abs().sum() > 0


# --- autograder checks ------------------------------------------------------------------------
def test_checks_pass_on_the_references(capsys):
    assert checks.check_discriminator_loss(gans.discriminator_loss)
    assert checks.check_generator_loss(gans.generator_loss)
    assert checks.check_gan_step(gans.gan_step)
    assert checks.check_critic_loss(wgan.critic_loss)
    assert checks.check_clip_weights(wgan.clip_weights)
    assert checks.check_gradient_penalty(wgan.gradient_penalty)
    assert capsys.readouterr().out.count("✔") >= 6


def _fails(check, fn, match):
    with pytest.raises(CheckFailure, match=match):
        check(fn)


def test_checks_catch_typical_mistakes():
    def stub(*args):
        raise NotImplementedError("Question q1: implement this and remove the raise")

    _fails(checks.check_discriminator_loss, stub, "not implemented yet")
    _fails(checks.check_discriminator_loss,
           lambda r, f: -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean()),
           "NaN or inf")  # naive logs overflow on a confident D
    _fails(checks.check_discriminator_loss, lambda r, f: F.softplus(-r).mean() - F.softplus(f).mean(),
           "values differ")
    _fails(checks.check_generator_loss, lambda f, saturating=False: F.softplus(-f).mean(), "values differ")
    _fails(checks.check_generator_loss, lambda f, saturating=False: None, "returned None")
    _fails(checks.check_critic_loss, lambda r, f: r.mean() - f.mean(), "values differ")
    _fails(checks.check_critic_loss, lambda r, f: torch.tensor(f.mean().item() - r.mean().item()),
           "cut off")

    def clip_copy(critic, c):
        for p in critic.parameters():
            p = p.clamp(-c, c)  # rebinding the name changes nothing

    def clip_weights_only(critic, c):
        with torch.no_grad():
            for name, p in critic.named_parameters():
                if "weight" in name:
                    p.clamp_(-c, c)

    _fails(checks.check_clip_weights, clip_copy, "max \\|value\\|")
    _fails(checks.check_clip_weights, clip_weights_only, "biases included")

    def gp_no_graph(critic, real, fake, alpha):
        x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x)
        return ((g.norm(dim=1) - 1) ** 2).mean()

    def gp_squared_norm(critic, real, fake, alpha):
        x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        return ((g.pow(2).sum(1) - 1) ** 2).mean()

    _fails(checks.check_gradient_penalty, gp_no_graph, "create_graph=True")
    _fails(checks.check_gradient_penalty, gp_squared_norm, "value")

    def step_without_detach_order(G, D, opt_g, opt_d, real, z):  # G first, then D: wrong order
        fake = G(z)
        opt_g.zero_grad()
        g_loss = gans.generator_loss(D(fake))
        g_loss.backward()
        opt_g.step()
        opt_d.zero_grad()
        d_loss = gans.discriminator_loss(D(real), D(fake.detach()))
        d_loss.backward()
        opt_d.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    def step_missing_zero_grad(G, D, opt_g, opt_d, real, z):
        fake = G(z)
        d_loss = gans.discriminator_loss(D(real), D(fake.detach()))
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = gans.generator_loss(D(fake))
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    _fails(checks.check_gan_step, step_without_detach_order, "update D first, then G")
    _fails(checks.check_gan_step, step_missing_zero_grad, "after step 2, D\\..*opt_d.zero_grad")
    _fails(checks.check_gan_step, lambda *a: None, "returned None")
    _fails(checks.check_gan_step, lambda *a: (1.0, 2.0), "should return a dict")
