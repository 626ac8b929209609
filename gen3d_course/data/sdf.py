"""Signed distance functions of primitives, combined by constructive solid geometry (CSG).

Convention: negative inside, zero on the surface, positive outside. Each primitive's value is
the exact Euclidean signed distance. The CSG operators use min / max, which keeps the zero set
exact but makes the value a *bound* of the true distance away from the surface (it never
over-estimates, which is what sphere tracing needs).

Every node knows an axis-aligned box that contains its solid (``bounds()``), so a shape can be
normalised into the world cube without sampling. Build shapes with operators:
``a | b`` (union), ``a & b`` (intersection), ``a - b`` (difference).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


def _as_points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"SDF: points have shape {points.shape}; expected (N, 3).")
    return points


def _length(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(v * v, axis=-1))


class SDF(ABC):
    """A solid given by its signed distance. Call it on (N, 3) points to get (N,) distances."""

    def __call__(self, points) -> np.ndarray:
        return self.distance(_as_points(points))

    @abstractmethod
    def distance(self, p: np.ndarray) -> np.ndarray:
        """Signed distance of validated (N, 3) points."""

    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Corners (lo, hi) of an axis-aligned box that contains the solid."""

    def __or__(self, other: "SDF") -> "SDF":
        return Union(self, other)

    def __and__(self, other: "SDF") -> "SDF":
        return Intersection(self, other)

    def __sub__(self, other: "SDF") -> "SDF":
        return Difference(self, other)


class Sphere(SDF):
    """|p − c| − r."""

    def __init__(self, center, radius):
        self.center, self.radius = np.asarray(center, float), float(radius)

    def distance(self, p):
        return _length(p - self.center) - self.radius

    def bounds(self):
        return self.center - self.radius, self.center + self.radius


class Box(SDF):
    """Axis-aligned box with half-sizes h, optionally with edges rounded by ``rounding``.

    q = |p − c| − h;  d = |max(q, 0)| + min(max_k q_k, 0) − rounding.
    """

    def __init__(self, center, half_size, rounding=0.0):
        self.center, self.half = np.asarray(center, float), np.asarray(half_size, float)
        self.rounding = float(rounding)

    def distance(self, p):
        q = np.abs(p - self.center) - (self.half - self.rounding)
        outside = _length(np.maximum(q, 0.0))
        inside = np.minimum(q.max(axis=1), 0.0)
        return outside + inside - self.rounding

    def bounds(self):
        return self.center - self.half, self.center + self.half


class Capsule(SDF):
    """Points within distance r of the segment ab: |p − closest point on ab| − r."""

    def __init__(self, a, b, radius):
        self.a, self.b, self.radius = np.asarray(a, float), np.asarray(b, float), float(radius)

    def distance(self, p):
        pa, ba = p - self.a, self.b - self.a
        t = np.clip(pa @ ba / (ba @ ba), 0.0, 1.0)
        return _length(pa - t[:, None] * ba) - self.radius

    def bounds(self):
        lo, hi = np.minimum(self.a, self.b), np.maximum(self.a, self.b)
        return lo - self.radius, hi + self.radius


class Cylinder(SDF):
    """Capped cylinder of radius r around the segment ab (exact distance, flat caps).

    With x = radial distance − r and y = axial distance past the half-length, the distance is
    |max((x, y), 0)| + min(max(x, y), 0): the box formula in the cylinder's (radial, axial) plane.
    """

    def __init__(self, a, b, radius):
        self.a, self.b, self.radius = np.asarray(a, float), np.asarray(b, float), float(radius)

    def distance(self, p):
        ba = self.b - self.a
        height = np.sqrt(ba @ ba)
        axis = ba / height
        pc = p - (self.a + self.b) / 2
        axial = pc @ axis
        radial = _length(pc - axial[:, None] * axis)
        q = np.stack([radial - self.radius, np.abs(axial) - height / 2], axis=1)
        return _length(np.maximum(q, 0.0)) + np.minimum(q.max(axis=1), 0.0)

    def bounds(self):
        # The cap discs reach r·sqrt(1 − axis_k²) along world axis k.
        axis = (self.b - self.a) / np.linalg.norm(self.b - self.a)
        reach = self.radius * np.sqrt(np.clip(1 - axis**2, 0.0, None))
        return np.minimum(self.a, self.b) - reach, np.maximum(self.a, self.b) + reach


class Torus(SDF):
    """Ring of tube radius r around a circle of radius R in the plane normal to ``axis``.

    q = (|p projected on the plane| − R, p along the axis);  d = |q| − r.
    """

    AXES = {"x": 0, "y": 1, "z": 2}

    def __init__(self, center, major, minor, axis="y"):
        if axis not in self.AXES:
            raise ValueError(f"Torus: axis {axis!r} must be one of 'x', 'y', 'z'.")
        self.center, self.major, self.minor = np.asarray(center, float), float(major), float(minor)
        self.axis = self.AXES[axis]

    def distance(self, p):
        pc = p - self.center
        along = pc[:, self.axis]
        in_plane = _length(np.delete(pc, self.axis, axis=1))
        return np.hypot(in_plane - self.major, along) - self.minor

    def bounds(self):
        extent = np.full(3, self.major + self.minor)
        extent[self.axis] = self.minor
        return self.center - extent, self.center + extent


class Union(SDF):
    """min(d_a, d_b): inside either solid."""

    def __init__(self, *children: SDF):
        self.children = children

    def distance(self, p):
        return np.min([c.distance(p) for c in self.children], axis=0)

    def bounds(self):
        boxes = [c.bounds() for c in self.children]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


class Intersection(SDF):
    """max(d_a, d_b): inside both solids."""

    def __init__(self, a: SDF, b: SDF):
        self.a, self.b = a, b

    def distance(self, p):
        return np.maximum(self.a.distance(p), self.b.distance(p))

    def bounds(self):
        (alo, ahi), (blo, bhi) = self.a.bounds(), self.b.bounds()
        return np.maximum(alo, blo), np.minimum(ahi, bhi)


class Difference(SDF):
    """max(d_a, −d_b): inside a and outside b."""

    def __init__(self, a: SDF, b: SDF):
        self.a, self.b = a, b

    def distance(self, p):
        return np.maximum(self.a.distance(p), -self.b.distance(p))

    def bounds(self):
        return self.a.bounds()


class Scaled(SDF):
    """The solid scaled by s about the origin, then moved by ``offset``: s · d((p − offset) / s).

    Uniform scaling keeps a distance a distance (multiplied by s), which is why it is the only
    scaling used to normalise shapes.
    """

    def __init__(self, child: SDF, scale: float, offset=(0.0, 0.0, 0.0)):
        self.child, self.scale, self.offset = child, float(scale), np.asarray(offset, float)

    def distance(self, p):
        return self.scale * self.child.distance((p - self.offset) / self.scale)

    def bounds(self):
        lo, hi = self.child.bounds()
        return lo * self.scale + self.offset, hi * self.scale + self.offset


def fit_in_world(sdf: SDF, extent: float = 0.9) -> Scaled:
    """Centre the solid's box at the origin and scale its longest side to ``extent``.

    The world is the cube [-0.5, 0.5]³; extent 0.9 leaves a margin so marching cubes on the
    world grid always closes the surface.
    """
    lo, hi = sdf.bounds()
    scale = extent / float(np.max(hi - lo))
    return Scaled(sdf, scale, offset=-scale * (lo + hi) / 2)
