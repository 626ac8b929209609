"""Checks for unit 07 (Occupancy Networks): the occupancy BCE, MISE's refinement rule, its
refinement loop and volumetric IoU, each against the library's reference."""
from __future__ import annotations

import numpy as np
import torch

from ..geometry.metrics import iou
from ..geometry.mise import boundary_cells, final_resolution, mise_grid
from ..models.occnet import occupancy_bce
from . import CheckFailure, _call_student, check_function, check_gradients_flow, seeded

__all__ = ["check_cells_to_subdivide", "check_mise_refine", "check_occupancy_bce", "check_volumetric_iou"]


def _bce_inputs(g: torch.Generator):
    b, k = int(torch.randint(1, 5, (), generator=g)), int(torch.randint(8, 64, (), generator=g))
    logits = 4 * torch.randn(b, k, generator=g)
    logits[:, :3] = torch.tensor([30.0, -30.0, 0.0])  # confident: σ(30) rounds to 1 in float32
    occupancy = (torch.rand(b, k, generator=g) < 0.4).float()
    return logits, occupancy


def check_occupancy_bce(fn) -> bool:
    """``fn(logits (B, K), occupancy (B, K) in {0, 1})`` → the mean BCE over all B·K points."""
    name = "occupancy_bce"
    try:
        check_function(fn, occupancy_bce, _bce_inputs, name=name, trials=6, rtol=1e-4, atol=1e-5)
    except CheckFailure as failure:
        if "NaN or inf" not in str(failure):
            raise
        raise CheckFailure(f"{failure}\n  Hint: the inputs include logits of ±30, where σ(l) rounds "
                           "to 0 or 1 and log(0) = -inf; use F.logsigmoid(l) for log σ(l) and "
                           "F.logsigmoid(-l) for log(1 - σ(l)).") from None
    logits, occupancy = _bce_inputs(seeded(1))
    check_gradients_flow(fn, (logits.requires_grad_(), occupancy), name=name)
    return True


def _grid_inputs(g: torch.Generator):
    n = int(torch.randint(2, 7, (), generator=g))
    if int(torch.randint(0, 2, (), generator=g)):  # small integers: some nodes sit at the level
        values = torch.randint(-2, 3, (n, n, n), generator=g).float()
        level = float(torch.randint(-1, 2, (), generator=g))
    else:
        values = torch.randn(n, n, n, generator=g) + 0.3
        level = 0.0
    return values, level


def check_cells_to_subdivide(fn) -> bool:
    """``fn(values (n, n, n), level)`` → bool (n−1, n−1, n−1): cells whose corners disagree."""
    return check_function(fn, boundary_cells, _grid_inputs, name="cells_to_subdivide", trials=10)


class _CountingField:
    """A sphere's signed distance on torch (N, 3) float32 points that counts the points it is asked."""

    def __init__(self, center, radius):
        self.center, self.radius, self.queries = torch.as_tensor(center, dtype=torch.float32), radius, 0

    def __call__(self, points):
        points = torch.as_tensor(points, dtype=torch.float32)
        self.queries += len(points)
        return (points - self.center).norm(dim=-1) - self.radius


def check_mise_refine(fn) -> bool:
    """``fn(field, start_res, levels, level)`` -> (values (R, R, R), queries): MISE's loop.

    Compared with ``geometry.mise.mise_grid`` on spheres: the final grid's values everywhere, the
    number of queries it reports, and the number of points it actually asked the field for.
    """
    name = "mise_refine"
    g = seeded(7)
    for trial, (start_res, levels) in enumerate([(5, 1), (9, 1), (5, 2), (9, 2)], 1):
        center = (0.3 * torch.rand(3, generator=g) - 0.15).tolist()
        radius = float(0.15 + 0.2 * torch.rand((), generator=g))
        level = float(0.04 * torch.rand((), generator=g) - 0.02)
        reference = mise_grid(_CountingField(center, radius), start_res, levels, level)
        field = _CountingField(center, radius)
        call = (f"{name}(field=<sphere SDF, centre {[round(c, 3) for c in center]}, radius {radius:.3f}>, "
                f"start_res={start_res}, levels={levels}, level={level:.4f})")
        got = _call_student(fn, (field, start_res, levels, level), {}, name=name, call=call)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailure(f"{name}: return (values, queries), got {type(got).__name__}\n  called as {call}")
        values, queries = got
        res = final_resolution(start_res, levels)
        if not isinstance(values, torch.Tensor) or tuple(values.shape) != (res, res, res):
            shape = tuple(values.shape) if hasattr(values, "shape") else type(values).__name__
            raise CheckFailure(
                f"{name}: values must be a ({res}, {res}, {res}) tensor: {levels} refinement(s) of a "
                f"{start_res}³ grid, each (n, n, n) -> (2n-1)³; got {shape}\n  called as {call}")
        expected = torch.from_numpy(reference.values)
        dense = res ** 3
        if field.queries >= dense and reference.queries < dense:
            raise CheckFailure(
                f"{name}: you asked the field for {field.queries:,} points, as many as the dense {res}³ "
                f"grid; MISE queries only the new nodes of the active cells ({reference.queries:,} "
                f"here) and fills the others by trilinear interpolation (mise.upsample2)\n  called as {call}")
        wrong = ~torch.isclose(values.detach().float(), expected, atol=1e-5)
        if wrong.any():
            interpolated = wrong & ~torch.from_numpy(reference.evaluated)
            at = tuple(int(i) for i in (interpolated if interpolated.any() else wrong).nonzero()[0])
            was_evaluated = bool(reference.evaluated[at])
            why = ("a node the reference evaluated: check the fine grid's coordinates, lo + index·(hi − lo)/(R − 1) "
                   "with R the new resolution" if was_evaluated else
                   "a node outside every active cell, which keeps the trilinear interpolation of the coarse "
                   "grid (mise.upsample2), not a query and not 0")
            raise CheckFailure(
                f"{name}: values differ from the reference at {int(wrong.sum())} of {wrong.numel()} nodes; "
                f"first at {at}, expected {expected[at]:.5f}, got {float(values[at]):.5f}: {why}\n"
                f"  called as {call}")
        if field.queries != reference.queries:
            more = field.queries > reference.queries
            raise CheckFailure(
                f"{name}: the field was asked {field.queries:,} points; the reference asks {reference.queries:,} "
                + ("(a node already known, the old grid at [::2, ::2, ::2] and earlier refinements, must not be "
                   "queried again: keep a mask of evaluated nodes)" if more else
                   "(every new node of an active cell needs a query; mise.cell_nodes(active) gives them)")
                + f"\n  called as {call}")
        if not isinstance(queries, (int, np.integer)) or int(queries) != reference.queries:
            raise CheckFailure(f"{name}: you report {queries!r} queries but asked the field for "
                               f"{field.queries:,}; return the number of points evaluated, an int\n"
                               f"  called as {call}")
    print(f"✔ {name}: same grid and the same queries as the library's MISE on {trial} spheres "
          "(1 and 2 refinements)")
    return True


def _iou_inputs(g: torch.Generator):
    shape = tuple(int(s) for s in torch.randint(2, 9, (int(torch.randint(1, 4, (), generator=g)),),
                                                generator=g))
    a = torch.rand(shape, generator=g) < 0.4
    b = a ^ (torch.rand(shape, generator=g) < 0.2)  # overlapping, not equal
    return a, b


def check_volumetric_iou(fn) -> bool:
    """``fn(occ_a, occ_b)`` (bool tensors of one shape) → 0-d float32 |A ∩ B| / |A ∪ B|."""
    name = "volumetric_iou"
    check_function(fn, iou, _iou_inputs, name=name, trials=6)
    empty = torch.zeros(4, 4, 4, dtype=torch.bool)
    got = fn(empty, empty.clone())
    if not isinstance(got, torch.Tensor) or got.ndim != 0 or float(got) != 1.0:
        raise CheckFailure(f"{name}: two empty grids agree perfectly, so their IoU is 1.0 by "
                           f"convention (0/0 otherwise); got {got!r}.")
    full = torch.ones(3, 3, 3, dtype=torch.bool)
    if abs(float(fn(full, empty[:3, :3, :3].clone()))) > 1e-7:
        raise CheckFailure(f"{name}: a full and an empty grid share nothing, so their IoU is 0.")
    print(f"✔ {name}: also right on the empty/empty (1.0) and full/empty (0.0) edge cases")
    return True
