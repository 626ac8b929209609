"""A causal transformer prior over code sequences: step 2 of the autoregressive recipe.

Written like nanoGPT's ``model.py`` (Karpathy): a config dataclass, then the modules in reading
order, shapes in the comments (B batch, T time, C channels, nh heads, hs = C / nh head size).

A shape's code grid, read as a sequence c_1 ... c_L (``models.vqvae.to_sequence``), gets the
exact likelihood

    p(c) = prod_i p(c_i | c_<i, y)

with y a start token: one per category, or "any" (the unconditional model; the start token is
replaced by "any" for a share of the training sequences, so one network is both). Training is
teacher forcing: the network reads [y, c_1 ... c_{L-1}] and predicts c_1 ... c_L at every
position at once, with the cross-entropy -log p(c_i | c_<i) (in bits: divided by ln 2). The
causal mask keeps position i from seeing positions > i; without it teacher forcing would be
copying.

Sampling draws one code at a time from softmax(logits / temperature), optionally restricted to
the top k codes; completion is sampling with the first codes fixed to observed ones.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..train import train


@dataclass
class TransformerConfig:
    vocab_size: int = 128   # K codes
    n_classes: int = 5      # category start tokens; one more, "any", for unconditional
    block_size: int = 64    # L, codes per sequence
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    p_uncond: float = 0.2   # share of training sequences that start with "any"
    lr: float = 1e-3
    batch: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Attention, written out
# --------------------------------------------------------------------------------------------


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True where query i may attend to key j: j <= i (itself and the past)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + M) v with M = -inf above the diagonal.

    q, k, v: (..., T, hs) -> (..., T, hs). Row i of the attention matrix is a distribution over
    keys j <= i, so output i mixes the values of positions 0..i only.
    """
    if q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"causal_attention: q, k, v must have one shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    T, hs = q.shape[-2], q.shape[-1]
    att = q @ k.transpose(-2, -1) / math.sqrt(hs)                      # (..., T, T)
    att = att.masked_fill(~causal_mask(T, q.device), float("-inf"))
    return F.softmax(att, dim=-1) @ v                                   # (..., T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}.")
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)   # q, k, v for all heads at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.n_head = cfg.n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                   # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)                   # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)                   # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)                   # (B, nh, T, hs)
        y = causal_attention(q, k, v)                              # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)           # heads side by side
        return self.drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class CodeTransformer(nn.Module):
    """Tokens (B, T) -> next-code logits (B, T, K), T <= block_size.

    Token ids: 0..K-1 codes, K + c the start token of category c, K + n_classes "any".
    Learned positional embeddings: attention alone does not know order.
    """

    def __init__(self, cfg: TransformerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TransformerConfig()
        self.tok_emb = nn.Embedding(cfg.vocab_size + cfg.n_classes + 1, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def any_token(self) -> int:
        return self.cfg.vocab_size + self.cfg.n_classes

    def start_tokens(self, labels, n: int | None = None) -> torch.Tensor:
        """Start tokens (B,) for category labels (B,) (None: "any" for n sequences)."""
        device = self.head.weight.device
        if labels is None:
            return torch.full((n,), self.any_token, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, dtype=torch.long).to(device)
        if labels.min() < 0 or labels.max() >= self.cfg.n_classes:
            raise ValueError(f"labels must lie in [0, {self.cfg.n_classes}).")
        return self.cfg.vocab_size + labels

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        if T > self.cfg.block_size:
            raise ValueError(f"CodeTransformer: {T} tokens but block_size is {self.cfg.block_size}.")
        pos = torch.arange(T, device=tokens.device)                          # (T,)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))              # (B, T, C)
        for block in self.blocks:
            x = block(x)                                                     # (B, T, C)
        return self.head(self.ln_f(x))                                       # (B, T, K)

    def logits(self, codes: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: read [start, c_1 .. c_{L-1}], return logits (B, L, K) whose row i
        predicts c_{i+1}."""
        codes = _check_codes(codes, self.cfg)
        return self(torch.cat([start[:, None], codes[:, :-1]], dim=1))

    def nll_bits(self, codes: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """-log2 p(c_i | c_<i, start) per code: (B, L) bits."""
        logits = self.logits(codes, start)
        return F.cross_entropy(logits.transpose(1, 2), codes, reduction="none") / math.log(2)

    @torch.no_grad()
    def generate(self, start: torch.Tensor, length: int | None = None, prefix: torch.Tensor | None = None,
                 temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample code sequences (B, length) one code at a time, given start tokens (B,).

        ``prefix`` (B, P): observed first codes, kept as they are (completion). Each step runs
        the network on everything so far (no key/value cache, as in nanoGPT), takes the last
        position's logits / temperature, keeps the top_k, and samples from the softmax.
        """
        length = length or self.cfg.block_size
        seq = start[:, None]                                                  # (B, 1)
        if prefix is not None:
            seq = torch.cat([seq, _check_codes(prefix.to(seq.device), self.cfg, full=False)], dim=1)
        while seq.shape[1] < length + 1:
            probs = next_code_probs(self(seq[:, -self.cfg.block_size:])[:, -1], temperature, top_k)  # (B, K)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(seq.device)  # (B, 1)
            seq = torch.cat([seq, nxt], dim=1)
        return seq[:, 1:].cpu()


def next_code_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """The distribution one sampling step draws from: logits (B, K) -> probabilities (B, K).

        p_j = exp(l_j / tau) / sum_{j' in top-k} exp(l_j' / tau)   for j among the k largest l_j,
        p_j = 0                                                      otherwise.

    tau < 1 sharpens (tau -> 0: argmax), tau > 1 flattens; top-k cuts the long tail of unlikely
    codes whose sum of small probabilities would otherwise be drawn now and then.
    """
    if temperature <= 0:
        raise ValueError(f"next_code_probs: temperature must be > 0, got {temperature}.")
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return F.softmax(logits, dim=-1)


def _check_codes(codes: torch.Tensor, cfg: TransformerConfig, full: bool = True) -> torch.Tensor:
    if codes.ndim != 2 or (full and codes.shape[1] != cfg.block_size) or codes.shape[1] > cfg.block_size:
        raise ValueError(f"codes have shape {tuple(codes.shape)}; expected (B, {cfg.block_size})"
                         f"{'' if full else ' or a shorter prefix'}.")
    if codes.dtype != torch.long or codes.min() < 0 or codes.max() >= cfg.vocab_size:
        raise ValueError(f"codes must be int64 in [0, {cfg.vocab_size}).")
    return codes


def bits_per_code(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in bits, -1/N sum_i log2 softmax(logits_i)[target_i].

    logits (B, T, K), targets (B, T) int64 -> 0-d tensor. The cross-entropy in nats divided by
    ln 2; a uniform guess over K codes costs log2 K bits.
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"bits_per_code: logits {tuple(logits.shape)} and targets {tuple(targets.shape)}; "
                         "expected (B, T, K) and (B, T).")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)) / math.log(2)


def train_step(model: CodeTransformer, opt: torch.optim.Optimizer, codes: torch.Tensor,
               start: torch.Tensor) -> float:
    """One teacher-forced update on a given batch: codes (B, L) int64, start tokens (B,).

    The network reads [start, c_1 .. c_{L-1}] and its causal logits at position i are scored
    against c_{i+1} (cross-entropy in bits); backward, gradient norm clipped at 1, one optimiser
    step. ``fit`` draws the batches and calls this; the lecture writes it out. Returns the bits.
    """
    loss = bits_per_code(model.logits(codes, start), codes)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def fit(model: CodeTransformer, codes: torch.Tensor, labels: torch.Tensor, steps: int, seed: int = 0,
        desc: str = "prior", max_seconds=None, progress: bool = True):
    """Next-code cross-entropy on sequences ``codes`` (N, L) with category ``labels`` (N,), AdamW,
    gradient norm clipped at 1. Logs "bits" (per code, the training batch)."""
    cfg = model.cfg
    codes = _check_codes(torch.as_tensor(codes), cfg)
    labels = torch.as_tensor(labels)
    if len(labels) != len(codes):
        raise ValueError(f"fit: {len(codes)} sequences but {len(labels)} labels.")
    device = model.head.weight.device
    codes, labels = codes.to(device), labels.to(device)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    batch = min(cfg.batch, len(codes))

    def step(i):
        idx = torch.randint(0, len(codes), (batch,), generator=generator).to(device)
        start = model.start_tokens(labels[idx])
        drop = (torch.rand(batch, generator=generator) < cfg.p_uncond).to(device)
        start = torch.where(drop, torch.full_like(start, model.any_token), start)
        return {"bits": train_step(model, opt, codes[idx], start)}

    model.train()
    history = train(step, steps, desc=desc, max_seconds=max_seconds, progress=progress,
                    log_every=max(1, steps // 200))
    model.eval()
    return history
