"""Tests for gen3d_course.models.atlasnet and gen3d_course.checks.atlasnet."""
import numpy as np
import pytest
import torch
import trimesh

from gen3d_course.checks import CheckFailure
from gen3d_course.checks import atlasnet as checks
from gen3d_course.data.shapes import make_shape
from gen3d_course.experiments import atlasnet as experiments
from gen3d_course.geometry.metrics import chamfer_distance
from gen3d_course.models import atlasnet as A
from gen3d_course.train import train


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------
# The (u, v) square
# --------------------------------------------------------------------------

def test_uv_grid_order_and_range():
    uv = A.uv_grid(4)
    assert uv.shape == (16, 2) and uv.dtype == torch.float32
    assert torch.allclose(uv[1 * 4 + 2], torch.tensor([1 / 3, 2 / 3]))
    assert uv.min() == 0 and uv.max() == 1


@pytest.mark.parametrize("res", [2, 3, 9])
def test_triangulated_square_is_a_ccw_disk_of_area_one(res):
    faces = A.triangulate_square(res)
    assert faces.shape == (2 * (res - 1) ** 2, 3) and faces.dtype == torch.int64
    assert checks._triangulation_problem(faces, res) is None
    flat = trimesh.Trimesh(np.c_[A.uv_grid(res).numpy(), np.zeros(res * res)], faces.numpy(),
                           process=False)
    assert np.isclose(flat.area, 1.0)
    assert np.allclose(flat.face_normals, [0, 0, 1])          # counter-clockwise everywhere
    assert flat.euler_number == 1 and len(flat.split(only_watertight=False)) == 1  # one disk


def test_uv_helpers_reject_bad_resolution():
    with pytest.raises(ValueError, match="res"):
        A.uv_grid(1)
    with pytest.raises(ValueError, match="res"):
        A.triangulate_square(2.5)


def test_sphere_points_lie_on_the_sphere():
    p = A.sphere_points(500, radius=0.3)
    assert torch.allclose(p.norm(dim=1), torch.full((500,), 0.3), atol=1e-6)


# --------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------

def test_encoder_is_invariant_to_point_order():
    enc = A.PointNetEncoder(16)
    x = torch.rand(2, 50, 3) - 0.5
    perm = torch.randperm(50)
    assert torch.allclose(enc(x), enc(x[:, perm]), atol=1e-6)


def test_pointset_count_is_fixed():
    model = A.make_model("pointset", code_dim=8, n_points=32)
    x = torch.rand(2, 40, 3) - 0.5
    assert model(x).shape == (2, 32, 3)
    with pytest.raises(ValueError, match="exactly 32 points"):
        model(x, 64)


@pytest.mark.parametrize("n", [1, 7, 100, 1000])
def test_atlas_and_sphere_give_any_number_of_points(n):
    x = torch.rand(2, 40, 3) - 0.5
    for model in (A.make_model("atlas", code_dim=8, n_patches=3), A.make_model("sphere", code_dim=8)):
        assert model(x, n).shape == (2, n, 3)


def test_patch_decoder_is_per_patch_mlp_of_uv_and_code():
    dec = A.PatchDecoder(code_dim=4, n_patches=3, hidden=(8,))
    code, uv = torch.randn(2, 4), torch.rand(3, 5, 2)
    out = dec(code, uv)
    assert out.shape == (2, 3, 5, 3)
    manual = dec.patches[1](torch.cat([uv[1, 4], code[0]]))
    assert torch.allclose(out[0, 1, 4], manual, atol=1e-6)
    assert torch.allclose(dec(code, uv[0]), dec(code, uv[0].expand(3, 5, 2)))


def test_decoders_reject_bad_inputs_clearly():
    dec = A.PatchDecoder(code_dim=4, n_patches=3)
    with pytest.raises(ValueError, match=r"code has shape \(4,\)"):
        dec(torch.randn(4), torch.rand(5, 2))
    with pytest.raises(ValueError, match=r"\(3, M, 2\)"):
        dec(torch.randn(2, 4), torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="NaN"):
        A.PointNetEncoder(4)(torch.full((1, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="make_model"):
        A.make_model("voxels")


def test_template_decoder_starts_near_the_sphere_and_meshes():
    model = A.make_model("sphere", code_dim=8)
    mesh, template = A.template_mesh(model.decoder, torch.zeros(8), subdivisions=2)
    assert len(mesh.vertices) == len(template) == 162
    assert np.array_equal(mesh.faces, A.sphere_template(2).faces)


def test_patch_mesh_has_k_sheets_and_exports(tmp_path):
    dec = A.PatchDecoder(code_dim=8, n_patches=3, hidden=(16,))
    mesh, uv, patch = A.patch_mesh(dec, torch.randn(8), res=5)
    assert len(mesh.vertices) == 3 * 25 and len(mesh.faces) == 3 * 32
    assert uv.shape == (75, 2) and np.bincount(patch).tolist() == [25, 25, 25]
    for suffix in ("obj", "ply"):
        mesh.export(tmp_path / f"m.{suffix}")
        back = trimesh.load(tmp_path / f"m.{suffix}", force="mesh")
        assert len(back.faces) == len(mesh.faces)
    colors = experiments.checker_colors(uv, patch, cells=2)
    assert colors.shape == (75, 3) and colors.min() >= 0 and colors.max() <= 1


# --------------------------------------------------------------------------
# Loss, normals, evaluation, training
# --------------------------------------------------------------------------

def test_chamfer_loss_equals_the_library_chamfer_value_and_gradient():
    a = (torch.rand(3, 40, 3) - 0.5).requires_grad_()
    b = torch.rand(3, 25, 3) - 0.5
    loss = A.chamfer_loss(a, b)
    ref = chamfer_distance(a, b, squared=True)
    assert torch.allclose(loss, ref, atol=1e-7)
    g1, = torch.autograd.grad(loss, a)
    g2, = torch.autograd.grad(ref, a)
    assert torch.allclose(g1, g2, atol=1e-6)
    assert A.chamfer_loss(b, b).item() == pytest.approx(0.0, abs=1e-12)


def test_estimated_normals_of_a_plane_are_its_normal():
    xy = torch.rand(200, 2) - 0.5
    plane = torch.cat([xy, torch.zeros(200, 1)], 1)
    n = experiments.estimate_normals(plane, k=8)
    assert torch.allclose(n[:, 2].abs(), torch.ones(200), atol=1e-4)


def test_patch_normals_match_the_map():
    """A decoder whose first patch is the plane z = u: its normal is ±(-1, 0, 1)/√2."""
    dec = A.PatchDecoder(code_dim=2, n_patches=1, hidden=(4,))
    with torch.no_grad():
        first, last = dec.patches[0][0], dec.patches[0][2]
        first.weight.zero_(); first.bias.zero_(); last.weight.zero_(); last.bias.zero_()
        first.weight[0, 0], first.weight[1, 1] = 1.0, 1.0   # relu(u), relu(v) (u, v >= 0)
        last.weight[0, 0], last.weight[1, 1], last.weight[2, 0] = 1.0, 1.0, 1.0  # (u, v, u)
    model = A.AutoEncoder(A.PointNetEncoder(2), dec)
    pts, nrm = experiments.decode_with_normals(model, torch.rand(1, 10, 3), 50)
    assert torch.allclose(pts[0, :, 2], pts[0, :, 0], atol=1e-6)
    assert torch.allclose(nrm[0].abs(), torch.tensor([2 ** -0.5, 0, 2 ** -0.5]).expand(50, 3),
                          atol=1e-4)


def test_a_short_training_run_beats_the_untrained_network():
    shapes = [make_shape("mug", 0), make_shape("table", 1)]
    clouds, normals = A.point_clouds(shapes, n=512, res=32)
    model = A.make_model("atlas", code_dim=16, n_patches=2, hidden=(32, 32))
    before = experiments.evaluate(model, clouds, normals, n=256, n_input=256)
    train(A.chamfer_step(model, clouds, batch_size=2, n_points=256, lr=3e-3), 60, progress=False)
    after = experiments.evaluate(model, clouds, normals, n=256, n_input=256)
    assert after["chamfer"] < 0.3 * before["chamfer"]
    assert after["fscore"] > before["fscore"]


# --------------------------------------------------------------------------
# Checks: pass on the reference, fail with a useful message on the usual slips
# --------------------------------------------------------------------------

def _todo(*args):
    raise NotImplementedError("Question q1: implement this and remove the raise")


def test_checks_pass_on_the_reference(capsys):
    assert checks.check_chamfer(lambda a, b: chamfer_distance(a, b, reduction="none"))
    assert checks.check_uv_grid(A.uv_grid)
    assert checks.check_triangulate_square(A.triangulate_square)
    assert checks.check_patch_forward(lambda dec, code, uv: dec(code, uv))
    assert capsys.readouterr().out.count("✔") >= 5


@pytest.mark.parametrize("check", [checks.check_chamfer, checks.check_uv_grid,
                                   checks.check_triangulate_square, checks.check_patch_forward])
def test_checks_fail_on_the_untouched_assignment(check):
    with pytest.raises(CheckFailure, match="not implemented"):
        check(_todo)


def test_chamfer_check_names_the_slip():
    def one_way(a, b):
        return (torch.cdist(a, b) ** 2).min(2).values.mean(-1)

    def unsquared(a, b):
        d = torch.cdist(a, b)
        return d.min(2).values.mean(-1) + d.min(1).values.mean(-1)

    with pytest.raises(CheckFailure, match="only the direction a -> b"):
        checks.check_chamfer(one_way)
    with pytest.raises(CheckFailure, match="unsquared"):
        checks.check_chamfer(unsquared)


def test_triangulation_check_catches_clockwise_and_missing_cells():
    cw = lambda res: A.triangulate_square(res)[:, [0, 2, 1]]  # noqa: E731
    with pytest.raises(CheckFailure, match="clockwise"):
        checks.check_triangulate_square(cw)
    half = lambda res: A.triangulate_square(res)[: (res - 1) ** 2]  # noqa: E731
    with pytest.raises(CheckFailure, match="shape"):
        checks.check_triangulate_square(half)

    def other(res):
        i, j = torch.meshgrid(torch.arange(res - 1), torch.arange(res - 1), indexing="ij")
        a = (i * res + j).reshape(-1)
        return torch.cat([torch.stack([a, a + res, a + res + 1], 1),
                          torch.stack([a, a + res + 1, a + 1], 1)])
    assert checks.check_triangulate_square(other)   # either diagonal is fine


def test_uv_and_forward_checks_name_the_slip():
    with pytest.raises(CheckFailure, match="swapped"):
        checks.check_uv_grid(lambda res: A.uv_grid(res).flip(1))

    def code_first(dec, code, uv):
        b, m = code.shape[0], uv.shape[1]
        return torch.stack([f(torch.cat([code[:, None].expand(b, m, -1), uv[k].expand(b, m, 2)], -1))
                            for k, f in enumerate(dec.patches)], 1)

    with pytest.raises(CheckFailure, match="concat"):
        checks.check_patch_forward(code_first)


# --------------------------------------------------------------------------
# Measurements used by the lecture
# --------------------------------------------------------------------------

def test_knn_edges_are_unique_undirected_pairs():
    pts = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5.0, 0, 0]])
    edges = experiments.knn_edges(pts, k=1)
    assert edges.tolist() == [[0, 1], [1, 2], [2, 3]]


def test_surface_variation_flat_vs_blob():
    flat = torch.cat([torch.rand(300, 2), torch.zeros(300, 1)], 1)
    blob = torch.randn(300, 3)
    assert experiments.surface_variation(flat).max() < 1e-6
    assert 0.15 < experiments.surface_variation(blob).median() <= 1 / 3 + 1e-6


def test_correspondence_agreement_laws():
    v = np.random.default_rng(0).normal(size=(500, 3))
    assert experiments.correspondence_agreement(v, 2 * v + 1) == pytest.approx(1.0)
    perm = np.random.default_rng(1).permutation(500)
    assert abs(experiments.correspondence_agreement(v, v[perm])) < 0.15
    with pytest.raises(ValueError, match="same template"):
        experiments.correspondence_agreement(v, v[:10])


def test_build_models_share_encoder_and_output_count():
    models = experiments.build_models({"n_patches": 3, "n_points": 30})
    assert sorted(models) == ["atlas_1", "atlas_3", "pointset", "sphere"]
    x = torch.rand(2, 50, 3) - 0.5
    for model in models.values():
        assert model(x, 30).shape == (2, 30, 3)
    a1, a3 = models["atlas_1"].decoder, models["atlas_3"].decoder
    per_patch = sum(p.numel() for p in a1.parameters())
    assert sum(p.numel() for p in a3.parameters()) == 3 * per_patch


def test_shipped_checkpoint_loads_and_records_the_comparison():
    from gen3d_course.checkpoints import checkpoint_info

    models = experiments.load_pretrained()
    info = checkpoint_info(experiments.CHECKPOINT)
    k = info["config"]["models"]["n_patches"]
    assert sorted(models) == sorted(["pointset", "atlas_1", f"atlas_{k}", "sphere"])
    x = torch.rand(1, 512, 3) - 0.5
    assert models[f"atlas_{k}"](x, 100).shape == (1, 100, 3)
    metrics = info["metrics"]
    assert metrics[f"atlas_{k}"]["chamfer"] < metrics["atlas_1"]["chamfer"]
    assert all(m["chamfer"] < 0.01 for m in metrics.values())   # untrained: > 0.03


def test_chamfer_step_rejects_too_small_pools():
    model = A.make_model("atlas", code_dim=4, n_patches=1, hidden=(8,))
    with pytest.raises(ValueError, match="n_points=64"):
        A.chamfer_step(model, torch.rand(2, 32, 3), n_points=64)
