"""NeRF pieces: encoding, sampling along rays, cameras, the two radiance fields, rendering, training."""
import math

import numpy as np
import pytest
import torch

from gen3d_course.models import nerf
from gen3d_course.render import cameras
from gen3d_course.render.encoding import (FourierFeatures, PositionalEncoding, encoding_size,
                                          positional_encoding)
from gen3d_course.render.sampling import (hierarchical_samples, points_along_rays, ray_box,
                                          sample_pdf, stratified_samples)
from gen3d_course.render.rays import render_image, render_rays
from gen3d_course.render.volume import volume_render

torch.set_num_threads(1)


# ------------------------------------------------------------------ positional encoding
def test_positional_encoding_layout_and_sizes():
    x = torch.tensor([[0.25, -0.5, 0.1]])
    out = positional_encoding(x, 3)
    assert out.shape == (1, encoding_size(3, 3)) == (1, 21)
    assert torch.equal(out[:, :3], x)
    for k in range(3):
        block = out[:, 3 + 6 * k: 9 + 6 * k]
        assert torch.allclose(block[:, :3], torch.sin(2**k * math.pi * x))
        assert torch.allclose(block[:, 3:], torch.cos(2**k * math.pi * x))
    assert torch.equal(positional_encoding(x, 0), x)
    assert positional_encoding(torch.zeros(4, 5, 2), 4, include_input=False).shape == (4, 5, 16)
    with pytest.raises(ValueError, match="no features"):
        positional_encoding(x, 0, include_input=False)
    with pytest.raises(ValueError, match="expected \\(..., 3\\)"):
        PositionalEncoding(3, 2)(torch.zeros(5, 2))


def test_fourier_features_are_seeded_and_bounded():
    a, b = FourierFeatures(3, 16, seed=1), FourierFeatures(3, 16, seed=1)
    x = torch.rand(10, 3)
    assert torch.equal(a(x), b(x)) and a(x).shape == (10, 32) and a(x).abs().max() <= 1


# ------------------------------------------------------------------ sampling along rays
def test_ray_box_intervals():
    origins = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.1, 0.0, 0.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_box(origins, dirs, (-0.5, 0.5))
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near, torch.tensor([1.5, near[1].item(), 0.0]))
    assert torch.allclose(far[[0, 2]], torch.tensor([2.5, 0.4]))
    assert near[1] == far[1]  # a miss has an empty interval


def test_stratified_samples_one_per_bin():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.5])
    t = stratified_samples(near, far, 8, generator=torch.Generator().manual_seed(0))
    assert t.shape == (2, 8) and (t.diff(dim=1) >= 0).all()
    bins = ((t - near[:, None]) / (far - near)[:, None] * 8).floor()
    assert torch.equal(bins, torch.arange(8.0).expand(2, 8))
    mid = stratified_samples(1.0, 3.0, 4, n_rays=1, perturb=False)
    assert torch.allclose(mid, torch.tensor([[1.25, 1.75, 2.25, 2.75]]))


def test_sample_pdf_follows_the_weights():
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[0.25, 0.0, 0.75]])
    t = sample_pdf(edges, weights, 20000, generator=torch.Generator().manual_seed(0))
    assert (t.diff(dim=1) >= 0).all()
    share = [((t >= a) & (t < a + 1)).float().mean().item() for a in range(3)]
    assert share[0] == pytest.approx(0.25, abs=0.02) and share[1] < 0.01
    assert share[2] == pytest.approx(0.75, abs=0.02)
    det = sample_pdf(edges, torch.zeros(1, 3), 6, perturb=False)  # empty ray: uniform
    assert torch.allclose(det, torch.tensor([[0.25, 0.75, 1.25, 1.75, 2.25, 2.75]]), atol=1e-3)


def test_hierarchical_samples_concentrate_at_the_surface():
    """A wall at t = 2: fine samples land next to it, far more than stratified ones."""
    t = stratified_samples(1.0, 3.0, 32, n_rays=4, perturb=False)
    sigmas = torch.where(t > 2.0, 200.0, 0.0)
    weights = volume_render(sigmas, torch.zeros(4, 32, 3), t, far=3.0)["weights"]
    t_all, t_fine = hierarchical_samples(t, weights, 64, generator=torch.Generator().manual_seed(0))
    assert t_all.shape == (4, 96) and (t_all.diff(dim=1) >= 0).all() and not t_fine.requires_grad
    near_wall = ((t_fine - 2.05).abs() < 0.1).float().mean()
    assert near_wall > 0.8 > ((t - 2.05).abs() < 0.1).float().mean()


def test_points_along_rays():
    p = points_along_rays(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]),
                          torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.allclose(p[1, 1], torch.tensor([0.0, 4.0, 0.0])) and p.shape == (2, 2, 3)


# ------------------------------------------------------------------ volume rendering additions
def test_volume_render_per_ray_far_and_terms():
    g = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(3, 6, generator=g), 1).values
    sigmas, colors = 5 * torch.rand(3, 6, generator=g), torch.rand(3, 6, 3, generator=g)
    far = torch.tensor([1.1, 1.5, 2.0])
    out = volume_render(sigmas, colors, t, far=far)
    for r in range(3):
        one = volume_render(sigmas[r:r + 1], colors[r:r + 1], t[r:r + 1], far=float(far[r]))
        assert torch.allclose(out["rgb"][r], one["rgb"][0])
    assert torch.allclose(out["weights"], out["alpha"] * out["transmittance"])
    assert torch.allclose(out["transmittance"][:, 0], torch.ones(3))


# ------------------------------------------------------------------ cameras
def test_rays_through_matches_pixel_rays_and_batches():
    c2w = cameras.look_at([1.0, 0.5, 1.5])
    o, d = cameras.pixel_rays(c2w, 5, 4, 6.0)
    j, i = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    o2, d2 = cameras.rays_through(c2w, torch.stack([i + 0.5, j + 0.5], -1), 5, 4, 6.0)
    assert torch.allclose(d, d2, atol=1e-6) and torch.allclose(o, o2)
    poses = torch.stack([c2w, cameras.look_at([0.0, 0.3, 2.0])])
    uv = torch.rand(2, 7, 2) * 4
    _, batched = cameras.rays_through(poses, uv, 5, 4, 6.0)
    assert torch.allclose(batched[1], cameras.rays_through(poses[1], uv[1], 5, 4, 6.0)[1], atol=1e-6)
    with pytest.raises(ValueError, match="uv has shape"):
        cameras.rays_through(poses, torch.rand(3, 7, 2), 5, 4, 6.0)


def test_opencv_to_opengl_projects_consistently():
    """A point projected by the OpenCV pinhole (K, c2w_cv) lies on the OpenGL ray of that pixel."""
    eye = np.array([0.8, 0.6, 1.7])
    forward = -eye / np.linalg.norm(eye)  # OpenCV: +z looks at the origin, y points down
    right = np.cross([0.0, -1.0, 0.0], forward); right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w_cv = np.eye(4); c2w_cv[:3, :3] = np.stack([right, down, forward], 1); c2w_cv[:3, 3] = eye
    c2w_gl = cameras.opencv_to_opengl(c2w_cv)
    assert isinstance(c2w_gl, np.ndarray)
    assert np.allclose(cameras.opengl_to_opencv(c2w_gl), c2w_cv)
    assert np.allclose(c2w_gl, np.asarray(cameras.look_at(eye).double()), atol=1e-6)
    point = np.array([0.1, -0.05, 0.2])
    cam = np.linalg.inv(c2w_cv) @ np.append(point, 1.0)
    K = cameras.intrinsic_matrix(20.0, 32, 24).double().numpy()
    u, v, _ = K @ (cam[:3] / cam[2])
    o, d = cameras.rays_through(torch.tensor(c2w_gl, dtype=torch.float32), torch.tensor([u, v]), 32, 24, 20.0)
    to_point = torch.tensor(point, dtype=torch.float32) - o
    assert torch.allclose(d, to_point / to_point.norm(), atol=1e-5)
    assert torch.equal(cameras.opencv_to_opengl(torch.eye(4))[1, 1], torch.tensor(-1.0))
    with pytest.raises(ValueError, match="expected"):
        cameras.opencv_to_opengl(np.eye(3))


# ------------------------------------------------------------------ radiance fields
def test_nerf_outputs_and_validation():
    torch.manual_seed(0)
    for model in (nerf.NeRF(width=32, depth=2), nerf.NeRF(width=32, depth=2, pos_freqs=0, dir_freqs=0),
                  nerf.GridField(res=8, features=4, width=16)):
        sigma, rgb = model(torch.rand(50, 3) - 0.5, torch.nn.functional.normalize(torch.randn(50, 3), dim=1))
        assert sigma.shape == (50,) and rgb.shape == (50, 3)
        assert (sigma >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
        assert torch.allclose(model.density(torch.zeros(2, 3)), model(torch.zeros(2, 3), torch.ones(2, 3))[0])
        with pytest.raises(ValueError, match="must both be \\(N, 3\\)"):
            model(torch.rand(5, 3), torch.rand(4, 3))


def test_grid_lookup_is_trilinear_in_world_axes():
    """A grid holding x + 2y + 3z at its nodes returns exactly that anywhere (trilinear is exact
    on linear functions) — which also pins the [ix, iy, iz] axis order — and the gather-based
    interpolation equals grid_sample (align_corners, border padding), outside the box too."""
    field = nerf.GridField(res=5, features=3)
    nodes = torch.linspace(-0.5, 0.5, 5)
    X, Y, Z = torch.meshgrid(nodes, nodes, nodes, indexing="ij")
    with torch.no_grad():
        field.feature_grid[...] = torch.stack([X, Y, X + 2 * Y + 3 * Z], -1)
    p = torch.rand(100, 3) - 0.5
    values = nerf.trilinear(field.grid, p)[:, 1:]
    assert torch.allclose(values[:, 0], p[:, 0], atol=1e-5) and torch.allclose(values[:, 1], p[:, 1], atol=1e-5)
    assert torch.allclose(values[:, 2], p @ torch.tensor([1.0, 2.0, 3.0]), atol=1e-5)
    table = torch.randn(6, 6, 6, 4)
    q = 1.4 * torch.rand(500, 3) - 0.7
    reference = torch.nn.functional.grid_sample(
        table.permute(3, 0, 1, 2)[None], (2 * q).flip(-1).reshape(1, -1, 1, 1, 3), mode="bilinear",
        padding_mode="border", align_corners=True).reshape(4, -1).T
    assert torch.allclose(nerf.trilinear(table, q), reference, atol=1e-5)


def test_total_variation_is_zero_only_for_constant_grids():
    field = nerf.GridField(res=6, features=2)
    with torch.no_grad():
        field.feature_grid.fill_(0.3)
        field.density_grid.fill_(-1.0)
    assert field.tv_loss().item() == 0.0
    with torch.no_grad():
        field.density_grid[2, 3, 1] = 1.0
    assert field.tv_loss().item() > 0


class _Ball(torch.nn.Module):
    """An analytic field: a red ball of radius 0.25 (density 300 inside)."""

    def density(self, p):
        return 300.0 * (p.norm(dim=-1) < 0.25).float()

    def forward(self, p, d):
        return self.density(p), torch.tensor([1.0, 0.0, 0.0]).expand(len(p), 3)


def test_render_rays_and_image_of_an_analytic_ball():
    c2w = cameras.look_at([0.0, 0.0, 1.5])
    out = render_image(_Ball(), c2w, 16, 16, focal=20.0, n_samples=64, n_importance=32, background=0.0)
    assert out["rgb"].shape == (16, 16, 3) and out["depth"].shape == (16, 16)
    centre, corner = out["rgb"][8, 8], out["rgb"][0, 0]
    assert torch.allclose(centre, torch.tensor([1.0, 0.0, 0.0]), atol=1e-3) and corner.sum() < 1e-3
    assert abs(out["depth"][8, 8].item() - 1.25) < 0.02  # the ball's front at distance 1.5 − 0.25
    o, d = (x.reshape(-1, 3) for x in cameras.pixel_rays(c2w, 8, 8, 10.0))
    res = render_rays(_Ball(), o, d, n_samples=16, n_importance=8)
    assert res["t"].shape == (64, 24) and "coarse" in res and (res["acc"] <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="must both be \\(R, 3\\)"):
        render_rays(_Ball(), o, d[:3])


def test_density_mesh_of_the_ball():
    mesh = nerf.density_mesh(_Ball(), level=150.0, res=40)  # the ball: 0 outside, 300 inside
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radius) - 0.25) < 0.02


def test_fit_learns_the_scene_quickly():
    from gen3d_course.data.scenes import scene_views

    views = scene_views(n_train=6, n_test=2, size=16, seed=0)
    torch.manual_seed(0)
    field = nerf.GridField(res=24, features=4, width=16)
    before = nerf.evaluate(field, views["test"], n_samples=24)["psnr"]
    result = nerf.fit(field, views["train"], views["test"], steps=120, batch_rays=256, n_samples=24,
                      tv_weight=1e-3, eval_every=60, progress=False)
    assert len(result.curve) == 2 and result.history.mean("mse") < result.history.mean("mse", first=True)
    assert result.final_psnr > before + 3, (before, result.curve)
    assert result.time_to_reach(result.final_psnr) <= result.seconds[-1]
    assert result.time_to_reach(99.0) == float("inf")


def test_nerf_is_a_trainable_checkpoint():
    from gen3d_course.cli import trainable

    assert "nerf" in trainable()


# ------------------------------------------------------------------ image slider panel
def test_image_sliders_redraw_and_report_errors():
    from gen3d_course.viz.image_sliders import image_sliders, png_bytes

    calls = []

    def render(azimuth, mode):
        calls.append((azimuth, mode))
        if azimuth > 300:
            raise RuntimeError("too far")
        return [np.full((4, 6, 3), azimuth / 360), torch.zeros(4, 6)]

    box = image_sliders(render, azimuth=(0.0, 360.0, 10.0, 30.0), mode=["rgb", "depth"])
    assert calls == [(30.0, "rgb")] and box.panel.image.value[:4] == b"\x89PNG"
    first = box.panel.image.value
    box.controls["azimuth"].value = 90.0
    assert calls[-1] == (90.0, "rgb") and box.panel.image.value != first and box.panel.last_update_s >= 0
    box.controls["azimuth"].value = 320.0
    assert "too far" in box.panel.message.value
    box.controls["mode"].value = "depth"
    assert "too far" in box.panel.message.value
    box.controls["azimuth"].value = 100.0
    assert box.panel.message.value == ""
    with pytest.raises(ValueError, match="expected an"):
        png_bytes(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------ autograder checks (unit 08)
def test_checks_pass_on_the_references_and_explain_classic_mistakes():
    from gen3d_course.checks import CheckFailure
    from gen3d_course.checks import nerf as checks

    def weights(sigmas, t, far):
        out = volume_render(sigmas, torch.zeros(*sigmas.shape, 1), t, far=far)
        return out["alpha"], out["transmittance"], out["weights"]

    def colors(sigmas, c, t, far, bg):
        out = volume_render(sigmas, c, t, far=far, background=bg)
        return out["rgb"], out["depth"], out["acc"]

    assert checks.check_get_rays(cameras.pixel_rays)
    assert checks.check_compositing_weights(weights)
    assert checks.check_render_ray_colors(colors)
    assert checks.check_positional_encoding(positional_encoding)

    def rays_y_down(c2w, w, h, f):
        o, d = cameras.pixel_rays(c2w, w, h, f)
        flipped = cameras.pixel_rays(c2w @ torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0])), w, h, f)[1]
        return o, flipped

    with pytest.raises(CheckFailure, match="y axis points up"):
        checks.check_get_rays(rays_y_down)

    def rays_no_centre(c2w, w, h, f):
        o, _ = cameras.pixel_rays(c2w, w, h, f)
        uv = torch.stack(torch.meshgrid(torch.arange(float(w)), torch.arange(float(h)), indexing="xy"), -1)
        return o, cameras.rays_through(c2w, uv, w, h, f)[1]

    with pytest.raises(CheckFailure, match="centre"):
        checks.check_get_rays(rays_no_centre)

    def inclusive(sigmas, t, far):
        alpha, _, _ = weights(sigmas, t, far)
        trans = torch.cumprod(1 - alpha, 1)
        return alpha, trans, trans * alpha

    with pytest.raises(CheckFailure, match="exclusive"):
        checks.check_compositing_weights(inclusive)

    def detached(sigmas, t, far):
        return tuple(x.detach() for x in weights(sigmas, t, far))

    with pytest.raises(CheckFailure, match="cut off|no gradient"):
        checks.check_compositing_weights(detached)

    with pytest.raises(CheckFailure, match="background"):
        checks.check_render_ray_colors(lambda s, c, t, far, bg: colors(s, c, t, far, 0.0))

    with pytest.raises(CheckFailure, match="multiply by π"):
        checks.check_positional_encoding(
            lambda x, n: torch.cat([x] + [f(2.0**k * x) for k in range(n) for f in (torch.sin, torch.cos)], -1))

    def unimplemented(*args):
        raise NotImplementedError("Question q4: implement this and remove the raise")

    with pytest.raises(CheckFailure, match="not implemented"):
        checks.check_positional_encoding(unimplemented)
