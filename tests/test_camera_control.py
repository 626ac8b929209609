"""Camera control measures (unit 09): angle wrapping, follow statistics, identity drift, the
colour-free azimuth estimator on real renders, steering a 2D generator's code, the shipped 2D GAN."""
import pytest
import torch

from gen3d_course.data.graf_images import graf_images
from gen3d_course.experiments import camera_control as camera
from gen3d_course.models.graf import GRAFConfig

torch.set_num_threads(1)


def test_angle_difference_wraps():
    assert torch.allclose(camera.angle_difference(torch.tensor([350.0, 10.0, 170.0]), torch.tensor([10.0, 350.0, 0.0])),
                          torch.tensor([-20.0, 20.0, 170.0]))


def test_follow_statistics_constant_offset_and_unrelated():
    requested = torch.arange(0, 360, 45.0).expand(3, -1)
    follows = camera.follow_statistics(requested, torch.remainder(requested + torch.tensor([[70.0], [200.0], [5.0]]), 360))
    assert follows["R"] == pytest.approx(1.0, abs=1e-5) and follows["error"] < 1e-3
    fixed = camera.follow_statistics(requested, torch.full((3, 8), 30.0))  # the view never moves
    assert fixed["R"] < 0.05 and fixed["error"] > 60


def test_identity_drift_zero_when_each_object_keeps_its_colour():
    centres = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
    spread = float(torch.pdist(centres).mean())
    assert camera.identity_drift(centres[:, None].expand(-1, 5, -1), spread) == pytest.approx(0.0)
    wandering = torch.stack([centres.roll(i, 0) for i in range(3)], 1)  # each walk visits every colour
    assert camera.identity_drift(wandering, spread) > 0.5
    with pytest.raises(ValueError, match="spread"):
        camera.identity_drift(wandering, 0.0)


def test_object_chroma_removes_brightness_and_ignores_background():
    image = torch.ones(2, 3, 8, 8)
    image[0, :, 2:6, 2:6] = torch.tensor([0.6, 0.3, 0.3])[:, None, None]
    image[1, :, 2:6, 2:6] = torch.tensor([0.4, 0.2, 0.2])[:, None, None]  # same albedo, darker
    chroma = camera.object_chroma(image)
    assert torch.allclose(chroma, torch.tensor([0.5, 0.25, 0.25]).expand(2, -1), atol=1e-6)
    assert torch.allclose(camera.object_chroma(torch.ones(1, 3, 8, 8)), torch.full((1, 3), 1 / 3))


def test_azimuth_estimator_reads_held_out_real_renders():
    cfg = GRAFConfig()
    reference = graf_images(120, cfg.image_size, "chair", seed=2, poses=cfg.poses, fov_deg=cfg.fov_deg)
    test = graf_images(24, cfg.image_size, "chair", seed=3, poses=cfg.poses, fov_deg=cfg.fov_deg)
    estimate = camera.AzimuthEstimator(reference.images, reference.angles[:, 0], k=3)
    error = camera.angle_difference(estimate(test.images), test.angles[:, 0]).abs()
    assert error.median() < 20, f"median azimuth error {error.median():.0f}°"
    # the features carry no colour: recolouring an image does not move its estimate
    assert torch.allclose(estimate(test.images), estimate(1 - (1 - test.images) * torch.tensor([1.0, 0.6, 0.8])[:, None, None]),
                          atol=25.0)


def test_estimator_and_walks_reject_bad_input():
    with pytest.raises(ValueError, match="one azimuth per image"):
        camera.AzimuthEstimator(torch.ones(4, 3, 8, 8), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        camera.pose_features(torch.ones(4, 1, 8, 8))
    with pytest.raises(ValueError, match="requested azimuths"):
        camera.camera_control(torch.zeros(3), torch.ones(2, 4, 3, 8, 8), None, 1.0)


def test_steer_reaches_the_requested_azimuths_of_the_linear_predictor():
    gen = torch.Generator().manual_seed(0)
    direction = {"W": torch.randn(2, 16, generator=gen), "b": torch.randn(2, generator=gen), "radius": 0.7}
    asked = torch.arange(0, 360, 45.0)
    z = camera.steer(torch.randn(16, generator=gen), direction, asked)
    pred = z @ direction["W"].T + direction["b"]
    assert torch.allclose(pred.norm(dim=1), torch.full((8,), 0.7), atol=1e-4)
    assert camera.angle_difference(torch.rad2deg(torch.atan2(pred[:, 1], pred[:, 0])) % 360, asked).abs().max() < 1e-2


def test_shipped_2d_gan_makes_chair_images():
    G = camera.load_pretrained()
    with torch.no_grad():
        images = (G(torch.randn(4, G.latent_dim)) + 1) / 2
    assert images.shape == (4, 3, 32, 32) and not G.training
