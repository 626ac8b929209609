"""Checks for unit 07 (Occupancy Networks): the occupancy BCE, MISE's refinement rule and
volumetric IoU, each against the library's reference."""
from __future__ import annotations

import torch

from ..geometry.metrics import iou
from ..geometry.mise import boundary_cells
from ..models.occnet import occupancy_bce
from . import CheckFailure, check_function, check_gradients_flow

__all__ = ["check_occupancy_bce", "check_cells_to_subdivide", "check_volumetric_iou"]


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
    logits, occupancy = _bce_inputs(torch.Generator().manual_seed(1))
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
