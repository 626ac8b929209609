"""The course's experiments with DeepSDF (unit 05): completion from one view, IoU and Chamfer against
the exact shapes, the train/unseen splits, and the shipped checkpoint's recipe. The method is in
``models.deepsdf``."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, save_checkpoint
from ..data import samples
from ..data.shapes import CATEGORIES, make_shape
from ..geometry.extract import evaluate_grid, marching_cubes
from ..geometry.metrics import iou
from ..models.deepsdf import (CODE_REG, DELTA, AutoDecoder, SDFDecoder, fit_code, sdf_dataset, sdf_grid,
                              train_autodecoder)
from ..render.cameras import look_at, pixel_rays
from ..render.sphere_tracing import render_views

CHECKPOINT = "deepsdf"
HELDOUT_SEED = 1000  # unseen shapes are seeds 1000, 1001, ... of every category


def partial_sdf_samples(shape, n: int = 4096, eye=(0.0, 0.25, 1.6), size: int = 64,
                        seed: int = 0, sigmas=(0.005, 0.03)):
    """SDF samples from what one depth camera at ``eye`` sees: a partial observation.

    The shape is rendered (sphere tracing) to a depth image; the visible surface points
    p = o + t·d are jittered like :func:`~gen3d_course.data.samples.sdf_samples`, and a quarter
    of the samples lie in the free space the rays crossed in front of the surface. Values are
    the shape's exact SDF, so the only thing missing is the part the camera did not see.
    Returns (points (n, 3), sdf (n,), visible surface points (V, 3)).
    """
    c2w = look_at(eye)
    view = render_views(shape, c2w, size=size)
    focal = 0.5 * size / np.tan(0.5 * np.radians(40.0))  # render_views' default field of view
    origins, directions = (x.reshape(-1, 3).numpy().astype(np.float64)
                           for x in pixel_rays(c2w, size, size, focal))
    hit = view["mask"].reshape(-1)
    depth = view["depth"].reshape(-1)[hit]
    if hit.sum() < 10:
        raise ValueError("partial_sdf_samples: the camera sees (almost) nothing of the shape.")
    visible = origins[hit] + depth[:, None] * directions[hit]
    rng = np.random.default_rng(seed)
    n_free = n // 4
    pick = rng.integers(0, len(visible), n - n_free)
    sigma = np.where(np.arange(len(pick)) % 2 == 0, sigmas[0], sigmas[1])[:, None]
    near = visible[pick] + rng.normal(size=(len(pick), 3)) * sigma
    ray = rng.integers(0, len(visible), n_free)
    free = visible[ray] - directions[hit][ray] * rng.uniform(0.02, 0.3, (n_free, 1))
    points = np.clip(np.concatenate([near, free]), config.WORLD[0], config.WORLD[1]).astype(np.float32)
    return points, shape.sdf(points).astype(np.float32), visible.astype(np.float32)


def surface_chamfer(a, b) -> float:
    """Chamfer distance between two large point sets, unsquared, both directions summed:

        mean_{x in a} min_{y in b} |x − y| + mean_{y in b} min_{x in a} |x − y|

    the value of ``geometry.metrics.chamfer_distance(a, b, squared=False)``, found with k-d trees
    so that tens of thousands of points fit (the metrics module builds the full N×M matrix). Many
    points matter: two independent samplings of the *same* surface with 2,048 points each are
    already about 0.027 apart on our shapes, which hides the reconstruction error.
    """
    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
            for x in (a, b))
    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def shape_metrics(decoder: SDFDecoder, z, shape, res: int = 64, n_points: int = 10000,
                  seed: int = 0) -> dict:
    """IoU and Chamfer of the decoded shape against the true one.

    IoU: inside (sdf < 0) at the res³ grid nodes, predicted vs true. Chamfer
    (:func:`surface_chamfer`, world units; the cube is 1 wide) between ``n_points`` points on the
    marching-cubes mesh and on the true surface. A decoder that puts no surface in the cube gets
    IoU 0 and Chamfer inf.
    """
    values, _ = sdf_grid(decoder, z, res)
    truth, true_points = _truth(shape, res, n_points, seed)
    score = float(iou(values < 0, truth < 0))
    if values.min() >= 0 or values.max() <= 0:
        return {"iou": score, "chamfer": float("inf")}
    pred, _ = trimesh.sample.sample_surface(marching_cubes(values), n_points, seed=seed)
    return {"iou": score, "chamfer": surface_chamfer(pred, true_points)}


_TRUTH_CACHE: dict = {}


def _truth(shape, res: int, n_points: int, seed: int):
    """True SDF grid and surface points of a shape, cached: notebooks score one shape many times."""
    params = getattr(shape, "params", None)
    key = (shape.category, getattr(shape, "seed", id(shape)),
           tuple(sorted(params.items())) if params else id(shape), res, n_points, seed)
    if key not in _TRUTH_CACHE:
        if len(_TRUTH_CACHE) > 256:
            _TRUTH_CACHE.clear()
        points, _ = samples.surface_points(shape, n_points, seed=seed)
        _TRUTH_CACHE[key] = (evaluate_grid(shape.sdf, res), points)
    return _TRUTH_CACHE[key]


def mean_metrics(decoder: SDFDecoder, codes, shapes, res: int = 64, n_points: int = 10000) -> dict:
    """Mean (and per-shape) IoU and Chamfer over shapes with their codes; ``empty`` counts the
    shapes decoded to no surface at all (their Chamfer is inf, and so is the mean)."""
    rows = [shape_metrics(decoder, z, s, res, n_points) for z, s in zip(codes, shapes)]
    return {"iou": float(np.mean([r["iou"] for r in rows])),
            "chamfer": float(np.mean([r["chamfer"] for r in rows])),
            "empty": sum(not np.isfinite(r["chamfer"]) for r in rows),
            "per_shape": rows}


def training_shapes(per_category: int, start_seed: int = 0) -> list:
    """The shape list a checkpoint was trained on, in code-table order."""
    return [make_shape(c, start_seed + i) for c in CATEGORIES for i in range(per_category)]


def unseen_shapes(per_category: int, start_seed: int = HELDOUT_SEED) -> list:
    """Shapes no checkpoint saw (seeds from ``HELDOUT_SEED`` on), for test-time optimisation."""
    return training_shapes(per_category, start_seed)


def load_pretrained(device=None) -> AutoDecoder:
    """The shipped auto-decoder (decoder and one code per training shape), in eval mode."""
    cfg = checkpoint_info(CHECKPOINT)["config"]
    model = AutoDecoder(cfg["n_shapes"], cfg["latent_dim"], cfg["hidden"], cfg["layers"],
                        input_scale=cfg.get("input_scale", 2.0))
    return load_checkpoint(CHECKPOINT, model, device=device).eval()


def shipped_training_shapes() -> list:
    """The shapes the shipped auto-decoder's codes belong to, in code order."""
    cfg = checkpoint_info(CHECKPOINT)["config"]
    return training_shapes(cfg["per_category"], cfg.get("start_seed", 0))


def train_checkpoint() -> dict:
    """Train the shipped auto-decoder and measure it (``gen3d-course train deepsdf``).

    Records mean IoU / Chamfer on the training shapes (their learned codes) and on unseen
    shapes after test-time optimisation of new codes with the decoder frozen.
    """
    torch.set_num_threads(1)
    seed = 0
    config.seed_everything(seed)
    per_category = config.budget(lecture=4, fast=2, full=20)
    # full: a fixed step count (about 11 min of one unloaded core at ~0.1 s per step), so the
    # shipped weights do not depend on how busy the machine was; the others cap the seconds.
    steps = config.budget(lecture=2000, fast=100, full=6600)
    max_seconds = config.budget(lecture=170, fast=20, full=math.inf)
    shapes = training_shapes(per_category)
    start = time.perf_counter()
    data = sdf_dataset(shapes, n_points=config.budget(lecture=8192, fast=2048, full=16384), seed=seed)
    print(f"deepsdf: {len(shapes)} shapes sampled in {time.perf_counter() - start:.0f} s")
    model = AutoDecoder(len(shapes))
    history = train_autodecoder(model, data, steps, shapes_per_batch=16, points_per_shape=512,
                                max_seconds=max_seconds, seed=seed)
    print(f"deepsdf: {history.steps[-1] + 1} steps in {history.seconds:.0f} s, "
          f"loss {history.mean('loss', first=True):.4f} → {history.mean('loss'):.4f}")
    train_eval = mean_metrics(model.decoder, model.codes.weight.detach(), shapes)
    unseen = unseen_shapes(config.budget(lecture=1, fast=1, full=2))
    unseen_data = sdf_dataset(unseen, n_points=8192, seed=seed + 1)
    codes = fit_code(model.decoder, unseen_data.points, unseen_data.sdf, steps=300,
                     points_per_step=1024)
    unseen_eval = mean_metrics(model.decoder, codes, unseen)
    metrics = {"train_iou": round(train_eval["iou"], 4),
               "train_chamfer": round(train_eval["chamfer"], 5),
               "unseen_iou": round(unseen_eval["iou"], 4),
               "unseen_chamfer": round(unseen_eval["chamfer"], 5),
               "steps": history.steps[-1] + 1, "train_seconds": round(history.seconds),
               "n_train": len(shapes), "n_unseen": len(unseen), "eval_res": 64}
    save_checkpoint(CHECKPOINT, model, command="GEN3D_MODE=full gen3d-course train deepsdf",
                    seed=seed, metrics=metrics,
                    config={**model.config(), "per_category": per_category, "start_seed": 0,
                            "delta": DELTA, "code_reg": CODE_REG})
    return metrics
