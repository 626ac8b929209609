"""render.sphere_tracing: hits, silhouettes, shading and the SDF gradient."""
import numpy as np
import pytest

from gen3d_course.data.sdf import Sphere
from gen3d_course.render.cameras import focal_from_fov, look_at
from gen3d_course.render.sphere_tracing import render_rgba, render_views, sphere_trace


def _colour_of_point(shape, point, eye, light, specular):
    """Colour of the pixel that sees ``point`` from a camera at ``eye`` (64×64, f = 64)."""
    c2w = look_at(eye)
    cam = np.linalg.inv(c2w.double().numpy()) @ np.append(point, 1.0)
    u, v = 64 * cam[0] / -cam[2] + 32, -64 * cam[1] / -cam[2] + 32
    image = render_rgba(shape, (0.5, 0.5, 0.5), c2w, 64, 64, 64.0, light=light, specular=specular)
    return image["rgb"][int(v), int(u)]


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


def test_render_rgba_of_a_lit_sphere():
    ball = type("Ball", (), {"sdf": Sphere([0, 0, 0], 0.3)})()
    c2w = look_at([0.0, 0.0, 2.0])
    out = render_rgba(ball, (1.0, 0.5, 0.0), c2w, 64, 48, focal=80.0, light=(0, 0, 1), ambient=0.2)
    assert out["rgb"].shape == (48, 64, 3) and out["alpha"].shape == (48, 64)
    # silhouette area ≈ π (f r / sqrt(d² − r²))² pixels
    expected = np.pi * (80.0 * 0.3 / np.sqrt(2.0**2 - 0.3**2)) ** 2
    assert out["alpha"].sum() == pytest.approx(expected, rel=0.05)
    assert np.allclose(out["rgb"][24, 32], [1.0, 0.5, 0.0], atol=0.01)  # facing the light
    assert out["depth"][24, 32] == pytest.approx(1.7, abs=1e-3) and out["rgb"][0, 0].sum() == 0


def test_specular_makes_colour_depend_on_the_view():
    ball = type("Ball", (), {"sdf": Sphere([0, 0, 0], 0.3)})()
    normal = np.array([0.3, 0.3, 0.9]) / np.linalg.norm([0.3, 0.3, 0.9])
    point, eyes = 0.3 * normal, (2.0 * normal, np.array([1.3, 0.4, 1.6]))
    for specular, differs in ((0.0, False), (0.6, True)):
        a, b = (_colour_of_point(ball, point, eye, normal, specular) for eye in eyes)
        assert (np.abs(a - b).max() > 0.2) == differs, (specular, a, b)
