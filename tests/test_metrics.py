"""Tests for gen3d_course.geometry.metrics: laws, brute-force references, hand cases."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gen3d_course.geometry.metrics import (
    chamfer_distance,
    coverage,
    emd,
    fscore,
    iou,
    minimum_matching_distance,
    normal_consistency,
    one_nna,
    pairwise_sq_dists,
    psnr,
    set_distance_matrix,
)

FAST = settings(max_examples=20, deadline=None, derandomize=True)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Deterministic torch.rand in every test."""
    torch.manual_seed(0)


def clouds(min_n=1, max_n=16, dim=3):
    """Point sets in the world cube [-0.5, 0.5]^dim."""
    return st.integers(min_n, max_n).flatmap(
        lambda n: arrays(np.float64, (n, dim), elements=st.floats(-0.5, 0.5))
    )


def unit_vectors():
    return arrays(np.float64, 3, elements=st.floats(-1, 1)).filter(
        lambda v: np.linalg.norm(v) > 0.1
    ).map(lambda v: v / np.linalg.norm(v))


def brute_chamfer(a, b, squared):
    """Reference chamfer distance with explicit loops over points."""
    def one_way(p, q):
        dists = [min(np.sum((x - y) ** 2) for y in q) for x in p]
        return np.mean(dists if squared else np.sqrt(dists))
    return one_way(a, b) + one_way(b, a)


# --------------------------------------------------------------------------
# pairwise_sq_dists
# --------------------------------------------------------------------------

def test_pairwise_sq_dists_matches_brute_force_unbatched_and_batched():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-0.5, 0.5, (2, 7, 3)), rng.uniform(-0.5, 0.5, (2, 5, 3))
    ref = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)
    out = pairwise_sq_dists(a, b)
    assert out.shape == (2, 7, 5)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(pairwise_sq_dists(a[1], b[1]).numpy(), ref[1], atol=1e-12)


def test_pairwise_sq_dists_is_exact_for_coincident_points():
    a = torch.rand(50, 3) - 0.5
    d = pairwise_sq_dists(a, a)
    assert (d >= 0).all() and torch.all(d.diagonal() == 0)


def test_pairwise_sq_dists_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(11)
    a = (torch.rand(4, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
    b = (torch.rand(5, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(pairwise_sq_dists, (a, b))


# --------------------------------------------------------------------------
# chamfer_distance
# --------------------------------------------------------------------------

@FAST
@given(clouds(), clouds(), st.booleans())
def test_chamfer_is_symmetric(a, b, squared):
    assert chamfer_distance(a, b, squared).item() == pytest.approx(
        chamfer_distance(b, a, squared).item(), abs=1e-12
    )


@FAST
@given(clouds(), st.booleans())
def test_chamfer_is_zero_on_identical_sets(a, squared):
    assert chamfer_distance(a, a.copy(), squared).item() == 0.0
    assert chamfer_distance(a.astype(np.float32), a.astype(np.float32), squared).item() == 0.0


@FAST
@given(clouds(), clouds(), unit_vectors(), st.booleans())
def test_chamfer_grows_as_one_set_moves_away(a, b, direction, squared):
    # Once the shift exceeds the diameter of the cube (sqrt 3), every point-to-point
    # distance increases with the shift, hence so does the chamfer distance.
    shifts = [1.8, 2.0, 2.5, 4.0, 8.0]
    values = [chamfer_distance(a, b + s * direction, squared).item() for s in shifts]
    assert all(v1 < v2 for v1, v2 in zip(values, values[1:]))


@FAST
@given(arrays(np.float64, 3, elements=st.floats(-0.4, 0.4)))
def test_unsquared_chamfer_of_shifted_sparse_set_is_twice_the_shift(t):
    # Points 1 apart, shift shorter than half that: each point's nearest neighbour
    # is its own shifted copy, so each direction contributes |t|.
    corners = np.array(list(itertools.product([-0.5, 0.5], repeat=3)))
    norm = np.linalg.norm(t)
    if norm >= 0.5:
        t = t * 0.45 / norm
        norm = 0.45
    assert chamfer_distance(corners, corners + t, squared=False).item() == pytest.approx(2 * norm)
    assert chamfer_distance(corners, corners + t, squared=True).item() == pytest.approx(2 * norm**2)
    single = corners[:1]
    assert chamfer_distance(single, single + 10 * t, squared=False).item() == pytest.approx(
        20 * norm
    )


@FAST
@given(clouds(max_n=12), clouds(max_n=12), st.booleans())
def test_chamfer_matches_brute_force(a, b, squared):
    assert chamfer_distance(a, b, squared).item() == pytest.approx(
        brute_chamfer(a, b, squared), rel=1e-9, abs=1e-12
    )


@pytest.mark.parametrize("squared", [True, False])
def test_batched_chamfer_matches_brute_force_per_item(squared):
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.5, 0.5, (4, 30, 3))
    b = rng.uniform(-0.5, 0.5, (4, 20, 3))
    ref = np.array([brute_chamfer(x, y, squared) for x, y in zip(a, b)])
    per_item = chamfer_distance(a, b, squared, reduction="none")
    assert per_item.shape == (4,)
    np.testing.assert_allclose(per_item.numpy(), ref, rtol=1e-9)
    assert chamfer_distance(a, b, squared).item() == pytest.approx(ref.mean(), rel=1e-9)
    # float32 inputs agree with the float64 reference to float32 accuracy.
    np.testing.assert_allclose(
        chamfer_distance(a.astype(np.float32), b.astype(np.float32), squared, "none").numpy(),
        ref,
        rtol=1e-5,
    )


def test_chamfer_types_and_shapes():
    a = np.zeros((4, 3), dtype=np.int64)
    out = chamfer_distance(a, a + 1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.ndim == 0
    assert out.item() == pytest.approx(6.0)
    assert chamfer_distance(a, a + 1, reduction="none").ndim == 0
    # Sets of different sizes, and 2-D points, are fine.
    assert chamfer_distance(np.zeros((3, 2)), np.ones((5, 2)), squared=False).item() == pytest.approx(
        2 * math.sqrt(2)
    )


@pytest.mark.parametrize("squared", [True, False])
def test_chamfer_gradient_matches_finite_differences(squared):
    gen = torch.Generator().manual_seed(2)
    a = (torch.rand(2, 6, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
    b = (torch.rand(2, 5, 3, generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: chamfer_distance(x, y, squared), (a, b))


@pytest.mark.parametrize("squared", [True, False])
def test_chamfer_gradient_is_finite_even_for_coincident_points(squared):
    a = (torch.rand(20, 3) - 0.5).requires_grad_()
    b = torch.cat([a.detach()[:10], torch.rand(5, 3) - 0.5])
    loss = chamfer_distance(a, b, squared)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert a.grad.abs().sum() > 0


def test_chamfer_as_a_loss_pulls_points_together():
    target = torch.rand(30, 3) - 0.5
    points = (torch.rand(30, 3) - 0.5).requires_grad_()
    opt = torch.optim.SGD([points], lr=3.0)
    start = chamfer_distance(points, target).item()
    for _ in range(10):
        opt.zero_grad()
        chamfer_distance(points, target).backward()
        opt.step()
    assert chamfer_distance(points, target).item() < 0.5 * start


# --------------------------------------------------------------------------
# fscore
# --------------------------------------------------------------------------

@FAST
@given(clouds(), st.floats(1e-3, 1.0))
def test_fscore_is_one_on_identical_sets(a, tau):
    f, p, r = fscore(a, a, tau, return_parts=True)
    assert (f.item(), p.item(), r.item()) == (1.0, 1.0, 1.0)


@FAST
@given(clouds(), clouds(), st.floats(1e-3, 1.0))
def test_fscore_is_zero_when_sets_are_farther_apart_than_tau(a, b, tau):
    far = b + np.array([tau + 1.5, 0.0, 0.0])  # every pair is at least tau + 0.5 apart
    f, p, r = fscore(a, far, tau, return_parts=True)
    assert (f.item(), p.item(), r.item()) == (0.0, 0.0, 0.0)


def test_fscore_hand_computed_case_and_batch():
    pred = np.array([[0.0, 0, 0], [0.4, 0, 0]])
    gt = np.array([[0.0, 0, 0], [0.05, 0, 0]])
    f, p, r = fscore(pred, gt, 0.1, return_parts=True)
    # P = 1/2 (the point at 0.4 is unmatched), R = 1, F = 2 * 0.5 / 1.5.
    assert (p.item(), r.item()) == (0.5, 1.0)
    assert f.item() == pytest.approx(2 / 3)
    assert isinstance(fscore(pred, gt, 0.1), torch.Tensor)
    batched = fscore(np.stack([pred, gt]), np.stack([gt, gt]), 0.1)
    assert batched.shape == (2,)
    np.testing.assert_allclose(batched.numpy(), [2 / 3, 1.0])


def test_fscore_threshold_is_strict():
    a, b = np.zeros((1, 3)), np.array([[0.5, 0, 0]])
    assert fscore(a, b, 0.5).item() == 0.0
    assert fscore(a, b, 0.5 + 1e-9).item() == 1.0


# --------------------------------------------------------------------------
# normal_consistency
# --------------------------------------------------------------------------

@FAST
@given(
    st.integers(2, 16).flatmap(
        lambda n: arrays(np.float64, (n, 3), elements=st.floats(-0.5, 0.5), unique=True)
    ),
    st.integers(0, 2**16),
)
def test_normal_consistency_is_one_for_identical_normals_and_sign_invariant(points, seed):
    # Distinct points, so every nearest neighbour is the point itself.
    normals = np.random.default_rng(seed).normal(size=points.shape) + 0.01
    flips = np.random.default_rng(seed + 1).choice([-1.0, 1.0], size=(len(points), 1))
    assert normal_consistency(points, normals, points, normals).item() == pytest.approx(1.0)
    assert normal_consistency(points, normals, points, -normals).item() == pytest.approx(1.0)
    scaled_flipped = 3.0 * flips * normals  # normals are normalised inside
    assert normal_consistency(points, normals, points, scaled_flipped).item() == pytest.approx(1.0)


def test_normal_consistency_known_angles_and_batch():
    points = np.random.default_rng(3).uniform(-0.5, 0.5, (10, 3))
    up = np.tile([0.0, 0, 1], (10, 1))
    side = np.tile([1.0, 0, 0], (10, 1))
    tilted = np.tile([math.sin(math.pi / 3), 0, math.cos(math.pi / 3)], (10, 1))  # 60 deg
    assert normal_consistency(points, up, points, side).item() == pytest.approx(0.0, abs=1e-7)
    assert normal_consistency(points, up, points, tilted).item() == pytest.approx(0.5)
    batched = normal_consistency(
        np.stack([points, points]), np.stack([up, up]), np.stack([points, points]),
        np.stack([tilted, up]),
    )
    assert batched.shape == (2,)
    np.testing.assert_allclose(batched.numpy(), [0.5, 1.0])


def test_normal_consistency_averages_both_directions():
    # pred has one extra point whose nearest gt normal is perpendicular to it:
    # accuracy = 1/2, completeness = 1, NC = 3/4.
    pred_points = np.array([[0.0, 0, 0], [0.3, 0, 0]])
    pred_normals = np.array([[0.0, 0, 1], [1.0, 0, 0]])
    gt_points = np.array([[0.0, 0, 0]])
    gt_normals = np.array([[0.0, 0, 1]])
    nc = normal_consistency(pred_points, pred_normals, gt_points, gt_normals)
    assert nc.item() == pytest.approx(0.75)


def test_normal_consistency_gradient_reaches_the_normals():
    points = torch.rand(10, 3) - 0.5
    normals = torch.randn(10, 3).requires_grad_()
    (1 - normal_consistency(points, normals, points, torch.randn(10, 3))).backward()
    assert torch.isfinite(normals.grad).all() and normals.grad.abs().sum() > 0


# --------------------------------------------------------------------------
# iou
# --------------------------------------------------------------------------

def test_iou_of_two_overlapping_boxes():
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros((10, 10, 10), dtype=bool)
    a[0:4, 0:4, 0:4] = True  # 64 voxels
    b[2:6, 2:6, 2:6] = True  # 64 voxels, overlap 2^3 = 8
    assert iou(a, b).item() == pytest.approx(8 / 120)
    assert iou(b, a).item() == pytest.approx(8 / 120)
    assert iou(a, a).item() == 1.0
    c = np.zeros_like(a)
    c[6:, 6:, 6:] = True
    assert iou(a, c).item() == 0.0


def test_iou_thresholds_numbers_at_half_and_handles_empty():
    probs = torch.tensor([0.9, 0.5, 0.49, 0.0])
    zero_one = np.array([1, 1, 1, 0])
    # occupied: probs -> {0, 1}, zero_one -> {0, 1, 2}; IoU = 2/3.
    out = iou(probs, zero_one)
    assert out.dtype == torch.float32 and out.ndim == 0
    assert out.item() == pytest.approx(2 / 3)
    assert iou(np.zeros(5), np.zeros(5)).item() == 1.0


# --------------------------------------------------------------------------
# emd
# --------------------------------------------------------------------------

@FAST
@given(clouds(max_n=30), st.integers(0, 2**16))
def test_emd_of_a_permuted_set_is_zero(a, seed):
    perm = np.random.default_rng(seed).permutation(len(a))
    assert emd(a, a[perm]).item() == pytest.approx(0.0, abs=1e-12)


@FAST
@given(clouds(max_n=30), arrays(np.float64, 3, elements=st.floats(-2, 2)))
def test_emd_of_a_shifted_set_is_the_shift_length(a, t):
    assert emd(a, a + t).item() == pytest.approx(np.linalg.norm(t), abs=1e-9)


def test_emd_matches_brute_force_over_all_matchings():
    rng = np.random.default_rng(4)
    a, b = rng.uniform(-0.5, 0.5, (2, 6, 3))
    best = min(
        np.mean(np.linalg.norm(a - b[list(perm)], axis=1))
        for perm in itertools.permutations(range(6))
    )
    assert emd(a, b).item() == pytest.approx(best, rel=1e-12)
    assert emd(a.astype(np.float32), b).dtype == torch.float64
    assert emd(a.astype(np.float32), b.astype(np.float32)).dtype == torch.float32


def test_emd_is_at_least_half_the_unsquared_chamfer():
    # Each one-sided chamfer term is a lower bound for EMD (the matching is
    # one of the allowed choices of neighbour).
    rng = np.random.default_rng(5)
    a, b = rng.uniform(-0.5, 0.5, (2, 40, 3))
    assert emd(a, b).item() >= 0.5 * chamfer_distance(a, b, squared=False).item()


def test_emd_has_no_gradient():
    a = (torch.rand(5, 3) - 0.5).requires_grad_()
    assert not emd(a, torch.rand(5, 3)).requires_grad


# --------------------------------------------------------------------------
# psnr
# --------------------------------------------------------------------------

def test_psnr_known_values():
    target = torch.full((8, 8, 3), 0.5)
    pred = target + 0.1  # MSE = 0.01
    assert psnr(pred, target).item() == pytest.approx(20.0, rel=1e-5)
    assert psnr(pred * 255, target * 255, max_val=255).item() == pytest.approx(20.0, rel=1e-5)
    assert psnr(target, target).item() == math.inf


def test_psnr_is_differentiable():
    pred = torch.full((4, 4), 0.3, requires_grad=True)
    psnr(pred, torch.zeros(4, 4)).backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad < 0).all()


# --------------------------------------------------------------------------
# Set metrics: set_distance_matrix, coverage, MMD, 1-NNA
# --------------------------------------------------------------------------

def make_shapes(rng, count, offset=0.0):
    return [rng.uniform(-0.5, 0.5, (int(rng.integers(5, 12)), 3)) * 0.2 + offset for _ in range(count)]


def test_set_distance_matrix_entries_and_metric():
    rng = np.random.default_rng(6)
    xs, ys = make_shapes(rng, 3), make_shapes(rng, 4)
    d = set_distance_matrix(xs, ys)
    assert d.shape == (3, 4)
    for i, j in itertools.product(range(3), range(4)):
        assert d[i, j].item() == chamfer_distance(xs[i], ys[j]).item()
    batch = rng.uniform(-0.5, 0.5, (3, 8, 3))
    d_emd = set_distance_matrix(batch, batch, metric=emd)
    assert d_emd.shape == (3, 3) and torch.all(d_emd.diagonal() == 0)


def test_set_distance_matrix_carries_gradients():
    xs = [(torch.rand(6, 3) - 0.5).requires_grad_() for _ in range(2)]
    ys = [torch.rand(5, 3) - 0.5 for _ in range(3)]
    minimum_matching_distance(set_distance_matrix(xs, ys)).backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in xs)


def test_coverage_and_mmd_when_generated_equals_reference():
    rng = np.random.default_rng(7)
    ref = make_shapes(rng, 5)
    d = set_distance_matrix(ref, ref)
    assert coverage(d).item() == 1.0
    assert minimum_matching_distance(d).item() == 0.0


def test_coverage_and_mmd_hand_computed():
    d_gen_ref = np.array([[1.0, 2.0, 3.0], [1.5, 5.0, 6.0]])
    # Both generated shapes pick reference 0: COV = 1/3.
    assert coverage(d_gen_ref).item() == pytest.approx(1 / 3)
    # Column minima 1, 2, 3: MMD = 2.
    assert minimum_matching_distance(d_gen_ref).item() == pytest.approx(2.0)


def test_mode_collapse_lowers_coverage():
    rng = np.random.default_rng(8)
    ref = [make_shapes(rng, 1, offset=c)[0] for c in (-0.3, 0.0, 0.3)]
    collapsed = [ref[0] + 0.01, ref[0] - 0.01, ref[0]]
    assert coverage(set_distance_matrix(collapsed, ref)).item() == pytest.approx(1 / 3)
    assert coverage(set_distance_matrix(ref, ref)).item() == 1.0


def one_nna_from_sets(gen, ref, metric=chamfer_distance):
    return one_nna(
        set_distance_matrix(gen, gen, metric),
        set_distance_matrix(ref, ref, metric),
        set_distance_matrix(gen, ref, metric),
    )


def test_one_nna_is_one_for_well_separated_sets():
    rng = np.random.default_rng(9)
    gen, ref = make_shapes(rng, 6, offset=-0.3), make_shapes(rng, 5, offset=0.3)
    assert one_nna_from_sets(gen, ref).item() == 1.0


def test_one_nna_excludes_self_for_identical_duplicated_sets():
    # Every shape's nearest *other* shape is its copy in the other set, so the
    # classifier is always wrong (1-NNA = 0 <= 0.5). Were the diagonal not
    # excluded, every shape would find itself and score 1.0.
    rng = np.random.default_rng(10)
    shapes = make_shapes(rng, 6)
    assert one_nna_from_sets(shapes, [s.copy() for s in shapes]).item() == 0.0


def test_one_nna_hand_computed_case():
    # 1-D "shapes" with |x - y| as the metric.  gen = {0, 0.5}, ref = {0.6, 2}:
    #   0   -> 0.5 (gen, right)   0.5 -> 0.6 (ref, wrong)
    #   0.6 -> 0.5 (gen, wrong)   2   -> 0.6 (ref, right)   => 2/4.
    gen, ref = [0.0, 0.5], [0.6, 2.0]
    assert one_nna_from_sets(gen, ref, metric=lambda x, y: torch.tensor(abs(x - y))).item() == 0.5


def test_one_nna_ignores_the_given_diagonal():
    d_gg = np.array([[5.0, 1.0], [1.0, 5.0]])
    d_rr = np.array([[0.0, 1.0], [1.0, 0.0]])
    d_gr = np.full((2, 2), 3.0)
    assert one_nna(d_gg, d_rr, d_gr).item() == 1.0


# --------------------------------------------------------------------------
# Input validation: every ValueError names its function
# --------------------------------------------------------------------------

P = np.zeros((5, 3))
NAN_P = np.where(np.arange(15).reshape(5, 3) == 7, np.nan, 0.0)
INF_P = np.where(np.arange(15).reshape(5, 3) == 7, np.inf, 0.0)
D = np.ones((3, 3))


def bad_calls():
    point_fns = {
        "pairwise_sq_dists": pairwise_sq_dists,
        "chamfer_distance": chamfer_distance,
        "fscore": lambda a, b: fscore(a, b, 0.1),
        "normal_consistency": lambda a, b: normal_consistency(a, a + 1, b, b + 1),
        "emd": emd,
    }
    bad_pairs = {
        "mismatched last dim": (np.zeros((5, 2)), P),
        "1-D": (np.zeros(5), P),
        "4-D": (np.zeros((1, 1, 5, 3)), P),
        "empty": (np.zeros((0, 3)), P),
        "empty batch": (np.zeros((0, 5, 3)), np.zeros((0, 5, 3))),
        "NaN": (NAN_P, P),
        "inf": (P, INF_P),
        "batched vs unbatched": (np.zeros((2, 5, 3)), P),
        "batch sizes differ": (np.zeros((2, 5, 3)), np.zeros((3, 5, 3))),
    }
    for (fn_name, fn), (case, (a, b)) in itertools.product(point_fns.items(), bad_pairs.items()):
        yield f"{fn_name}-{case}", fn_name, lambda fn=fn, a=a, b=b: fn(a, b)
    yield "chamfer-reduction", "chamfer_distance", lambda: chamfer_distance(P, P, reduction="sum")
    for tau in (0.0, -1.0, math.nan, math.inf):
        yield f"fscore-tau={tau}", "fscore", lambda tau=tau: fscore(P, P, tau)
    yield "nc-normals-shape", "normal_consistency", lambda: normal_consistency(P, P[:4], P, P)
    yield "nc-normals-zero", "normal_consistency", lambda: normal_consistency(P, P, P, P + 1)
    yield "nc-normals-nan", "normal_consistency", lambda: normal_consistency(P, P + 1, P, NAN_P)
    yield "emd-unequal", "emd", lambda: emd(P, np.zeros((4, 3)))
    yield "emd-batched", "emd", lambda: emd(np.zeros((2, 5, 3)), np.zeros((2, 5, 3)))
    yield "iou-shape", "iou", lambda: iou(np.zeros((4, 4)), np.zeros((4, 5)))
    yield "iou-empty", "iou", lambda: iou(np.zeros(0), np.zeros(0))
    yield "iou-nan", "iou", lambda: iou(np.array([0.0, np.nan]), np.zeros(2))
    yield "psnr-shape", "psnr", lambda: psnr(np.zeros((4, 4)), np.zeros((4, 3)))
    yield "psnr-empty", "psnr", lambda: psnr(np.zeros(0), np.zeros(0))
    yield "psnr-nan", "psnr", lambda: psnr(np.array([np.nan]), np.zeros(1))
    yield "psnr-max_val", "psnr", lambda: psnr(np.zeros(1), np.ones(1), max_val=0)
    yield "sdm-empty", "set_distance_matrix", lambda: set_distance_matrix([], [P])
    yield "sdm-non-scalar", "set_distance_matrix", lambda: set_distance_matrix(
        [np.zeros((2, 5, 3))], [np.zeros((2, 5, 3))], lambda a, b: chamfer_distance(a, b, reduction="none")
    )
    for fn_name, fn in (("coverage", coverage), ("minimum_matching_distance", minimum_matching_distance)):
        yield f"{fn_name}-1d", fn_name, lambda fn=fn: fn(np.ones(3))
        yield f"{fn_name}-empty", fn_name, lambda fn=fn: fn(np.ones((0, 3)))
        yield f"{fn_name}-nan", fn_name, lambda fn=fn: fn(np.array([[1.0, np.nan]]))
    yield "1nna-d_gr-shape", "one_nna", lambda: one_nna(D, D, np.ones((3, 2)))
    yield "1nna-d_gg-not-square", "one_nna", lambda: one_nna(np.ones((3, 2)), D, D)
    yield "1nna-empty", "one_nna", lambda: one_nna(np.ones((0, 0)), D, np.ones((0, 3)))
    yield "1nna-nan", "one_nna", lambda: one_nna(D, D * np.nan, D)


BAD_CALLS = list(bad_calls())


@pytest.mark.parametrize("fn_name, call", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_invalid_input_raises_value_error_naming_the_function(fn_name, call):
    with pytest.raises(ValueError, match=f"^{fn_name}: .*(expected|remove|drop)"):
        call()
