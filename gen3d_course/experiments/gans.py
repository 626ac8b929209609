"""The course's experiments with GANs (units 02-03): mode statistics over seeds, the InfoGAN code probe,
toy-GAN ensembles, image-set metrics, and the shipped DCGAN's recipe. The methods are in
``models.gans`` and ``models.wgan``."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, save_checkpoint
from ..data.images import shape_images
from ..data.toy2d import mode_statistics
from ..geometry.metrics import set_metrics
from ..models.gans import (DCGenerator, ToyDiscriminator, ToyGenerator, _check_finite, dcgan_init, gan_step,
                           infogan_step, sample_images, train_dcgan)
from ..models.wgan import wgan_step
from ..train import train

CHECKPOINT = "dcgan_shapes"


def member_mode_statistics(G, centers: torch.Tensor, std: float, n: int = 2000, min_count: int = 20,
                           seed: int = 1234) -> list[dict]:
    """``toy2d.mode_statistics`` for each member of a (possibly ensemble) toy generator.

    A mode counts as covered when at least ``min_count`` of the ``n`` samples land on it with
    high quality (1% by default, an eighth of a fair share on the 8-Gaussian ring), so a few
    stray samples do not make a collapsed generator look diverse.
    """
    with torch.no_grad():
        samples = G(G.noise(n, torch.Generator(device=G.out.weight.device).manual_seed(seed)))
    samples = samples if samples.ndim == 3 else samples[None]
    return [mode_statistics(s, centers, std, min_count=min_count) for s in samples.cpu()]


def sample_density(G, member: int = 0, centers=None, n: int = 4000, bins: int = 90, extent: float = 3.0,
                   seed: int = 1234) -> np.ndarray:
    """One member's samples as an image for ``viz.panels.image_sliders``: (bins, bins, 3) over
    [-extent, extent]² with y up, darker where more samples land (log scale, so a thin mode still
    shows), the true mode ``centers`` in red. Browsing many runs with one slider replaces a
    grid of scatter plots that grows with the number of seeds."""
    with torch.no_grad():
        x = G(G.noise(n, torch.Generator(device=G.out.weight.device).manual_seed(seed)))
    x = (x if x.ndim == 3 else x[None])[member].cpu().numpy()
    counts, _, _ = np.histogram2d(x[:, 1], x[:, 0], bins=bins, range=[[-extent, extent]] * 2)
    shade = np.log1p(counts[::-1]) / max(np.log1p(counts.max()), 1e-12)  # row 0 is the top, y = extent
    image = 1.0 - shade[..., None] * np.array([0.85, 0.65, 0.25])
    if centers is not None:
        c = np.asarray(centers, dtype=float)
        rows = ((extent - c[:, 1]) / (2 * extent) * bins).astype(int).clip(0, bins - 1)
        cols = ((c[:, 0] + extent) / (2 * extent) * bins).astype(int).clip(0, bins - 1)
        image[rows, cols] = (1.0, 0.0, 0.0)
    return image


def code_information(G, centers: torch.Tensor, n_per_code: int = 250, seed: int = 1234) -> list[float]:
    """How much an InfoGAN generator's code decides the mode: I(c; mode) / H(c), per member.

    For each code value c, ``n_per_code`` samples G([z, onehot(c)]) are assigned to their nearest
    centre; the mutual information between c and that mode, divided by H(c) = log(n_codes),
    is 1 when each code picks its own mode and 0 when the code is ignored.
    """
    n_codes = G.n_codes
    codes = torch.arange(n_codes).repeat_interleave(n_per_code)
    with torch.no_grad():
        z = G.noise(len(codes), torch.Generator().manual_seed(seed))[..., : G.latent_dim - n_codes]
        onehot = F.one_hot(codes, n_codes).float().expand(*z.shape[:-1], n_codes)
        x = G(torch.cat([z, onehot], dim=-1))
    x = x if x.ndim == 3 else x[None]
    scores = []
    for samples in x:
        modes = torch.cdist(samples, centers).argmin(dim=1)
        joint = torch.zeros(n_codes, len(centers))
        joint.index_put_((codes, modes), torch.ones(len(codes)), accumulate=True)
        joint /= joint.sum()
        outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
        nz = joint > 0
        scores.append(float((joint[nz] * (joint[nz] / outer[nz]).log()).sum() / math.log(n_codes)))
    return scores


def train_toy_gan(data: torch.Tensor, *, method: str = "gan", members: int = 4, steps: int = 1000,
                  lr: float = 1e-3, betas=(0.5, 0.999), batch: int = 256, latent_dim: int = 2,
                  hidden: int = 128, depth: int = 3, n_critic: int = 5, clip: float = 0.01,
                  gp_weight: float = 1.0, minibatch_std=False, saturating: bool = False,
                  n_codes: int = 8, info_weight=1.0, seed: int = 0, log_every: int = 10,
                  eval_every: int = 0, eval_fn=None, max_seconds: float | None = None, progress: bool = True,
                  desc: str | None = None, optimizer: str = "adam"):
    """Train ``members`` independent toy GANs (different seeds) on ``data`` (N, d) for ``steps``
    generator updates; returns (G, D, history).

    method: "gan" (one D step per G step, BCE), "wgan-clip" or "wgan-gp" (``n_critic`` critic
    steps per G step), or "infogan" (a GAN whose generator also takes a categorical code of
    ``n_codes`` values, as one-hot, and whose D has an extra Q head; see ``infogan_step``).
    ``minibatch_std`` and ``info_weight`` may be given per member (a list of K values), to train
    a variant and its baseline side by side. ``optimizer``: "adam" (with ``betas``) or "rmsprop"
    (the WGAN paper's choice for weight clipping: it reports Adam's momentum destabilising the
    clipped critic). Each member draws its own real batches and noise. ``eval_fn(G)`` -> anything is called
    every ``eval_every`` steps and at the end, and kept in ``history["eval"]`` as (step, value)
    pairs. ``history.seconds`` is the wall time, ``history.ms_per_step`` the time per G step.
    """
    if method not in ("gan", "wgan-clip", "wgan-gp", "infogan"):
        raise ValueError(f"train_toy_gan: method {method!r} must be 'gan', 'wgan-clip', 'wgan-gp' "
                         "or 'infogan'.")
    data = torch.as_tensor(data, dtype=torch.float32)
    if data.ndim != 2:
        raise ValueError(f"train_toy_gan: data must be (N, d), got {tuple(data.shape)}.")
    _check_finite(data, "data", "train_toy_gan")
    torch.manual_seed(seed)
    dim = data.shape[1]
    info = method == "infogan"
    G = ToyGenerator(latent_dim + n_codes * info, dim, hidden, depth, members)
    D = ToyDiscriminator(dim, hidden, depth, members, minibatch_std=minibatch_std,
                         outputs=1 + n_codes * info)
    G.n_codes = n_codes if info else 0
    if optimizer not in ("adam", "rmsprop"):
        raise ValueError(f"train_toy_gan: optimizer {optimizer!r} must be 'adam' or 'rmsprop'.")
    if optimizer == "adam":
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    else:
        opt_g = torch.optim.RMSprop(G.parameters(), lr=lr)
        opt_d = torch.optim.RMSprop(D.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed + 1)

    def real_batch():  # (K, B, d) for an ensemble, (B, d) for a single GAN
        shape = (members, batch) if members > 1 else (batch,)
        return data[torch.randint(len(data), shape, generator=rng)]

    evals = []

    def step(i):
        if eval_fn is not None and eval_every and i % eval_every == 0:
            evals.append((i, eval_fn(G)))
        # losses are means over all members: each member's gradient is its own run's / K, which
        # Adam's per-parameter normalisation cancels (up to its eps)
        if method == "gan":
            out = gan_step(G, D, opt_g, opt_d, real_batch(), G.noise(batch, rng), saturating)
        elif info:
            z = G.noise(batch, rng)[..., :latent_dim]
            codes = torch.randint(n_codes, z.shape[:-1], generator=rng)
            out = infogan_step(G, D, opt_g, opt_d, real_batch(), z, codes, n_codes, info_weight)
        else:
            k = n_critic
            out = wgan_step(G, D, opt_g, opt_d, [real_batch() for _ in range(k)],
                            [G.noise(batch, rng) for _ in range(k)], G.noise(batch, rng),
                            clip=clip if method == "wgan-clip" else None,
                            gp_weight=gp_weight if method == "wgan-gp" else None)
        return out

    label = desc or f"{method} x{members}"
    start = time.perf_counter()
    history = train(step, steps, desc=label, log_every=log_every, max_seconds=max_seconds,
                    progress=progress)
    if eval_fn is not None:
        evals.append((history.steps[-1] + 1, eval_fn(G)))
    history["eval"] = evals
    history.ms_per_step = 1000 * (time.perf_counter() - start) / (history.steps[-1] + 1)
    return G, D, history


def image_sample_metrics(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """``geometry.metrics.set_metrics`` (COV, MMD, 1-NNA) of generated vs reference images in
    [0, 1], on RMS pixel distances: the numbers that judge 3D generators in unit 04, with
    pixels instead of voxels."""
    s, r = samples.flatten(1).float(), reference.flatten(1).float()
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"image_sample_metrics: samples {tuple(samples.shape)} and reference "
                         f"{tuple(reference.shape)} differ in image size.")
    scale = math.sqrt(s.shape[1])
    return set_metrics(torch.cdist(s, s) / scale, torch.cdist(r, r) / scale, torch.cdist(s, r) / scale)


def load_pretrained(device=None) -> DCGenerator:
    """The shipped DCGAN generator for 32x32 shaded shape renders (``gen3d-course train gans``)."""
    cfg = checkpoint_info(CHECKPOINT)["config"]
    G = DCGenerator(cfg["latent_dim"], cfg["size"], 1, cfg["base"])
    return load_checkpoint(CHECKPOINT, G, device=device).eval()


def train_checkpoint() -> dict:
    """Train the shipped DCGAN (run with GEN3D_MODE=full): 500 renders, 32x32, shaded."""
    recipe = {"latent_dim": 32, "size": 32, "base": 16, "batch": 64, "lr": 5e-4,
              "images": "shape_images(per_category=100, size=32, kind='shaded')",
              "steps": config.budget(lecture=1500, fast=50, full=4000)}
    images, _ = shape_images(per_category=100, size=32, kind="shaded")
    G, _, history = train_dcgan(images, steps=recipe["steps"], latent_dim=32, base=16, batch=64,
                                lr=5e-4, seed=0)
    untrained = dcgan_init(DCGenerator(32, 32, 1, 16))
    metrics = {k: round(v, 4) for k, v in image_sample_metrics(sample_images(G, 500), images).items()}
    metrics.update({f"untrained_{k}": round(v, 4)
                    for k, v in image_sample_metrics(sample_images(untrained, 500), images).items()})
    metrics["train_seconds"] = round(history.seconds, 1)
    save_checkpoint(CHECKPOINT, G, command="GEN3D_MODE=full gen3d-course train gans", seed=0,
                    metrics=metrics, config=recipe)
    return metrics
