"""Multi-view data for NeRF: the procedural scene, colour sphere tracing, the two file formats."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from gen3d_course.data import nerf_formats
from gen3d_course.data.nerf_formats import (NerfFormatError, load_blender, load_blender_splits,
                                            load_tiny_nerf, save_blender)
from gen3d_course.data.scenes import BoundsError, Scene, Views, render_scene_views, scene_views
from gen3d_course.render.cameras import pose_from_angles

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def views():
    return scene_views(n_train=4, n_test=2, size=24, seed=0)


def test_scene_sdf_is_exact_union_and_inside_the_world():
    scene = Scene()
    p = np.random.default_rng(0).uniform(-0.7, 0.7, (4000, 3))
    assert np.allclose(scene.sdf(p), scene.solid(p))
    lo, hi = scene.solid.bounds()
    assert (lo >= -0.5).all() and (hi <= 0.5).all()
    colors = scene.albedo(np.array([[0.0, -0.31, 0.4]]))  # a point on the ground
    assert np.allclose(colors[0], scene.colors[-1])
    with pytest.raises(ValueError, match="expected \\(N, 3\\)"):
        scene.sdf(np.zeros((3, 2)))


def test_scene_views_are_consistent(views):
    train, test = views["train"], views["test"]
    assert len(train) == 4 and len(test) == 2 and train.rgba.shape == (4, 24, 24, 4)
    assert 0.2 < train.alpha.mean() < 0.9  # objects fill part of the frame, the rest is background
    assert torch.allclose(train.images[train.alpha == 0], torch.ones(3))  # white background
    black = train.composite(0.0)
    assert torch.allclose(black[train.alpha == 0], torch.zeros(3))
    # depth says where each ray hits: o + t·d is on the surface
    origins, dirs = train.rays()
    mask = train.alpha > 0
    points = (origins + train.depth[..., None] * dirs)[mask].double().numpy()
    assert np.abs(Scene().sdf(points)).max() < 0.01
    # held-out cameras differ from the training ones
    eyes = lambda v: v.poses[:, :3, 3]  # noqa: E731
    assert torch.cdist(eyes(test), eyes(train)).min() > 0.05


def test_views_indexing_and_validation(views):
    sub = views["train"][[0, 2]]
    assert len(sub) == 2 and torch.equal(sub.poses[1], views["train"].poses[2])
    assert sub.depth.shape == (2, 24, 24) and sub.names == ["0", "2"]
    assert views["train"].with_background((0.0, 1.0, 0.0)).images[0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="poses have shape"):
        Views(torch.zeros(2, 4, 4, 4), torch.zeros(3, 4, 4), 10.0)
    with pytest.raises(ValueError, match="background"):
        Views(torch.zeros(1, 4, 4, 4), torch.eye(4)[None], 10.0, background=(1, 2))



def test_views_carry_the_scene_box_and_catch_a_wrong_one(views):
    train = views["train"]
    assert train.bounds == (-0.5, 0.5) and train[[0]].bounds == train.bounds
    assert train.foreground_miss_fraction() == 0.0
    big = train.scaled(3.0)
    assert big.bounds == (-1.5, 1.5) and torch.allclose(big.poses[:, :3, 3], 3 * train.poses[:, :3, 3])
    assert torch.equal(big.rgba, train.rgba) and torch.allclose(big.depth, 3 * train.depth)
    big.check_bounds()
    wrong = dataclasses.replace(big, bounds=(-0.5, 0.5))  # the cut-out the old exercise trained
    assert wrong.foreground_miss_fraction() > 0.2
    with pytest.raises(BoundsError, match=r"miss the box \[-0.5, 0.5\]³.*bounds=views.bounds"):
        wrong.check_bounds()
    with pytest.raises(ValueError, match="lo < hi"):
        dataclasses.replace(train, bounds=(1.0, -1.0))
    opaque = Views(torch.ones(1, 4, 4, 4), torch.eye(4)[None], 10.0, bounds=(5.0, 6.0))
    assert opaque.foreground_miss_fraction() == 0.0  # no alpha (tiny-NeRF): nothing to check


# ------------------------------------------------------------------ Blender NeRF-synthetic format
def test_blender_round_trip_downscale_and_background(tmp_path, views):
    save_blender(views["train"], tmp_path, "train")
    save_blender(views["test"], tmp_path, "test")
    loaded = load_blender(tmp_path, "train", background=(0.0, 0.0, 0.0))
    assert torch.allclose(loaded.rgba, views["train"].rgba, atol=1 / 255)
    assert torch.allclose(loaded.poses, views["train"].poses, atol=1e-6)
    assert loaded.focal == pytest.approx(views["train"].focal, rel=1e-6)
    assert torch.allclose(loaded.images[loaded.alpha == 0], torch.zeros(3))
    small = load_blender(tmp_path, "train", downscale=2)
    assert small.rgba.shape == (4, 12, 12, 4) and small.focal == pytest.approx(loaded.focal / 2)
    # area averaging of premultiplied colour: composited results commute with downscaling
    big = views["train"].images.reshape(4, 12, 2, 12, 2, 3).mean((2, 4))
    assert torch.allclose(small.images, big, atol=2 / 255)
    splits = load_blender_splits(tmp_path)
    assert sorted(splits) == ["test", "train"] and len(splits["test"]) == 2
    assert loaded.bounds == (-0.5, 0.5)  # written by save_blender as "bounds"
    assert load_blender(tmp_path, "train", bounds=(-2, 2)).bounds == (-2.0, 2.0)


def test_blender_downscales_frame_by_frame(tmp_path):
    """Memory holds one full-size frame, not the whole split (the 800² Blender scenes at
    downscale=8 went from 3.9 GB to 0.3 GB peak: benchmarks/real_data.py memory)."""
    import tracemalloc

    n, size = 12, 160
    views = Views(torch.rand(n, size, size, 4, generator=torch.Generator().manual_seed(0)),
                  torch.eye(4).expand(n, 4, 4), 100.0)
    save_blender(views, tmp_path)
    tracemalloc.start()
    small = load_blender(tmp_path, downscale=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert small.rgba.shape == (n, 40, 40, 4)
    assert peak < n * size * size * 4 * 4 / 2, f"{peak / 2**20:.1f} MB: frames decoded all at once?"


def test_blender_box_defaults_to_the_synthetic_convention(tmp_path, views):
    path = save_blender(views["train"][[0]], tmp_path, "train")
    meta = json.loads(path.read_text())
    del meta["bounds"]
    path.write_text(json.dumps(meta))
    assert load_blender(tmp_path).bounds == nerf_formats.BLENDER_BOUNDS == (-1.5, 1.5)
    meta["bounds"] = [1.0]
    path.write_text(json.dumps(meta))
    with pytest.raises(NerfFormatError, match="'bounds'"):
        load_blender(tmp_path)


def _write(tmp_path, meta):
    (tmp_path / "transforms_train.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))


def test_blender_errors_name_what_is_wrong(tmp_path, views):
    save_blender(views["train"][[0]], tmp_path, "train")
    good = json.loads((tmp_path / "transforms_train.json").read_text())
    with pytest.raises(NerfFormatError, match="transforms_val.json does not exist"):
        load_blender(tmp_path, "val")
    _write(tmp_path, "{not json")
    with pytest.raises(NerfFormatError, match="not valid JSON"):
        load_blender(tmp_path)
    _write(tmp_path, {"frames": good["frames"]})
    with pytest.raises(NerfFormatError, match="'camera_angle_x' is missing"):
        load_blender(tmp_path)
    _write(tmp_path, {**good, "camera_angle_x": 40.0})
    with pytest.raises(NerfFormatError, match="degrees"):
        load_blender(tmp_path)
    bad = json.loads(json.dumps(good)); bad["frames"][0]["transform_matrix"] = [[1, 0, 0], [0, 1, 0]]
    _write(tmp_path, bad)
    with pytest.raises(NerfFormatError, match="frame 0: transform_matrix has shape \\(2, 3\\)"):
        load_blender(tmp_path)
    bad = json.loads(json.dumps(good)); del bad["frames"][0]["transform_matrix"]
    _write(tmp_path, bad)
    with pytest.raises(NerfFormatError, match="'transform_matrix' is missing"):
        load_blender(tmp_path)
    bad = json.loads(json.dumps(good)); bad["frames"][0]["file_path"] = "./train/nothing"
    _write(tmp_path, bad)
    with pytest.raises(NerfFormatError, match="nothing.png is missing"):
        load_blender(tmp_path)
    with pytest.raises(NerfFormatError, match="no transforms"):
        load_blender_splits(tmp_path / "train")


def test_blender_rejects_images_of_different_sizes(tmp_path, views):
    from PIL import Image

    save_blender(views["train"][[0, 1]], tmp_path, "train")
    Image.new("RGBA", (10, 10)).save(tmp_path / "train" / "r_1.png")
    with pytest.raises(NerfFormatError, match="one size"):
        load_blender(tmp_path)


# ------------------------------------------------------------------ tiny-NeRF npz
def test_tiny_nerf_round_trip_and_errors(tmp_path, views):
    train = views["train"]
    path = tmp_path / "tiny.npz"
    np.savez(path, images=train.images.numpy(), poses=train.poses.numpy(), focal=np.float64(train.focal))
    loaded = load_tiny_nerf(path)
    assert torch.allclose(loaded.images, train.images) and loaded.focal == pytest.approx(train.focal)
    assert torch.all(loaded.alpha == 1)
    np.savez(path, images=(train.images.numpy() * 255).astype(np.uint8), poses=train.poses[:, :3].numpy(),
             focal=train.focal)
    assert torch.allclose(load_tiny_nerf(path).poses, train.poses, atol=1e-6)  # (N, 3, 4) accepted
    np.savez(path, images=train.images.numpy(), poses=train.poses.numpy())
    with pytest.raises(NerfFormatError, match="missing array\\(s\\) \\['focal'\\]"):
        load_tiny_nerf(path)
    np.savez(path, images=train.images.numpy(), poses=train.poses[:, :2].numpy(), focal=1.0)
    with pytest.raises(NerfFormatError, match="poses have shape \\(4, 2, 4\\)"):
        load_tiny_nerf(path)
    np.savez(path, images=train.images.numpy(), poses=train.poses[:3].numpy(), focal=1.0)
    with pytest.raises(NerfFormatError, match="4 images but 3 poses"):
        load_tiny_nerf(path)
    np.savez(path, images=train.images.numpy()[..., 0], poses=train.poses.numpy(), focal=1.0)
    with pytest.raises(NerfFormatError, match="images have shape"):
        load_tiny_nerf(path)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(NerfFormatError, match="not a readable"):
        load_tiny_nerf(tmp_path / "broken.npz")
    with pytest.raises(NerfFormatError, match="does not exist"):
        load_tiny_nerf(tmp_path / "absent.npz")


def test_opencv_conversion_is_reexported():
    pose = np.eye(4)
    assert np.allclose(nerf_formats.opencv_to_opengl(pose), np.diag([1.0, -1.0, -1.0, 1.0]))


def test_render_scene_views_accepts_shading_options():
    v = render_scene_views(Scene(), pose_from_angles(30.0, 30.0)[None], size=8, specular=0.3)
    assert v.rgba.shape == (1, 8, 8, 4)
