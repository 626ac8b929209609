"""Is a mesh a valid surface? Self-intersecting and flipped faces, counted.

A mesh made by deforming a template (a sphere pushed onto a shape, as AtlasNet's patches or
Pixel2Mesh's ellipsoid are) keeps the template's connectivity but not a valid embedding: where
vertices converge or cross, triangles fold over and pass through each other. Marching cubes
never produces such faces; a deformed template often does, so the course measures them.
"""
from __future__ import annotations

import igl
import numpy as np


def _overlapping_boxes(lo: np.ndarray, hi: np.ndarray, chunk: int = 512):
    """Index pairs (i < j) whose axis-aligned boxes overlap, found a block of rows at a time."""
    pairs = []
    for start in range(0, len(lo), chunk):
        rows = slice(start, start + chunk)
        overlap = ((lo[rows, None] <= hi[None]) & (hi[rows, None] >= lo[None])).all(axis=-1)
        i, j = np.nonzero(overlap)
        i = i + start
        keep = j > i
        pairs.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=int)


def self_intersecting_faces(vertices, faces) -> np.ndarray:
    """(F,) bool: the faces that cross another face they share no vertex with.

    Candidate pairs are those whose bounding boxes overlap; each is tested exactly with libigl's
    triangle–triangle test (Möller 1997). Faces that share a vertex or an edge touch by
    construction and are not counted (a fold along a shared edge shows up in ``flipped_faces``).
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"self_intersecting_faces: vertices {vertices.shape} and faces {faces.shape} "
                         "must be (V, 3) and (F, 3).")
    corners = vertices[faces]                                              # (F, 3, 3)
    pairs = _overlapping_boxes(corners.min(axis=1), corners.max(axis=1))
    shared = (faces[pairs[:, 0], :, None] == faces[pairs[:, 1], None, :]).any(axis=(1, 2))
    crossing = np.zeros(len(faces), dtype=bool)
    for i, j in pairs[~shared]:
        a, b = corners[i], corners[j]
        hit = igl.tri_tri_intersection_test_3d(a[:1], a[1:2], a[2:], b[:1], b[1:2], b[2:])[0]
        if hit:
            crossing[i] = crossing[j] = True
    return crossing


def flipped_faces(vertices, faces, outward) -> np.ndarray:
    """(F,) bool: faces whose normal (right-hand rule, v0 → v1 → v2) points against ``outward``
    (F, 3), e.g. a target shape's SDF gradient at the face centroids: the face was folded over."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    outward = np.asarray(outward, dtype=np.float64)
    if outward.shape != (len(faces), 3):
        raise ValueError(f"flipped_faces: outward {outward.shape} must be one direction per face, ({len(faces)}, 3).")
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    return (normals * outward).sum(axis=1) < 0
