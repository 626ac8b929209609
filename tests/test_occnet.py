"""Occupancy networks: the BCE, the networks' contracts, a tiny run that learns, and the checks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gen3d_course.checks import CheckFailure
from gen3d_course.checks.occnet import (check_cells_to_subdivide, check_mise_refine, check_occupancy_bce,
                                        check_volumetric_iou)
from gen3d_course.data.shapes import make_shape
from gen3d_course.experiments.occnet import (SHIPPED, heldout_iou, make_eval_set, nearest_neighbour_iou,
                                             voxel_iou_bound)
from gen3d_course.geometry.metrics import iou
from gen3d_course.geometry.extract import grid_nodes
from gen3d_course.geometry.mise import boundary_cells, cell_nodes, upsample2
from gen3d_course.models.occnet import (DEFAULTS, OccupancyNetwork, OccupancyVAE, PointNetEncoder, fit,
                                        fit_vae, fourier_features, make_occupancy_data, noisy_cloud,
                                        occupancy_bce, sample_batch)

SMALL = dict(z_dim=16, hidden=32, blocks=2, encoder_hidden=32)


def test_bce_matches_torch_and_stays_finite_for_confident_logits():
    g = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(3, 50, generator=g)
    logits[0, :2] = torch.tensor([80.0, -80.0])
    occ = (torch.rand(3, 50, generator=g) < 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, occ)
    assert torch.allclose(occupancy_bce(logits, occ), expected)
    assert torch.allclose(occupancy_bce(logits, occ, "sum"), expected * 50)
    assert occupancy_bce(logits, occ, "none").shape == (3, 50)
    # correct and confident costs ~0; wrong and confident costs ~|logit|
    assert occupancy_bce(torch.tensor([80.0]), torch.tensor([1.0])) < 1e-6
    assert occupancy_bce(torch.tensor([-80.0]), torch.tensor([1.0])) == pytest.approx(80.0)


def test_bce_errors_are_clear():
    with pytest.raises(ValueError, match="one occupancy per predicted logit"):
        occupancy_bce(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        occupancy_bce(torch.tensor([float("nan")]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="reduction"):
        occupancy_bce(torch.zeros(2), torch.zeros(2), "max")


def test_pointnet_is_invariant_to_point_order():
    torch.manual_seed(0)
    encoder = PointNetEncoder(3, 8, 16)
    cloud = torch.randn(2, 40, 3)
    shuffled = cloud[:, torch.randperm(40)]
    assert torch.allclose(encoder(cloud), encoder(shuffled), atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(B, N, 3\)"):
        encoder(torch.randn(40, 3))


def test_fourier_features_shape_and_identity():
    p = torch.rand(2, 5, 3)
    assert fourier_features(p, 0) is p
    gamma = fourier_features(p, 3)
    assert gamma.shape == (2, 5, 3 * 7)
    assert torch.equal(gamma[..., :3], p)


@pytest.mark.parametrize("options", [{}, {"frequencies": 2, "film": True}])
def test_network_shapes_and_decoder_errors(options):
    model = OccupancyNetwork(**SMALL, **options)
    logits = model(torch.rand(3, 100, 3) - 0.5, torch.rand(3, 30, 3) - 0.5)
    assert logits.shape == (3, 100)
    with pytest.raises(ValueError, match="one code per shape"):
        model.decoder(torch.rand(3, 10, 3), torch.zeros(2, SMALL["z_dim"]))
    with pytest.raises(ValueError, match=r"expected \(B, M, 3\)"):
        model.decoder(torch.rand(10, 3), torch.zeros(1, SMALL["z_dim"]))
    field = model.field(np.zeros(SMALL["z_dim"], np.float32))
    values = field(np.random.default_rng(0).uniform(-0.5, 0.5, (20, 3)).astype(np.float32))
    assert values.shape == (20,)


@pytest.fixture(scope="module")
def tiny_data():
    shapes = [make_shape("mug", 0), make_shape("table", 0)]
    return make_occupancy_data(shapes, n_points=2048, n_surface=512, seed=0)


def test_data_pools_and_batches(tiny_data):
    assert tiny_data.points.shape == (2, 2048, 3) and tiny_data.occupancy.shape == (2, 2048)
    assert tiny_data.points.abs().max() <= 0.5
    inside = tiny_data.occupancy.mean()
    assert 0.05 < inside < 0.6  # the near-surface half makes both labels common
    truth = tiny_data.shapes[0].sdf(tiny_data.points[0].numpy()) < 0
    assert np.array_equal(truth, tiny_data.occupancy[0].numpy() > 0.5)
    g = torch.Generator().manual_seed(0)
    cloud, points, occ = sample_batch(tiny_data, 3, 100, n_cloud=50, noise=0.0, generator=g)
    assert cloud.shape == (3, 50, 3) and points.shape == (3, 100, 3) and occ.shape == (3, 100)
    clean = noisy_cloud(tiny_data.surface[:1], 50, 0.0, g)
    assert np.abs(tiny_data.shapes[0].sdf(clean[0].numpy())).max() < 1e-3  # on the surface


def test_a_short_run_learns_the_occupancy(tiny_data):
    torch.manual_seed(0)
    model = OccupancyNetwork(**DEFAULTS)
    eval_set = make_eval_set(tiny_data.shapes, n_points=4096)
    before = heldout_iou(model, eval_set).mean()
    history = fit(model, tiny_data, 120, batch=2, k=512, lr=3e-3, progress=False)
    after = heldout_iou(model, eval_set).mean()
    assert history.mean("loss") < 0.75 * history.mean("loss", first=True)
    assert after > 0.3 and after > before + 0.2


def test_nearest_neighbour_baseline_retrieves_the_same_shape(tiny_data):
    eval_set = make_eval_set(tiny_data.shapes, n_points=2048, noise=0.0)
    scores, picked = nearest_neighbour_iou([make_shape("chair", 0)] + tiny_data.shapes, eval_set)
    assert picked == [1, 2]
    assert np.allclose(scores, 1.0)
    bound = voxel_iou_bound(eval_set, res=16)
    assert np.all(bound < 1.0) and np.all(bound > 0.3)
    assert np.all(voxel_iou_bound(eval_set, res=64) > bound)


def test_vae_loss_parts_and_prior_samples(tiny_data):
    torch.manual_seed(0)
    model = OccupancyVAE(**SMALL)
    points, occ = tiny_data.points[:, :256], tiny_data.occupancy[:, :256]
    parts = model.loss(points, occ)
    assert parts["kl"] >= 0
    assert torch.isclose(parts["loss"], parts["bce"] * 256 + parts["kl"])
    history = fit_vae(model, tiny_data, 30, batch=2, k=256, lr=3e-3, progress=False)
    assert history.mean("bce") < history.mean("bce", first=True, window=3)
    z = model.sample_codes(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, SMALL["z_dim"])
    assert model.field(z[0])(np.zeros((4, 3), np.float32)).shape == (4,)


# --- the assignment checks pass on the reference and fail on typical mistakes -------------------


def test_checks_pass_on_the_references():
    assert check_occupancy_bce(lambda l, o: occupancy_bce(l, o))
    assert check_cells_to_subdivide(boundary_cells)
    assert check_volumetric_iou(iou)


def naive_bce(logits, occupancy):
    p = torch.sigmoid(logits)
    return -(occupancy * torch.log(p) + (1 - occupancy) * torch.log(1 - p)).mean()


def test_checks_catch_typical_mistakes():
    with pytest.raises(CheckFailure, match="NaN or inf|differ"):
        check_occupancy_bce(naive_bce)
    with pytest.raises(CheckFailure, match="differ"):
        check_occupancy_bce(lambda l, o: (F.softplus(l) - o * l).sum(-1).mean())  # per-shape sum
    with pytest.raises(CheckFailure, match="not implemented"):
        check_occupancy_bce(lambda l, o: (_ for _ in ()).throw(NotImplementedError()))

    def wrong_side(values, level):  # "<=" instead of "<": nodes exactly at the level count inside
        inside = values <= level
        n = values.shape[0] - 1
        corners = torch.stack([inside[i:i + n, j:j + n, k:k + n]
                               for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        return corners.any(0) & ~corners.all(0)

    with pytest.raises(CheckFailure, match="differ"):
        check_cells_to_subdivide(wrong_side)
    with pytest.raises(CheckFailure, match="shape"):
        check_cells_to_subdivide(lambda v, level: v < level)
    with pytest.raises(CheckFailure, match="empty"):
        check_volumetric_iou(lambda a, b: ((a & b).sum() / (a | b).sum().clamp(min=1)).float())
    with pytest.raises(CheckFailure, match="differ"):
        check_volumetric_iou(lambda a, b: (a & b).sum() / (a.sum() + b.sum()).float())


def mise_loop(field, start_res, levels, level, *, requery=False, dense=False, zeros_between=False):
    """MISE's refinement loop as the assignment asks for it, with switches for three classic slips."""
    res = start_res
    values = field(torch.from_numpy(grid_nodes(res))).reshape(res, res, res)
    evaluated = torch.ones_like(values, dtype=torch.bool)
    queries = values.numel()
    for _ in range(levels):
        active = boundary_cells(values, level)
        if zeros_between:  # a fresh grid with the old nodes copied and the rest left at 0
            old, values = values, torch.zeros((2 * res - 1,) * 3)
            values[::2, ::2, ::2] = old
        else:
            values = torch.from_numpy(upsample2(values.numpy()))
        res = 2 * res - 1
        known = torch.zeros(values.shape, dtype=torch.bool)
        known[::2, ::2, ::2] = evaluated
        need = torch.ones_like(known) if dense else torch.from_numpy(cell_nodes(active))
        need = need if requery else need & ~known
        points = torch.from_numpy(grid_nodes(res)).reshape(res, res, res, 3)[need]
        values[need] = field(points)
        evaluated, queries = known | need, queries + len(points)
    return values, queries


def test_the_mise_loop_check_passes_the_reference_and_names_the_slips():
    assert check_mise_refine(mise_loop)
    for slip, message in [("requery", "must not be"), ("dense", "as many as the dense"),
                          ("zeros_between", "trilinear")]:
        with pytest.raises(CheckFailure, match=message):
            check_mise_refine(lambda *args, slip=slip: mise_loop(*args, **{slip: True}))
    with pytest.raises(CheckFailure, match="refinement"):
        check_mise_refine(lambda f, r, levels, level: mise_loop(f, r, levels - 1, level) if levels > 1
                          else mise_loop(f, r, levels, level))


def test_the_shipped_checkpoint_loads_and_completes_unseen_shapes():
    from gen3d_course.checkpoints import checkpoint_info, load_checkpoint

    info = checkpoint_info("occnet")
    assert info["metrics"]["k"] == SHIPPED["k"] and info["metrics"]["heldout_iou"] >= 0.8
    model = load_checkpoint("occnet", OccupancyNetwork(**info["config"]))
    shapes = [make_shape(c, 1000) for c in ("chair", "table", "mug")]
    scores = heldout_iou(model, make_eval_set(shapes, n_points=4096))
    assert scores.mean() > 0.7  # measured 0.77 (4096 points; the mug's cloud is hard)
