"""VQ-VAE on voxel grids: step 1 of the autoregressive recipe (van den Oord et al. 2017; the
shape version is AutoSDF, Mittal et al. 2022).

An encoder E maps a grid x to a small grid of vectors z_e = E(x) (one D-vector per cell); each
vector is replaced by its nearest entry of a learned codebook {e_1, ..., e_K}:

    k(i) = argmin_j ||z_e(i) - e_j||^2,        z_q(i) = e_{k(i)}

and a decoder G maps z_q back to occupancy logits. A shape becomes a grid of integers k(i), the
"tokens" a transformer prior models in step 2 (``models.transformer``).

argmin has no gradient, so the decoder's gradient is copied past it (the straight-through
estimator): the forward pass uses z_q, the backward pass treats quantisation as the identity,

    z_st = z_e + sg[z_q - z_e]          (value z_q, d z_st / d z_e = I)

where sg[.] is stop-gradient (``.detach()``). The codebook then gets no gradient from the
reconstruction, so two more terms train it (both means over cells and dimensions):

    L = BCE(G(z_st), x)  +  ||sg[z_e] - z_q||^2  +  beta * ||z_e - sg[z_q]||^2
        reconstruction      codebook: move e_k       commitment: keep E near its codes
                            towards its encodings    (beta = 0.25 in the paper)

A code no encoding ever picks gets no gradient at all: it is "dead", and the shapes use fewer
codes than the codebook holds. Usage is measured by the perplexity exp(H(p)) of the code
histogram p (K when all codes are used equally, 1 when one code takes all). The remedy here
restarts dead codes: every ``restart_every`` steps, a code unused in that window is moved onto a
random encoder output of the current batch (Williams et al. 2020, Dhariwal et al. 2020).

Scale (what one CPU thread trains): 16^3 voxels -> 4^3 = 64 codes from K = 128 entries of
dimension 32. AutoSDF: 64^3 SDF -> 8^3 = 512 codes from K = 512 entries.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..train import train

# --------------------------------------------------------------------------------------------
# Quantisation and its losses
# --------------------------------------------------------------------------------------------


def _check_vectors(z: torch.Tensor, codebook: torch.Tensor, fn: str) -> None:
    if codebook.ndim != 2:
        raise ValueError(f"{fn}: codebook has shape {tuple(codebook.shape)}; expected (K, D).")
    if z.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"{fn}: z has shape {tuple(z.shape)}; expected (N, {codebook.shape[1]}) "
                         "(flatten the grid of vectors to one vector per row).")
    if not torch.isfinite(z).all():
        raise ValueError(f"{fn}: z contains NaN or inf (the encoder diverged).")


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """k(i) = argmin_j ||z_i - e_j||^2 for z (N, D), codebook (K, D) -> indices (N,) int64.

    ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, computed for all pairs with one matrix product.
    """
    _check_vectors(z, codebook, "nearest_code")
    d = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1)[None]  # (N, K)
    return d.argmin(dim=1)


def quantize(z: torch.Tensor, codebook: torch.Tensor):
    """Nearest-code quantisation with the straight-through gradient: (z_st, indices).

    z (N, D), codebook (K, D). z_st = z + sg[e_k - z] has the value of the nearest code e_k and
    passes the gradient to z unchanged (as if quantisation were the identity); no gradient
    reaches the codebook through it (the codebook loss of :func:`vq_losses` trains it).
    """
    indices = nearest_code(z, codebook)
    z_q = codebook[indices]                                       # (N, D)
    return z + (z_q - z).detach(), indices


def vq_losses(z_e: torch.Tensor, z_q: torch.Tensor, beta: float = 0.25) -> dict:
    """The codebook and commitment terms, each a mean over cells and dimensions.

        codebook   = ||sg[z_e] - z_q||^2     (gradient to the codebook only)
        commitment = ||z_e - sg[z_q]||^2     (gradient to the encoder only; weighted by beta)

    ``z_q`` is the raw codebook lookup ``codebook[indices]`` (not the straight-through output,
    whose value is the same but whose gradient would go to the encoder).
    """
    codebook = (z_e.detach() - z_q).pow(2).mean()
    commitment = (z_e - z_q.detach()).pow(2).mean()
    return {"codebook": codebook, "commitment": commitment, "vq": codebook + beta * commitment}


def code_usage(indices: torch.Tensor, K: int) -> dict:
    """How a set of codes uses a codebook of K entries: histogram p, perplexity exp(H(p)) and
    the number of dead codes (never used)."""
    counts = torch.bincount(indices.flatten(), minlength=K).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"p": p.float(), "perplexity": float(entropy.exp()), "dead": int((counts == 0).sum()),
            "used": int((counts > 0).sum())}


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


@dataclass
class VQVAEConfig:
    """The model and its training (saved in the checkpoint manifest)."""

    resolution: int = 16       # input grids resolution^3
    downsample: int = 2        # stride-2 convolutions: code grid side = resolution / 2^downsample
    width: int = 32            # channels after the first convolution (doubled after the second)
    code_dim: int = 32         # D
    codebook_size: int = 128   # K
    beta: float = 0.25         # commitment weight
    restart_every: int = 25    # steps between dead-code restarts; 0 switches the remedy off
    occupancy: float = 0.05    # the data's share of occupied voxels: the decoder's starting bias
    lr: float = 3e-3
    batch: int = 32

    @property
    def code_side(self) -> int:
        return self.resolution // 2 ** self.downsample

    def to_dict(self) -> dict:
        return asdict(self)


class VQVAE(nn.Module):
    """x (B, R, R, R) occupancy -> codes (B, S, S, S) in [0, K) -> logits (B, R, R, R), S = R / 4.

    Encoder: two 4x4x4 stride-2 convolutions (R -> R/2 -> R/4), a 3x3x3 convolution and a 1x1x1
    projection to D. Decoder: its mirror, with transposed convolutions back to R. The codebook
    is an (K, D) parameter.
    """

    def __init__(self, cfg: VQVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VQVAEConfig()
        if cfg.resolution % 2 ** cfg.downsample:
            raise ValueError(f"VQVAE: resolution {cfg.resolution} is not divisible by 2^{cfg.downsample}.")
        c, layers = cfg.width, []
        c_in = 1
        for i in range(cfg.downsample):
            c_out = c * 2 ** i
            layers += [nn.Conv3d(c_in, c_out, 4, 2, 1), nn.ReLU()]
            c_in = c_out
        self.encoder = nn.Sequential(*layers, nn.Conv3d(c_in, c_in, 3, 1, 1), nn.ReLU(),
                                     nn.Conv3d(c_in, cfg.code_dim, 1))
        layers = [nn.Conv3d(cfg.code_dim, c_in, 3, 1, 1), nn.ReLU(), nn.Conv3d(c_in, c_in, 3, 1, 1), nn.ReLU()]
        for i in reversed(range(cfg.downsample)):
            c_out = c * 2 ** (i - 1) if i else 1
            layers += [nn.ConvTranspose3d(c_in, c_out, 4, 2, 1)] + ([nn.ReLU()] if i else [])
            c_in = c_out
        self.decoder = nn.Sequential(*layers)
        # start at the data's log-odds: skips the long first phase of learning "almost all empty"
        nn.init.constant_(self.decoder[-1].bias, math.log(cfg.occupancy / (1 - cfg.occupancy)))
        # small uniform init (+-1/K), as in the reference implementations
        self.codebook = nn.Parameter(torch.empty(cfg.codebook_size, cfg.code_dim).uniform_(
            -1 / cfg.codebook_size, 1 / cfg.codebook_size))

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        r = self.cfg.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (r, r, r):
            raise ValueError(f"VQVAE: voxels have shape {tuple(x.shape)}; expected (B, {r}, {r}, {r}).")
        return x.float()[:, None]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e: (B, R, R, R) -> (B, S, S, S, D), one vector per code cell."""
        return self.encoder(self._check(x)).permute(0, 2, 3, 4, 1)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, S, S, S, D) -> occupancy logits (B, R, R, R)."""
        return self.decoder(z_q.permute(0, 4, 1, 2, 3))[:, 0]

    def forward(self, x: torch.Tensor) -> dict:
        """Logits, codes and the loss terms for a batch x (B, R, R, R)."""
        z_e = self.encode(x)                                        # (B, S, S, S, D)
        flat = z_e.reshape(-1, z_e.shape[-1])                       # (B S^3, D)
        z_st, idx = quantize(flat, self.codebook)
        logits = self.decode(z_st.view_as(z_e))                     # (B, R, R, R)
        parts = vq_losses(flat, self.codebook[idx], self.cfg.beta)
        parts["recon"] = F.binary_cross_entropy_with_logits(logits, x.float())
        parts["loss"] = parts["recon"] + parts["vq"]
        return {"logits": logits, "indices": idx.view(z_e.shape[:-1]), "z_e": flat, **parts}

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Code grids (B, S, S, S) int64 of voxel grids (B, R, R, R)."""
        device = self.codebook.device
        out = []
        for i in range(0, len(x), chunk):
            z = self.encode(torch.as_tensor(x[i:i + chunk]).to(device))
            out.append(nearest_code(z.reshape(-1, z.shape[-1]), self.codebook).view(z.shape[:-1]).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """Occupancy probabilities (B, R, R, R) on the CPU of code grids (B, S, S, S)."""
        s, K = self.cfg.code_side, self.cfg.codebook_size
        indices = torch.as_tensor(indices)
        if indices.ndim != 4 or tuple(indices.shape[1:]) != (s, s, s):
            raise ValueError(f"decode_indices: codes have shape {tuple(indices.shape)}; expected (B, {s}, {s}, {s}).")
        if indices.min() < 0 or indices.max() >= K:
            raise ValueError(f"decode_indices: codes must lie in [0, {K}).")
        device = self.codebook.device
        return torch.cat([torch.sigmoid(self.decode(self.codebook[indices[i:i + chunk].to(device)])).cpu()
                          for i in range(0, len(indices), chunk)])


def to_sequence(grid: torch.Tensor) -> torch.Tensor:
    """Code grids (B, S, S, S) indexed [ix, iy, iz] -> sequences (B, S^3), read bottom to top:
    y slowest, then x, then z. The first half of a sequence is the lower half of the shape, so a
    prefix is a part one can observe (the legs) and the prior completes the rest."""
    if grid.ndim != 4:
        raise ValueError(f"to_sequence: expected code grids (B, S, S, S), got {tuple(grid.shape)}.")
    return grid.permute(0, 2, 1, 3).reshape(len(grid), -1)


def to_grid(seq: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_sequence`: (B, S^3) -> (B, S, S, S) indexed [ix, iy, iz]."""
    s = round(seq.shape[-1] ** (1 / 3))
    if seq.ndim != 2 or s ** 3 != seq.shape[-1]:
        raise ValueError(f"to_grid: expected sequences (B, S^3), got {tuple(seq.shape)}.")
    return seq.reshape(len(seq), s, s, s).permute(0, 2, 1, 3)


# --------------------------------------------------------------------------------------------
# Training, with the dead-code remedy
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def restart_dead_codes(codebook: torch.Tensor, counts: torch.Tensor, z_e: torch.Tensor,
                       generator: torch.Generator | None = None, noise: float = 0.01) -> int:
    """Move every code with ``counts == 0`` onto a random row of ``z_e`` (N, D), plus a little
    noise so restarted codes do not coincide; in place. Returns how many were restarted."""
    dead = (counts == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    pick = torch.randint(0, len(z_e), (len(dead),), generator=generator).to(z_e.device)
    codebook[dead] = z_e[pick] + noise * z_e.std() * torch.randn(
        len(dead), z_e.shape[1], generator=generator).to(z_e.device)
    return len(dead)


def fit(model: VQVAE, voxels, steps: int, seed: int = 0, desc: str = "VQ-VAE", max_seconds=None,
        progress: bool = True):
    """Train on voxels (N, R, R, R) with Adam for ``steps`` random minibatches; dead codes are
    restarted every ``model.cfg.restart_every`` steps (0: never). Returns the ``train.History``
    (loss, recon, codebook, commitment, perplexity of the batch, restarted)."""
    cfg = model.cfg
    data = torch.as_tensor(voxels).float()
    model._check(data[:1])
    device = model.codebook.device
    data = data.to(device)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    counts = torch.zeros(cfg.codebook_size, device=device)
    batch = min(cfg.batch, len(data))

    def step(i):
        idx = torch.randint(0, len(data), (batch,), generator=generator).to(device)
        out = model(data[idx])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        counts.add_(torch.bincount(out["indices"].flatten(), minlength=cfg.codebook_size))
        restarted = 0
        if cfg.restart_every and (i + 1) % cfg.restart_every == 0 and i + 1 < steps:  # not at the end
            restarted = restart_dead_codes(model.codebook.data, counts, out["z_e"].detach(), generator)
            counts.zero_()
        return {"loss": out["loss"].item(), "recon": out["recon"].item(),
                "codebook": out["codebook"].item(), "commitment": out["commitment"].item(),
                "perplexity": code_usage(out["indices"], cfg.codebook_size)["perplexity"],
                "restarted": restarted}

    return train(step, steps, desc=desc, max_seconds=max_seconds, progress=progress,
                 log_every=max(1, steps // 200))
