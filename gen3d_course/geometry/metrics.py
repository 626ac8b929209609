"""Metrics for comparing 3D shapes, and sets of generated shapes.

Conventions
-----------
* A point set is an (N, D) array (D = 3 for points in the world cube
  [-0.5, 0.5]^3); a batch of point sets is (B, N, D) and is compared item by
  item with another batch (B, M, D).
* Inputs may be numpy arrays or torch tensors. Floating inputs keep their
  dtype, everything else becomes float32. Results are torch tensors (0-d for a
  single number).
* Metrics built from torch operations (pairwise_sq_dists, chamfer_distance,
  normal_consistency, minimum_matching_distance, psnr) carry gradients and can
  be used as training losses. Metrics that count or threshold (fscore, iou,
  coverage, one_nna) or solve a discrete assignment (emd) are evaluation-only.
* Bad input (wrong shape, mismatched dimensions, empty sets, NaN or inf) raises
  ValueError with a message that starts with the function's name.
"""

import math

import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

__all__ = [
    "pairwise_sq_dists",
    "chamfer_distance",
    "fscore",
    "normal_consistency",
    "iou",
    "emd",
    "psnr",
    "set_distance_matrix",
    "coverage",
    "minimum_matching_distance",
    "one_nna",
    "set_metrics",
    "iou_distance_matrix",
]


# --------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------

def _as_float(x):
    """Tensor view of x; floating dtypes are kept, anything else becomes float32."""
    t = torch.as_tensor(x)
    return t if t.is_floating_point() else t.to(torch.float32)


def _check_finite(t, name, fn):
    if not torch.isfinite(t).all():
        raise ValueError(
            f"{fn}: {name} contains NaN or inf; remove or replace those values first"
        )


def _points(x, name, fn):
    """Validate one point set: (N, D) or (B, N, D), non-empty, finite."""
    t = _as_float(x)
    if t.ndim not in (2, 3) or t.numel() == 0:
        raise ValueError(
            f"{fn}: {name} has shape {tuple(t.shape)}; expected a non-empty (N, D) "
            f"point set or a (B, N, D) batch of them (D = 3 for 3D points)"
        )
    _check_finite(t, name, fn)
    return t


def _point_pair(a, b, fn, names=("a", "b")):
    """Validate two point sets that are compared with each other."""
    a, b = _points(a, names[0], fn), _points(b, names[1], fn)
    if a.ndim != b.ndim or a.shape[-1] != b.shape[-1] or a.shape[:-2] != b.shape[:-2]:
        raise ValueError(
            f"{fn}: {names[0]} has shape {tuple(a.shape)} and {names[1]} has shape "
            f"{tuple(b.shape)}; expected (N, D) and (M, D), or (B, N, D) and "
            f"(B, M, D): the same batch size B and the same last dimension D"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _distance_matrix(d, name, fn):
    """Validate a precomputed (rows, cols) distance matrix."""
    t = _as_float(d)
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(
            f"{fn}: {name} has shape {tuple(t.shape)}; expected a non-empty 2-D "
            f"distance matrix, e.g. from set_distance_matrix"
        )
    _check_finite(t, name, fn)
    return t


def _safe_sqrt(x):
    """sqrt with gradient 0 (not NaN) at x = 0, e.g. for coincident points."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


# --------------------------------------------------------------------------
# Point-set distances
# --------------------------------------------------------------------------

def pairwise_sq_dists(a, b):
    """All squared Euclidean distances between two point sets.

    Every nearest-neighbour metric starts from this matrix:

        D[i, j] = |a_i - b_j|^2

    It is computed with torch.cdist from coordinate differences, not with the
    faster expanded formula |a|^2 + |b|^2 - 2<a, b>: in float32 that formula
    loses about 1e-7 to cancellation, so coincident points come out about
    1e-7 (and their Euclidean distance about 3e-4) apart instead of 0.
    Memory is O(N M), fine for the ~10k-point sets of this course.

    a: (N, D) or (B, N, D); b: (M, D) or (B, M, D). Returns (N, M) or (B, N, M),
    non-negative, differentiable.
    """
    a, b = _point_pair(a, b, "pairwise_sq_dists")
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def _nearest(a, b):
    """For each point of a: index of and squared distance to its nearest point in b.

    Choosing the neighbour is discrete and has no gradient, so it runs without
    autograd; the distance to the chosen neighbour is then recomputed from
    coordinates. That gives the same value and the same gradient as
    differentiating min_j D[i, j], with O(N) instead of O(N M) backward memory.
    """
    with torch.no_grad():
        idx = pairwise_sq_dists(a, b).argmin(dim=-1)
    nn = torch.take_along_dim(b, idx.unsqueeze(-1), dim=-2)
    return idx, ((a - nn) ** 2).sum(-1)


def chamfer_distance(a, b, squared=True, reduction="mean"):
    """Chamfer distance: how far each set is from the other, on average.

    Cheap, differentiable and needs no correspondence, so it is the standard
    point-cloud reconstruction loss and evaluation metric::

        CD(A, B) = mean_{x in A} min_{y in B} d(x, y) + mean_{y in B} min_{x in A} d(x, y)

    ``squared=True``: d(x, y) = |x - y|², the PointSetGen / AtlasNet training loss (DeepSDF's
    evaluation uses the same sum). ``squared=False``: d(x, y) = |x - y|, the "Chamfer-L1" of
    the Occupancy Networks evaluation.
    Both directions are summed with no 1/2 factor. Occupancy Networks reports
    0.5 * (accuracy + completeness), i.e. half the squared=False value: halve
    before comparing with its tables.

    a: (N, D), b: (M, D) -> 0-d tensor.
    a: (B, N, D), b: (B, M, D) -> (B,) if reduction="none", their mean if "mean".
    """
    fn = "chamfer_distance"
    if reduction not in ("mean", "none"):
        raise ValueError(f"{fn}: reduction={reduction!r}; expected 'mean' or 'none'")
    a, b = _point_pair(a, b, fn)
    d_ab, d_ba = _nearest(a, b)[1], _nearest(b, a)[1]
    if not squared:
        d_ab, d_ba = _safe_sqrt(d_ab), _safe_sqrt(d_ba)
    cd = d_ab.mean(-1) + d_ba.mean(-1)
    return cd.mean() if reduction == "mean" else cd


def fscore(pred, gt, tau, return_parts=False):
    """F-score at distance threshold tau (Tatarchenko et al. 2019).

    Chamfer distance is an average, so a few far outliers can hide a mostly
    good reconstruction (or the reverse); the F-score instead counts the
    fraction of points that are "close enough":

        precision P = fraction of pred points with a gt point closer than tau
        recall    R = fraction of gt points with a pred point closer than tau
        F = 2 P R / (P + R),  and F = 0 when P = R = 0

    "Closer than tau" is the strict |x - y| < tau. The counts have zero
    gradient, so this is an evaluation metric, not a loss.

    pred: (N, D), gt: (M, D) -> 0-d tensors; (B, N, D), (B, M, D) -> (B,) each.
    Returns F, or (F, P, R) if return_parts=True.
    """
    fn = "fscore"
    pred, gt = _point_pair(pred, gt, fn, names=("pred", "gt"))
    tau = float(tau)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"{fn}: tau={tau}; expected a positive finite distance threshold")
    precision = (_nearest(pred, gt)[1] < tau**2).to(pred.dtype).mean(-1)
    recall = (_nearest(gt, pred)[1] < tau**2).to(pred.dtype).mean(-1)
    total = precision + recall
    f = torch.where(total > 0, 2 * precision * recall / torch.where(total > 0, total, 1.0), 0.0)
    return (f, precision, recall) if return_parts else f


def normal_consistency(pred_points, pred_normals, gt_points, gt_normals):
    """Normal consistency: do surfaces face the same way, as in Occupancy Networks.

    Points can lie on the right surface while its orientation is wrong (a bumpy
    or staircase surface); comparing normals at nearest neighbours measures that:

        NC = 1/2 [ mean_{x in P} |<n(x), n(nn_G(x))>| + mean_{y in G} |<n(y), n(nn_P(y))>| ]

    where nn_G(x) is the gt point nearest to x, nn_P(y) the pred point nearest
    to y, and normals are normalised to unit length first. The absolute value
    makes the metric ignore normal sign (inside/outside orientation). 1 is
    perfect, 0 means perpendicular everywhere. The result is differentiable
    with respect to the normals (1 - NC works as a normal loss), not through
    the discrete choice of neighbours.

    Points and their normals share a shape: (N, D) and (M, D) -> 0-d tensor;
    (B, N, D) and (B, M, D) -> (B,).
    """
    fn = "normal_consistency"
    pred_points, gt_points = _point_pair(
        pred_points, gt_points, fn, names=("pred_points", "gt_points")
    )
    units = []
    for name, points, normals in (
        ("pred_normals", pred_points, pred_normals),
        ("gt_normals", gt_points, gt_normals),
    ):
        normals = _points(normals, name, fn).to(points.dtype)
        if normals.shape != points.shape:
            raise ValueError(
                f"{fn}: {name} has shape {tuple(normals.shape)} but its points have "
                f"shape {tuple(points.shape)}; expected one normal per point"
            )
        length = normals.norm(dim=-1, keepdim=True)
        if not (length > 0).all():
            raise ValueError(
                f"{fn}: {name} contains zero-length normals; drop those points "
                f"(e.g. samples on degenerate faces) first"
            )
        units.append(normals / length)
    pred_n, gt_n = units
    idx_pg, idx_gp = _nearest(pred_points, gt_points)[0], _nearest(gt_points, pred_points)[0]
    gt_at_pred = torch.take_along_dim(gt_n, idx_pg.unsqueeze(-1), dim=-2)
    pred_at_gt = torch.take_along_dim(pred_n, idx_gp.unsqueeze(-1), dim=-2)
    accuracy = (pred_n * gt_at_pred).sum(-1).abs().mean(-1)
    completeness = (gt_n * pred_at_gt).sum(-1).abs().mean(-1)
    return 0.5 * (accuracy + completeness)


def emd(a, b):
    """Exact earth mover's distance between two equal-size point sets.

    Chamfer lets many points match the same neighbour, so it can miss
    differences in point density; EMD forces a one-to-one matching:

        EMD(A, B) = min over bijections phi: A -> B of mean_{x in A} |x - phi(x)|

    with Euclidean (not squared) distances. The optimal bijection is found by
    scipy.optimize.linear_sum_assignment, which costs O(N^3): fine for
    N up to about 2000. The result is computed in numpy (float64) and returned
    as a tensor without gradient: this function is NOT differentiable.

    a, b: (N, D) with the same N -> 0-d tensor with a's dtype.
    """
    fn = "emd"
    a, b = _point_pair(a, b, fn)
    if a.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{fn}: a has shape {tuple(a.shape)} and b has shape {tuple(b.shape)}; "
            f"expected two unbatched (N, D) sets of the same size N (loop over a "
            f"batch, and resample sets to equal size first)"
        )
    cost = cdist(a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy())
    rows, cols = linear_sum_assignment(cost)
    return torch.tensor(cost[rows, cols].mean(), dtype=a.dtype, device=a.device)


# --------------------------------------------------------------------------
# Volumes and images
# --------------------------------------------------------------------------

def iou(occ_a, occ_b):
    """Volumetric intersection over union of two occupancy arrays.

    The standard metric for occupancy and voxel outputs (Occupancy Networks,
    3D-R2N2): it scores the shared volume relative to the total volume, so it
    does not reward predicting everything empty or everything full.

        IoU = |A and B| / |A or B|

    Inputs are voxel grids, or occupancies at the same query points, of any
    identical shape; all elements are pooled (no batch dimension). Booleans are
    used as they are; numbers count as occupied when >= 0.5 (so 0/1 arrays
    and probabilities both work). If both are empty the shapes agree
    perfectly, and IoU = 1.0 by convention. Thresholding has no gradient.

    Returns a 0-d float32 tensor.
    """
    fn = "iou"
    occupied = []
    for name, occ in (("occ_a", occ_a), ("occ_b", occ_b)):
        t = torch.as_tensor(occ)
        if t.numel() == 0:
            raise ValueError(f"{fn}: {name} is empty; expected a voxel grid or occupancy values")
        if t.dtype != torch.bool:
            _check_finite(t, name, fn)
            t = t >= 0.5
        occupied.append(t)
    a, b = occupied
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: occ_a has shape {tuple(a.shape)} and occ_b has shape "
            f"{tuple(b.shape)}; expected the same shape (same grid or query points)"
        )
    union = (a | b).sum()
    if union == 0:
        return torch.tensor(1.0, device=a.device)
    return (a & b).sum() / union.to(torch.float32)


def psnr(pred, target, max_val=1.0):
    """Peak signal-to-noise ratio, in decibels, e.g. of rendered images.

    A log scale of the mean squared error relative to the largest possible
    value, so that errors read the same across image ranges:

        PSNR = 10 * log10(max_val^2 / MSE),  MSE = mean((pred - target)^2)

    The mean runs over all elements (pass one image at a time for per-image
    PSNR). Identical inputs give MSE = 0 and PSNR = +inf.

    pred, target: same shape, any number of dimensions -> 0-d tensor.
    """
    fn = "psnr"
    pred, target = _as_float(pred), _as_float(target)
    if pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(
            f"{fn}: pred has shape {tuple(pred.shape)} and target has shape "
            f"{tuple(target.shape)}; expected two non-empty arrays of the same shape"
        )
    _check_finite(pred, "pred", fn)
    _check_finite(target, "target", fn)
    max_val = float(max_val)
    if not (math.isfinite(max_val) and max_val > 0):
        raise ValueError(
            f"{fn}: max_val={max_val}; expected the positive finite peak value (1.0 or 255)"
        )
    mse = ((pred - target) ** 2).mean()
    return 10 * torch.log10(max_val**2 / mse)


# --------------------------------------------------------------------------
# Generative-model set metrics (Achlioptas et al. 2018; Yang et al. 2019)
# --------------------------------------------------------------------------

def set_distance_matrix(xs, ys, metric=chamfer_distance):
    """Distances between every shape of one set and every shape of another.

    Generative models are judged by comparing a *set* of samples with a set of
    reference shapes; the set metrics below all work on this matrix:

        D[i, j] = metric(xs[i], ys[j])

    xs, ys: sequences of shapes (e.g. lists of (N_i, 3) point clouds, or a
    (B, N, 3) array); metric: any function of two shapes returning a 0-d
    tensor (chamfer_distance by default, or emd). Returns a (len(xs), len(ys))
    tensor; it carries gradients if the metric does.
    """
    fn = "set_distance_matrix"
    if len(xs) == 0 or len(ys) == 0:
        raise ValueError(
            f"{fn}: got {len(xs)} xs and {len(ys)} ys; expected at least one shape in each set"
        )
    rows = []
    for x in xs:
        row = [torch.as_tensor(metric(x, y)) for y in ys]
        if any(r.ndim != 0 for r in row):
            raise ValueError(
                f"{fn}: metric returned a non-scalar; expected single shapes in xs and "
                f"ys and a metric that returns one number per pair"
            )
        rows.append(torch.stack(row))
    return torch.stack(rows)


def coverage(d_gen_ref):
    """COV: fraction of reference shapes matched by some generated shape.

    Measures diversity / mode coverage (Achlioptas et al. 2018): each
    generated shape is matched to its nearest reference shape, and

        COV = |{ argmin_j D[i, j] : i in generated }| / |reference|

    A model that collapses onto a few modes covers few references. It ignores
    match quality, so read it together with minimum_matching_distance. Ties
    go to the lowest reference index.

    d_gen_ref: (G, R) distances, rows generated, columns reference -> 0-d tensor.
    """
    d = _distance_matrix(d_gen_ref, "d_gen_ref", "coverage")
    matched = d.argmin(dim=1).unique().numel()
    return torch.tensor(matched / d.shape[1], dtype=d.dtype, device=d.device)


def minimum_matching_distance(d_gen_ref):
    """MMD: how well the reference shapes are reproduced (Achlioptas et al. 2018).

    Each reference shape is matched to its closest generated shape, and

        MMD = mean_{j in reference} min_{i in generated} D[i, j]

    Low MMD means every reference has a faithful sample; it is blind to
    generated shapes that match nothing, so read it together with coverage.

    d_gen_ref: (G, R) distances, rows generated, columns reference -> 0-d
    tensor, differentiable if the distances are.
    """
    d = _distance_matrix(d_gen_ref, "d_gen_ref", "minimum_matching_distance")
    return d.min(dim=0).values.mean()


def one_nna(d_gg, d_rr, d_gr):
    """1-NNA: accuracy of a leave-one-out 1-nearest-neighbour two-sample test.

    Proposed for generative models by Lopez-Paz & Oquab (2017) and Yang et al.
    (2019, PointFlow) because it captures both quality and diversity in one
    number. Pool the generated set G and reference set R, label each shape by
    its set, and classify every shape by the label of its nearest *other*
    shape (the diagonal of the distance matrix is excluded):

        1-NNA = ( sum_{x in G} 1[nn(x) in G] + sum_{y in R} 1[nn(y) in R] ) / (|G| + |R|)

    If the two sets come from the same distribution the classifier is at
    chance and 1-NNA is about 0.5 (ideal); 1.0 means the sets are perfectly
    separable. Values well below 0.5 mean each generated shape sits right on
    a reference shape (e.g. memorised copies). Ties go to the lowest index,
    generated shapes first.

    d_gg: (G, G), d_rr: (R, R), d_gr: (G, R) distances -> 0-d tensor.
    """
    fn = "one_nna"
    d_gg = _distance_matrix(d_gg, "d_gg", fn)
    d_rr = _distance_matrix(d_rr, "d_rr", fn)
    d_gr = _distance_matrix(d_gr, "d_gr", fn)
    g, r = d_gg.shape[0], d_rr.shape[0]
    if d_gg.shape != (g, g) or d_rr.shape != (r, r) or d_gr.shape != (g, r):
        raise ValueError(
            f"{fn}: d_gg has shape {tuple(d_gg.shape)}, d_rr {tuple(d_rr.shape)}, "
            f"d_gr {tuple(d_gr.shape)}; expected (G, G), (R, R) and (G, R)"
        )
    full = torch.cat(
        [torch.cat([d_gg, d_gr], dim=1), torch.cat([d_gr.T, d_rr], dim=1)], dim=0
    ).detach()
    full = full.masked_fill(torch.eye(g + r, dtype=torch.bool, device=full.device), math.inf)
    is_gen = torch.arange(g + r, device=full.device) < g
    correct = is_gen[full.argmin(dim=1)] == is_gen
    return correct.to(full.dtype).mean()


def set_metrics(d_gg, d_rr, d_gr) -> dict[str, float]:
    """COV, MMD and 1-NNA of a generated set G against a reference set R, from distance matrices.

    Any distance works (Chamfer for points, 1 − IoU for voxels, RMS for pixels); the same three
    numbers judge every generator in the course. d_gg: (G, G), d_rr: (R, R), d_gr: (G, R).
    Returns {"COV" (↑, diversity), "MMD" (↓, fidelity), "1-NNA" (0.5 ideal)}.
    """
    return {"COV": float(coverage(d_gr)), "MMD": float(minimum_matching_distance(d_gr)),
            "1-NNA": float(one_nna(d_gg, d_rr, d_gr))}


def _occupied(grids, fn: str) -> torch.Tensor:
    """(N, R·R·R) float 0/1: probabilities count as occupied at ≥ 0.5, as in ``iou``."""
    t = torch.as_tensor(grids)
    if t.dtype != torch.bool:
        _check_finite(t, "grids", fn)
        t = t >= 0.5
    return t.reshape(len(t), -1).float()


def iou_distance_matrix(a, b) -> torch.Tensor:
    """D[i, j] = 1 − IoU(a_i, b_j) for two stacks of grids (N, R, R, R) and (M, R, R, R).

    Equal to ``iou`` pair by pair, computed for all pairs at once with one matrix product:
    |A ∩ B| = A·B, |A ∪ B| = |A| + |B| − |A ∩ B|. Two empty grids are at distance 0.
    """
    fn = "iou_distance_matrix"
    a, b = _occupied(a, fn), _occupied(b, fn)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{fn}: grids of {a.shape[1]} and {b.shape[1]} voxels; compare grids of "
                         "the same resolution.")
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, 1 - inter / union.clamp(min=1), torch.zeros_like(inter))
