"""DeepSDF: decoder shapes and errors, the loss's laws, frozen test-time optimisation, narrow-band
meshing against a dense grid, a tiny auto-decoder run that must learn, and the checks."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.checks import CheckFailure
from gen3d_course.checks.deepsdf import check_autodecoder_step, check_clamped_l1, check_fit_code
from gen3d_course.data.meshes import MeshShape
from gen3d_course.data.samples import mesh_of
from gen3d_course.data.shapes import make_shape
from gen3d_course.experiments import deepsdf as experiments
from gen3d_course.geometry.extract import evaluate_grid
from gen3d_course.geometry.narrowband import narrow_band_grid
from gen3d_course.models import deepsdf as D


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_decoder_shapes_and_skip_layer():
    dec = D.SDFDecoder(latent_dim=8, hidden=16, layers=4)
    assert dec.layers[2].in_features == 16 + 8 + 3  # (z, x) re-enters at the middle layer
    assert dec(torch.zeros(5, 8), torch.rand(5, 7, 3)).shape == (5, 7)
    assert dec(torch.zeros(8), torch.rand(7, 3)).shape == (7,)
    out = dec(torch.randn(8), torch.rand(100, 3))
    assert out.abs().max() < 1  # tanh output


def test_decoder_errors_say_what_is_wrong():
    dec = D.SDFDecoder(latent_dim=8, hidden=16)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 8\)"):
        dec(torch.zeros(4), torch.rand(7, 3))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., N, 3\)"):
        dec(torch.zeros(8), torch.rand(7, 2))
    with pytest.raises(ValueError, match="do not match"):
        dec(torch.zeros(2, 8), torch.rand(3, 7, 3))
    with pytest.raises(ValueError, match="NaN"):
        dec(torch.zeros(8), torch.full((7, 3), float("nan")))
    with pytest.raises(ValueError, match="skip"):
        D.SDFDecoder(layers=4, skip=4)


def test_field_folds_the_code_and_matches_forward():
    dec = D.SDFDecoder(latent_dim=8, hidden=16, layers=5)
    z = torch.randn(8)
    points = np.random.default_rng(0).uniform(-0.5, 0.5, (300, 3)).astype(np.float32)
    with torch.no_grad():
        expected = dec(z, torch.from_numpy(points)).numpy()
    np.testing.assert_allclose(dec.field(z)(points), expected, atol=1e-6)
    np.testing.assert_allclose(dec.field(z.numpy())(points), expected, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=20),
       st.floats(0.01, 0.5))
def test_clamped_l1_laws(pairs, delta):
    pred, target = (torch.tensor(v, dtype=torch.float64) for v in zip(*pairs))
    loss = D.clamped_l1(pred, target, delta)
    assert 0 <= loss <= 2 * delta + 1e-12
    assert torch.isclose(loss, D.clamped_l1(target, pred, delta))  # symmetric
    inside = (pred.abs() <= delta) & (target.abs() <= delta)
    if inside.all():  # within the band it is the plain L1
        assert torch.isclose(loss, (pred - target).abs().mean())


def test_clamped_l1_ignores_far_errors_on_the_right_side():
    assert D.clamped_l1(torch.tensor([0.3, -0.6]), torch.tensor([0.9, -0.2]), 0.1) == 0
    assert D.clamped_l1(torch.tensor([0.3]), torch.tensor([-0.3]), 0.1) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same shape"):
        D.clamped_l1(torch.zeros(3), torch.zeros(4))


def test_code_regularization_is_weighted_mean_squared_norm():
    codes = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert D.code_regularization(codes, 0.1) == pytest.approx(0.1 * 12.5)


def _self_made_problem():
    dec = D.SDFDecoder(latent_dim=8, hidden=32)
    points = torch.rand(2, 256, 3) - 0.5
    with torch.no_grad():
        sdf = dec(torch.randn(2, 8), points)
    return dec, points, sdf


def test_fit_code_freezes_the_decoder_and_lowers_the_objective():
    dec, points, sdf = _self_made_problem()
    dec.layers[0].weight.requires_grad_(False)  # a flag that must come back as it was
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    z = D.fit_code(dec, points, sdf, steps=100, lr=2e-2)
    assert z.shape == (2, 8) and not z.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in dec.state_dict().items())
    assert all(p.grad is None for p in dec.parameters())
    assert [p.requires_grad for p in dec.parameters()] == [False] + [True] * 9
    with torch.no_grad():
        j0 = D.code_objective(dec, torch.zeros(2, 8), points, sdf)
        j1 = D.code_objective(dec, z, points, sdf)
    assert j1 < 0.3 * j0
    single = D.fit_code(dec, points[0], sdf[0], steps=5, points_per_step=64)
    assert single.shape == (8,)
    with pytest.raises(ValueError, match="one value per point"):
        D.fit_code(dec, points[0], sdf[0, :10])


def _edge_ends(values):
    """Nodes at either end of a grid edge whose ends have opposite signs: the only values
    marching cubes reads (it places a vertex on each such edge by linear interpolation)."""
    inside = values < 0
    ends = np.zeros_like(inside)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        flip = inside[tuple(a)] != inside[tuple(b)]
        ends[tuple(a)] |= flip
        ends[tuple(b)] |= flip
    return ends


def test_narrow_band_matches_a_dense_grid_with_few_queries():
    chair = make_shape("chair", 3)
    dense = evaluate_grid(chair.sdf, 64)
    ends = _edge_ends(dense)
    for start, band in [(16, 1.0), (8, 0.4)]:  # safe for any distance; what the slider uses
        values, queries = narrow_band_grid(chair.sdf, 64, start=start, band=band)
        assert np.array_equal(values < 0, dense < 0)  # signs everywhere
        np.testing.assert_allclose(values[ends], dense[ends], atol=1e-6)  # same mesh
        assert queries < 0.3 * 64 ** 3
    assert queries < 0.15 * 64 ** 3
    with pytest.raises(ValueError, match="band"):
        narrow_band_grid(chair.sdf, 32, band=0)


def test_partial_samples_only_see_one_side():
    mug = make_shape("mug", 1)
    points, sdf, visible = experiments.partial_sdf_samples(mug, 1000, eye=(0.0, 0.0, 1.6), size=32)
    assert points.shape == (1000, 3) and sdf.shape == (1000,)
    np.testing.assert_allclose(sdf, mug.sdf(points), atol=1e-6)
    full, _ = D.samples.surface_points(mug, 2000)
    assert visible[:, 2].mean() > full[:, 2].mean() + 0.05  # the camera looks from +z


def test_mesh_samples_agree_with_the_analytic_shape(tmp_path):
    mug = make_shape("mug", 2)
    path = tmp_path / "mug.ply"
    mesh_of(mug, 24).export(path)
    shape = MeshShape.from_file(path)
    points, sdf = D.sdf_samples_from_mesh(shape, 400, seed=0)
    assert points.shape == (400, 3) and np.isfinite(sdf).all()
    near_zero = np.abs(sdf[:320]).mean()
    assert near_zero < 0.03  # 80% jittered around the surface


def test_tiny_autodecoder_run_learns_two_shapes():
    shapes = [make_shape("table", 0), make_shape("mug", 0)]
    data = D.sdf_dataset(shapes, n_points=2048)
    model = D.AutoDecoder(2, latent_dim=8)
    untrained = experiments.mean_metrics(model.decoder, model.codes.weight.detach(), shapes, 32, 2048)["iou"]
    history = D.train_autodecoder(model, data, 250, shapes_per_batch=2, points_per_shape=512,
                                  progress=False)
    assert history.mean("sdf") < 0.5 * history.mean("sdf", first=True)
    trained = experiments.mean_metrics(model.decoder, model.codes.weight.detach(), shapes, 32, 2048)
    assert trained["iou"] > 0.5 > untrained + 0.3
    assert trained["chamfer"] < 0.06
    with pytest.raises(ValueError, match="n_shapes=2"):
        D.train_autodecoder(D.AutoDecoder(3), data, 1)


def test_autoencoder_encoder_is_order_invariant():
    enc = D.SDFEncoder(latent_dim=8, hidden=16)
    points, sdf = torch.rand(2, 50, 3), torch.randn(2, 50)
    perm = torch.randperm(50)
    torch.testing.assert_close(enc(points, sdf), enc(points[:, perm], sdf[:, perm]))
    assert enc(points, sdf).shape == (2, 8)


def test_checks_pass_on_the_reference_and_fail_on_mistakes():
    assert check_clamped_l1(D.clamped_l1)
    with pytest.raises(CheckFailure, match="values differ"):
        check_clamped_l1(lambda p, t, delta: (p - t).abs().mean())
    assert check_fit_code(D.fit_code, steps=60)

    def unfrozen(decoder, points, sdf, steps, lr, delta, code_reg):
        z = torch.zeros(decoder.latent_dim, requires_grad=True)
        D.code_objective(decoder, z, points, sdf, delta, code_reg).backward()
        return z.detach()

    with pytest.raises(CheckFailure, match="received gradients"):
        check_fit_code(unfrozen, steps=60)
    with pytest.raises(CheckFailure, match="shape \\(8,\\)"):
        check_fit_code(lambda decoder, points, sdf, **kw: torch.zeros(1, 8), steps=60)


def _reference_step(model, optimizer, idx, points, sdf, delta=0.1, code_reg=1e-4):
    return D.autodecoder_step(model, optimizer, idx, points, sdf, delta, code_reg)["loss"]


def test_autodecoder_step_is_the_joint_update_written_out():
    """One step: clamped L1 + λ·mean ||z_i||², backward into weights and codes, Adam step."""
    import copy

    torch.manual_seed(0)
    hand = D.AutoDecoder(5, latent_dim=4, hidden=16)
    lib = copy.deepcopy(hand)
    idx, points = torch.tensor([3, 0]), torch.rand(2, 32, 3) - 0.5
    sdf = points.norm(dim=-1) - 0.3
    opt_hand, opt_lib = D.autodecoder_optimizer(hand, 1e-2, 5e-2), D.autodecoder_optimizer(lib, 1e-2, 5e-2)
    codes = hand.codes(idx)
    loss = D.clamped_l1(hand.decoder(codes, points), sdf, 0.1) + 0.3 * codes.pow(2).sum(1).mean()
    opt_hand.zero_grad()
    loss.backward()
    opt_hand.step()
    logs = D.autodecoder_step(lib, opt_lib, idx, points, sdf, 0.1, 0.3)
    assert logs["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert logs["loss"] == pytest.approx(logs["sdf"] + logs["reg"], rel=1e-6)
    for a, b in zip(hand.parameters(), lib.parameters()):
        torch.testing.assert_close(a, b)


def test_autodecoder_check_passes_the_reference_and_names_the_classic_slips():
    assert check_autodecoder_step(D.autodecoder_optimizer, _reference_step)

    def weights_only(model, lr, code_lr):
        return torch.optim.Adam(model.decoder.parameters(), lr=lr)

    with pytest.raises(CheckFailure, match="codes .* are not in the optimiser"):
        check_autodecoder_step(weights_only, _reference_step)

    def no_prior(model, optimizer, idx, points, sdf, delta, code_reg):
        return _reference_step(model, optimizer, idx, points, sdf, delta, 0.0)

    with pytest.raises(CheckFailure, match="no code prior"):
        check_autodecoder_step(D.autodecoder_optimizer, no_prior)

    def no_clamp(model, optimizer, idx, points, sdf, delta, code_reg):
        return _reference_step(model, optimizer, idx, points, sdf, 10.0, code_reg)

    with pytest.raises(CheckFailure, match="no clamp"):
        check_autodecoder_step(D.autodecoder_optimizer, no_clamp)

    def detached(model, optimizer, idx, points, sdf, delta, code_reg):
        codes = model.codes(idx).detach()
        loss = D.clamped_l1(model.decoder(codes, points), sdf, delta) + code_reg * codes.pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    with pytest.raises(CheckFailure, match="codes did not move"):
        check_autodecoder_step(D.autodecoder_optimizer, detached)

    def no_zero_grad(model, optimizer, idx, points, sdf, delta, code_reg):
        codes = model.codes(idx)
        loss = D.clamped_l1(model.decoder(codes, points), sdf, delta) + code_reg * codes.pow(2).sum(1).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    with pytest.raises(CheckFailure, match="zero_grad"):
        check_autodecoder_step(D.autodecoder_optimizer, no_zero_grad)

    def todo(*args, **kwargs):
        raise NotImplementedError("write it")

    with pytest.raises(CheckFailure, match="not implemented"):
        check_autodecoder_step(todo, _reference_step)


def test_train_cli_finds_deepsdf():
    from gen3d_course.cli import trainable

    assert "deepsdf" in trainable()


def test_surface_chamfer_equals_the_library_metric():
    from gen3d_course.geometry.metrics import chamfer_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    expected = chamfer_distance(torch.tensor(a), torch.tensor(b), squared=False).item()
    assert experiments.surface_chamfer(a, b) == pytest.approx(expected, rel=1e-6)
    assert experiments.surface_chamfer(torch.tensor(a), torch.tensor(a)) == 0
