"""The shape collection and CSG primitives: exact distances, determinism, samples."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gen3d_course.data import samples
from gen3d_course.data.sdf import Box, Capsule, Cylinder, Sphere, Torus
from gen3d_course.data.shapes import CATEGORIES, PARAMETER_RANGES, make_shape, shape_collection

coords = st.floats(-1, 1, allow_nan=False)
point = st.tuples(coords, coords, coords)


@given(point)
def test_sphere_distance_is_exact(p):
    assert Sphere([0, 0, 0], 0.3)(np.array([p]))[0] == pytest.approx(np.linalg.norm(p) - 0.3)


@given(point)
def test_box_distance_matches_closest_point(p):
    box = Box([0.1, 0, 0], [0.2, 0.3, 0.1])
    p = np.array(p)
    closest = np.clip(p, [-0.1, -0.3, -0.1], [0.3, 0.3, 0.1])
    d = box(p[None])[0]
    if np.any(np.abs(p - [0.1, 0, 0]) > [0.2, 0.3, 0.1]):
        assert d == pytest.approx(np.linalg.norm(p - closest), abs=1e-9)
    else:
        assert d <= 0


def test_cylinder_capsule_torus_known_points():
    cyl = Cylinder([0, 0, 0], [0, 1, 0], 0.2)
    assert cyl(np.array([[0.5, 0.5, 0], [0, 1.3, 0], [0, 0.5, 0]])) == pytest.approx([0.3, 0.3, -0.2])
    cap = Capsule([0, 0, 0], [1, 0, 0], 0.1)
    assert cap(np.array([[0.5, 0.4, 0], [-0.3, 0, 0]])) == pytest.approx([0.3, 0.2])
    tor = Torus([0, 0, 0], 0.5, 0.1, axis="z")
    assert tor(np.array([[0.5, 0, 0], [0, 0, 0]])) == pytest.approx([-0.1, 0.4])


@given(point)
@settings(max_examples=50)
def test_csg_operators_follow_min_max(p):
    a, b = Sphere([0, 0, 0], 0.4), Box([0.3, 0, 0], [0.2, 0.2, 0.2])
    p = np.array([p])
    assert (a | b)(p) == pytest.approx(np.minimum(a(p), b(p)))
    assert (a & b)(p) == pytest.approx(np.maximum(a(p), b(p)))
    assert (a - b)(p) == pytest.approx(np.maximum(a(p), -b(p)))


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_fits_the_world_and_varies(category):
    shapes = [make_shape(category, seed) for seed in range(3)]
    assert len(PARAMETER_RANGES[category]) >= 3
    for shape in shapes:
        lo, hi = shape.solid.bounds()
        assert np.all(lo >= -0.45 - 1e-9) and np.all(hi <= 0.45 + 1e-9)
        assert np.max(hi - lo) == pytest.approx(0.9)
        mesh = samples.mesh_of(shape, res=48)
        assert mesh.is_watertight and mesh.volume > 0
        assert np.all(mesh.bounds[1] - mesh.bounds[0] <= 0.9 + 1e-6)
    volumes = [samples.voxelize(s, 24).mean() for s in shapes]
    assert np.ptp(volumes) > 0.002, "shapes of one category should differ"


def test_shapes_are_deterministic_and_overridable():
    a, b = make_shape("mug", 7), make_shape("mug", 7)
    assert a.params == b.params
    p = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3))
    assert np.array_equal(a.sdf(p), b.sdf(p))
    tall = make_shape("mug", 7, height=1.0)
    assert tall.params["height"] == 1.0 and tall.params["radius"] == a.params["radius"]
    with pytest.raises(ValueError, match="no parameter"):
        make_shape("mug", 0, wingspan=1.0)
    with pytest.raises(ValueError, match="Unknown category 'sofa'"):
        make_shape("sofa")
    assert len(shape_collection(2)) == 2 * len(CATEGORIES)


def test_voxelization_converges_to_analytic_volume():
    rng = np.random.default_rng(0)
    balls = [Sphere(rng.uniform(-0.05, 0.05, 3), rng.uniform(0.2, 0.4)) for _ in range(6)]

    def mean_error(res):
        errors = []
        for ball in balls:
            exact = 4 / 3 * np.pi * ball.radius**3
            voxels = samples.voxelize(type("Ball", (), {"sdf": ball}), res)
            errors.append(abs(voxels.mean() - exact) / exact)
        return np.mean(errors)

    errors = [mean_error(res) for res in (8, 16, 32, 64)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.002


def test_surface_points_lie_on_surface_with_outward_normals():
    shape = make_shape("chair", 3)
    points, normals = samples.surface_points(shape, 500, seed=1)
    assert points.shape == normals.shape == (500, 3)
    assert np.abs(shape.sdf(points)).max() < 1e-3
    assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-4)
    outward = shape.sdf(points + 0.01 * normals)
    assert (outward > 0).mean() > 0.98


def test_sdf_and_occupancy_samples():
    shape = make_shape("table", 1)
    points, sdf = samples.sdf_samples(shape, 1000, seed=0)
    assert points.shape == (1000, 3) and sdf.shape == (1000,)
    assert np.all(np.abs(points) <= 0.5)
    assert np.allclose(sdf, shape.sdf(points), atol=1e-6)
    assert (np.abs(sdf[:800]) < 0.1).mean() > 0.95  # near-surface part really is near
    p2, occ = samples.occupancy_samples(shape, 1000, seed=0)
    assert occ.dtype == bool and 0.05 < occ.mean() < 0.6
    assert np.array_equal(occ, shape.sdf(p2) < 0)
    again, _ = samples.sdf_samples(shape, 1000, seed=0)
    assert np.array_equal(points, again)


@pytest.mark.parametrize("category", CATEGORIES)
def test_mesh_of_equals_the_dense_grid_mesh(category):
    """mesh_of refines only near the surface; an exact distance makes that the dense mesh."""
    from gen3d_course.geometry.extract import extract_mesh

    for seed in (0, 11):
        shape = make_shape(category, seed)
        fast, dense = samples.mesh_of(shape, res=64), extract_mesh(shape.sdf, res=64)
        assert np.array_equal(fast.faces, dense.faces)
        assert np.allclose(fast.vertices, dense.vertices, atol=1e-6)
