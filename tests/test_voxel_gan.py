"""Unit 04: 3D-GAN / 3D-VAE-GAN networks, losses, gate, metrics and checks."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.checks import CheckFailure
from gen3d_course.checks import voxel_gan as checks
from gen3d_course.experiments import voxel_gan as experiments
from gen3d_course.geometry.metrics import iou, iou_distance_matrix
from gen3d_course.models import voxel_gan as vg
from gen3d_course.models.gans import discriminator_loss


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2))
def test_conv_output_size_matches_torch(n, k, s, p):
    x = torch.zeros(1, 1, n, 2, 2)
    if n + 2 * p >= k:
        conv = torch.nn.Conv3d(1, 1, (k, 1, 1), (s, 1, 1), (p, 0, 0))
        assert conv(x).shape[2] == vg.conv_output_size(n, k, s, p)
    if (n - 1) * s - 2 * p + k >= 1:
        tconv = torch.nn.ConvTranspose3d(1, 1, (k, 1, 1), (s, 1, 1), (p, 0, 0))
        assert tconv(x).shape[2] == vg.conv_output_size(n, k, s, p, transposed=True)


def test_conv_output_size_errors():
    with pytest.raises(ValueError, match="does not fit"):
        vg.conv_output_size(2, 5)
    with pytest.raises(ValueError, match="positive integer"):
        vg.conv_output_size(0, 3)


def test_voxel_shuffle_is_a_stride2_transposed_convolution():
    """A 2x2x2 stride-2 transposed conv to one channel == a 1x1x1 conv to 8 channels + shuffle."""
    torch.manual_seed(0)
    tconv = torch.nn.ConvTranspose3d(5, 1, 2, 2, 0, bias=False)
    conv = torch.nn.Conv3d(5, 8, 1, bias=False)
    with torch.no_grad():  # channel (i, j, k) of the conv = kernel tap (i, j, k)
        conv.weight.copy_(tconv.weight[:, 0].permute(1, 2, 3, 0).reshape(8, 5, 1, 1, 1))
    x = torch.randn(2, 5, 3, 4, 5)
    assert torch.allclose(vg.VoxelShuffle(2)(conv(x)), tconv(x), atol=1e-5)


@pytest.mark.parametrize("output", ["transposed", "shuffle"])
@pytest.mark.parametrize("channels", [(32, 16), (64, 32, 16)])
def test_generator_and_discriminator_shapes(output, channels):
    G = vg.VoxelGenerator(16, channels, output)
    D = vg.VoxelDiscriminator(channels)
    r = vg.resolution_of(channels)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, r, r, r) and ((x > 0) & (x < 1)).all()
    assert D(x).shape == (3,)
    shapes = [s for _, t, s in vg.layer_shapes(G, torch.randn(2, 16)) if t == "ConvTranspose3d"]
    assert [s[2] for s in shapes][:len(channels)] == [4 * 2**i for i in range(len(channels))]
    assert D.features(x).shape[0] == 3


def test_network_input_errors():
    with pytest.raises(ValueError, match=r"expected \(B, 16\)"):
        vg.VoxelGenerator(16, (32, 16))(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"expected \(B, 1, 16, 16, 16\)"):
        vg.VoxelDiscriminator((32, 16))(torch.rand(3, 16, 16, 16))
    with pytest.raises(ValueError, match="4 \\* 2\\^k"):
        vg.ImageEncoder(8, image_size=24)
    with pytest.raises(ValueError, match="NaN"):
        iou_distance_matrix(torch.full((1, 4, 4, 4), float("nan")), torch.zeros(1, 4, 4, 4))


def test_gate_skips_the_step_only_when_d_was_too_good():
    torch.manual_seed(0)
    D = vg.VoxelDiscriminator((8, 4))
    before = copy.deepcopy(D.state_dict())
    opt = torch.optim.Adam(D.parameters(), 1e-2, betas=(0.5, 0.999))
    real, fake = torch.rand(4, 1, 16, 16, 16), torch.rand(4, 1, 16, 16, 16)
    loss, acc, updated = vg.discriminator_update(D, opt, real, fake, last_accuracy=0.9)
    assert not updated and 0 <= acc <= 1 and loss > 0
    assert torch.equal(D.head.weight, before["head.weight"])
    _, _, updated = vg.discriminator_update(D, opt, real, fake, last_accuracy=0.8)
    assert updated and not torch.equal(D.head.weight, before["head.weight"])


def test_losses():
    mu, logvar = torch.zeros(3, 4), torch.zeros(3, 4)
    logits = torch.tensor([0.0, 0.0])
    parts = vg.vae_gan_loss(logits, mu[:2], logvar[:2], torch.ones(2, 1, 2, 2, 2),
                            torch.zeros(2, 1, 2, 2, 2), alpha1=5.0, alpha2=0.5)
    assert torch.isclose(parts["gan"], torch.log(torch.tensor(2.0)))
    assert parts["recon"] == 8 and torch.isclose(parts["total"], parts["gan"] + 4)
    assert vg.discriminator_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -2.0])) == 0.75
    smooth = discriminator_loss(torch.tensor([20.0]), torch.tensor([-20.0]), real_label=0.9)
    assert smooth > 0.3  # label smoothing: a D that is infinitely sure still pays


def test_iou_distance_matrix_equals_pairwise_iou_and_set_metrics():
    v, _ = vg.voxel_dataset(2, 16, 0)
    d = iou_distance_matrix(v, v)
    assert torch.allclose(d, d.T) and (d.diagonal() == 0).all()
    assert torch.isclose(d[0, 3], 1 - iou(v[0], v[3]))
    same = experiments.generation_metrics(v, v)
    assert same["MMD"] == 0 and same["COV"] >= 0.89  # two mugs coincide at 16^3
    assert experiments.generation_metrics(experiments.random_blobs(10, 16, 0), v)["MMD"] > 0.5


def test_components_neighbours_and_mesh():
    grid = np.zeros((16, 16, 16), bool)
    grid[2:8, 2:8, 2:8] = True
    grid[12, 12, 12] = True
    keep, share, count = experiments.largest_component(grid)
    assert count == 2 and keep.sum() == 216 and share == 216 / 217
    idx, score = experiments.nearest_neighbours(torch.from_numpy(grid)[None], torch.from_numpy(np.stack([keep, ~grid])))
    assert idx.item() == 0 and score.item() == pytest.approx(216 / 217)
    mesh = experiments.voxel_mesh(keep.astype(np.float32))
    # occupied cells 2..7 span [-0.5 + 2/16, -0.5 + 8/16]; the 0.5 level lies on the cell faces
    assert np.allclose(mesh.bounds, [[-0.375] * 3, [0.0] * 3], atol=1e-6) and mesh.is_watertight
    assert experiments.mean_shape(torch.from_numpy(np.stack([grid, keep])), 3).shape == (3, 16, 16, 16)


def test_vae_gan_training_reduces_reconstruction_error():
    torch.manual_seed(0)
    voxels, _ = vg.voxel_dataset(4, 16, 0)
    images, _ = vg.image_dataset(4, 16, 0)
    cfg = vg.VoxelGANConfig(z_dim=8, channels=(16, 8), image_size=16, encoder=True, batch=10,
                            lr_g=3e-3)
    model = vg.VoxelGAN(cfg)
    history = vg.fit(model, voxels, 40, images=images, progress=False)
    assert history.mean("recon", window=5) < 0.5 * history.mean("recon", first=True, window=5)
    state = experiments.pack_state(model)
    assert {k.split(".")[0] for k in state} == {"G", "D", "E"}
    assert model.reconstruct(images[:2]).shape == (2, 16, 16, 16)


def test_checks_pass_on_reference_and_fail_on_mistakes():
    checks.check_conv_output_size(vg.conv_output_size)
    with pytest.raises(CheckFailure, match="gives 64"):
        checks.check_conv_output_size(lambda n, k, s, p, t=False: (n + 2 * p - k) // s + 1)

    checks.check_generator(lambda z, c: vg.VoxelGenerator(z, c, "transposed"))
    with pytest.raises(CheckFailure, match="parameters|layer"):
        checks.check_generator(lambda z, c: vg.VoxelGenerator(z, c, "shuffle"))

    checks.check_discriminator_update(vg.discriminator_update)

    def ungated(D, opt, real, fake, last, threshold=0.8):
        return vg.discriminator_update(D, opt, real, fake, 0.0, threshold)

    with pytest.raises(CheckFailure, match="PREVIOUS"):
        checks.check_discriminator_update(ungated)

    checks.check_vae_gan_loss(vg.vae_gan_loss)

    def no_kl(*args):
        out = vg.vae_gan_loss(*args)
        out["total"] = out["gan"] + args[-1] * out["recon"]
        return out

    with pytest.raises(CheckFailure, match="total"):
        checks.check_vae_gan_loss(no_kl)
