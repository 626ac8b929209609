"""The course's offline shape collection: five categories built by CSG from primitives.

Each category is a function of a few continuous parameters (drawn from ranges by a seed), so a
category is a *distribution* of shapes, not a single object — which is what generative models
need. Every shape has an analytic signed distance and fits the world cube [-0.5, 0.5]³.
Axes: y is up, the front of a chair faces +z, an airplane flies along +x.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .sdf import SDF, Box, Capsule, Cylinder, Sphere, Torus, fit_in_world

# Parameter ranges per category: name -> (low, high). Samples are uniform in these ranges.
PARAMETER_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "chair": {
        "seat_width": (0.7, 1.1), "seat_depth": (0.7, 1.0), "leg_height": (0.5, 0.9),
        "back_height": (0.5, 1.1), "leg_radius": (0.05, 0.09),
    },
    "table": {
        "top_width": (1.2, 2.0), "top_depth": (0.7, 1.2), "height": (0.6, 0.9),
        "leg_radius": (0.05, 0.1), "roundness": (0.0, 1.0),
    },
    "lamp": {
        "base_radius": (0.25, 0.45), "pole_height": (0.8, 1.5), "arm_angle": (0.0, 0.9),
        "shade_radius": (0.2, 0.35), "pole_radius": (0.04, 0.07),
    },
    "mug": {
        "radius": (0.3, 0.45), "height": (0.6, 1.0), "wall": (0.04, 0.08),
        "handle_size": (0.15, 0.3),
    },
    "airplane": {
        "length": (1.6, 2.2), "fuselage_radius": (0.1, 0.17), "wing_span": (1.3, 2.2),
        "wing_chord": (0.25, 0.45), "tail_height": (0.2, 0.4),
    },
}
CATEGORIES = tuple(PARAMETER_RANGES)


def _chair(seat_width, seat_depth, leg_height, back_height, leg_radius) -> SDF:
    w, d, t = seat_width / 2, seat_depth / 2, 0.06
    seat = Box([0, leg_height + t, 0], [w, t, d], rounding=0.02)
    legs = [
        Cylinder([x, 0, z], [x, leg_height, z], leg_radius)
        for x in (-w + leg_radius, w - leg_radius) for z in (-d + leg_radius, d - leg_radius)
    ]
    back = Box([0, leg_height + 2 * t + back_height / 2, -d + t], [w, back_height / 2, t],
               rounding=0.02)
    solid = seat | back
    for leg in legs:
        solid = solid | leg
    return solid


def _table(top_width, top_depth, height, leg_radius, roundness) -> SDF:
    """roundness < 0.5: rectangular top on four legs; otherwise a round top on a pedestal."""
    t = 0.05
    if roundness < 0.5:
        w, d = top_width / 2, top_depth / 2
        top = Box([0, height, 0], [w, t, d], rounding=0.02)
        solid = top
        for x in (-w + 2 * leg_radius, w - 2 * leg_radius):
            for z in (-d + 2 * leg_radius, d - 2 * leg_radius):
                solid = solid | Cylinder([x, 0, z], [x, height, z], leg_radius)
        return solid
    radius = (top_width + top_depth) / 4
    top = Cylinder([0, height - t, 0], [0, height + t, 0], radius)
    pedestal = Cylinder([0, 0, 0], [0, height, 0], 1.5 * leg_radius)
    foot = Cylinder([0, 0, 0], [0, 0.05, 0], radius * (0.4 + 0.3 * roundness))
    return top | pedestal | foot


def _lamp(base_radius, pole_height, arm_angle, shade_radius, pole_radius) -> SDF:
    base = Cylinder([0, 0, 0], [0, 0.08, 0], base_radius)
    pole = Capsule([0, 0.08, 0], [0, pole_height, 0], pole_radius)
    arm_length = 0.5
    tip = np.array([np.sin(arm_angle) * arm_length, pole_height + np.cos(arm_angle) * arm_length, 0])
    arm = Capsule([0, pole_height, 0], tip, pole_radius)
    shade_top = tip + [0, -0.02, 0]
    shade_outer = Cylinder(shade_top - [0, 1.2 * shade_radius, 0], shade_top, shade_radius)
    shade_inner = Cylinder(shade_top - [0, 1.3 * shade_radius, 0], shade_top - [0, 0.08, 0],
                           shade_radius - 0.08)
    bulb = Sphere(shade_top - [0, 0.6 * shade_radius, 0], 0.3 * shade_radius)
    return base | pole | arm | (shade_outer - shade_inner) | bulb


def _mug(radius, height, wall, handle_size) -> SDF:
    body = Cylinder([0, 0, 0], [0, height, 0], radius)
    hollow = Cylinder([0, wall, 0], [0, height + wall, 0], radius - wall)
    handle = Torus([radius, height / 2, 0], handle_size, 0.6 * wall + 0.02, axis="z")
    return (body | (handle - Cylinder([0, 0, 0], [0, height, 0], radius - wall / 2))) - hollow


def _airplane(length, fuselage_radius, wing_span, wing_chord, tail_height) -> SDF:
    half = length / 2
    fuselage = Capsule([-half, 0, 0], [half, 0, 0], fuselage_radius)
    wing = Box([0.1 * length, 0, 0], [wing_chord / 2, 0.06, wing_span / 2], rounding=0.03)
    stabiliser = Box([-half + 0.1, 0, 0], [wing_chord / 4, 0.05, wing_span / 5], rounding=0.025)
    fin = Box([-half + 0.1, fuselage_radius + tail_height / 2, 0],
              [wing_chord / 4, tail_height / 2, 0.05], rounding=0.025)
    return fuselage | wing | stabiliser | fin


_BUILDERS = {"chair": _chair, "table": _table, "lamp": _lamp, "mug": _mug, "airplane": _airplane}


@dataclass
class Shape:
    """One shape of the collection: its category, parameters and normalised signed distance."""

    category: str
    seed: int
    params: dict[str, float]
    solid: SDF = field(repr=False)

    def sdf(self, points) -> np.ndarray:
        """Signed distance at (N, 3) world points (negative inside)."""
        return self.solid(points)


def sample_params(category: str, seed: int) -> dict[str, float]:
    """Parameters of shape number ``seed`` of ``category``, uniform in the category's ranges."""
    if category not in PARAMETER_RANGES:
        raise ValueError(f"Unknown category {category!r}; choose one of {', '.join(CATEGORIES)}.")
    rng = np.random.default_rng([CATEGORIES.index(category), seed])
    return {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in PARAMETER_RANGES[category].items()}


def make_shape(category: str, seed: int = 0, **overrides: float) -> Shape:
    """Shape ``seed`` of ``category``; keyword overrides pin parameters (for sliders)."""
    params = sample_params(category, seed)
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(
            f"make_shape: {category} has no parameter {sorted(unknown)}; it has {sorted(params)}."
        )
    params.update({k: float(v) for k, v in overrides.items()})
    return Shape(category, seed, params, fit_in_world(_BUILDERS[category](**params)))


def shape_collection(per_category: int, categories=CATEGORIES, start_seed: int = 0) -> list[Shape]:
    """``per_category`` shapes of each category, seeds start_seed, start_seed + 1, …"""
    return [make_shape(c, start_seed + i) for c in categories for i in range(per_category)]
