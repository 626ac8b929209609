"""Image-set distances that need no downloaded network: sliced Wasserstein on patch pyramids.

FID and KID compare Inception features, which needs weights from the internet. Karras et al.
(2018) measured GANs instead with the **sliced Wasserstein distance** between local image
patches at several scales: build a Laplacian pyramid of every image (band-pass levels plus the
coarsest blurred level), cut random 7×7 patches at each level, and compare the two sets of
patch descriptors. The Wasserstein-1 distance between two point sets in R^D is expensive, but in
one dimension it is the mean absolute difference between the sorted values; SWD averages that
over random unit directions θ:

    SWD(X, Y) = E_θ [ (1/n) Σ_i | sort(X·θ)_i − sort(Y·θ)_i | ].

Fine levels judge edges and texture, the coarsest level judges colour and layout. Descriptors of
both sets are standardised with the statistics of the second (reference) set, per level and
colour channel, so a set that is too bright or too flat is not normalised away.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(images: torch.Tensor) -> torch.Tensor:
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(images)
    c = images.shape[1]
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, kernel.expand(c, 1, 5, 5), groups=c)


def laplacian_pyramid(images: torch.Tensor, levels: int = 3) -> list[torch.Tensor]:
    """[L_0 (full size), …, L_{levels−2}, G_{levels−1}]: band-pass levels and the coarsest blur.

    G_{k+1} = downsample(blur(G_k)); L_k = G_k − upsample(G_{k+1}) (bilinear); Σ of the
    upsampled levels gives the image back.
    """
    if images.ndim != 4:
        raise ValueError(f"laplacian_pyramid: images must be (N, C, H, W), got {tuple(images.shape)}.")
    pyramid, current = [], images.float()
    for _ in range(levels - 1):
        smaller = _blur(current)[..., ::2, ::2]
        up = F.interpolate(smaller, size=current.shape[-2:], mode="bilinear", align_corners=False)
        pyramid.append(current - up)
        current = smaller
    pyramid.append(current)
    return pyramid


def random_patches(images: torch.Tensor, patch: int = 7, per_image: int = 64,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """(N·per_image, C·patch²) descriptors of random patch×patch windows of (N, C, H, W) images."""
    n, c, h, w = images.shape
    if h < patch or w < patch:
        raise ValueError(f"random_patches: images {h}×{w} are smaller than the {patch}×{patch} patch.")
    ys = torch.randint(0, h - patch + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - patch + 1, (n, per_image), generator=generator)
    offsets = torch.arange(patch)
    rows = (ys[..., None] + offsets)[..., :, None].expand(n, per_image, patch, patch)
    cols = (xs[..., None] + offsets)[..., None, :].expand(n, per_image, patch, patch)
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    windows = images.permute(0, 2, 3, 1)[batch, rows, cols]  # (n, per, patch, patch, C)
    return windows.permute(0, 1, 4, 2, 3).reshape(n * per_image, c * patch * patch)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """SWD between point sets x, y (n, D) of equal size: mean over random unit directions of the
    1D Wasserstein-1 distance (mean |difference| of the sorted projections)."""
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein: x {tuple(x.shape)} and y {tuple(y.shape)} must both be (n, D).")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=x.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values
    return (px - py).abs().mean()


def pyramid_swd(images: torch.Tensor, reference: torch.Tensor, levels: int = 3, patch: int = 7,
                per_image: int = 64, n_projections: int = 256, seed: int = 0) -> dict:
    """Sliced Wasserstein distance (×10³) between two image sets (N, C, H, W) in [0, 1], per level
    of the Laplacian pyramid (finest first) and averaged: {"levels": [...], "mean": ...}.

    Uses the first min(N, N_ref) images of each, so the two descriptor sets have equal size.
    Smaller is closer; two independent samples of the same distribution give the floor.
    """
    if images.ndim != 4 or reference.ndim != 4 or images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"pyramid_swd: image sets {tuple(images.shape)} and {tuple(reference.shape)} "
                         "must be (N, C, H, W) with the same C, H, W.")
    for name, t in (("images", images), ("reference", reference)):
        if not torch.isfinite(t).all():
            raise ValueError(f"pyramid_swd: {name} contain NaN or inf.")
    n = min(len(images), len(reference))
    generator = torch.Generator().manual_seed(seed)
    results = []
    for a, b in zip(laplacian_pyramid(images[:n].float(), levels), laplacian_pyramid(reference[:n].float(), levels)):
        size = min(patch, a.shape[-1])
        da = random_patches(a, size, per_image, generator)
        db = random_patches(b, size, per_image, generator)
        c = a.shape[1]
        mean = db.reshape(len(db), c, -1).mean(dim=(0, 2)).repeat_interleave(size * size)
        std = db.reshape(len(db), c, -1).std(dim=(0, 2)).clamp_min(1e-6).repeat_interleave(size * size)
        results.append(1e3 * float(sliced_wasserstein((da - mean) / std, (db - mean) / std,
                                                       n_projections, generator)))
    return {"levels": results, "mean": sum(results) / len(results)}


def foreground_fraction(images: torch.Tensor, background=1.0, threshold: float = 0.05) -> torch.Tensor:
    """(N,) share of pixels whose colour differs from ``background`` by more than ``threshold``
    in some channel: how much of each image the object covers."""
    bg = torch.as_tensor(background, dtype=images.dtype).reshape(1, -1, 1, 1)
    return ((images - bg).abs().amax(dim=1) > threshold).float().mean(dim=(1, 2))
