"""GRAF pieces: pose and patch sampling, rays from K, the conditional field, generator, losses,
a short adversarial run, image metrics, the checks of the assignment, and the image collection."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch

from gen3d_course.checks import CheckFailure
from gen3d_course.checks import graf as checks
from gen3d_course.experiments import graf as experiments
from gen3d_course.geometry.image_metrics import (foreground_fraction, laplacian_pyramid, pyramid_swd,
                                                 random_patches, sliced_wasserstein)
from gen3d_course.models import graf
from gen3d_course.models.gans import discriminator_loss
from gen3d_course.render import cameras, patches
from gen3d_course.render.encoding import positional_encoding

torch.set_num_threads(1)


# ------------------------------------------------------------------ p_ξ


# ------------------------------------------------------------------ p_ν and patch coordinates


# ------------------------------------------------------------------ the conditional field
def test_shape_and_appearance_inputs_layout():
    points, z_s = torch.rand(2, 5, 3), torch.randn(2, 4)
    x = graf.shape_input(points, z_s, 2)
    assert x.shape == (2, 5, 15 + 4)
    assert torch.equal(x[..., :15], positional_encoding(points, 2))
    assert torch.equal(x[1, 3, 15:], z_s[1])
    h, d, z_a = torch.randn(2, 5, 6), torch.randn(2, 5, 3), torch.randn(2, 3)
    y = graf.appearance_input(h, d, z_a, 1)
    assert y.shape == (2, 5, 6 + 9 + 3) and torch.equal(y[0, 2, -3:], z_a[0])
    with pytest.raises(ValueError, match="one code per batch entry"):
        graf.shape_input(points, torch.randn(3, 4), 2)
    checks.check_shape_input(graf.shape_input)
    checks.check_appearance_input(graf.appearance_input)


def test_density_ignores_the_appearance_code():
    torch.manual_seed(0)
    field = graf.ConditionalField(z_shape=4, z_app=3)
    points, dirs = torch.rand(1, 50, 3) - 0.5, torch.nn.functional.normalize(torch.randn(1, 50, 3), dim=-1)
    z_s = torch.randn(1, 4)
    s1, c1 = field(points, dirs, z_s, torch.randn(1, 3))
    s2, c2 = field(points, dirs, z_s, torch.randn(1, 3))
    s3, _ = field(points, dirs, torch.randn(1, 4), torch.randn(1, 3))
    assert torch.equal(s1, s2) and not torch.allclose(c1, c2) and not torch.allclose(s1, s3)
    assert (s1 >= 0).all() and ((c1 >= 0) & (c1 <= 1)).all()
    assert torch.equal(field.density(points, z_s), s1)


def test_field_check_accepts_the_library_forward_and_names_a_missing_density_shift():
    def library_forward(field, points, directions, z_shape, z_app, density_noise=0.0, generator=None):
        return field(points, directions, z_shape, z_app, density_noise, generator)

    def without_shift(field, *args):
        unshifted = copy.copy(field)
        unshifted.density_shift = 0.0
        return library_forward(unshifted, *args)

    assert checks.check_conditional_field(library_forward)
    with pytest.raises(CheckFailure, match="add field.density_shift"):
        checks.check_conditional_field(without_shift)


def test_generator_renders_patches_and_images_with_gradients():
    cfg = graf.GRAFConfig(width=32, n_samples=8)
    G = graf.Generator(cfg)
    z_s, z_a = G.sample_codes(3, torch.Generator().manual_seed(0))
    c2w, _ = G.poses.sample(3, torch.Generator().manual_seed(1))
    centers, scales = patches.sample_patch_pattern(3, 0.5, 1.0, torch.Generator().manual_seed(2))
    uv = patches.patch_coordinates(centers, scales, cfg.patch_size, 32, 32)
    out = G(z_s, z_a, c2w, uv)
    assert out.shape == (3, 3, 16, 16) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in G.field.trunk.parameters())
    images = G.render(z_s, z_a, c2w, size=20)
    assert images["images"].shape == (3, 3, 20, 20) and images["acc"].shape == (3, 20, 20)
    assert ((images["acc"] >= 0) & (images["acc"] <= 1 + 1e-5)).all()
    # a freshly made field is nearly empty: white images
    assert images["images"].mean() > 0.85
    # a full-image "patch" at the training size is the same as render
    uv = patches.full_image_coordinates(32, 3)
    assert torch.allclose(G(z_s, z_a, c2w, uv, perturb=False), G.render(z_s, z_a, c2w)["images"], atol=1e-5)


def test_object_field_rendered_by_the_one_renderer_equals_the_generator_render():
    from gen3d_course.render.compose import compose_fields, place_field
    from gen3d_course.render.rays import render_image

    torch.manual_seed(0)
    G = graf.Generator(graf.GRAFConfig(width=16, depth=2, n_samples=8))
    z_s, z_a = G.sample_codes(1, torch.Generator().manual_seed(0))
    c2w = G.poses.pose(30.0, 20.0)
    field = G.object_field(z_s, z_a)
    expected = G.render(z_s, z_a, c2w[None], 16)["images"][0].permute(1, 2, 0)
    focal = G.cfg.focal * 16 / G.cfg.image_size
    for f in (field, compose_fields([place_field(field)])):
        assert torch.allclose(render_image(f, c2w, 16, 16, focal, n_samples=8)["rgb"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="one object"):
        G.object_field(torch.zeros(2, G.cfg.z_shape), torch.zeros(2, G.cfg.z_app))

def test_slider_renders_skip_empty_space_without_changing_the_image():
    """The slider's renders (occupancy grid + early ray termination) match the full render of the
    shipped generator, over camera and code moves; the grid is per object."""
    G = experiments.load_pretrained()
    render = experiments.image_renderer(G, size=32)
    for azimuth, elevation, codes in ((30.0, 25.0, {}), (150.0, 40.0, {}), (30.0, 25.0, {"zs0": 1.5}),
                                      (270.0, 10.0, {"zs1": -2.0, "za0": 2.0})):
        z_s, z_a = torch.zeros(1, G.cfg.z_shape), torch.zeros(1, G.cfg.z_app)
        z_s[0, 0], z_s[0, 1], z_a[0, 0] = codes.get("zs0", 0.0), codes.get("zs1", 0.0), codes.get("za0", 0.0)
        full = G.render(z_s, z_a, G.poses.pose(azimuth, elevation)[None], 32)["images"][0].permute(1, 2, 0)
        assert (render(azimuth, elevation, **codes) - full).abs().max() < 2e-3
    with pytest.raises(ValueError, match="one object"):
        G.occupancy(torch.zeros(2, G.cfg.z_shape), torch.zeros(2, G.cfg.z_app))


def test_discriminator_and_r1():
    D = graf.PatchDiscriminator(16, base=8)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    assert D(x).shape == (4,)
    r1 = graf.r1_penalty(x, D(x))
    # a linear "discriminator" has the same gradient everywhere: R1 = ‖w‖²
    w = torch.randn(3 * 16 * 16)
    assert torch.allclose(graf.r1_penalty(x, x.flatten(1) @ w), w.pow(2).sum())
    with pytest.raises(ValueError, match="requires_grad"):
        graf.r1_penalty(torch.rand(2, 3), torch.rand(2))
    assert r1.ndim == 0 and r1 >= 0
    r1.backward()
    assert next(D.parameters()).grad is not None
    with pytest.raises(ValueError, match="power of two"):
        graf.PatchDiscriminator(12)
    with pytest.raises(ValueError, match="expected \\(B, 3, 16, 16\\)"):
        D(torch.rand(2, 3, 8, 8))


def test_min_scale_anneals_from_whole_image_to_final():
    assert graf.min_scale_at(0) == 1.0
    assert graf.min_scale_at(100, 0.5, 0.002) == pytest.approx(math.exp(-0.2))
    assert graf.min_scale_at(10_000, 0.5) == 0.5


def test_adversarial_step_updates_d_then_g_and_only_d_learns_from_its_loss():
    cfg = graf.GRAFConfig(width=16, depth=2, n_samples=4, disc_base=8, patch_size=8)
    model = graf.GRAF.create(cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(2, 3, 8, 8, generator=gen)
    z_s, z_a = model.G.sample_codes(2, gen)
    c2w, _ = model.G.poses.sample(2, gen)
    uv = patches.patch_coordinates(torch.zeros(2, 2), torch.ones(2), 8, 32, 32)
    d_alone = copy.deepcopy(model)  # the same D step without the G step that follows
    G0 = copy.deepcopy(model.G)
    out = graf.adversarial_step(model, real, z_s, z_a, c2w, uv, generator=torch.Generator().manual_seed(2))
    assert set(out) == {"d_loss", "g_loss", "r1", "d_real", "d_fake"} and not real.requires_grad
    fake = d_alone.G(z_s, z_a, c2w, uv, generator=torch.Generator().manual_seed(2)).detach()
    x = real.clone().requires_grad_(True)
    logits = d_alone.D(x)
    loss_d = discriminator_loss(logits, d_alone.D(fake))
    d_alone.opt_d.zero_grad()
    (loss_d + 0.5 * graf.r1_penalty(x, logits)).backward()
    d_alone.opt_d.step()
    assert out["d_loss"] == pytest.approx(loss_d.item(), abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(model.D.parameters(), d_alone.D.parameters()))
    assert all(p.requires_grad for p in model.D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(model.G.parameters(), G0.parameters()))


def test_short_adversarial_run_learns_the_background_and_a_blob():
    """Images: a red disc on white. A few dozen steps must move the generator's colour
    statistics towards the data (a loss alone says little in a GAN)."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((xx - 15.5) ** 2 + (yy - 15.5) ** 2) < 8.0 ** 2).float()
    images = torch.ones(16, 3, 32, 32)
    images[:, 1:] -= 0.8 * disc
    cfg = graf.GRAFConfig(width=32, depth=2, n_samples=8, disc_base=16)
    model = graf.GRAF.create(cfg, lr_g=2e-3, lr_d=1e-3, seed=0)
    before = model.G.render(*model.G.sample_codes(8, torch.Generator().manual_seed(0)),
                            model.G.poses.sample(8, torch.Generator().manual_seed(0))[0])["images"]
    history = graf.fit(model, images, 25, batch=4, progress=False)
    assert model.steps_done == 25 and len(history["d_loss"]) == 25
    after = model.G_ema.render(*model.G.sample_codes(8, torch.Generator().manual_seed(0)),
                               model.G.poses.sample(8, torch.Generator().manual_seed(0))[0])["images"]
    target_red_minus_green = (images[:, 0] - images[:, 1]).mean()
    gap_before = abs((before[:, 0] - before[:, 1]).mean() - target_red_minus_green)
    gap_after = abs((after[:, 0] - after[:, 1]).mean() - target_red_minus_green)
    assert gap_after < 0.5 * gap_before
    with pytest.raises(ValueError, match="images must be"):
        graf.fit(model, torch.rand(4, 3, 16, 16), 1)


# ------------------------------------------------------------------ metrics and consistency
def test_pyramid_reconstructs_and_swd_laws():
    images = torch.rand(3, 3, 32, 32)
    pyramid = laplacian_pyramid(images, 3)
    assert [p.shape[-1] for p in pyramid] == [32, 16, 8]
    rebuilt = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        rebuilt = torch.nn.functional.interpolate(rebuilt, size=level.shape[-2:], mode="bilinear",
                                                  align_corners=False) + level
    assert torch.allclose(rebuilt, images, atol=1e-5)
    x = torch.randn(500, 4)
    assert sliced_wasserstein(x, x) == 0
    assert sliced_wasserstein(x, x + 1.0) > sliced_wasserstein(x, x + 0.1) > 0
    assert random_patches(images, 7, 5).shape == (15, 3 * 49)
    a, b = torch.rand(20, 3, 16, 16), torch.rand(20, 3, 16, 16)
    assert pyramid_swd(a, b)["mean"] < pyramid_swd(a, torch.ones(20, 3, 16, 16) * 0.9)["mean"]
    assert foreground_fraction(torch.ones(2, 3, 4, 4)).tolist() == [0.0, 0.0]


def test_reprojection_error_is_zero_for_a_consistent_object_and_large_for_another():
    from gen3d_course.data.shapes import make_shape
    from gen3d_course.render.sphere_tracing import render_rgba

    dist = patches.PoseDistribution()
    focal = cameras.focal_from_fov(32, 40)
    colour = lambda p: np.clip(0.5 + p, 0, 1)  # noqa: E731 - a colour that varies over the object
    views = [render_rgba(make_shape("chair", s), colour, dist.pose(a, 25), 32, 32, focal)
             for s, a in ((0, 30), (0, 60), (5, 60))]
    t = [{k: torch.from_numpy(v) for k, v in r.items()} for r in views]

    def error(a, b, pa, pb):
        return experiments.reprojection_error(a["rgb"].permute(2, 0, 1), a["depth"], a["alpha"] > 0.5, dist.pose(pa, 25),
                                       b["rgb"].permute(2, 0, 1), b["depth"], b["alpha"] > 0.5, dist.pose(pb, 25),
                                       focal)

    same = error(t[0], t[1], 30, 60)
    other = error(t[0], t[2], 30, 60)
    assert same["visible"] > 0.3 and same["error"] < 0.03
    assert other["error"] > 2 * same["error"]



def test_front_share_sees_the_near_half_and_the_hollow_reading_the_far_half():
    from gen3d_course.data.shapes import make_shape
    from gen3d_course.render.sphere_tracing import render_rgba

    pose, focal = patches.PoseDistribution().pose(40, 25), cameras.focal_from_fov(32, 40)
    r = {k: torch.from_numpy(v) for k, v in render_rgba(make_shape("chair", 0), (0.5, 0.5, 0.5), pose, 32, 32,
                                                        focal).items()}
    mask = r["alpha"] > 0.5
    hollow = experiments.hollow_depth(r["depth"], pose, focal)
    front = experiments.front_share(r["depth"], mask, pose, focal)
    assert front > 0.6
    assert experiments.front_share(hollow, mask, pose, focal) == pytest.approx(1 - front, abs=1e-6)
    assert torch.allclose(experiments.hollow_depth(hollow, pose, focal), r["depth"], atol=1e-4)  # its own inverse


def test_consistency_of_real_renders_is_far_below_its_shuffled_control():
    out = experiments.real_consistency("chair", seeds=range(2), n_views=3)
    assert out["visible"] > 0.3 and out["error"] < 0.3 * out["shuffled"]
    assert out["front"] > 0.5 > out["front_hollow"]
    with pytest.raises(ValueError, match="at least 2"):
        experiments.real_consistency("chair", seeds=[0])


def test_consistency_of_an_empty_generator_is_nan_without_warnings():
    """An untrained generator renders nothing opaque: no pixel to re-project, NaNs and no warning."""
    G = graf.Generator(graf.GRAFConfig(image_size=16, patch_size=8))
    z_s, z_a = G.sample_codes(2, torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = experiments.generated_consistency(G, z_s, z_a, n_views=2)
    assert out["visible"] == 0.0 and all(math.isnan(out[k]) for k in ("error", "shuffled", "hollow", "front"))


# ------------------------------------------------------------------ checks fail on wrong answers
def test_checks_fail_with_hints_on_classic_mistakes():
    def codes_first(points, z, n):
        return torch.cat([z[:, None].expand(-1, points.shape[1], -1), positional_encoding(points, n)], -1)

    with pytest.raises(CheckFailure, match="in that order"):
        checks.check_shape_input(codes_first)

    def unflipped(K, c2w, uv):
        h = torch.cat([uv, torch.ones_like(uv[..., :1])], -1) @ torch.linalg.inv(K).T
        d = (c2w[:, None, None, :3, :3] @ h[..., None])[..., 0]
        d = d / d.norm(dim=-1, keepdim=True)
        return c2w[:, None, None, :3, 3].expand_as(d), d

    with pytest.raises(CheckFailure, match="OpenGL"):
        checks.check_patch_rays(unflipped)

    def leaves_image(n, lo, hi, generator):
        s = lo + (hi - lo) * torch.rand(n, generator=generator)
        return 2 * torch.rand(n, 2, generator=generator) - 1, s

    with pytest.raises(CheckFailure, match="leaves the image"):
        checks.check_patch_pattern(leaves_image)

    def swapped(centers, scales, P, W, H):
        return patches.patch_coordinates(centers, scales, P, W, H).flip(-1)

    with pytest.raises(CheckFailure, match="column index first"):
        checks.check_patch_coordinates(swapped)

    def todo(*args):
        raise NotImplementedError

    for check in (checks.check_shape_input, checks.check_appearance_input, checks.check_patch_pattern,
                  checks.check_patch_coordinates, checks.check_patch_rays):
        with pytest.raises(CheckFailure, match="not implemented"):
            check(todo)


def test_image_collection_is_seeded_and_on_white():
    from gen3d_course.data.graf_images import graf_images

    a = graf_images(3, 16, "chair", seed=0)
    b = graf_images(3, 16, "chair", seed=0)
    assert torch.equal(a.images, b.images) and a.images.shape == (3, 3, 16, 16)
    assert torch.equal(a.images[:, :, 0, 0], torch.ones(3, 3))  # corners are background
    assert (a.alpha.mean(dim=(1, 2)) > 0.05).all()
    assert len(a[1:]) == 2 and a[1:].seeds == a.seeds[1:]
    with pytest.raises(ValueError, match="unknown category"):
        graf_images(2, 16, "sofa")

