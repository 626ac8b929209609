"""Autograder checks for unit 06 (AtlasNet): ``chamfer``, ``uv_grid``, ``triangulate_square``,
``patch_forward``.

The Chamfer distance is checked against :func:`gen3d_course.geometry.metrics.chamfer_distance`
with the convention the assignment states (squared distances, mean over each set, the two
directions summed, one value per batch item); the others against
:mod:`gen3d_course.models.atlasnet`. For the usual slips (one direction only, square roots,
sums instead of means, a 1/2 factor, transposed grids, clockwise triangles) the failure says
which one it looks like.
"""
from __future__ import annotations

import torch

from ..geometry.metrics import chamfer_distance
from ..models import atlasnet as ref
from . import CheckFailure, _call_student, _mistake_hint, check_function, check_gradients_flow, seeded

__all__ = ["check_chamfer", "check_uv_grid", "check_triangulate_square", "check_patch_forward"]


def _reference_chamfer(a, b):
    return chamfer_distance(a, b, squared=True, reduction="none")


def _cloud_pair(generator: torch.Generator):
    batch = int(torch.randint(1, 4, (), generator=generator))
    n, m = (int(v) for v in torch.randint(5, 40, (2,), generator=generator))
    a = torch.rand(batch, n, 3, generator=generator) - 0.5
    b = torch.rand(batch, m, 3, generator=generator) - 0.5
    return a, b


def check_chamfer(chamfer) -> bool:
    """``chamfer(a (B, N, 3), b (B, M, 3))`` -> (B,):
    mean_i min_j |a_i - b_j|² + mean_j min_i |a_i - b_j|² (squared, both directions, summed)."""
    name = "chamfer"
    generator = seeded(3)
    a, b = torch.rand(2, 9, 3, generator=generator) - 0.5, torch.rand(2, 13, 3, generator=generator) - 0.5
    got = _call_student(chamfer, (a.clone(), b.clone()), {}, name=name,
                        call=f"{name}(a=Tensor(2, 9, 3), b=Tensor(2, 13, 3))")
    d = torch.cdist(a.double(), b.double()) ** 2
    ab, ba = d.min(2).values, d.min(1).values
    hint = _mistake_hint(got, {
        "only the direction a -> b; add the mean over b of the distance to the nearest a":
            ab.mean(-1),
        "only the direction b -> a; add the mean over a of the distance to the nearest b":
            ba.mean(-1),
        "unsquared distances |a - b|; this assignment uses squared ones":
            ab.sqrt().mean(-1) + ba.sqrt().mean(-1),
        "sums over the points; use the mean over each set": ab.sum(-1) + ba.sum(-1),
        "half the Chamfer distance; sum the two directions, no factor 1/2":
            0.5 * (ab.mean(-1) + ba.mean(-1)),
        "the batch mean; return one value per batch item, shape (B,)":
            (ab.mean(-1) + ba.mean(-1)).mean(),
    })
    try:
        check_function(chamfer, _reference_chamfer, _cloud_pair, name=name, trials=6,
                       rtol=1e-4, atol=1e-6)
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None
    a, b = _cloud_pair(seeded(11))
    check_gradients_flow(chamfer, (a.requires_grad_(), b.requires_grad_()), name=name)
    return True


def check_uv_grid(uv_grid) -> bool:
    """``uv_grid(res)`` -> (res², 2) float32, row i*res + j = (i/(res-1), j/(res-1))."""
    name = "uv_grid"
    got = _call_student(uv_grid, (3,), {}, name=name, call=f"{name}(res=3)")
    want = ref.uv_grid(3)
    hint = _mistake_hint(got, {
        "the grid with u and v swapped (v must vary slowest: row i*res + j has u = i/(res-1))":
            want.flip(1),
        "a grid of cell centres; the nodes must include 0 and 1":
            (torch.arange(3.0)[:, None] + 0.5).expand(3, 3) / 3})
    resolutions = iter([2, 3, 5, 8, 17])
    try:
        check_function(uv_grid, ref.uv_grid, lambda g: next(resolutions), name=name, trials=5,
                       rtol=0, atol=1e-6)
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None
    return True


def _triangulation_problem(faces, res: int) -> str | None:
    """What is wrong with ``faces`` as a triangulation of ``uv_grid(res)``, or None."""
    cells = (res - 1) ** 2
    if not isinstance(faces, torch.Tensor):
        return f"expected a torch.Tensor of vertex indices, got {type(faces).__name__}"
    if faces.dtype != torch.int64:
        return f"expected dtype torch.int64 (indices), got {faces.dtype}"
    if faces.shape != (2 * cells, 3):
        return (f"expected shape {(2 * cells, 3)} (two triangles per cell, {cells} cells), "
                f"got {tuple(faces.shape)}")
    if faces.min() < 0 or faces.max() >= res * res:
        return f"indices must lie in 0..{res * res - 1} (rows of uv_grid({res}))"
    uv = ref.uv_grid(res).double()
    tri = uv[faces]                                                  # (F, 3, 2)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])        # signed, in (u, v)
    h = 1.0 / (res - 1)
    if (area.abs() < 1e-12).any():
        f = int((area.abs() < 1e-12).nonzero()[0])
        return f"triangle {f} {faces[f].tolist()} is degenerate (its corners are on a line)"
    if (area < 0).any():
        f = int((area < 0).nonzero()[0])
        return (f"triangle {f} {faces[f].tolist()} is clockwise in the (u, v) plane; list "
                "every triangle counter-clockwise (u to the right, v up) so normals agree")
    i, j = faces // res, faces % res
    spans = torch.stack([i.max(1).values - i.min(1).values, j.max(1).values - j.min(1).values], 1)
    if (spans > 1).any():
        f = int((spans > 1).any(1).nonzero()[0])
        return (f"triangle {f} {faces[f].tolist()} spans more than one grid cell; use the "
                "corners of one cell (i, j), (i+1, j), (i, j+1), (i+1, j+1)")
    if not torch.allclose(area, torch.full_like(area, 0.5 * h * h)):
        return "every triangle should be half a grid cell"
    key = torch.sort(faces, dim=1).values
    if len(torch.unique(key, dim=0)) != len(key):
        return "some triangles appear twice; each cell needs two different triangles"
    cell = i.min(1).values * (res - 1) + j.min(1).values
    if not (torch.bincount(cell, minlength=cells) == 2).all():
        return "some cells are covered by more or fewer than two triangles"
    return None


def check_triangulate_square(triangulate_square) -> bool:
    """``triangulate_square(res)`` -> (2 (res-1)², 3) int64 indices into ``uv_grid(res)``:
    two counter-clockwise triangles per grid cell (either diagonal)."""
    name = "triangulate_square"
    for res in (2, 3, 4, 7):
        faces = _call_student(triangulate_square, (res,), {}, name=name, call=f"{name}(res={res})")
        problem = _triangulation_problem(faces, res)
        if problem:
            raise CheckFailure(f"{name}(res={res}): {problem}")
    print(f"✔ {name}: a valid counter-clockwise triangulation of the square for res 2, 3, 4, 7")
    return True


def _decoder_inputs(generator: torch.Generator):
    k = int(torch.randint(1, 4, (), generator=generator))
    code_dim = int(torch.randint(2, 6, (), generator=generator))
    batch, m = (int(v) for v in torch.randint(1, 5, (2,), generator=generator))
    decoder = ref.PatchDecoder(code_dim, n_patches=k, hidden=(8, 8))
    with torch.no_grad():
        for p in decoder.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
    code = torch.randn(batch, code_dim, generator=generator)
    uv = torch.rand(k, m, 2, generator=generator)
    return decoder, code, uv


def _reference_forward(decoder, code, uv):
    return decoder(code, uv)


def check_patch_forward(patch_forward) -> bool:
    """``patch_forward(decoder, code (B, C), uv (K, M, 2))`` -> (B, K, M, 3) with
    out[b, k, m] = decoder.patches[k](concat(uv[k, m], code[b]))."""
    name = "patch_forward"
    decoder, code, uv = _decoder_inputs(seeded(5))
    got = _call_student(patch_forward, (decoder, code, uv), {}, name=name,
                        call=f"{name}(decoder, code=Tensor{tuple(code.shape)}, "
                             f"uv=Tensor{tuple(uv.shape)})")
    with torch.no_grad():
        want = decoder(code, uv)
        b, k, m = want.shape[:3]
        variants = {"the output with patches and batch swapped; return (B, K, M, 3)":
                    want.transpose(0, 1),
                    "all patches flattened together; keep the patch axis: (B, K, M, 3)":
                    want.reshape(b, k * m, 3)}
    hint = _mistake_hint(got, variants)
    if isinstance(got, torch.Tensor) and got.shape == want.shape and not torch.allclose(got, want):
        hint += ("\n  hint: each patch's MLP takes concat(uv, code) in that order: (u, v) "
                 "first, then the code")
    try:
        check_function(patch_forward, _reference_forward, _decoder_inputs, name=name, trials=5)
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None
    decoder, code, uv = _decoder_inputs(seeded(9))
    check_gradients_flow(lambda code: patch_forward(decoder, code, uv), code.requires_grad_(),
                         name=name)
    return True
