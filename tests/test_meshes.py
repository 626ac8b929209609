"""Tests of gen3d_course.data.meshes: loading, winding number, closest point, signed distance."""
import struct

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.data.meshes import (
    SUPPORTED_EXTENSIONS,
    MeshLoadError,
    MeshShape,
    closest_point_on_triangle,
    fast_winding_number,
    inside_mesh,
    load_mesh,
    load_mesh_folder,
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



# A pyramid with a square base, as PLY files from scanners and old tools write it: comments, an
# obj_info line, a material element between vertices and faces, a quad among the triangles.
PYRAMID_VERTICES = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0.5, 0.5, 1)]
PYRAMID_FACES = [(0, 3, 2, 1), (0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4)]


def wild_ply(fmt, comment="a pyramid with a quad base"):
    header = ["ply", f"format {fmt} 1.0", "comment zipper output", f"comment {comment}",
              "obj_info scanned by hand",
              "element vertex 5", "property float x", "property float y", "property float z",
              "property float confidence",
              "element material 1", "property uchar ambient_red", "property uchar ambient_green",
              "property uchar ambient_blue", "property float ambient_coeff",
              "element face 5", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode()
    if fmt == "ascii":
        rows = ([f"{x} {y} {z} 1" for x, y, z in PYRAMID_VERTICES] + ["255 128 0 0.5"]
                + [" ".join(map(str, (len(f), *f))) for f in PYRAMID_FACES])
        return head + ("\n".join(rows) + "\n").encode()
    return (head + b"".join(struct.pack("<4f", *v, 1.0) for v in PYRAMID_VERTICES)
            + struct.pack("<3Bf", 255, 128, 0, 0.5)
            + b"".join(struct.pack(f"<B{len(f)}i", len(f), *f) for f in PYRAMID_FACES))


@pytest.mark.parametrize("fmt, comment", [
    ("ascii", "a pyramid with a quad base"),
    ("binary_little_endian", "a pyramid with a quad base"),  # trimesh: "PLY is unexpected length!"
    ("ascii", "the data starts after end_header"),            # trimesh ends the header there
])
def test_ply_headers_from_the_wild_load(tmp_path, fmt, comment):
    path = tmp_path / "pyramid.ply"
    path.write_bytes(wild_ply(fmt, comment))
    mesh = load_mesh(path)
    assert len(mesh.faces) == 6 and mesh.is_watertight  # the quad became two triangles
    assert mesh.volume == pytest.approx(0.9 ** 3 / 3)     # 1 × 1 × 1 pyramid scaled to 0.9


def test_a_ply_neither_reader_takes_names_both_reasons(tmp_path):
    path = tmp_path / "truncated.ply"
    path.write_bytes(wild_ply("binary_little_endian")[:-10])
    with pytest.raises(MeshLoadError, match=r"truncated.ply: could not be read as .ply \(trimesh: .*; plyfile: .*\)"):
        load_mesh(path)


def test_a_folder_of_real_meshes_becomes_a_data_set_with_a_report(tmp_path):
    from gen3d_course.data import samples

    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "ball.obj")
    trimesh.creation.box(extents=[1, 2, 3]).export(tmp_path / "box.stl")
    trimesh.creation.cylinder(radius=0.3, height=1.0).export(tmp_path / "can.off")
    (tmp_path / "pyramid.ply").write_bytes(wild_ply("binary_little_endian"))
    (tmp_path / "broken.glb").write_bytes(GARBAGE)
    (tmp_path / "empty.obj").write_text("")
    (tmp_path / "readme.txt").write_text("not a mesh")
    folder = load_mesh_folder(tmp_path)
    assert [s.category for s in folder.shapes] == ["ball", "box", "can", "pyramid"]
    assert [name for name, _ in folder.skipped] == ["broken.glb", "empty.obj", "readme.txt"]
    assert len(folder.report) == 7 and "unsupported extension" in dict(folder.report)["readme.txt"]
    assert "ok: 6 faces" in str(folder)
    for shape in folder.shapes:  # DeepSDF and occupancy samples, as from procedural shapes
        points, sdf = samples.sdf_samples(shape, 256, seed=0)
        _, inside = samples.occupancy_samples(shape, 256, seed=0)
        assert points.shape == (256, 3) and np.isfinite(sdf).all() and 0 < inside.mean() < 1
        assert np.abs(sdf[:205]).mean() < 0.05  # the near-surface share is near the surface


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


def test_fast_winding_number_agrees_with_the_exact_sum(sphere):
    """libigl's far clusters as dipoles against the course's formula: |Δw| stays small, and the
    inside/outside answer is the same wherever the exact field is not itself ambiguous (a hole's
    mouth, w ≈ 0.5)."""
    rng = np.random.default_rng(5)
    for name, mesh in holed_and_chair_meshes(sphere).items():
        near, _ = trimesh.sample.sample_surface(mesh, 300, seed=1)
        points = np.vstack([rng.uniform(-0.5, 0.5, (700, 3)), near + rng.normal(0, 0.005, near.shape)])
        exact, fast = winding_number(mesh, points), fast_winding_number(mesh, points)
        assert np.abs(fast - exact).max() < 0.1, name
        clear = np.abs(exact - 0.5) > 0.1
        np.testing.assert_array_equal(fast[clear] >= 0.5, exact[clear] >= 0.5, err_msg=name)


@pytest.mark.parametrize("query", [winding_number, inside_mesh, fast_winding_number,
                                   lambda m, p: MeshShape(m).sdf(p)])
def test_nan_points_are_refused_with_their_row(sphere, query):
    points = random_points(5, seed=7)
    points[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 of 5 points are NaN or infinite \\(first at row 3\\)"):
        query(sphere, points)


def test_queries_of_a_mesh_without_faces_say_so():
    with pytest.raises(ValueError, match="no faces"):
        fast_winding_number(trimesh.Trimesh(), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="no faces"):
        MeshShape(trimesh.Trimesh())


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


def brute_force_closest(mesh, points):
    """The closest point over every face (the course's formula): the reference, at any cost."""
    best, closest = np.full(len(points), np.inf), np.zeros_like(points)
    for start in range(0, len(mesh.faces), 256):
        tri = mesh.triangles[start:start + 256]
        q = closest_point_on_triangle(points[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
        d = np.linalg.norm(q - points[:, None], axis=-1)
        k = d.argmin(axis=1)
        better = d[np.arange(len(points)), k] < best
        best[better], closest[better] = d[better, k[better]], q[better, k[better]]
    return best, closest


def cad_like_mesh():
    """Huge faces next to tiny ones, as CAD models have: a plate of 12 triangles and a finely
    tessellated knob on it (where the old nearest-centroid pruning was off by 0.15)."""
    plate = trimesh.creation.box(extents=[1.0, 0.1, 0.6])
    knob = trimesh.creation.icosphere(subdivisions=3, radius=0.04)
    knob.apply_translation([0.3, 0.09, 0.0])
    return normalize_mesh(trimesh.util.concatenate([plate, knob]))


def test_sdf_is_exact_where_huge_faces_meet_tiny_ones():
    mesh = cad_like_mesh()
    rng = np.random.default_rng(0)
    near, _ = trimesh.sample.sample_surface(mesh, 1000, seed=0)
    points = np.vstack([rng.uniform(-0.5, 0.5, (1000, 3)), near + rng.normal(0, 0.03, near.shape)])
    brute, _ = brute_force_closest(mesh, points)
    shape = MeshShape(mesh)
    distance, closest, faces = shape.closest_points(points)
    np.testing.assert_allclose(distance, brute, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(closest - points, axis=1), distance, atol=1e-9)
    on_face = closest_point_on_triangle(points, *np.moveaxis(mesh.triangles[faces], 1, 0))
    np.testing.assert_allclose(on_face, closest, atol=1e-9)  # the face reported holds the point
    sdf = shape.sdf(points)
    np.testing.assert_allclose(np.abs(sdf), brute, atol=1e-9)
    exact = winding_number(mesh, points)
    clear = np.abs(exact - 0.5) > 0.1
    np.testing.assert_array_equal(sdf[clear] < 0, exact[clear] >= 0.5)


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
