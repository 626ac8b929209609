"""Camera control, measured (unit 09): does turning a generator's knob turn the object, and does the
object stay the same while it turns?

Two estimators read an image without knowing who made it, both fitted on real renders of
``data.graf_images`` (which keeps every camera's angles and object's colour):

* ``AzimuthEstimator``: k nearest neighbours on colour-free features (silhouette and shading
  relative to the object's mean brightness), returning the circular mean of the neighbours'
  azimuths. Validated on held-out real renders before it judges any generator.
* ``object_chroma``: the object's colour with brightness divided out. Every real chair has one
  albedo and the light is fixed in the world, so its chroma is the same from every side: a
  change of chroma between two images is a change of object.

The 2D baseline is a DCGAN (``models.gans``) trained on exactly GRAF's chair images
(``gen3d-course train camera_control``). It has no camera input; the best stand-in is the latent
direction that linearly predicts the estimated azimuth (``azimuth_direction``, found with the
posed reader, i.e. with labels GRAF never had), walked by ``steer``.
"""
from __future__ import annotations

import torch

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, save_checkpoint
from ..data.graf_images import graf_images
from ..models.gans import DCGenerator, dcgan_init, sample_images, train_dcgan
from ..models.graf import Generator, GRAFConfig
from .gans import image_sample_metrics
from .graf import real_views

CHECKPOINT = "dcgan_chairs"


def _foreground(images: torch.Tensor, threshold: float = 0.03) -> torch.Tensor:
    """(N, H, W) bool: pixels that differ from the white background."""
    return (1.0 - images.min(dim=1).values) > threshold


def pose_features(images: torch.Tensor) -> torch.Tensor:
    """(N, 2·H·W) colour-free features of (N, 3, H, W) images on white: the silhouette and the
    luminance divided by the object's mean luminance (shading, which the fixed light ties to the
    view; not the albedo, which belongs to the object)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"pose_features: images must be (N, 3, H, W), got {tuple(images.shape)}.")
    mask = _foreground(images).float()
    lum = images.mean(dim=1)
    mean_lum = (lum * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    shading = mask * lum / mean_lum.clamp_min(1e-3)[:, None, None]
    return torch.cat([mask.flatten(1), 0.5 * shading.flatten(1)], dim=1)


def object_chroma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3) the mean object colour divided by its channel sum (brightness removed); NaN-free:
    an image with no object pixel gets (1/3, 1/3, 1/3)."""
    mask = _foreground(images).float()[:, None]
    mean = (images * mask).flatten(2).sum(2) / mask.flatten(2).sum(2).clamp_min(1)
    mean = torch.where(mask.flatten(1).sum(1, keepdim=True) > 0, mean, torch.ones_like(mean))
    return mean / mean.sum(1, keepdim=True).clamp_min(1e-6)


def angle_difference(a, b) -> torch.Tensor:
    """a − b in degrees, wrapped to [−180, 180)."""
    return torch.remainder(torch.as_tensor(a) - torch.as_tensor(b) + 180.0, 360.0) - 180.0


class AzimuthEstimator:
    """k-NN azimuth regressor on ``pose_features`` of real renders with known cameras."""

    def __init__(self, images: torch.Tensor, azimuths: torch.Tensor, k: int = 5):
        if len(images) != len(azimuths) or len(images) < k:
            raise ValueError(f"AzimuthEstimator: {len(images)} images, {len(azimuths)} azimuths, k={k}: "
                             "need one azimuth per image and at least k images.")
        self.features, self.azimuths, self.k = pose_features(images), azimuths.float(), k

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) estimated azimuths in [0, 360): circular mean of the k nearest references'."""
        dist = torch.cdist(pose_features(images), self.features)
        idx = dist.topk(self.k, largest=False).indices
        rad = torch.deg2rad(self.azimuths[idx])
        return torch.remainder(torch.rad2deg(torch.atan2(rad.sin().mean(1), rad.cos().mean(1))), 360.0)


def follow_statistics(requested: torch.Tensor, estimated: torch.Tensor) -> dict:
    """How well estimated azimuths (n_objects, n_views) follow the requested ones, up to one
    unknown offset per object (a generator's 0° need not be the data's front): the mean
    resultant length R of the differences (1: a constant offset, i.e. the object turns as asked;
    about 1/√n_views: unrelated), and the mean |error| after removing each object's circular-mean
    offset, in degrees (90 for unrelated angles)."""
    diff = torch.deg2rad(angle_difference(estimated, requested))
    c, s = diff.cos().mean(1), diff.sin().mean(1)
    offset = torch.rad2deg(torch.atan2(s, c))
    error = angle_difference(torch.rad2deg(diff), offset[:, None]).abs()
    return {"R": float(torch.sqrt(c ** 2 + s ** 2).mean()), "error": float(error.mean())}


def chroma_spread(images: torch.Tensor) -> float:
    """Mean chroma distance between the objects of different images (N, 3, H, W): the scale of
    a change of object, against which ``identity_drift`` is measured."""
    return float(torch.pdist(object_chroma(images)).mean())


def identity_drift(chroma: torch.Tensor, spread: float) -> float:
    """Colour change along walks, chroma (n_objects, n_views, 3): the mean distance of each view's
    chroma to its walk's mean, divided by ``spread`` (``chroma_spread`` of real images). 0: every
    object keeps its colour; about 0.5: the colour wanders as far as from one object to another."""
    if spread <= 0:
        raise ValueError(f"identity_drift: spread must be positive, got {spread}.")
    return float((chroma - chroma.mean(1, keepdim=True)).norm(dim=-1).mean() / spread)


def azimuth_direction(G, estimator: AzimuthEstimator, n: int = 2000, seed: int = 0) -> dict:
    """Fit (cos â, sin â) ≈ W z + b on ``n`` samples of a 2D generator (least squares, â the
    estimated azimuth): the latent directions that best predict the view. Returns W (2, d), b (2,),
    the fit's R² on the samples and the typical length of a prediction."""
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = (G(z) + 1) / 2
    rad = torch.deg2rad(estimator(images))
    target = torch.stack([rad.cos(), rad.sin()], 1)
    X = torch.cat([z, torch.ones(n, 1)], 1)
    coef = torch.linalg.lstsq(X, target).solution  # (d + 1, 2)
    pred = X @ coef
    r2 = 1 - (target - pred).pow(2).sum() / (target - target.mean(0)).pow(2).sum()
    return {"W": coef[:-1].T.contiguous(), "b": coef[-1], "r2": float(r2),
            "radius": float(pred.norm(dim=1).quantile(0.9))}


def steer(z: torch.Tensor, direction: dict, azimuths: torch.Tensor) -> torch.Tensor:
    """The smallest change of code z (d,) that makes the linear predictor say each requested
    azimuth (at the 90th-percentile prediction length): (n, d) codes, one per azimuth."""
    rad = torch.deg2rad(torch.as_tensor(azimuths, dtype=torch.float32))
    target = direction["radius"] * torch.stack([rad.cos(), rad.sin()], 1)  # (n, 2)
    W = direction["W"]
    residual = target - (z @ W.T + direction["b"])  # (n, 2)
    return z + residual @ torch.linalg.pinv(W).T


def camera_control(requested: torch.Tensor, images: torch.Tensor, estimator: AzimuthEstimator,
                   spread: float) -> dict:
    """Walks (n_objects, n_views, 3, H, W) made by asking for azimuths ``requested`` (n_views,):
    ``follow_statistics`` of the estimated azimuths, ``identity_drift`` of the object colour (against
    ``spread``, see ``chroma_spread``), and
    the estimates themselves ("azimuths", (n_objects, n_views))."""
    n, v = images.shape[:2]
    if len(requested) != v:
        raise ValueError(f"camera_control: {len(requested)} requested azimuths for walks of {v} views.")
    estimated = estimator(images.flatten(0, 1)).reshape(n, v)
    stats = follow_statistics(requested.expand(n, -1), estimated)
    stats["drift"] = identity_drift(object_chroma(images.flatten(0, 1)).reshape(n, v, 3), spread)
    stats["azimuths"] = estimated
    return stats


@torch.no_grad()
def graf_walks(G: Generator, z_shape, z_app, azimuths: torch.Tensor, elevation: float = 25.0) -> torch.Tensor:
    """GRAF's camera knob: each object (codes (n, ·)) rendered at every azimuth: (n, V, 3, H, W)."""
    poses = torch.stack([G.poses.pose(float(a), elevation) for a in azimuths])
    return torch.stack([G.render(z_shape[[i] * len(azimuths)], z_app[[i] * len(azimuths)], poses)["images"]
                        for i in range(len(z_shape))])


@torch.no_grad()
def gan_walks(G: DCGenerator, direction: dict, z: torch.Tensor, azimuths: torch.Tensor) -> torch.Tensor:
    """The 2D GAN's best linear substitute for the knob: each code z (n, d) moved by ``steer`` to
    every azimuth: (n, V, 3, H, W)."""
    return torch.stack([(G(steer(code, direction, azimuths)) + 1) / 2 for code in z])


def real_walks(seeds, azimuths: torch.Tensor, elevation: float = 25.0, cfg: GRAFConfig | None = None) -> torch.Tensor:
    """Real chairs ``seeds`` rendered exactly at every azimuth (the ideal knob): (n, V, 3, H, W)."""
    cfg = GRAFConfig() if cfg is None else cfg
    c2w = torch.stack([cfg.poses.pose(float(a), elevation) for a in azimuths])
    views = real_views("chair", list(seeds), c2w, cfg.image_size, cfg.focal)
    return torch.stack([torch.stack([v["rgb"] for v in obj]) for obj in views])


def load_pretrained(device=None) -> DCGenerator:
    """The shipped 2D DCGAN trained on GRAF's chair images (RGB, 32²), in eval mode."""
    cfg = checkpoint_info(CHECKPOINT)["config"]
    G = DCGenerator(cfg["latent_dim"], cfg["size"], 3, cfg["base"])
    return load_checkpoint(CHECKPOINT, G, device=device).eval().requires_grad_(False)


def train_checkpoint() -> dict:
    """``GEN3D_MODE=full gen3d-course train camera_control``: the DCGAN recipe of unit 02, on the
    same 1000 chair images (seed 0) as the shipped GRAF."""
    torch.set_num_threads(1)
    cfg = GRAFConfig()
    recipe = {"latent_dim": 32, "size": cfg.image_size, "base": 16, "batch": 64, "lr": 5e-4,
              "images": "graf_images(1000, 32, 'chair', seed=0) as for GRAF",
              "steps": config.budget(lecture=300, fast=20, full=5000), "max_seconds": 900}
    data = graf_images(config.budget(lecture=200, fast=32, full=1000), cfg.image_size, "chair", seed=0,
                       poses=cfg.poses, fov_deg=cfg.fov_deg)
    G, _, history = train_dcgan(data.images, steps=recipe["steps"], latent_dim=32, base=16, batch=64,
                                lr=5e-4, seed=0, max_seconds=recipe["max_seconds"])
    untrained = dcgan_init(DCGenerator(32, cfg.image_size, 3, 16))
    ref = data.images[:500]
    metrics = {k: round(v, 4) for k, v in image_sample_metrics(sample_images(G, 500), ref).items()}
    metrics.update({f"untrained_{k}": round(v, 4)
                    for k, v in image_sample_metrics(sample_images(untrained, 500), ref).items()})
    metrics["steps"] = history.steps[-1] + 1
    metrics["train_seconds"] = round(history.seconds, 1)
    save_checkpoint(CHECKPOINT, G, command="GEN3D_MODE=full gen3d-course train camera_control", seed=0,
                    metrics=metrics, config=recipe)
    return metrics
