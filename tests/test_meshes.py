"""Tests of gen3d_course.data.meshes: loading, winding number, closest point, signed distance."""
import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.data.meshes import (
    SUPPORTED_EXTENSIONS,
    MeshLoadError,
    MeshShape,
    WindingTree,
    closest_point_on_triangle,
    inside_mesh,
    load_mesh,
    normalize_mesh,
    winding_number,
)

RADIUS = 0.3


@pytest.fixture(scope="module")
def sphere():
    """A normalised icosphere (5120 faces); all its vertices lie on a sphere about the origin."""
    return normalize_mesh(trimesh.creation.icosphere(subdivisions=4, radius=RADIUS))


def sphere_radius_and_sagitta(mesh):
    """Circumscribed radius r and h = r − (closest face plane to the centre).

    The polyhedron lies between the spheres of radius r − h and r, so its inside/outside and
    distance agree with the sphere's |p| − r up to h.
    """
    r = np.linalg.norm(mesh.vertices, axis=1).max()
    plane_distance = np.abs(np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles[:, 0]))
    return r, r - plane_distance.min()


def random_points(n, seed):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, 3))


# ---------------------------------------------------------------------------------- loading


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_load_formats_roundtrip_and_normalise(tmp_path, ext):
    original = trimesh.creation.icosphere(subdivisions=3, radius=RADIUS)
    original.apply_translation([1.0, -2.0, 3.0])
    path = tmp_path / f"ball{ext}"
    original.export(path)

    mesh = load_mesh(path)

    assert isinstance(mesh, trimesh.Trimesh)
    assert len(mesh.faces) == len(original.faces)
    assert len(mesh.vertices) == len(original.vertices)  # STL's per-face copies are merged
    lo, hi = mesh.bounds
    assert np.max(hi - lo) == pytest.approx(0.9)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-9)
    assert mesh.is_watertight


def test_load_glb_scene_concatenates_geometry(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=[1, 1, 1]), node_name="left",
                       transform=trimesh.transformations.translation_matrix([-1, 0, 0]))
    scene.add_geometry(trimesh.creation.box(extents=[1, 1, 1]), node_name="right",
                       transform=trimesh.transformations.translation_matrix([2, 0, 0]))
    path = tmp_path / "two_boxes.glb"
    scene.export(path)

    mesh = load_mesh(path)

    assert len(mesh.faces) == 24
    # Together the boxes span x in [-1.5, 2.5] (4 units): scaled to 0.9, y and z get 0.9 / 4.
    np.testing.assert_allclose(mesh.extents, [0.9, 0.225, 0.225], atol=1e-9)
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)


def test_normalize_mesh_keeps_proportions_and_input():
    box = trimesh.creation.box(extents=[2.0, 1.0, 0.5])
    box.apply_translation([5.0, 5.0, -1.0])
    before = box.vertices.copy()

    out = normalize_mesh(box, extent=0.8)

    np.testing.assert_allclose(out.extents, [0.8, 0.4, 0.2], atol=1e-12)
    np.testing.assert_allclose(out.bounds.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_array_equal(box.vertices, before)


def test_normalize_mesh_zero_size_raises():
    point_mesh = trimesh.Trimesh(vertices=np.ones((3, 3)), faces=[[0, 1, 2]], process=False)
    with pytest.raises(ValueError, match="zero size"):
        normalize_mesh(point_mesh)


def write_text(text):
    return lambda path: path.write_text(text)


GARBAGE = np.random.default_rng(0).bytes(2048)
ERROR_CASES = [
    ("missing.obj", None, "not found"),
    ("notes.txt", write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"),
     "unsupported extension '.txt'; supported: .obj, .off, .ply, .stl, .glb"),
    ("garbage.obj", lambda p: p.write_bytes(GARBAGE), "could not be read"),
    ("garbage.ply", lambda p: p.write_bytes(GARBAGE), "could not be read as .ply"),
    ("points.obj", write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n"), "has no triangles"),
    ("nan.obj", write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n"), "NaN or infinite"),
    ("inf.off", write_text("OFF\n3 1 0\n0 0 0\ninf 0 0\n0 1 0\n3 0 1 2\n"),
     "NaN or infinite"),
    ("flat_point.obj", write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n"), "zero size"),
]


@pytest.mark.parametrize("filename, write, reason", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_load_errors_name_file_and_reason(tmp_path, filename, write, reason):
    path = tmp_path / filename
    if write is not None:
        write(path)
    with pytest.raises(MeshLoadError) as info:
        load_mesh(path)
    message = str(info.value)
    assert filename in message
    assert reason in message
    assert isinstance(info.value, ValueError)


def test_load_error_chains_trimesh_exception(tmp_path):
    path = tmp_path / "garbage.glb"
    path.write_bytes(GARBAGE)
    with pytest.raises(MeshLoadError, match="garbage.glb") as info:
        load_mesh(path)
    assert info.value.__cause__ is not None


# --------------------------------------------------------------------------- winding number


def test_winding_number_sphere_is_one_inside_zero_outside(sphere):
    r, h = sphere_radius_and_sagitta(sphere)
    points = random_points(800, seed=1)
    radius = np.linalg.norm(points, axis=1)
    clear = np.abs(radius - r) > h  # same side of the polyhedron and of the true sphere
    assert clear.sum() >= 500

    w = winding_number(sphere, points)

    np.testing.assert_allclose(w[clear], (radius[clear] < r).astype(float), atol=1e-9)
    np.testing.assert_array_equal(inside_mesh(sphere, points)[clear], radius[clear] < r)


def test_winding_number_chunking_does_not_change_result(sphere):
    points = random_points(50, seed=2)
    np.testing.assert_allclose(winding_number(sphere, points, chunk=7),
                               winding_number(sphere, points), atol=1e-12)


def test_winding_number_agrees_with_trimesh_contains(sphere):
    pytest.importorskip("rtree")  # trimesh's ray tests need rtree (or embree)
    points = random_points(600, seed=3)
    np.testing.assert_array_equal(inside_mesh(sphere, points), sphere.contains(points))


def test_winding_number_tolerates_a_hole(sphere):
    """Delete the top 10% of faces: ray parity breaks, the winding number barely notices."""
    r, h = sphere_radius_and_sagitta(sphere)
    top = sphere.triangles_center[:, 2]
    cut = np.quantile(top, 0.9)
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[top <= cut], process=False)
    assert not holed.is_watertight  # so trimesh's contains() would not be valid here
    assert len(holed.faces) == pytest.approx(0.9 * len(sphere.faces), rel=0.01)

    points = random_points(1500, seed=4)
    radius = np.linalg.norm(points, axis=1)
    hole_centre = np.array([0.0, 0.0, cut])
    away = (np.abs(radius - r) > h) & (np.linalg.norm(points - hole_centre, axis=1) > 0.15)
    assert away.sum() >= 500

    agree = inside_mesh(holed, points[away]) == (radius[away] < r)

    assert agree.mean() >= 0.97
    # In the mouth of the hole the field is halfway; deep inside it is still well above 0.5.
    w_mouth, w_centre = winding_number(holed, [hole_centre, [0.0, 0.0, 0.0]])
    assert w_mouth == pytest.approx(0.5, abs=0.05)
    assert 0.8 < w_centre < 1.0


def holed_and_chair_meshes(sphere):
    from gen3d_course.data.samples import mesh_of
    from gen3d_course.data.shapes import make_shape

    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[sphere.triangles_center[:, 2] < 0.2],
                            process=False)
    return {"sphere": sphere, "holed sphere": holed, "chair": mesh_of(make_shape("chair", 7), res=32)}


def test_winding_tree_agrees_with_the_exact_sum(sphere):
    """Far patches as dipoles: |Δw| stays small, and the inside/outside answer is the same
    wherever the exact field is not itself ambiguous (a hole's mouth, w ≈ 0.5)."""
    rng = np.random.default_rng(5)
    for name, mesh in holed_and_chair_meshes(sphere).items():
        near, _ = trimesh.sample.sample_surface(mesh, 300, seed=1)
        points = np.vstack([rng.uniform(-0.5, 0.5, (700, 3)), near + rng.normal(0, 0.005, near.shape)])
        exact, fast = winding_number(mesh, points), WindingTree(mesh)(points)
        assert np.abs(fast - exact).max() < 0.1, name
        clear = np.abs(exact - 0.5) > 0.1
        np.testing.assert_array_equal(fast[clear] >= 0.5, exact[clear] >= 0.5, err_msg=name)


def test_winding_tree_with_no_far_patch_is_the_exact_sum(sphere):
    points = random_points(200, seed=6)
    np.testing.assert_allclose(WindingTree(sphere, beta=np.inf)(points),
                               winding_number(sphere, points), atol=1e-12)


@pytest.mark.parametrize("query", [winding_number, inside_mesh, lambda m, p: WindingTree(m)(p),
                                   lambda m, p: MeshShape(m).sdf(p)])
def test_nan_points_are_refused_with_their_row(sphere, query):
    points = random_points(5, seed=7)
    points[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 5 points are NaN or infinite \\(first at row 3\\)"):
        query(sphere, points)


def test_winding_tree_of_a_mesh_without_faces_says_so():
    with pytest.raises(ValueError, match="no faces"):
        WindingTree(trimesh.Trimesh())


CLOSED_MESHES = {
    "sphere": normalize_mesh(trimesh.creation.icosphere(subdivisions=2)),
    "box": normalize_mesh(trimesh.creation.box(extents=[1.0, 0.3, 0.6])),
    "torus": normalize_mesh(trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)),
}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(CLOSED_MESHES)),
    direction=st.tuples(*[st.floats(-1, 1) for _ in range(3)]).filter(
        lambda d: np.linalg.norm(d) > 1e-3),
    distance=st.floats(0.8, 1e3),
)
def test_winding_number_far_outside_is_zero(name, direction, distance):
    # The normalised meshes lie in [-0.45, 0.45]³, whose corners are 0.78 from the origin.
    point = distance * np.asarray(direction) / np.linalg.norm(direction)
    assert abs(winding_number(CLOSED_MESHES[name], point[None])[0]) < 1e-9


# ------------------------------------------------------------------------- closest point


def test_closest_point_on_triangle_voronoi_regions():
    a, b, c = np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    cases = {
        (0.2, 0.2, 1.0): (0.2, 0.2, 0.0),  # face
        (-1.0, -1.0, 0.0): (0, 0, 0),      # vertex a
        (2.0, -0.1, 0.3): (1, 0, 0),       # vertex b
        (-0.1, 3.0, 0.0): (0, 1, 0),       # vertex c
        (0.5, -1.0, 0.0): (0.5, 0, 0),     # edge ab
        (-1.0, 0.5, 2.0): (0, 0.5, 0),     # edge ac
        (1.0, 1.0, -1.0): (0.5, 0.5, 0),   # edge bc
    }
    points = np.array(list(cases))
    np.testing.assert_allclose(closest_point_on_triangle(points, a, b, c),
                               np.array(list(cases.values()), dtype=float), atol=1e-12)


def test_closest_point_on_triangle_matches_dense_sampling():
    rng = np.random.default_rng(5)
    n = 120
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1))
    keep = i + j <= n
    bary_v, bary_w = i[keep] / n, j[keep] / n  # a barycentric grid covering the triangle
    for _ in range(8):
        a, b, c = rng.normal(size=(3, 3))
        samples = a + bary_v[:, None] * (b - a) + bary_w[:, None] * (c - a)
        spacing = max(np.linalg.norm(b - a), np.linalg.norm(c - a), np.linalg.norm(c - b)) / n
        points = rng.normal(scale=2.0, size=(60, 3))

        closest = closest_point_on_triangle(points, a, b, c)
        ours = np.linalg.norm(closest - points, axis=1)
        brute = np.linalg.norm(points[:, None] - samples[None], axis=-1).min(axis=1)

        assert np.all(ours <= brute + 1e-12)  # nothing on the triangle is closer
        assert np.all(ours >= brute - spacing)  # and the sample grid gets within one step
        # The answer lies on the triangle: solve for its barycentric coordinates.
        coords, *_ = np.linalg.lstsq(np.stack([b - a, c - a], axis=1), (closest - a).T, rcond=None)
        assert np.all(coords >= -1e-9) and np.all(coords.sum(axis=0) <= 1 + 1e-9)


def test_closest_point_on_degenerate_triangle_is_finite():
    a, b, c = np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([2.0, 0, 0])
    points = np.array([[0.5, 1.0, 0.0], [3.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(closest_point_on_triangle(points, a, b, c),
                               [[0.5, 0, 0], [2, 0, 0], [0, 0, 0]], atol=1e-12)


# ----------------------------------------------------------------------- signed distance


def test_sdf_of_loaded_sphere_matches_analytic(tmp_path):
    path = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=4, radius=RADIUS).export(path)
    shape = MeshShape.from_file(path)
    assert shape.category == "ball"
    r, h = sphere_radius_and_sagitta(shape.mesh)
    points = random_points(600, seed=6)
    analytic = np.linalg.norm(points, axis=1) - r

    sdf = shape.sdf(points)

    assert np.all(np.abs(sdf - analytic) <= h + 1e-9)
    clear = np.abs(analytic) > h
    np.testing.assert_array_equal(np.sign(sdf[clear]), np.sign(analytic[clear]))


def test_sdf_pruning_agrees_with_all_faces(sphere):
    points = random_points(100, seed=7)
    pruned = MeshShape(sphere).sdf(points)
    exact = MeshShape(sphere, k_nearest=len(sphere.faces)).sdf(points)
    # Documented bound: never below the exact distance, above by at most the largest face radius.
    face_radius = np.linalg.norm(sphere.triangles - sphere.triangles_center[:, None], axis=-1).max()
    assert np.all(np.abs(pruned) >= np.abs(exact) - 1e-12)
    assert np.all(np.abs(pruned) <= np.abs(exact) + face_radius)
    np.testing.assert_allclose(pruned, exact, atol=1e-12)  # on a regular mesh it is exact


def test_sdf_of_box_at_known_points():
    shape = MeshShape(normalize_mesh(trimesh.creation.box(extents=[2.0, 1.0, 1.0])))
    # The normalised box is [-0.45, 0.45] × [-0.225, 0.225]².
    points = {
        (0.0, 0.0, 0.0): -0.225,
        (0.4, 0.0, 0.0): -0.05,
        (0.45, 0.1, 0.0): 0.0,
        (0.6, 0.0, 0.0): 0.15,
        (0.0, 0.325, 0.0): 0.1,
        (0.55, 0.325, 0.0): np.sqrt(2) * 0.1,
        (-0.55, -0.325, 0.325): np.sqrt(3) * 0.1,
    }
    np.testing.assert_allclose(shape.sdf(np.array(list(points))), list(points.values()), atol=1e-12)


def test_sdf_rejects_badly_shaped_points(sphere):
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        MeshShape(sphere).sdf(np.zeros((4, 2)))
