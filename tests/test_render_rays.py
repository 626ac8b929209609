"""render.rays: the one renderer, on an analytic field and on the procedural scene's exact field."""
import pytest
import torch

from gen3d_course.data.scenes import Scene, scene_views
from gen3d_course.render import cameras
from gen3d_course.render.rays import query_field, render_image, render_rays
from gen3d_course.render.sampling import ray_box
from gen3d_course.render.volume import volume_render

torch.set_num_threads(1)


def test_render_rays_and_image_of_an_analytic_ball(ball_field):
    c2w = cameras.look_at([0.0, 0.0, 1.5])
    out = render_image(ball_field, c2w, 16, 16, focal=20.0, n_samples=64, n_importance=32, background=0.0)
    assert out["rgb"].shape == (16, 16, 3) and out["depth"].shape == (16, 16)
    centre, corner = out["rgb"][8, 8], out["rgb"][0, 0]
    assert torch.allclose(centre, torch.tensor([1.0, 0.0, 0.0]), atol=1e-3) and corner.sum() < 1e-3
    assert abs(out["depth"][8, 8].item() - 1.25) < 0.02  # the ball's front at distance 1.5 − 0.25
    o, d = (x.reshape(-1, 3) for x in cameras.pixel_rays(c2w, 8, 8, 10.0))
    res = render_rays(ball_field, o, d, n_samples=16, n_importance=8)
    assert res["t"].shape == (64, 24) and "coarse" in res and (res["acc"] <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="must both be \\(R, 3\\)"):
        render_rays(ball_field, o, d[:3])


def test_the_scene_field_renders_the_sphere_traced_silhouette():
    """The procedural scene's exact field through the one renderer: its opacity is the sphere-traced
    alpha, and its pixels are the samples composited by hand."""
    views = scene_views(n_train=1, n_test=1, size=24)["train"]
    o, d = (x.reshape(-1, 3) for x in views.rays())
    field = Scene().radiance_field()
    out = render_rays(field, o, d, n_samples=64, n_importance=32, perturb=False, background=views.background)
    assert (out["acc"] - views.alpha.reshape(-1)).abs().mean() < 0.05
    sigma, rgb = query_field(field, o, d, out["t"])
    assert sigma.shape == (len(o), 96) and rgb.shape == (len(o), 96, 3)
    _, far, _ = ray_box(o, d)
    by_hand = volume_render(sigma, rgb, out["t"], far=far, background=torch.tensor(views.background))
    assert torch.allclose(by_hand["weights"], out["weights"], atol=1e-5)
    assert torch.allclose(by_hand["rgb"], out["rgb"], atol=1e-5)
