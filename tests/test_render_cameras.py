"""render.cameras: the OpenGL convention, poses from angles and orbits, pixel rays, OpenCV conversion."""
import numpy as np
import pytest
import torch

from gen3d_course.render import cameras
from gen3d_course.render.cameras import focal_from_fov, look_at, orbit_poses, pixel_rays, pose_from_angles


def test_look_at_is_a_rigid_transform_looking_down_minus_z():
    c2w = look_at([0.0, 0.0, 2.0])
    assert torch.allclose(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-6)
    assert torch.allclose(c2w[:3, 2], torch.tensor([0.0, 0.0, 1.0]))  # back = +z
    origins, dirs = pixel_rays(c2w, 5, 5, focal=5.0)
    assert torch.allclose(dirs[2, 2], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    assert dirs[0, 2, 1] > 0 and dirs[2, 0, 0] < 0  # top row looks up, left column looks left
    assert torch.allclose(origins, torch.tensor([0.0, 0.0, 2.0]).expand(5, 5, 3))
    with pytest.raises(ValueError, match="parallel"):
        look_at([0.0, 2.0, 0.0])


def test_orbit_poses_look_at_origin():
    poses = orbit_poses(6, radius=1.5, elevation_deg=20)
    eyes = poses[:, :3, 3]
    assert torch.allclose(eyes.norm(dim=1), torch.full((6,), 1.5), atol=1e-5)
    forward = -poses[:, :3, 2]
    assert torch.allclose(forward, -eyes / eyes.norm(dim=1, keepdim=True), atol=1e-5)


def test_focal_from_fov():
    assert focal_from_fov(100, 90) == pytest.approx(50)


def test_rays_through_matches_pixel_rays_and_batches():
    c2w = cameras.look_at([1.0, 0.5, 1.5])
    o, d = cameras.pixel_rays(c2w, 5, 4, 6.0)
    j, i = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    o2, d2 = cameras.rays_through(c2w, torch.stack([i + 0.5, j + 0.5], -1), 5, 4, 6.0)
    assert torch.allclose(d, d2, atol=1e-6) and torch.allclose(o, o2)
    poses = torch.stack([c2w, cameras.look_at([0.0, 0.3, 2.0])])
    uv = torch.rand(2, 7, 2) * 4
    _, batched = cameras.rays_through(poses, uv, 5, 4, 6.0)
    assert torch.allclose(batched[1], cameras.rays_through(poses[1], uv[1], 5, 4, 6.0)[1], atol=1e-6)
    with pytest.raises(ValueError, match="uv has shape"):
        cameras.rays_through(poses, torch.rand(3, 7, 2), 5, 4, 6.0)


def test_opencv_to_opengl_projects_consistently():
    """A point projected by the OpenCV pinhole (K, c2w_cv) lies on the OpenGL ray of that pixel."""
    eye = np.array([0.8, 0.6, 1.7])
    forward = -eye / np.linalg.norm(eye)  # OpenCV: +z looks at the origin, y points down
    right = np.cross([0.0, -1.0, 0.0], forward); right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w_cv = np.eye(4); c2w_cv[:3, :3] = np.stack([right, down, forward], 1); c2w_cv[:3, 3] = eye
    c2w_gl = cameras.opencv_to_opengl(c2w_cv)
    assert isinstance(c2w_gl, np.ndarray)
    assert np.allclose(cameras.opengl_to_opencv(c2w_gl), c2w_cv)
    assert np.allclose(c2w_gl, np.asarray(cameras.look_at(eye).double()), atol=1e-6)
    point = np.array([0.1, -0.05, 0.2])
    cam = np.linalg.inv(c2w_cv) @ np.append(point, 1.0)
    K = cameras.intrinsic_matrix(20.0, 32, 24).double().numpy()
    u, v, _ = K @ (cam[:3] / cam[2])
    o, d = cameras.rays_through(torch.tensor(c2w_gl, dtype=torch.float32), torch.tensor([u, v]), 32, 24, 20.0)
    to_point = torch.tensor(point, dtype=torch.float32) - o
    assert torch.allclose(d, to_point / to_point.norm(), atol=1e-5)
    assert torch.equal(cameras.opencv_to_opengl(torch.eye(4))[1, 1], torch.tensor(-1.0))
    with pytest.raises(ValueError, match="expected"):
        cameras.opencv_to_opengl(np.eye(3))


def test_pose_from_angles():
    c2w = pose_from_angles(90.0, 0.0, radius=2.0, target=(0, 0, 0))
    assert torch.allclose(c2w[:3, 3], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)


def test_orbit_poses_are_poses_from_evenly_spaced_angles():
    target = (0.1, -0.2, 0.0)
    orbit = orbit_poses(5, radius=2.0, elevation_deg=25.0, start_deg=10.0, target=target)
    for k, c2w in enumerate(orbit):
        assert torch.allclose(c2w, pose_from_angles(10.0 + 72.0 * k, 25.0, 2.0, target), atol=1e-6)
        assert torch.isclose((c2w[:3, 3] - torch.tensor(target)).norm(), torch.tensor(2.0))
