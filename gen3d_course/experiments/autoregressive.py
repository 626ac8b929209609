"""The course's experiments with the autoregressive recipe (unit 10): a VQ-VAE codebook
(``models.vqvae``) and a transformer prior over its codes (``models.transformer``), put together
as one shape model; its likelihood, samples measured with unit 04's COV/MMD/1-NNA on unit 04's
held-out set, completion, and the shipped checkpoint's recipe.

The models work on 16^3 grids; unit 04's metrics are computed at 32^3, so decoded probabilities
are upsampled trilinearly (x2) before they are compared, and the same upsampling of *real* 16^3
grids gives the ceiling that the resolution alone allows.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import config
from ..checkpoints import CheckpointError, checkpoint_info, load_checkpoint, rounded, save_checkpoint
from ..data.shapes import CATEGORIES
from ..geometry.metrics import iou
from ..models import transformer, vqvae
from ..models.voxel_gan import voxel_dataset
from .voxel_gan import HELDOUT_SEED, REFERENCE_SEED, generation_metrics

__all__ = ["CHECKPOINT", "HELDOUT_SEED", "REFERENCE_SEED", "AutoregressiveShapes", "load_pretrained",
           "train_checkpoint"]

CHECKPOINT = "autoregressive"
SEED = 0
RESOLUTION = 16          # the models' grids; unit 04's metrics run at 32^3
METRIC_RESOLUTION = 32


class AutoregressiveShapes(nn.Module):
    """A VQ-VAE and a transformer prior over its code sequences: p(x) = p(codes(x)) decoded."""

    def __init__(self, vq: vqvae.VQVAE, prior: transformer.CodeTransformer):
        super().__init__()
        if prior.cfg.vocab_size != vq.cfg.codebook_size or prior.cfg.block_size != vq.cfg.code_side ** 3:
            raise ValueError("AutoregressiveShapes: the prior's vocabulary and length must be the "
                             "VQ-VAE's codebook size and number of code cells.")
        self.vqvae, self.prior = vq, prior

    def codes(self, voxels) -> torch.Tensor:
        """Code sequences (B, L) of voxel grids (B, R, R, R), read bottom to top."""
        return vqvae.to_sequence(self.vqvae.encode_indices(torch.as_tensor(voxels)))

    def decode(self, seq: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities (B, R, R, R) of code sequences (B, L)."""
        return self.vqvae.decode_indices(vqvae.to_grid(seq))

    @torch.no_grad()
    def bits(self, voxels, labels=None) -> torch.Tensor:
        """-log2 p(codes) per code (B, L) under the prior (labels None: unconditional)."""
        seq = self.codes(voxels).to(self.prior.head.weight.device)
        return self.prior.nll_bits(seq, self.prior.start_tokens(labels, len(seq))).cpu()

    @torch.no_grad()
    def sample(self, n: int, labels=None, temperature: float = 1.0, top_k: int | None = None,
               seed: int = 0, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """n shapes (probabilities (n, R, R, R)); ``labels`` (n,) category ids or None for
        unconditional; ``prefix`` (n, P) fixes the first P codes (completion)."""
        start = self.prior.start_tokens(labels, n)
        seq = self.prior.generate(start, prefix=prefix, temperature=temperature, top_k=top_k,
                                  generator=torch.Generator().manual_seed(seed))
        return self.decode(seq)

    def complete(self, voxels, n_observed: int, n: int, label=None, seed: int = 0, **kwargs) -> torch.Tensor:
        """n completions (n, R, R, R) of one grid (R, R, R) from its first ``n_observed`` codes."""
        prefix = self.codes(torch.as_tensor(voxels)[None])[:, :n_observed].repeat(n, 1)
        labels = None if label is None else torch.full((n,), int(label))
        return self.sample(n, labels, prefix=prefix, seed=seed, **kwargs)


def upsample(probabilities, res: int = METRIC_RESOLUTION) -> torch.Tensor:
    """Trilinear upsampling of grids (N, r, r, r) to (N, res, res, res) (cell centres aligned)."""
    p = torch.as_tensor(probabilities).float()
    return F.interpolate(p[:, None], size=(res,) * 3, mode="trilinear", align_corners=False)[:, 0]


def heldout_sets(per_category: int = 20):
    """Unit 04's held-out set and its second real set, at 32^3 and 16^3:
    dict with held32, ref32, held16, labels (category ids of the held-out shapes)."""
    held32, labels = voxel_dataset(per_category, METRIC_RESOLUTION, HELDOUT_SEED)
    ref32, _ = voxel_dataset(per_category, METRIC_RESOLUTION, REFERENCE_SEED)
    held16, _ = voxel_dataset(per_category, RESOLUTION, HELDOUT_SEED)
    return {"held32": held32, "ref32": ref32, "held16": held16, "labels": labels}


def observed_mask(res: int, fraction: float = 0.5) -> torch.Tensor:
    """(res, res, res) bool: the voxels of the lower ``fraction`` of the grid (in y), the part a
    code prefix of that share of the sequence describes."""
    mask = torch.zeros(res, res, res, dtype=torch.bool)
    mask[:, : int(round(res * fraction))] = True
    return mask


def completion_fidelity(completions, target, fraction: float = 0.5) -> dict:
    """How completions of ``target`` (R, R, R) from its lower ``fraction`` keep the observed
    part and vary the rest: mean IoU with the target inside the observed region, mean IoU with
    the target in the unobserved region, and mean pairwise 1 - IoU of the completions there."""
    mask = observed_mask(target.shape[-1], fraction)
    c = torch.as_tensor(completions) >= 0.5
    t = torch.as_tensor(target).bool()
    observed = [float(iou(x[mask], t[mask])) for x in c]
    rest = [float(iou(x[~mask], t[~mask])) for x in c]
    pairs = [1 - float(iou(c[i][~mask], c[j][~mask])) for i in range(len(c)) for j in range(i + 1, len(c))]
    return {"observed_IoU": sum(observed) / len(observed), "rest_IoU": sum(rest) / len(rest),
            "rest_diversity": sum(pairs) / max(1, len(pairs))}


def sampling_seconds(prior: transformer.CodeTransformer, lengths, n: int = 8, seed: int = 0) -> dict:
    """Wall seconds to sample ``n`` sequences of each length (a prior with block_size >= length;
    an untrained one costs the same)."""
    out = {}
    for length in lengths:
        start = prior.start_tokens(None, n)
        t = time.perf_counter()
        prior.generate(start, length=length, generator=torch.Generator().manual_seed(seed))
        out[int(length)] = time.perf_counter() - t
    return out


def unigram_bits(train_codes: torch.Tensor, test_codes: torch.Tensor, K: int) -> float:
    """Bits per code of a baseline that ignores context: each code drawn from the training
    codes' histogram (add-one smoothed)."""
    counts = torch.bincount(train_codes.flatten(), minlength=K).double() + 1
    return float(-(counts / counts.sum()).log2()[test_codes.flatten()].mean())


def shipped_configs() -> tuple[vqvae.VQVAEConfig, transformer.TransformerConfig]:
    """The shipped models: 16^3 -> 4^3 codes from K = 128 (dim 16), restarts every 25 steps;
    a 3-layer, 4-head, width-96 prior over the 64 codes."""
    vq_cfg = vqvae.VQVAEConfig(width=16, code_dim=16, codebook_size=128, restart_every=25, lr=3e-3, batch=32)
    prior_cfg = transformer.TransformerConfig(vocab_size=128, n_classes=len(CATEGORIES), block_size=64,
                                              n_layer=3, n_head=4, n_embd=96, dropout=0.1, lr=1e-3, batch=32)
    return vq_cfg, prior_cfg


def load_pretrained(device=None) -> AutoregressiveShapes:
    """The shipped VQ-VAE + prior (``gen3d_course/weights/autoregressive.pt``), built from its
    manifest, in eval mode."""
    info = checkpoint_info(CHECKPOINT)
    model = AutoregressiveShapes(vqvae.VQVAE(vqvae.VQVAEConfig(**info["config"]["vqvae"])),
                                 transformer.CodeTransformer(transformer.TransformerConfig(**info["config"]["prior"])))
    try:
        model.load_state_dict(load_checkpoint(CHECKPOINT, device=device))
    except RuntimeError as err:
        raise CheckpointError(f"Checkpoint {CHECKPOINT!r} does not fit AutoregressiveShapes: {err}") from None
    return model.eval().to(device or "cpu")


def evaluate(model: AutoregressiveShapes, sets: dict, train_codes: torch.Tensor, seed: int = 1) -> dict:
    """What the manifest records: held-out bits per code (unconditional and per category) next
    to the uniform and unigram baselines, codebook usage, reconstruction IoU, and COV/MMD/1-NNA
    at 32^3 of as many unconditional samples as held-out shapes."""
    K = model.vqvae.cfg.codebook_size
    held_codes = model.codes(sets["held16"])
    usage = vqvae.code_usage(held_codes, K)
    recon = model.decode(held_codes)
    samples = model.sample(len(sets["held32"]), seed=seed)
    return {
        "bits_per_code": float(model.bits(sets["held16"]).mean()),
        "bits_per_code_class": float(model.bits(sets["held16"], sets["labels"]).mean()),
        "uniform_bits": float(torch.tensor(float(K)).log2()),
        "unigram_bits": unigram_bits(train_codes, held_codes, K),
        "perplexity": usage["perplexity"], "dead_codes": usage["dead"],
        "recon_IoU_16": float(torch.stack([iou(a, b) for a, b in zip(recon, sets["held16"])]).mean()),
        "samples": generation_metrics(upsample(samples), sets["held32"]),
        "real16_upsampled": generation_metrics(upsample(sets["held16"].float()), sets["ref32"]),
    }


def train_checkpoint() -> dict:
    """Train the shipped VQ-VAE and prior and save them (``gen3d-course train autoregressive``).

    Full mode: 200 shapes per category (seeds 0-199) at 16^3, 2000 VQ-VAE steps, 2500 prior
    steps (batch 32, one CPU thread: about 20 minutes). The manifest records the held-out bits
    per code and baselines, codebook usage, and COV/MMD/1-NNA on unit 04's held-out set next to
    its real-vs-real ceiling.
    """
    start = time.perf_counter()
    device = config.pick_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    config.seed_everything(SEED)
    vq_cfg, prior_cfg = shipped_configs()
    per_category = config.budget(lecture=40, fast=4, full=200)
    vq_steps = config.budget(lecture=300, fast=20, full=2000)
    prior_steps = config.budget(lecture=300, fast=20, full=2500)
    voxels, labels = voxel_dataset(per_category, RESOLUTION, 0)
    sets = heldout_sets(config.budget(lecture=20, fast=4, full=20))
    vq = vqvae.VQVAE(vq_cfg).to(device)
    vq_history = vqvae.fit(vq, voxels, vq_steps, seed=SEED)
    vq.eval()
    prior = transformer.CodeTransformer(prior_cfg).to(device)
    model = AutoregressiveShapes(vq, prior)
    train_codes = model.codes(voxels)
    prior_history = transformer.fit(prior, train_codes.to(device), labels, prior_steps, seed=SEED)
    model.eval()
    metrics = evaluate(model, sets, train_codes)
    metrics["real_vs_real"] = generation_metrics(sets["ref32"], sets["held32"])
    metrics["train"] = {"shapes": len(voxels), "vq_steps": vq_steps, "prior_steps": prior_steps,
                        "vq_seconds": vq_history.seconds, "prior_seconds": prior_history.seconds,
                        "prior_train_bits": prior_history.mean("bits"),
                        "wall_seconds": time.perf_counter() - start, "device": device.type,
                        "threads": torch.get_num_threads()}
    metrics = rounded(metrics)
    save_checkpoint(CHECKPOINT, model, command=f"GEN3D_MODE={config.mode()} gen3d-course train {CHECKPOINT}",
                    seed=SEED, metrics=metrics,
                    config={"vqvae": vq_cfg.to_dict(), "prior": prior_cfg.to_dict(),
                            "data": {"train_seeds": [0, per_category], "resolution": RESOLUTION,
                                     "held_out_seed": HELDOUT_SEED, "reference_seed": REFERENCE_SEED,
                                     "held_out_per_category": len(sets["held32"]) // len(CATEGORIES)},
                            "distance": "1 - voxel IoU at 32^3 (16^3 probabilities upsampled "
                                        "trilinearly; occupied: p >= 0.5)"})
    return metrics
