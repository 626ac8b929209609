"""MISE gives the dense grid's mesh for a fraction of the queries, and its refinement rule is
exactly "the cells whose corners disagree"."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gen3d_course.data.sdf import Box, Capsule, Sphere
from gen3d_course.data.shapes import make_shape
from gen3d_course.geometry.extract import evaluate_grid, marching_cubes
from gen3d_course.geometry.mise import (boundary_cells, final_resolution, grid_iou, mesh_agreement,
                                        mise, mise_grid, upsample2)


class Counting:
    """A field that counts how many points it was asked about."""

    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, points):
        self.calls += len(points)
        return self.field(points)


def test_boundary_cells_by_hand():
    values = np.ones((3, 3, 3), dtype=np.float32)
    values[0, 0, 0] = -1.0  # one inside node: only the corner cell sees a change
    active = boundary_cells(values)
    assert active.shape == (2, 2, 2) and active.dtype == bool
    assert active.sum() == 1 and active[0, 0, 0]
    assert not boundary_cells(np.ones((3, 3, 3))).any()
    assert not boundary_cells(-np.ones((3, 3, 3))).any()
    values[1, 1, 1] = -1.0  # the centre node is a corner of all 8 cells
    assert boundary_cells(values).all()


def test_boundary_cells_level_convention_and_torch():
    values = torch.zeros(2, 2, 2)
    values[0, 0, 0] = -1.0
    # value == level counts as outside: a cell with one node below and seven at the level is crossed
    assert boundary_cells(values, 0.0).tolist() == [[[True]]]
    assert boundary_cells(values, -1.0).tolist() == [[[False]]]  # nothing below -1
    assert isinstance(boundary_cells(values), torch.Tensor)
    with pytest.raises(ValueError, match="expected an"):
        boundary_cells(torch.zeros(4, 4))


def test_upsample_keeps_nodes_and_is_exact_for_trilinear_fields():
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(5, 5, 5)).astype(np.float32)
    fine = upsample2(coarse)
    assert fine.shape == (9, 9, 9)
    assert np.array_equal(fine[::2, ::2, ::2], coarse)
    axis = np.linspace(0, 1, 5)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    f = lambda x, y, z: 1 + 2 * x - y + 0.5 * z + 3 * x * y * z  # noqa: E731 (trilinear)
    axis2 = np.linspace(0, 1, 9)
    assert np.allclose(upsample2(f(x, y, z)), f(*np.meshgrid(axis2, axis2, axis2, indexing="ij")))


@given(radius=st.floats(0.15, 0.4), cx=st.floats(-0.05, 0.05), cz=st.floats(-0.05, 0.05))
@settings(max_examples=10, deadline=None)
def test_mise_gives_the_dense_mesh_of_a_sphere(radius, cx, cz):
    sphere = Sphere([cx, 0.01, cz], radius)
    res = final_resolution(9, 2)
    dense = evaluate_grid(sphere, res)
    dense_mesh = marching_cubes(dense)
    for dilate in (0, 1):
        field = Counting(sphere)
        grid = mise_grid(field, start_res=9, levels=2, dilate=dilate)
        assert grid.res == res == 33
        assert field.calls == grid.queries == grid.evaluated.sum() < res ** 3
        assert np.array_equal(grid.values[grid.evaluated], dense[grid.evaluated])
        mesh = marching_cubes(grid.values)
        assert len(mesh.faces) == len(dense_mesh.faces)
        if dilate:  # refining the neighbours too: every vertex is the dense grid's vertex
            assert grid_iou(grid.values, dense) == 1.0
            assert mesh_agreement(dense_mesh, mesh) == 1.0
            assert mesh_agreement(mesh, dense_mesh) == 1.0
        else:  # the paper's rule: where the surface grazes an unrefined cell, a vertex can move
            assert grid_iou(grid.values, dense) > 0.999
            assert mesh_agreement(dense_mesh, mesh) > 0.99


@pytest.mark.parametrize("category", ["chair", "mug"])
def test_mise_on_a_course_shape_at_65_cubed(category):
    shape = make_shape(category, 1)
    field = Counting(shape.sdf)
    mesh, queries = mise(field, start_res=33, levels=1)
    dense = marching_cubes(evaluate_grid(shape.sdf, 65))
    assert queries == field.calls
    assert queries < 0.5 * 65 ** 3
    assert len(mesh.faces) == len(dense.faces)
    assert mesh_agreement(dense, mesh) > 0.995
    assert mesh.is_watertight == dense.is_watertight


def test_mise_at_128_cubed_uses_few_queries_for_the_same_surface():
    solid = Capsule([-0.3, -0.2, 0.0], [0.3, 0.2, 0.0], 0.08) | Box([0, 0.25, 0], [0.3, 0.05, 0.2])
    dense = evaluate_grid(solid, 129)
    plain, dilated = mise_grid(solid, start_res=33, levels=2), mise_grid(solid, 33, 2, dilate=1)
    assert plain.queries < dilated.queries < 129 ** 3 / 5
    assert grid_iou(plain.values, dense) > 0.9999
    assert grid_iou(dilated.values, dense) == 1.0
    assert mesh_agreement(marching_cubes(dense), marching_cubes(dilated.values)) == 1.0


def test_an_occupancy_field_works_like_an_sdf():
    sphere = Sphere([0.02, 0.0, -0.01], 0.3)

    def occupancy(points):  # 1 inside, 0 outside: minus it is "smaller inside", level -0.5
        return (sphere(points) < 0).astype(np.float32)

    grid = mise_grid(lambda p: -occupancy(p), start_res=9, levels=2, level=-0.5)
    dense = -evaluate_grid(occupancy, 33)
    assert grid_iou(grid.values, dense, level=-0.5) == 1.0
    assert mesh_agreement(marching_cubes(dense, -0.5), marching_cubes(grid.values, -0.5)) == 1.0


def test_a_part_thinner_than_the_coarse_spacing_between_nodes_is_missed():
    # The documented limitation: a coarse grid that never sees a part cannot refine it.
    body, speck = Sphere([0, 0, 0], 0.25), Sphere([0.4375, 0.4375, 0.4375], 0.03)
    grid = mise_grid(body | speck, start_res=9, levels=2)
    dense = evaluate_grid(body | speck, 33)
    assert (dense < 0).sum() > (grid.values < 0).sum()
    assert grid_iou(grid.values, dense) < 1.0


def test_dilate_refines_more_cells_and_select_hook_is_checked():
    sphere = Sphere([0, 0, 0], 0.3)
    plain, dilated = mise_grid(sphere, 9, 2), mise_grid(sphere, 9, 2, dilate=1)
    assert dilated.queries > plain.queries
    assert dilated.active_per_level[0] > plain.active_per_level[0]
    with pytest.raises(ValueError, match="cell selection"):
        mise_grid(sphere, 9, 1, select=lambda v, level: torch.zeros(3, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        mise_grid(lambda p: np.full(len(p), np.nan, np.float32), 5, 1)
