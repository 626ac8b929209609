"""The course's experiments with diffusion models (unit 11): toy 2D runs measured like unit 03's GANs,
the cost of each 3D representation, a class-conditional latent diffusion over unit 05's DeepSDF
codes judged with unit 04's set metrics on its held-out shapes, the guidance sweep, and the shipped
checkpoint's recipe. The method is in ``models.diffusion``."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .. import config
from ..checkpoints import checkpoint_info, load_checkpoint, rounded, save_checkpoint
from ..data.shapes import CATEGORIES
from ..data.toy2d import mode_statistics
from ..geometry.metrics import iou_distance_matrix
from ..geometry.narrowband import narrow_band_grid
from ..models.deepsdf import fit_code, sdf_dataset
from ..models.diffusion import DiffusionModel, MLPDenoiser, cosine_schedule, epsilon_loss, fit
from ..models.voxel_gan import voxel_dataset
from . import deepsdf as deepsdf_experiments
from .gans import member_mode_statistics, train_toy_gan
from .voxel_gan import HELDOUT_SEED, REFERENCE_SEED, generation_metrics  # unit 04's sets and metric

CHECKPOINT = "diffusion"
LATENTS = "diffusion_latents"   # the DeepSDF codes the shipped model learned, with their labels
RES = 32                        # unit 04's voxel resolution: the metric's representation

# --------------------------------------------------------------------------------------------
# 2D toy data
# --------------------------------------------------------------------------------------------


def toy_model(data: torch.Tensor, T: int = 100, hidden: int = 64, depth: int = 2, seed: int = 0) -> DiffusionModel:
    """An MLP ε-predictor on 2D points with a cosine schedule of T steps, standardised to ``data``."""
    torch.manual_seed(seed)
    return DiffusionModel(MLPDenoiser(data.shape[1], hidden, depth), cosine_schedule(T), data.mean(0), data.std(0))


def train_toy_diffusion(data: torch.Tensor, seeds, steps: int, **kwargs):
    """One toy diffusion model per seed, trained for ``steps`` steps each; returns (models, seconds).

    Keyword arguments go to :func:`toy_model` (T, hidden, depth) or to ``fit`` (batch, lr)."""
    model_kw = {k: kwargs.pop(k) for k in ("T", "hidden", "depth") if k in kwargs}
    models, start = [], time.perf_counter()
    for seed in seeds:
        model = toy_model(data, seed=seed, **model_kw)
        fit(model, data, steps, seed=seed, desc=f"diffusion seed {seed}", **kwargs)
        models.append(model)
    return models, time.perf_counter() - start


def toy_mode_statistics(models, centers: torch.Tensor, std: float, steps: int | None = None,
                        n: int = 2000, min_count: int = 20, seed: int = 1234) -> list[dict]:
    """``toy2d.mode_statistics`` of ``n`` samples of each model, as unit 03 counts them
    (``experiments.gans.member_mode_statistics``: a mode is covered with ≥ ``min_count`` good
    samples). ``steps`` None samples with DDPM over all T steps, else DDIM with that many."""
    return [mode_statistics(m.sample(n, steps=steps, seed=seed), centers, std, min_count=min_count)
            for m in models]


def noised_mixture_score(x: torch.Tensor, centers: torch.Tensor, std: float, alpha_bar: float,
                         mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The exact score ∇ log p_t(x) of an equal-weight Gaussian mixture (``centers``, ``std``)
    after standardisation (x − mean)/scale and noising to level ᾱ: each component becomes
    N(√ᾱ c_k, ᾱ s_k² + 1 − ᾱ) per axis, and the score is the responsibility-weighted sum of
    the components' scores −(x − √ᾱ c_k)/σ_k². x: (N, d) in standardised units."""
    c = (centers - mean) / scale                         # (K, d)
    var = alpha_bar * (std / scale) ** 2 + 1 - alpha_bar  # (d,)
    diff = x[:, None, :] - alpha_bar ** 0.5 * c[None]      # (N, K, d)
    log_p = -0.5 * (diff ** 2 / var).sum(-1)              # (N, K), equal weights and variances
    return (torch.softmax(log_p, 1)[..., None] * (-diff / var)).sum(1)


def sampling_quality(model: DiffusionModel, centers: torch.Tensor, std: float, steps_list, n: int = 2000,
                     seed: int = 1234) -> list[dict]:
    """Modes covered and high-quality share against the number of network calls: DDIM (η = 0)
    with and without the x̂_0 clip, and ancestral steps on the same sub-sequence (η = 1, a strided
    DDPM); ``steps`` equal to T with η = 1 is DDPM itself."""
    rows = []
    for steps in steps_list:
        for sampler, eta, clip in (("DDIM", 0.0, True), ("DDIM, no clip", 0.0, False), ("ancestral", 1.0, True)):
            x = model.sample(n, steps=steps, eta=eta, seed=seed, clip=clip)
            rows.append({"sampler": sampler, "steps": steps, **mode_statistics(x, centers, std, min_count=20)})
    return rows


def toy_comparison(data: torch.Tensor, centers: torch.Tensor, std: float, seeds, *, gan_steps: int,
                   wgan_steps: int, diffusion_steps: int, diffusion_kw: dict | None = None) -> dict:
    """Unit 03's GAN and WGAN-GP (its settings: MLPs of 64, batch 128, Adam 1e-3, β = (0.5, 0.9),
    5 critic steps, penalty weight 1) and a diffusion model, one run per seed each, measured with
    unit 03's ``member_mode_statistics`` / ``toy_mode_statistics`` (DDPM samples). Returns
    {method: {"stats": [...], "cpu_seconds": [...], "model": first seed's model}}; CPU seconds
    (``time.process_time``) are what the step counts were chosen to equalise."""
    common = {"members": 1, "lr": 1e-3, "betas": (0.5, 0.9), "hidden": 64, "batch": 128, "log_every": 10,
              "progress": False}
    settings = {"GAN": {"method": "gan", "steps": gan_steps},
                "WGAN-GP": {"method": "wgan-gp", "gp_weight": 1.0, "n_critic": 5, "steps": wgan_steps}}
    out = {}
    for name, extra in settings.items():
        out[name] = {"stats": [], "cpu_seconds": [], "model": None}
        for seed in seeds:
            start = time.process_time()
            G, _, _ = train_toy_gan(data, seed=seed, **common, **extra)
            out[name]["cpu_seconds"].append(time.process_time() - start)
            out[name]["stats"] += member_mode_statistics(G, centers, std)
            out[name]["model"] = out[name]["model"] or G
    out["diffusion"] = {"stats": [], "cpu_seconds": [], "model": None}
    for seed in seeds:
        start = time.process_time()
        (model,), _ = train_toy_diffusion(data, [seed], diffusion_steps, progress=False, **(diffusion_kw or {}))
        out["diffusion"]["cpu_seconds"].append(time.process_time() - start)
        out["diffusion"]["stats"] += toy_mode_statistics([model], centers, std)
        out["diffusion"]["model"] = out["diffusion"]["model"] or model
    return out


def table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns, numbers formatted."""
    formats = formats or {}

    def cell(row, c):
        v = row.get(c, "")
        return formats.get(c, "{:.3f}" if isinstance(v, float) else "{}").format(v) if v != "" else ""

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Which 3D representation: the cost of one training step
# --------------------------------------------------------------------------------------------

class _PointDenoiser(nn.Module):
    """A PointNet-style ε-predictor for point clouds (per-point MLP + a max-pooled shape feature),
    the cheapest denoiser a point-cloud diffusion (Luo & Hu 2021) could use; for timing only."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.local = nn.Sequential(nn.Linear(4, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3))

    def forward(self, x, t):
        h = self.local(torch.cat([x, t.float()[:, None, None].expand(*x.shape[:2], 1) / 1000], -1))
        return self.head(torch.cat([h, h.amax(1, keepdim=True).expand_as(h)], -1))


class _VoxelDenoiser(nn.Module):
    """Three 3D convolutions, far smaller than a voxel U-Net: a lower bound of the cost; timing only."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(2, channels, 3, padding=1), nn.SiLU(),
                                 nn.Conv3d(channels, channels, 3, padding=1), nn.SiLU(),
                                 nn.Conv3d(channels, 1, 3, padding=1))

    def forward(self, x, t):
        return self.net(torch.cat([x, (t.float() / 1000).view(-1, 1, 1, 1, 1).expand_as(x)], 1))


def representation_costs(batch: int = 16, repeats: int = 3, points: int = 2048, latent_dim: int = 32) -> list[dict]:
    """Measured seconds of one ε-loss training step (forward + backward + Adam) per representation
    at batch ``batch``: a 32³ voxel grid, a point cloud of ``points`` points and a DeepSDF code.
    The denoisers are the smallest sensible ones, so the voxel and point numbers are lower bounds."""
    schedule = cosine_schedule(1000)
    setups = [("voxels 32³", _VoxelDenoiser(), (batch, 1, RES, RES, RES)),
              (f"points {points}×3", _PointDenoiser(), (batch, points, 3)),
              (f"DeepSDF code {latent_dim}", MLPDenoiser(latent_dim, 256, 3, n_classes=len(CATEGORIES)),
               (batch, latent_dim))]
    rows = []
    for name, net, shape in setups:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        x0 = torch.randn(shape)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            loss = epsilon_loss(net, x0, schedule)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        rows.append({"representation": name, "dimensions": int(np.prod(shape[1:])),
                     "parameters": sum(p.numel() for p in net.parameters()),
                     "ms_per_step": 1000 * float(np.median(times[1:]))})
    return rows


# --------------------------------------------------------------------------------------------
# 3D: a class-conditional diffusion over DeepSDF codes (unit 05's shipped auto-decoder)
# --------------------------------------------------------------------------------------------

def shipped_codes():
    """(codes (100, 32), labels (100,)) of the shipped DeepSDF auto-decoder's training shapes."""
    model = deepsdf_experiments.load_pretrained()
    shapes = deepsdf_experiments.shipped_training_shapes()
    return model.codes.weight.detach().clone(), torch.tensor([CATEGORIES.index(s.category) for s in shapes])


def fitted_codes(decoder, per_category: int, start_seed: int, steps: int = 150, n_points: int = 2048,
                 seed: int = 0):
    """(codes, labels) of ``per_category`` new shapes per category (seeds from ``start_seed``), each
    fitted with the decoder frozen (DeepSDF's inference, ``models.deepsdf.fit_code``, all at once)."""
    shapes = deepsdf_experiments.training_shapes(per_category, start_seed)
    data = sdf_dataset(shapes, n_points=n_points, seed=seed)
    codes = fit_code(decoder, data.points, data.sdf, steps=steps, points_per_step=256, seed=seed)
    return codes, torch.tensor([CATEGORIES.index(s.category) for s in shapes])


def latent_dataset(extra_per_category: int = 0, steps: int = 150):
    """The latent training set: the shipped codes (seeds 0-19 of each category) plus
    ``extra_per_category`` fitted codes per category (seeds 20, 21, ...). Returns (codes, labels)."""
    codes, labels = shipped_codes()
    if extra_per_category:
        decoder = deepsdf_experiments.load_pretrained().decoder
        per_shipped = len(codes) // len(CATEGORIES)
        more, more_labels = fitted_codes(decoder, extra_per_category, per_shipped, steps=steps)
        codes, labels = torch.cat([codes, more]), torch.cat([labels, more_labels])
    return codes, labels


def latent_model(codes: torch.Tensor, hidden: int = 256, depth: int = 3, T: int = 1000) -> DiffusionModel:
    """ε_θ(z_t, t, y) on codes standardised per dimension; y is a category or the null label ∅."""
    return DiffusionModel(MLPDenoiser(codes.shape[1], hidden, depth, n_classes=len(CATEGORIES)),
                          cosine_schedule(T), codes.mean(0), codes.std(0))


def decode_voxels(decoder, codes, res: int = RES) -> torch.Tensor:
    """(N, res, res, res) bool occupancy {f_θ(z, x) < 0} at the voxel centres, as unit 04's voxels
    (``data.samples.voxelize``). Coarse to fine (``geometry.narrowband``): the cell-centre grid is
    the node grid of a cube shrunk by half a cell."""
    half = (config.WORLD[1] - config.WORLD[0]) / (2 * res)
    bounds = (config.WORLD[0] + half, config.WORLD[1] - half)
    grids = [narrow_band_grid(decoder.field(z), res, start=8, bounds=bounds)[0] < 0 for z in codes]
    return torch.from_numpy(np.stack(grids))


def evaluation_sets(per_category: int):
    """Unit 04's held-out voxels (seeds from ``HELDOUT_SEED``, with labels) and its second real
    set (seeds from ``REFERENCE_SEED``) for the real-vs-real ceiling, at 32³."""
    held, held_labels = voxel_dataset(per_category, RES, HELDOUT_SEED)
    reference, _ = voxel_dataset(per_category, RES, REFERENCE_SEED)
    return held, held_labels, reference


def class_labels(per_category: int) -> torch.Tensor:
    """0, 0, ..., 1, 1, ...: ``per_category`` of each category, category-major like the data."""
    return torch.arange(len(CATEGORIES)).repeat_interleave(per_category)


def sample_voxels(model: DiffusionModel, decoder, per_category: int, guidance: float = 1.0,
                  steps: int | None = 50, seed: int = 0):
    """Class-conditional samples decoded to voxels: (voxels, codes, labels, seconds per shape for
    sampling the codes, seconds per shape for decoding them)."""
    labels = class_labels(per_category)
    start = time.perf_counter()
    codes = model.sample(len(labels), steps=steps, labels=labels, guidance=guidance, seed=seed)
    middle = time.perf_counter()
    voxels = decode_voxels(decoder, codes)
    n = len(labels)
    return voxels, codes, labels, (middle - start) / n, (time.perf_counter() - middle) / n


def noise_codes(codes: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A floor: codes drawn from a Gaussian with the training codes' mean and per-dimension std,
    what a "generator" that learned only the first two moments would produce."""
    g = torch.Generator().manual_seed(seed)
    return codes.mean(0) + codes.std(0) * torch.randn(n, codes.shape[1], generator=g)


def guidance_metrics(voxels, labels, held, held_labels) -> dict:
    """Fidelity and diversity of class-conditional samples against the held-out shapes (1 − IoU):

    - ``accuracy``: share of samples whose nearest held-out shape is of the asked category;
    - ``MMD``: per category, the mean distance from each held-out shape to its nearest sample,
      averaged over categories (fidelity, lower is better);
    - ``diversity``: mean distance between two samples of the same category (0 = all alike);
    - ``COV``: per category, the share of held-out shapes that are some sample's nearest.
    """
    d_gr = iou_distance_matrix(voxels, held)
    accuracy = float((held_labels[d_gr.argmin(1)] == labels).float().mean())
    mmd, diversity, cov = [], [], []
    for c in labels.unique():
        g, r = labels == c, held_labels == c
        d = d_gr[g][:, r]
        mmd.append(float(d.min(0).values.mean()))
        cov.append(float(d.argmin(1).unique().numel() / r.sum()))
        d_gg = iou_distance_matrix(voxels[g], voxels[g])
        k = len(d_gg)
        diversity.append(float(d_gg.sum() / max(k * (k - 1), 1)))
    return {"accuracy": accuracy, "MMD": float(np.mean(mmd)), "diversity": float(np.mean(diversity)),
            "COV": float(np.mean(cov))}


def guidance_sweep(model: DiffusionModel, decoder, held, held_labels, scales, per_category: int,
                   train_codes: torch.Tensor, steps: int = 50, seed: int = 0) -> list[dict]:
    """``guidance_metrics`` of ``per_category`` samples per category for each guidance scale
    (the same initial noise for every scale, so only the guidance changes), and two numbers in
    the latent space, on standardised codes: ``code spread``, the mean distance between two codes
    of a category, and ``to data``, the median distance from a code to its nearest training code
    (how far guidance pushes the codes off the ones the decoder knows)."""
    rows = []
    train_z = model.normalize(train_codes)
    for scale in scales:
        voxels, codes, labels, _, _ = sample_voxels(model, decoder, per_category, guidance=scale, steps=steps,
                                                    seed=seed)
        z = model.normalize(codes)
        spread = np.mean([float(torch.pdist(z[labels == c]).mean()) for c in labels.unique()])
        rows.append({"guidance": scale, **guidance_metrics(voxels, labels, held, held_labels),
                     "code spread": float(spread), "to data": float(torch.cdist(z, train_z).min(1).values.median())})
    return rows


def nearest_training_iou(voxels, train_voxels) -> torch.Tensor:
    """IoU of each grid with its nearest training grid: near 1 for copies of the training set."""
    return 1 - iou_distance_matrix(voxels, train_voxels).min(1).values


# --------------------------------------------------------------------------------------------
# The shipped checkpoint
# --------------------------------------------------------------------------------------------

def load_pretrained(device=None) -> DiffusionModel:
    """The shipped class-conditional latent diffusion (its DeepSDF decoder is
    ``experiments.deepsdf.load_pretrained().decoder``), in eval mode."""
    cfg = checkpoint_info(CHECKPOINT)["config"]
    latents = load_latents()
    model = DiffusionModel(MLPDenoiser(**cfg["denoiser"]), cosine_schedule(cfg["T"]),
                           latents["codes"].mean(0), latents["codes"].std(0))
    return load_checkpoint(CHECKPOINT, model, device=device).eval()


def load_latents() -> dict:
    """The shipped model's training set: {"codes": (N, 32), "labels": (N,)}."""
    return load_checkpoint(LATENTS)


def train_checkpoint() -> dict:
    """Train the shipped latent diffusion and measure it (``gen3d-course train diffusion``).

    Full mode: 50 codes per category (the 20 shipped DeepSDF codes and 30 fitted ones), 6,000
    steps. The manifest records unit 04's set metrics on its held-out shapes for samples (DDIM,
    50 steps, guidance 1), for the real-vs-real ceiling and for Gaussian codes (a floor), with
    the seconds spent on each stage.
    """
    torch.set_num_threads(1)
    seed = 0
    config.seed_everything(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    extra = config.budget(lecture=10, fast=2, full=30)
    steps = config.budget(lecture=3000, fast=200, full=6000)
    held_per_category = config.budget(lecture=20, fast=4, full=20)
    codes, labels = latent_dataset(extra)
    data_seconds = time.perf_counter() - start
    print(f"diffusion: {len(codes)} codes in {data_seconds:.0f} s")
    model = latent_model(codes)
    history = fit(model, codes, steps, labels=labels, p_uncond=0.1, batch=256, lr=1e-3, seed=seed,
                  desc="latent diffusion")
    print(f"diffusion: {steps} steps in {history.seconds:.0f} s, loss {history.mean('loss', first=True):.3f} "
          f"→ {history.mean('loss'):.3f}")
    decoder = deepsdf_experiments.load_pretrained().decoder
    held, _, reference = evaluation_sets(held_per_category)
    samples, _, _, sample_s, decode_s = sample_voxels(model, decoder, held_per_category, seed=1)
    noise = decode_voxels(decoder, noise_codes(codes, len(held), seed=1))
    metrics = {"model": generation_metrics(samples, held),
               "real_vs_real": generation_metrics(reference, held),
               "gaussian_codes": generation_metrics(noise, held),
               "sample_seconds_per_shape": sample_s, "decode_seconds_per_shape": decode_s,
               "train": {"codes": len(codes), "steps": steps, "data_seconds": data_seconds,
                         "train_seconds": history.seconds, "final_loss": history.mean("loss"),
                         "wall_seconds": time.perf_counter() - start,
                         "cpu_seconds": time.process_time() - cpu_start, "threads": torch.get_num_threads()}}
    metrics = rounded(metrics)
    command = f"GEN3D_MODE={config.mode()} gen3d-course train {CHECKPOINT}"
    save_checkpoint(LATENTS, {"codes": codes, "labels": labels}, command=command, seed=seed,
                    config={"shipped_deepsdf_codes": len(codes) - extra * len(CATEGORIES),
                            "fitted_per_category": extra, "fit_steps": 150, "fit_points": 2048})
    save_checkpoint(CHECKPOINT, model, command=command, seed=seed, metrics=metrics,
                    config={"denoiser": model.denoiser.config(), "T": model.schedule.T, "schedule": "cosine",
                            "p_uncond": 0.1, "lr": 1e-3, "batch": 256, "latents": LATENTS,
                            "decoder": deepsdf_experiments.CHECKPOINT,
                            "held_out": {"seed": HELDOUT_SEED, "reference_seed": REFERENCE_SEED,
                                         "per_category": held_per_category},
                            "distance": "1 - voxel IoU at 32^3 (voxel centres, as unit 04)"})
    return metrics
