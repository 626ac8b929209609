"""Loaders for the two posed-image formats people actually have, into ``scenes.Views``.

* Blender "NeRF-synthetic" (Mildenhall et al. 2020): a folder with
  ``transforms_{train,val,test}.json``, each ``{"camera_angle_x": fov_x (radians), "frames":
  [{"file_path": "./train/r_0", "transform_matrix": 4×4 c2w}, ...]}`` and RGBA PNGs at
  ``file_path`` (+ ".png" when the path has no extension). Poses are camera-to-world in the
  OpenGL convention (camera looks down −z, y up) — the course's convention, used as is.
  focal = W / (2·tan(camera_angle_x / 2)). The scene's box is the cube [-1.5, 1.5]³ (the
  convention of the NeRF-synthetic scenes), unless the json says otherwise with a course key
  ``"bounds": [lo, hi]`` (``save_blender`` writes it) or the caller passes ``bounds``.
* tiny-NeRF ``.npz`` (the NeRF authors' small Colab file): arrays ``images`` (N, H, W, 3),
  ``poses`` (N, 4, 4) c2w (OpenGL) and ``focal`` (a number, in pixels).

Poses from OpenCV/COLMAP-style tools (camera looks down +z, y down) must be converted first:
``opencv_to_opengl`` (defined in ``render.cameras``, re-exported here).

Every problem a student can hit — a missing or malformed file, a frame without a pose, a pose
that is not 4×4, a missing image, images of different sizes — raises ``NerfFormatError`` with
a message that names the file and what is wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..render.cameras import opencv_to_opengl, opengl_to_opencv  # noqa: F401 (re-exported)
from .scenes import Views, as_bounds

SPLITS = ("train", "val", "test")
# The box that holds every NeRF-synthetic scene (and tiny-NeRF's lego): [-1.5, 1.5]³.
BLENDER_BOUNDS = (-1.5, 1.5)


class NerfFormatError(ValueError):
    """A NeRF dataset file that cannot be read as the format it claims to be."""


def _read_json(path: Path) -> dict:
    if not path.exists():
        present = sorted(p.name for p in path.parent.glob("transforms_*.json")) if path.parent.exists() else []
        raise NerfFormatError(f"{path} does not exist (transforms files present: {present or 'none'}).")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NerfFormatError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise NerfFormatError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}.")
    return data


def _pose(matrix, where: str) -> np.ndarray:
    try:
        pose = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise NerfFormatError(f"{where}: transform_matrix is not a matrix of numbers.") from None
    if pose.shape == (3, 4):
        pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
    if pose.shape != (4, 4):
        raise NerfFormatError(f"{where}: transform_matrix has shape {pose.shape}; expected (4, 4) "
                              "(or (3, 4)), a camera-to-world matrix.")
    if not np.isfinite(pose).all():
        raise NerfFormatError(f"{where}: transform_matrix contains NaN or inf.")
    return pose


def _image_path(root: Path, file_path: str) -> Path:
    path = root / file_path
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return path
    return path.with_name(path.name + ".png")


def _read_rgba(path: Path, where: str) -> np.ndarray:
    from PIL import Image

    if not path.exists():
        raise NerfFormatError(f"{where}: image {path} is missing.")
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGBA"))
    except Exception as err:  # PIL raises several types for unreadable files
        raise NerfFormatError(f"{where}: image {path} cannot be read ({err}).") from None
    if array.ndim != 3 or array.shape[-1] != 4:
        raise NerfFormatError(f"{where}: image {path} has shape {array.shape}; expected (H, W, 4) RGBA.")
    return array.astype(np.float32) / 255.0


def _downscale(rgba: np.ndarray, factor: int) -> np.ndarray:
    """Area-average one (H, W, 4) image by ``factor`` in premultiplied colour (so edges do not
    get dark halos)."""
    h, w, _ = rgba.shape
    h2, w2 = h // factor, w // factor
    premult = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1)
    premult = premult[:h2 * factor, :w2 * factor].reshape(h2, factor, w2, factor, 4).mean((1, 3))
    alpha = premult[..., 3:]
    rgb = np.where(alpha > 1e-6, premult[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([rgb, alpha], -1).astype(np.float32)


def load_blender(root, split: str = "train", background=(1.0, 1.0, 1.0), downscale: int = 1,
                 max_views: int | None = None, bounds=None) -> Views:
    """One split of a NeRF-synthetic folder as ``Views`` (alpha kept; ``images`` composited
    on ``background``). ``downscale`` k divides width, height and focal by k (area average),
    one frame at a time as it is decoded, so memory holds one full-size frame and the small
    ones (100 frames of 800² at k = 8: about 0.1 GB, not 4). ``bounds``: the scene's box
    (default: the json's ``"bounds"``, else ``BLENDER_BOUNDS``)."""
    root = Path(root)
    if split not in SPLITS:
        raise NerfFormatError(f"load_blender: split {split!r} must be one of {SPLITS}.")
    if int(downscale) != downscale or downscale < 1:
        raise NerfFormatError(f"load_blender: downscale must be a positive integer, got {downscale!r}.")
    path = root / f"transforms_{split}.json"
    meta = _read_json(path)
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise NerfFormatError(f"{path}: the key {key!r} is missing (keys: {sorted(meta)}).")
    try:
        fov_x = float(meta["camera_angle_x"])
    except (TypeError, ValueError):
        raise NerfFormatError(f"{path}: camera_angle_x must be a number (radians), got "
                              f"{meta['camera_angle_x']!r}.") from None
    if not 0 < fov_x < np.pi:
        raise NerfFormatError(f"{path}: camera_angle_x = {fov_x} is not a field of view in radians "
                              "(0 < fov < π); was it given in degrees?")
    frames = meta["frames"]
    if not isinstance(frames, list) or not frames:
        raise NerfFormatError(f"{path}: 'frames' must be a non-empty list.")
    frames = frames[:max_views] if max_views else frames
    if bounds is None:
        try:
            bounds = as_bounds(meta.get("bounds", BLENDER_BOUNDS))
        except ValueError as err:
            raise NerfFormatError(f"{path}: 'bounds': {err}") from None
    images, poses, names = [], [], []
    full_size = None
    for i, frame in enumerate(frames):
        where = f"{path.name} frame {i}"
        if not isinstance(frame, dict):
            raise NerfFormatError(f"{where}: expected an object with file_path and transform_matrix.")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise NerfFormatError(f"{where}: the key {key!r} is missing (keys: {sorted(frame)}).")
        poses.append(_pose(frame["transform_matrix"], where))
        image_path = _image_path(root, str(frame["file_path"]))
        image = _read_rgba(image_path, where)
        full_size = image.shape if full_size is None else full_size
        if image.shape != full_size:
            raise NerfFormatError(f"{where}: image {image_path} is {image.shape[1]}×{image.shape[0]}, "
                                  f"but frame 0's is {full_size[1]}×{full_size[0]}; all images of a "
                                  "split must have one size.")
        images.append(_downscale(image, int(downscale)) if downscale > 1 else image)
        names.append(str(frame["file_path"]))
    rgba = np.stack(images)
    focal = 0.5 * full_size[1] / np.tan(0.5 * fov_x)
    if downscale > 1:
        focal = focal * rgba.shape[2] / full_size[1]
    return Views(torch.from_numpy(rgba), torch.from_numpy(np.stack(poses)).float(), focal,
                 background, names=names, bounds=bounds)


def load_blender_splits(root, splits=SPLITS, **kwargs) -> dict[str, Views]:
    """{split: Views} for every split whose transforms file exists (at least one must)."""
    root = Path(root)
    found = [s for s in splits if (root / f"transforms_{s}.json").exists()]
    if not found:
        raise NerfFormatError(f"{root}: no transforms_{{{','.join(splits)}}}.json found; is this a "
                              "NeRF-synthetic (Blender) scene folder?")
    return {s: load_blender(root, s, **kwargs) for s in found}


def load_tiny_nerf(path, background=(1.0, 1.0, 1.0), bounds=BLENDER_BOUNDS) -> Views:
    """The tiny-NeRF ``.npz`` (``images`` (N, H, W, 3) in [0, 1] or uint8, ``poses`` (N, 4, 4)
    c2w OpenGL, ``focal``) as ``Views`` with alpha = 1 (the images already have a background);
    its scene is the Blender lego, so its box is ``BLENDER_BOUNDS``."""
    path = Path(path)
    if not path.exists():
        raise NerfFormatError(f"{path} does not exist.")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # a zip that is not an npz, a truncated file, pickled objects
        raise NerfFormatError(f"{path} is not a readable .npz file ({err}).") from None
    with data:
        missing = [k for k in ("images", "poses", "focal") if k not in data.files]
        if missing:
            raise NerfFormatError(f"{path}: missing array(s) {missing} (arrays present: {data.files}).")
        images, poses, focal = data["images"], data["poses"], data["focal"]
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise NerfFormatError(f"{path}: images have shape {images.shape}; expected (N, H, W, 3).")
    if poses.ndim == 3 and poses.shape[1:] == (3, 4):
        poses = np.concatenate([poses, np.broadcast_to([[[0.0, 0, 0, 1]]], (len(poses), 1, 4))], 1)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise NerfFormatError(f"{path}: poses have shape {poses.shape}; expected (N, 4, 4) "
                              "camera-to-world matrices.")
    if len(poses) != len(images):
        raise NerfFormatError(f"{path}: {len(images)} images but {len(poses)} poses; need one pose per image.")
    if np.size(focal) != 1 or not np.isfinite(focal).all() or float(np.ravel(focal)[0]) <= 0:
        raise NerfFormatError(f"{path}: focal must be one positive number (pixels), got shape "
                              f"{np.shape(focal)} value {np.ravel(focal)[:3]}.")
    if not np.isfinite(poses).all():
        raise NerfFormatError(f"{path}: poses contain NaN or inf.")
    images = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    if images.shape[-1] == 3:
        images = np.concatenate([images, np.ones_like(images[..., :1])], -1)
    return Views(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(poses.astype(np.float32)),
                 float(np.ravel(focal)[0]), background, bounds=bounds)


def save_blender(views: Views, root, split: str = "train") -> Path:
    """Write ``views`` as a NeRF-synthetic split (PNGs + transforms json, with the scene's box
    as ``"bounds"``); the inverse of ``load_blender`` (used by the tests, and to export the
    procedural scene for other tools)."""
    from PIL import Image

    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (rgba, pose) in enumerate(zip(views.rgba, views.poses)):
        Image.fromarray((rgba.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8), "RGBA").save(
            root / split / f"r_{i}.png")
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
    fov_x = 2 * np.arctan(0.5 * views.width / views.focal)
    path = root / f"transforms_{split}.json"
    path.write_text(json.dumps({"camera_angle_x": float(fov_x), "bounds": list(views.bounds),
                                "frames": frames}, indent=1))
    return path
