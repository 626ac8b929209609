"""Marching cubes puts surfaces where they belong in world coordinates."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gen3d_course.data.sdf import Sphere
from gen3d_course.geometry.extract import (edge_crossing, evaluate_grid, extract_mesh, grid_nodes, grid_to_world,
                                          marching_cubes)


@given(radius=st.floats(0.1, 0.4), cx=st.floats(-0.05, 0.05), res=st.sampled_from([24, 32, 48]))
@settings(max_examples=15, deadline=None)
def test_sphere_comes_out_with_the_right_radius_and_watertight(radius, cx, res):
    center = np.array([cx, 0.02, -0.03])
    mesh = extract_mesh(Sphere(center, radius), res=res)
    r = np.linalg.norm(mesh.vertices - center, axis=1)
    spacing = 1.0 / (res - 1)
    assert np.abs(r - radius).max() < 0.25 * spacing
    assert mesh.is_watertight
    volume_radius = (3 * mesh.volume / (4 * np.pi)) ** (1 / 3)
    assert volume_radius == pytest.approx(radius, abs=0.25 * spacing)


def test_custom_bounds_and_level():
    mesh = extract_mesh(Sphere([1.0, 1.0, 1.0], 0.2), res=32, level=0.1, bounds=(0.5, 1.5))
    assert np.linalg.norm(mesh.vertices - 1.0, axis=1).mean() == pytest.approx(0.3, abs=0.005)


def test_grid_order_is_ij():
    nodes = grid_nodes(3).reshape(3, 3, 3, 3)
    assert np.allclose(nodes[2, 0, 1], [0.5, -0.5, 0.0])


def test_torch_modules_and_tensors_are_accepted():
    class Field(torch.nn.Module):
        def forward(self, p):
            return p.norm(dim=1) - 0.3

    values = evaluate_grid(Field(), 16)
    assert values.shape == (16, 16, 16)
    assert marching_cubes(torch.from_numpy(values)).is_watertight


def test_clear_errors():
    with pytest.raises(ValueError, match="never crosses level 0.0.*outside"):
        marching_cubes(np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="never crosses.*inside"):
        marching_cubes(-np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        marching_cubes(np.full((8, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"shape \(8, 8\)"):
        marching_cubes(np.ones((8, 8)))
    with pytest.raises(ValueError, match="one value per point"):
        evaluate_grid(lambda p: p[:, :2].reshape(-1), 4)


# ------------------------------------------------------------------ the pieces unit 00 asks for
def test_edge_crossing_is_exact_for_a_linear_field():
    normal, offset = np.array([0.3, -0.5, 0.8]), 0.1
    x0, x1 = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 50, 3))
    crossing = edge_crossing(x0, x1, x0 @ normal - offset, x1 @ normal - offset, level=0.05)
    assert np.allclose(crossing @ normal - offset, 0.05)


def test_grid_to_world_puts_the_end_nodes_on_the_bounds():
    ends = grid_to_world(np.array([[0.0, 0.0, 0.0], [7.0, 3.0, 4.0]]), (8, 4, 5), ((-1, 0, 0), (1, 0.5, 2)))
    assert np.allclose(ends, [[-1, 0, 0], [1, 0.5, 2]])


def test_unit00_checks_pass_on_the_references_and_name_classic_mistakes():
    import torch

    from gen3d_course.checks import CheckFailure
    from gen3d_course.checks import representations as checks

    def to_world(v, res, lo, hi):
        return lo + v * (hi - lo) / (res - 1)

    def power_law(r, s):
        p, log_c = np.polyfit(np.log(r.numpy()), np.log(s.numpy()), 1)
        return float(p), float(np.exp(log_c))

    assert checks.check_edge_crossing(edge_crossing)
    assert checks.check_grid_to_world(to_world)
    assert checks.check_fit_power_law(power_law)
    mistakes = [
        (checks.check_edge_crossing, lambda x0, x1, f0, f1, level: (x0 + x1) / 2, "hint: your values match the edge.s midpoint"),
        (checks.check_edge_crossing, lambda x0, x1, f0, f1, level: edge_crossing(x0, x1, f0, f1, 0.0),
         "f = 0"),
        (checks.check_edge_crossing, lambda x0, x1, f0, f1, level: edge_crossing(x1, x0, f0, f1, level),
         "wrong end"),
        (checks.check_grid_to_world, lambda v, res, lo, hi: lo + v * (hi - lo) / res, "res − 1 intervals"),
        (checks.check_grid_to_world, lambda v, res, lo, hi: v * (hi - lo) / (res - 1), "add lo"),
        (checks.check_grid_to_world, lambda v, res, lo, hi: lo + (v + 0.5) * (hi - lo) / (res - 1),
         "cell centres"),
        (checks.check_fit_power_law, lambda r, s: power_law(r, s)[::-1], "exponent first"),
        (checks.check_fit_power_law, lambda r, s: (power_law(r, s)[0], float(np.log(power_law(r, s)[1]))),
         r"c = exp\(intercept\)"),
        (checks.check_fit_power_law, lambda r, s: (float(torch.log(s[-1] / s[0]) / torch.log(r[-1] / r[0])),
                                                   power_law(r, s)[1]), "first and last"),
        (checks.check_fit_power_law, lambda r, s: (torch.tensor(1.0), 1.0), "use .item"),
        (checks.check_fit_power_law, lambda r, s: None, "return"),
    ]
    for check, wrong, message in mistakes:
        with pytest.raises(CheckFailure, match=message):
            check(wrong)
