"""Autograder checks for unit 00 (representations): ``edge_crossing``, ``grid_to_world``,
``fit_power_law``.

Each compares the student's function with the reference on random inputs and, when the values
match a classic slip (the edge's midpoint, the crossing of 0 instead of ``level``, a spacing of
1/R, a forgotten origin, a fit through two points, log c returned for c), says which one.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..geometry import extract
from . import CheckFailure, _append_hint, _call_student, _mistake_hint, check_function, seeded

__all__ = ["check_edge_crossing", "check_fit_power_law", "check_grid_to_world"]


# ---------------------------------------------------------------- q1: the vertex on one edge
def _edge_inputs(generator: torch.Generator):
    n = int(torch.randint(3, 9, (), generator=generator))
    x0 = torch.rand(n, 3, generator=generator) - 0.5
    x1 = x0 + 0.1 * torch.randn(n, 3, generator=generator)
    level = round(0.4 * float(torch.rand((), generator=generator)) - 0.2, 3)
    above = 0.05 + torch.rand(n, generator=generator)
    below = 0.05 + torch.rand(n, generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5  # either end may be the inside one
    f0 = torch.where(flip, level - below, level + above)
    f1 = torch.where(flip, level + above, level - below)
    return x0, x1, f0, f1, level


def check_edge_crossing(edge_crossing) -> bool:
    """``edge_crossing(x0, x1, f0, f1, level)`` -> (N, 3): x0 + (level − f0)/(f1 − f0)·(x1 − x0)."""
    name = "edge_crossing"
    x0, x1, f0, f1, level = _edge_inputs(seeded(11))
    got = _call_student(edge_crossing, (x0.clone(), x1.clone(), f0.clone(), f1.clone(), level), {},
                        name=name, call=f"{name}(x0=Tensor{tuple(x0.shape)}, ..., level={level})")
    t = (level - f0) / (f1 - f0)
    hint = _mistake_hint(got, {
        "the edge's midpoint; interpolate: t = (level − f0)/(f1 − f0) is where the linear f "
        "equals level": (x0 + x1) / 2,
        "the crossing of f = 0; the surface is where f = level": extract.edge_crossing(x0, x1, f0, f1, 0.0),
        "t measured from the wrong end: t = (level − f0)/(f1 − f0) is the fraction of the way "
        "from x0 to x1": x0 + (1 - t)[:, None] * (x1 - x0),
        "x0 + t without the edge vector; scale it: x0 + t·(x1 − x0)": x0 + t[:, None],
    })
    _append_hint(lambda: check_function(edge_crossing, extract.edge_crossing, _edge_inputs,
                                            name=name, trials=6), hint, quiet=True)
    x0, x1 = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])
    got = edge_crossing(x0, x1, torch.tensor([-0.2]), torch.tensor([0.6]), 0.2)
    if not torch.allclose(got, torch.tensor([[0.5, 0.0, 0.0]])):
        raise CheckFailure(f"{name}: on the edge (0,0,0) → (1,0,0) with f0 = −0.2, f1 = 0.6 the level "
                           f"0.2 is crossed half-way, at (0.5, 0, 0); got {got.tolist()}")
    print(f"✔ {name}: matches the reference on 6 random edges (either end inside, level ≠ 0)")
    return True


# ---------------------------------------------------------------- q2: grid index → world
def _reference_grid_to_world(vertices, res, lo, hi):
    world = extract.grid_to_world(vertices.double().numpy(), (res,) * 3, (lo, hi))
    return torch.as_tensor(world, dtype=vertices.dtype)


def _grid_inputs(generator: torch.Generator):
    res = int(torch.randint(5, 65, (), generator=generator))
    lo = round(float(torch.rand((), generator=generator)) - 1.0, 3)
    hi = round(lo + 0.5 + 2.0 * float(torch.rand((), generator=generator)), 3)
    vertices = (res - 1) * torch.rand(int(torch.randint(3, 9, (), generator=generator)), 3,
                                      generator=generator, dtype=torch.float64)
    return vertices, res, lo, hi


def check_grid_to_world(grid_to_world) -> bool:
    """``grid_to_world(vertices, res, lo, hi)`` -> (V, 3): lo + index · (hi − lo)/(res − 1)."""
    name = "grid_to_world"
    vertices, res, lo, hi = _grid_inputs(seeded(12))
    got = _call_student(grid_to_world, (vertices.clone(), res, lo, hi), {}, name=name,
                        call=f"{name}(vertices=Tensor{tuple(vertices.shape)}, res={res}, lo={lo}, hi={hi})")
    spacing = (hi - lo) / (res - 1)
    hint = _mistake_hint(got, {
        "a spacing of (hi − lo)/res; res nodes span res − 1 intervals, so the spacing is "
        "(hi − lo)/(res − 1)": lo + vertices * (hi - lo) / res,
        "the index times the spacing without the origin; add lo (node 0 sits at lo)": vertices * spacing,
        "cell centres (lo + (index + ½)·spacing); the values sit on nodes, node 0 at lo":
            lo + (vertices + 0.5) * spacing,
        "the index itself; scikit-image returns index units, so scale by the spacing and add lo": vertices,
        "a spacing of 1/(res − 1), as if the cube had side 1; use (hi − lo)/(res − 1)": lo + vertices / (res - 1),
    })
    _append_hint(lambda: check_function(grid_to_world, _reference_grid_to_world, _grid_inputs,
                                            name=name, trials=6, rtol=1e-6, atol=1e-7), hint, quiet=True)
    corners = torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]], dtype=torch.float64)
    got = grid_to_world(corners, 5, -0.5, 0.5)
    if not torch.allclose(got, torch.tensor([[-0.5] * 3, [0.5] * 3], dtype=torch.float64)):
        raise CheckFailure(f"{name}: the first and last node of a 5-node grid over [-0.5, 0.5] must "
                           f"land on -0.5 and 0.5; got {got.tolist()}")
    print(f"✔ {name}: matches the reference on 6 random grids; the end nodes land on lo and hi")
    return True


# ---------------------------------------------------------------- q3: memory ∝ c·R^p
def _reference_power_law(resolutions, sizes):
    """Least squares on log size = log c + p log R (every point counts, none is special)."""
    p, log_c = np.polyfit(np.log(resolutions.double().numpy()), np.log(sizes.double().numpy()), 1)
    return float(p), float(math.exp(log_c))


def _power_inputs(generator: torch.Generator):
    n = int(torch.randint(4, 8, (), generator=generator))
    resolutions = torch.tensor(sorted(int(r) for r in torch.randperm(120, generator=generator)[:n] + 8),
                               dtype=torch.float64)
    p = 1.0 + 2.5 * float(torch.rand((), generator=generator))
    c = 0.5 + 10.0 * float(torch.rand((), generator=generator))
    noise = torch.exp(0.2 * torch.randn(n, generator=generator, dtype=torch.float64))
    return resolutions, c * resolutions ** p * noise


def check_fit_power_law(fit_power_law) -> bool:
    """``fit_power_law(resolutions, sizes)`` -> (p, c) as Python floats: size ≈ c·R^p, fitted in log-log."""
    name = "fit_power_law"
    resolutions, sizes = _power_inputs(seeded(13))
    got = _call_student(fit_power_law, (resolutions.clone(), sizes.clone()), {}, name=name,
                        call=f"{name}(resolutions=Tensor{tuple(resolutions.shape)}, sizes=Tensor{tuple(sizes.shape)})")
    p, c = _reference_power_law(resolutions, sizes)
    two_ends = math.log(sizes[-1] / sizes[0]) / math.log(resolutions[-1] / resolutions[0])
    lin = np.polyfit(resolutions.numpy(), sizes.numpy(), 1)
    hint = ""
    if isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(g, (int, float)) for g in got):
        variants = {
            "(c, p); return the exponent first: (p, c)": (c, p),
            "(p, log c); return the constant itself, c = exp(intercept)": (p, math.log(c)),
            "(p, 10**intercept) of a fit in natural logs; undo the log you took: exp for ln, "
            "10** for log10": (p, 10 ** math.log(c)),
            "the slope between the first and last point only; fit all points by least squares "
            "in log-log": (two_ends, got[1]),
            "a straight-line fit of size against R; a power law is a line in log-log": (float(lin[0]), float(lin[1])),
        }
        for text, (vp, vc) in variants.items():
            if math.isclose(got[0], vp, rel_tol=1e-4) and math.isclose(got[1], vc, rel_tol=1e-4):
                hint = f"\n  hint: your values match {text}"
                break
    _append_hint(lambda: check_function(fit_power_law, _reference_power_law, _power_inputs,
                                            name=name, trials=5, rtol=1e-4, atol=1e-8), hint, quiet=True)
    print(f"✔ {name}: matches the least-squares log-log fit on 5 noisy power laws")
    return True
