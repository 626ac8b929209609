"""render.patches: GRAF's camera distribution p_ξ, patch patterns ν and rays from intrinsics."""

import pytest
import torch

from gen3d_course.checks import graf as checks
from gen3d_course.render import cameras, patches


def test_pose_distribution_cameras_look_at_target_from_the_cap():
    dist = patches.PoseDistribution(elevation_range=(10.0, 40.0), radius=2.0)
    poses, angles = dist.sample(200, torch.Generator().manual_seed(0))
    assert poses.shape == (200, 4, 4) and angles.shape == (200, 2)
    eyes = poses[:, :3, 3]
    assert torch.allclose(eyes.norm(dim=1), torch.full((200,), 2.0), atol=1e-5)
    elevation = torch.rad2deg(torch.asin(eyes[:, 1] / 2.0))
    assert elevation.min() >= 10 - 1e-3 and elevation.max() <= 40 + 1e-3
    assert torch.allclose(elevation, angles[:, 1], atol=1e-3)
    forward = -poses[:, :3, 2]  # the camera looks down −z
    assert torch.allclose(forward, -eyes / 2.0, atol=1e-5)
    # azimuth 0 looks from +z, 90 from +x
    assert torch.allclose(dist.pose(0, 0)[:3, 3], torch.tensor([0, 0, 2.0]), atol=1e-5)
    assert torch.allclose(dist.pose(90, 0)[:3, 3], torch.tensor([2.0, 0, 0]), atol=1e-5)
    with pytest.raises(ValueError, match="inside the world cube"):
        patches.PoseDistribution(radius=0.5)
    with pytest.raises(ValueError, match="elevation_range"):
        patches.PoseDistribution(elevation_range=(50, 10))


def test_patch_pattern_stays_inside_the_image_and_covers_it():
    centers, scales = patches.sample_patch_pattern(5000, 0.25, 1.0, torch.Generator().manual_seed(0))
    assert scales.min() >= 0.25 and scales.max() <= 1.0
    assert (centers.abs() <= 1 - scales[:, None] + 1e-6).all()
    uv = patches.patch_coordinates(centers, scales, 16, 32, 32)
    assert uv.shape == (5000, 16, 16, 2)
    assert uv.min() > 0 and uv.max() < 32
    with pytest.raises(ValueError, match="min_scale"):
        patches.sample_patch_pattern(3, 0.0, 1.0)
    checks.check_patch_pattern(patches.sample_patch_pattern)


def test_scale_one_is_the_half_resolution_image_and_small_scale_native_pixels():
    grid = patches.patch_grid(4)
    assert torch.allclose(grid[0, 0], torch.tensor([-0.75, -0.75])) and torch.allclose(grid[0, 1, 0], torch.tensor(-0.25))
    full = patches.full_image_coordinates(8)[0]
    assert torch.allclose(full[2, 5], torch.tensor([5.5, 2.5]))  # pixel centres, (u, v) = (col, row)
    images = torch.rand(2, 3, 32, 32)
    uv = patches.patch_coordinates(torch.zeros(2, 2), torch.ones(2), 16, 32, 32)
    half = torch.nn.functional.avg_pool2d(images, 2)
    assert torch.allclose(patches.sample_image_patches(images, uv), half, atol=1e-5)
    # scale P/W, centred on pixel boundaries: an exact crop of native pixels
    uv = patches.patch_coordinates(torch.tensor([[-0.5, 0.0]]), torch.tensor([0.5]), 16, 32, 32)
    crop = patches.sample_image_patches(images[:1], uv)
    assert torch.allclose(crop, images[:1, :, 8:24, 0:16], atol=1e-5)


def test_rays_from_intrinsics_match_the_course_convention():
    K = cameras.intrinsic_matrix(40.0, 32, 24)
    c2w = torch.stack([cameras.look_at((1.0, 0.7, 1.2)), cameras.look_at((-1.5, 0.3, 0.2))])
    uv = torch.rand(2, 5, 5, 2) * torch.tensor([32.0, 24.0])
    o1, d1 = patches.rays_from_intrinsics(K, c2w, uv)
    o2, d2 = cameras.rays_through(c2w, uv, 32, 24, 40.0)
    assert torch.allclose(o1, o2) and torch.allclose(d1, d2, atol=1e-6)
    # the centre of the image looks straight at the target
    _, d = patches.rays_from_intrinsics(K, c2w[:1], torch.tensor([[[16.0, 12.0]]]))
    assert torch.allclose(d[0, 0], -c2w[0, :3, 3] / c2w[0, :3, 3].norm(), atol=1e-6)
    checks.check_patch_rays(patches.rays_from_intrinsics)
    checks.check_patch_coordinates(patches.patch_coordinates)
