"""The course's experiments with the 3D-GAN (unit 04): set metrics with a ceiling and floors, probes of
what G and D learned, the memory wall, single-view reconstruction baselines, and the shipped
checkpoint's recipe. The method itself is in ``models.voxel_gan``."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

from .. import config
from ..checkpoints import CheckpointError, checkpoint_info, load_checkpoint, rounded, save_checkpoint
from ..data.shapes import CATEGORIES, PARAMETER_RANGES, sample_params
from ..geometry.extract import voxel_mesh as _voxel_mesh
from ..geometry.metrics import iou, iou_distance_matrix, set_metrics
from ..models.voxel_gan import VoxelDiscriminator, VoxelGAN, VoxelGANConfig, fit, image_dataset, voxel_dataset

ATTRIBUTES = {"chair": "back_height", "table": "roundness", "lamp": "arm_angle",
              "mug": "handle_size", "airplane": "wing_span"}
# The "train it yourself" model of the lecture: 16^3, small, no gate, G ten times faster than D.
LIVE_CONFIG = dict(z_dim=32, channels=(32, 16), lr_g=2e-3, lr_d=2e-4, d_threshold=None, real_label=1.0)
CHECKPOINT = "voxel_gan"
SEED = 0
HELDOUT_SEED = 10_000      # evaluation shapes, never seen in training
REFERENCE_SEED = 20_000    # a second held-out set: the real-vs-real ceiling of the set metrics


def generation_metrics(generated, reference) -> dict:
    """COV, MMD and 1-NNA (``geometry.metrics.set_metrics``) of generated vs reference voxel grids,
    with the distance 1 − IoU."""
    return set_metrics(iou_distance_matrix(generated, generated), iou_distance_matrix(reference, reference),
                       iou_distance_matrix(generated, reference))


def random_blobs(n: int, res: int, seed: int = 0, fill: float = 0.04, blobs=(1, 4)) -> torch.Tensor:
    """A trivial generator: unions of 1-3 random axis-aligned ellipsoids with about the data's
    occupancy, (n, res, res, res) bool."""
    rng = np.random.default_rng(seed)
    axis = (np.arange(res) + 0.5) / res - 0.5
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    out = np.zeros((n, res, res, res), bool)
    for i in range(n):
        for _ in range(rng.integers(*blobs)):
            c = rng.uniform(-0.25, 0.25, 3)
            r = rng.uniform(0.05, 0.35, 3) * (fill / 0.04) ** (1 / 3)
            out[i] |= ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 < 1
    return torch.from_numpy(out)


def mean_shape(voxels, n: int = 1) -> torch.Tensor:
    """A trivial generator: the voxel-wise mean of ``voxels``, keeping its most often occupied
    voxels up to the data's mean volume (a plain 0.5 threshold of thin shapes is empty),
    repeated n times."""
    data = torch.as_tensor(voxels).float()
    mean = data.mean(0)
    k = max(1, int(round(float(data.flatten(1).sum(1).mean()))))
    keep = torch.zeros(mean.numel(), dtype=torch.bool)
    keep[mean.flatten().topk(k).indices] = True
    keep = keep.view(mean.shape)
    return keep[None].expand(n, *mean.shape).clone()


def largest_component(grid, level: float = 0.5):
    """(mask of the largest 6-connected component, its share of the occupied voxels, number of
    components) of one grid; generated voxels often come with floating specks."""
    occupied = np.asarray(torch.as_tensor(grid) >= level if not isinstance(grid, np.ndarray)
                          else grid >= level)
    labels, count = ndimage.label(occupied)
    if count == 0:
        return occupied, 0.0, 0
    sizes = np.bincount(labels.ravel())[1:]
    keep = labels == (sizes.argmax() + 1)
    return keep, float(sizes.max() / sizes.sum()), int(count)


def nearest_neighbours(generated, reference):
    """(index, IoU) of each generated grid's nearest reference grid (by voxel IoU)."""
    d = iou_distance_matrix(generated, reference)
    dist, idx = d.min(dim=1)
    return idx, 1 - dist


@torch.no_grad()
def discriminator_features(D: VoxelDiscriminator, voxels, chunk: int = 64) -> np.ndarray:
    """D.features of a stack of grids (N, R, R, R), eval mode, as a numpy (N, F) array."""
    D.eval()
    device = next(D.parameters()).device
    data = torch.as_tensor(voxels).float()[:, None]
    out = torch.cat([D.features(data[i:i + chunk].to(device)).cpu() for i in range(0, len(data), chunk)])
    D.train()
    return out.numpy()


def voxel_mesh(grid, level: float = 0.5):
    """A trimesh of the {p = level} surface of an occupancy grid (cell-centred values), in world
    coordinates; an empty mesh when nothing crosses ``level``. See
    :func:`gen3d_course.geometry.extract.voxel_mesh`."""
    return _voxel_mesh(grid, level=level)


def voxel_images(grids, level: float = 0.5) -> torch.Tensor:
    """Front views (N, 1, R, R) of grids (N, R, R, R) for quick figures: looking along -z at the
    x-y plane (y up), each pixel shaded by the depth of the first occupied voxel (near = bright).
    Cheap enough to show hundreds of samples; the plotly meshes show a few in 3D."""
    g = torch.as_tensor(grids)
    occ = (g >= level) if g.dtype != torch.bool else g
    r = occ.shape[-1]
    depth = torch.arange(1, r + 1, dtype=torch.float32)  # iz + 1: larger = nearer the +z viewer
    front = (occ.float() * depth).amax(dim=3)              # (N, x, y)
    image = torch.where(front > 0, 0.3 + 0.7 * front / r, torch.zeros_like(front))
    return image.transpose(1, 2).flip(1)[:, None]          # rows = y (up first), cols = x


def attribute_labels(per_category: int, start_seed: int = 0):
    """Ten sub-categories for a harder probe: 2 * category + [parameter above its range's
    midpoint], with the parameter in :data:`ATTRIBUTES` (tall vs short chair back, rectangular
    vs round table, ...). Same order as :func:`voxel_dataset`."""
    labels = []
    for c, category in enumerate(CATEGORIES):
        lo, hi = PARAMETER_RANGES[category][ATTRIBUTES[category]]
        for seed in range(start_seed, start_seed + per_category):
            labels.append(2 * c + int(sample_params(category, seed)[ATTRIBUTES[category]] > (lo + hi) / 2))
    return torch.tensor(labels)


def training_memory(model: nn.Module, x: torch.Tensor) -> dict:
    """Measured memory of one training forward pass: bytes of the activations autograd saves for
    the backward pass (unique storages, weights excluded), of the parameters, and of the output;
    plus seconds for forward + backward."""
    seen, saved = {p.untyped_storage().data_ptr() for p in model.parameters()}, [0]

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            saved[0] += t.untyped_storage().nbytes()
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    out.float().mean().backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"saved_bytes": saved[0], "param_bytes": params,
            "output_bytes": out.numel() * out.element_size(), "seconds": seconds}


def reconstruction_iou(pred, target) -> torch.Tensor:
    """Per-shape voxel IoU (N,) of two stacks of grids (probabilities count at >= 0.5)."""
    return torch.stack([iou(a, b) for a, b in zip(torch.as_tensor(pred), torch.as_tensor(target))])


def category_mean_baseline(voxels, labels, thresholds=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6)):
    """A reconstruction baseline that is told the category: the mean training grid of each
    category, thresholded at the level that maximises the mean IoU on the training set.
    Returns (grids (C, R, R, R) bool, threshold)."""
    data, labels = torch.as_tensor(voxels).float(), torch.as_tensor(labels)
    means = torch.stack([data[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    best = max(thresholds, key=lambda t: float(reconstruction_iou(means[labels] >= t, data).mean()))
    return means >= best, best


def shipped_config() -> VoxelGANConfig:
    """The shipped 3D-VAE-GAN: 32^3, z 64, channels 64-32-16, gated D, label smoothing 0.9,
    lr_G = 10 lr_D, reconstruction weight 0.1 (sum over voxels), KL weight 1."""
    return VoxelGANConfig(encoder=True)


def pack_state(model: VoxelGAN) -> dict:
    """Generator, discriminator and encoder weights in one state dict (optimisers dropped)."""
    state = {f"G.{k}": v for k, v in model.G.state_dict().items()}
    state.update({f"D.{k}": v for k, v in model.D.state_dict().items()})
    if model.E is not None:
        state.update({f"E.{k}": v for k, v in model.E.state_dict().items()})
    return state


def load_pretrained(device=None) -> VoxelGAN:
    """The shipped 3D-VAE-GAN (``gen3d_course/weights/voxel_gan.pt``), built from its manifest,
    in eval mode."""
    info = checkpoint_info(CHECKPOINT)
    model = VoxelGAN(VoxelGANConfig.from_dict(info["config"]["model"]))
    state = load_checkpoint(CHECKPOINT, device=device)
    try:
        for part in ("G", "D", "E"):
            module = getattr(model, part)
            if module is not None:
                module.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith(part + ".")})
    except RuntimeError as err:
        raise CheckpointError(f"Checkpoint {CHECKPOINT!r} does not fit VoxelGAN: {err}") from None
    return model.eval().to(device or "cpu")


def evaluate(model: VoxelGAN, held_vox, held_images=None, n_samples: int = 100, seed: int = 1) -> dict:
    """Set metrics of ``n_samples`` prior samples against held-out grids (1 - IoU distance),
    and the mean single-image reconstruction IoU if the model has an encoder."""
    metrics = generation_metrics(model.sample(n_samples, seed=seed), held_vox)
    if held_images is not None and model.E is not None:
        metrics["recon_IoU"] = float(reconstruction_iou(model.reconstruct(held_images), held_vox).mean())
    return metrics


def train_checkpoint() -> dict:
    """Train the shipped 3D-VAE-GAN and save it with its manifest (``gen3d-course train voxel_gan``).

    Runs on ``config.pick_device()`` (one thread on a CPU). Full mode: 200 shapes per category
    (seeds 0-199), 1200 steps of batch 32. The manifest records the held-out set metrics next
    to the two references computed the same way (real-vs-real, random blobs) and the
    reconstruction IoU next to the category-mean baseline.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    seed = SEED
    device = config.pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    config.seed_everything(seed)
    cfg = shipped_config()
    per_category = config.budget(lecture=40, fast=4, full=200)
    steps = config.budget(lecture=200, fast=20, full=1200)
    held = config.budget(lecture=20, fast=4, full=20)
    voxels, labels = voxel_dataset(per_category, cfg.resolution, 0)
    images, _ = image_dataset(per_category, cfg.image_size, 0)
    held_vox, held_labels = voxel_dataset(held, cfg.resolution, HELDOUT_SEED)
    held_images, _ = image_dataset(held, cfg.image_size, HELDOUT_SEED)
    ref_vox, _ = voxel_dataset(held, cfg.resolution, REFERENCE_SEED)
    data_seconds = time.perf_counter() - start
    model = VoxelGAN(cfg, device)
    history = fit(model, voxels, steps, images=images, seed=seed, desc="3D-VAE-GAN")
    model.eval()
    metrics = {"model": evaluate(model, held_vox, held_images),
               "real_vs_real": generation_metrics(ref_vox, held_vox),
               "random_blobs": generation_metrics(random_blobs(len(held_vox), cfg.resolution, seed=1), held_vox)}
    baseline, level = category_mean_baseline(voxels, labels)
    metrics["category_mean_recon_IoU"] = float(reconstruction_iou(baseline[held_labels], held_vox).mean())
    metrics["train"] = {"steps": steps, "shapes": len(voxels), "d_update_fraction": float(np.mean(history["d_updated"])),
                        "train_seconds": history.seconds, "data_seconds": data_seconds,
                        "wall_seconds": time.perf_counter() - start,
                        "cpu_seconds": time.process_time() - cpu_start, "device": device.type,
                        "threads": torch.get_num_threads()}
    metrics = rounded(metrics)
    save_checkpoint(CHECKPOINT, pack_state(model), command=f"GEN3D_MODE={config.mode()} gen3d-course train {CHECKPOINT}",
                    seed=seed, metrics=metrics,
                    config={"model": cfg.to_dict(),
                            "data": {"train_seeds": [0, per_category], "per_category": per_category,
                                     "held_out_seed": HELDOUT_SEED, "reference_seed": REFERENCE_SEED,
                                     "held_out_per_category": held, "image": "shaded 32x32, fixed view"},
                            "distance": "1 - voxel IoU at 32^3 (occupied: p >= 0.5)"})
    return metrics
