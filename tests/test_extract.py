"""Marching cubes puts surfaces where they belong in world coordinates."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gen3d_course.data.sdf import Sphere
from gen3d_course.geometry.extract import evaluate_grid, extract_mesh, grid_nodes, marching_cubes


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
