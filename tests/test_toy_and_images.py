import numpy as np
import pytest
import torch

from gen3d_course.data import toy2d
from gen3d_course.data.images import digits, shape_images


def test_ring_samples_cover_all_modes_and_collapse_is_detected():
    x = toy2d.ring_of_gaussians(2000, std=0.05)
    stats = toy2d.mode_statistics(x, toy2d.ring_centers(), std=0.05)
    assert stats["modes_covered"] == 8 and stats["high_quality"] > 0.98
    collapsed = toy2d.ring_centers()[[0]].repeat(100, 1)
    assert toy2d.mode_statistics(collapsed, toy2d.ring_centers(), 0.05)["modes_covered"] == 1
    noise = torch.randn(500, 2) * 3
    assert toy2d.mode_statistics(noise, toy2d.ring_centers(), 0.05)["high_quality"] < 0.2
    with pytest.raises(ValueError, match="expected \\(N, 2\\)"):
        toy2d.mode_statistics(torch.zeros(5, 3), toy2d.ring_centers(), 0.05)


def test_grid_roll_and_mixture():
    assert toy2d.grid_centers(5).shape == (25, 2)
    assert toy2d.grid_of_gaussians(100).shape == (100, 2)
    roll = toy2d.swiss_roll(500)
    assert roll.abs().max() < 3
    x = toy2d.mixture_1d(20000, means=(-2, 2), stds=(0.1, 0.1), weights=(0.25, 0.75))
    assert (x > 0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    with pytest.raises(ValueError, match="sum to 1"):
        toy2d.mixture_1d(10, weights=(0.5, 0.6, 0.1))
    assert torch.equal(toy2d.swiss_roll(10, seed=1), toy2d.swiss_roll(10, seed=1))


def test_shape_images_and_digits():
    images, labels = shape_images(per_category=2, size=16)
    assert images.shape == (10, 1, 16, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert 0 <= images.min() and images.max() <= 1 and images.mean() > 0.02
    masks, _ = shape_images(per_category=1, size=16, kind="mask")
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="kind 'rgb'"):
        shape_images(1, kind="rgb")
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.max() == 1 and y.max() == 9
