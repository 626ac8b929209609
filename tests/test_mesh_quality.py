"""geometry.mesh_quality: self-intersecting and flipped faces."""
import numpy as np
import pytest
import trimesh

from gen3d_course.geometry.mesh_quality import flipped_faces, self_intersecting_faces


def test_a_clean_sphere_has_no_bad_faces():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    assert not self_intersecting_faces(sphere.vertices, sphere.faces).any()
    centroids = sphere.vertices[sphere.faces].mean(axis=1)
    assert not flipped_faces(sphere.vertices, sphere.faces, centroids).any()
    assert flipped_faces(sphere.vertices, sphere.faces[:, ::-1], centroids).all()  # reversed winding


def test_two_crossing_triangles_are_found_and_touching_ones_are_not():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0],                 # in the plane z = 0
                         [0.2, 0.2, -0.5], [0.2, 0.2, 0.5], [0.9, 0.9, 0.0],  # pierces the first
                         [1, 0, 2], [2, 0, 2], [1, 1, 2]], dtype=float)      # far from both
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    assert self_intersecting_faces(vertices, faces).tolist() == [True, True, False]
    fan = np.array([[0, 1, 2], [0, 2, 5]])  # share vertices 0 and 2: touching, not crossing
    assert not self_intersecting_faces(vertices, fan).any()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        self_intersecting_faces(np.zeros((3, 2)), np.zeros((1, 3), dtype=int))
    with pytest.raises(ValueError, match="one direction per face"):
        flipped_faces(np.eye(3), np.array([[0, 1, 2]]), np.zeros((2, 3)))
