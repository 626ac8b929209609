"""Camera convention and sphere tracing."""
import numpy as np
import pytest
import torch

from gen3d_course.data.sdf import Sphere
from gen3d_course.render.cameras import focal_from_fov, look_at, orbit_poses, pixel_rays
from gen3d_course.render.sphere_tracing import render_views, sphere_trace


def test_look_at_is_a_rigid_transform_looking_down_minus_z():
    c2w = look_at([0.0, 0.0, 2.0])
    assert torch.allclose(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-6)
    assert torch.allclose(c2w[:3, 2], torch.tensor([0.0, 0.0, 1.0]))  # back = +z
    origins, dirs = pixel_rays(c2w, 5, 5, focal=5.0)
    assert torch.allclose(dirs[2, 2], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert dirs[0, 2, 1] > 0 and dirs[2, 0, 0] < 0  # top row looks up, left column looks left
    assert torch.allclose(origins, torch.tensor([0.0, 0.0, 2.0]).expand(5, 5, 3))
    with pytest.raises(ValueError, match="parallel"):
        look_at([0.0, 2.0, 0.0])


def test_orbit_poses_look_at_origin():
    poses = orbit_poses(6, radius=1.5, elevation_deg=20)
    eyes = poses[:, :3, 3]
    assert torch.allclose(eyes.norm(dim=1), torch.full((6,), 1.5), atol=1e-5)
    forward = -poses[:, :3, 2]
    assert torch.allclose(forward, -eyes / eyes.norm(dim=1, keepdim=True), atol=1e-5)


def test_focal_from_fov():
    assert focal_from_fov(100, 90) == pytest.approx(50)


def test_sphere_trace_hits_a_sphere_at_the_right_distance():
    ball = type("Ball", (), {"sdf": Sphere([0, 0, 0], 0.3)})
    origins = np.array([[0, 0, 2.0], [0, 0.5, 2.0]])
    dirs = np.array([[0, 0, -1.0], [0, 0, -1.0]])
    t, hit = sphere_trace(ball, origins, dirs)
    assert hit.tolist() == [True, False]
    assert t[0] == pytest.approx(1.7, abs=2e-3)


def test_render_views_silhouette_area_matches_projection():
    ball = type("Ball", (), {"sdf": Sphere([0, 0, 0], 0.3)})
    size, fov = 64, 40.0
    views = render_views(ball, look_at([0.0, 0.0, 2.0]), size=size, fov_deg=fov)
    f = focal_from_fov(size, fov)
    expected_radius_px = f * 0.3 / np.sqrt(2.0**2 - 0.3**2)
    assert views["mask"].sum() == pytest.approx(np.pi * expected_radius_px**2, rel=0.05)
    assert views["depth"][views["mask"]].min() == pytest.approx(1.7, abs=5e-3)
    assert 0 < views["shaded"].max() <= 1
