"""Positional encoding and random Fourier features: lifting coordinates so an MLP can fit detail.

A ReLU MLP fed raw (x, y, z) is biased towards smooth functions (its spectrum decays fast), so
a radiance field trained on raw coordinates renders blurry images. Mapping each coordinate p
through sines and cosines of growing frequency first,

    γ(p) = (p, sin(2⁰πp), cos(2⁰πp), sin(2¹πp), cos(2¹πp), …, sin(2^{L−1}πp), cos(2^{L−1}πp))

gives the network features that already vary at fine scales (NeRF, Mildenhall et al. 2020).
Layout of the output, for input (..., D) and L frequencies: first the D raw coordinates
(when ``include_input``), then for k = 0 … L−1 the block sin(2^k π p) (D values) followed by
the block cos(2^k π p) (D values). Output size D·(1 + 2L) (or D·2L without the input).

Random Fourier features (Tancik et al. 2020) replace the fixed octaves by a Gaussian matrix B:
γ(p) = (sin(2π Bp), cos(2π Bp)); the scale of B sets the bandwidth.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def encoding_size(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    """Number of features ``positional_encoding`` makes from ``in_dim`` coordinates."""
    return in_dim * (int(include_input) + 2 * n_freqs)


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """γ(x): (..., D) → (..., D·(include_input + 2·n_freqs)), frequencies 2^k·π, k < n_freqs.

    ``n_freqs = 0`` with ``include_input`` returns x itself (the "no encoding" baseline).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"positional_encoding: x must be a torch.Tensor, got {type(x).__name__}.")
    if n_freqs < 0 or int(n_freqs) != n_freqs:
        raise ValueError(f"positional_encoding: n_freqs must be a non-negative int, got {n_freqs}.")
    if n_freqs == 0 and not include_input:
        raise ValueError("positional_encoding: n_freqs=0 without the input gives no features.")
    parts = [x] if include_input else []
    for k in range(int(n_freqs)):
        angle = (2.0 ** k * math.pi) * x
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=-1)


class PositionalEncoding(nn.Module):
    """``positional_encoding`` as a module; ``out_dim`` tells the next layer its input size."""

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        self.out_dim = encoding_size(in_dim, n_freqs, include_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"PositionalEncoding: expected (..., {self.in_dim}) inputs, got "
                             f"{tuple(x.shape)}.")
        return positional_encoding(x, self.n_freqs, self.include_input)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_freqs={self.n_freqs}, out_dim={self.out_dim}"


class FourierFeatures(nn.Module):
    """Random Fourier features γ(p) = (sin(2π Bp), cos(2π Bp)), B (n_features, D) ~ N(0, scale²).

    B is a fixed buffer (not trained), drawn from ``seed`` so two models share it.
    """

    def __init__(self, in_dim: int, n_features: int = 64, scale: float = 4.0, seed: int = 0,
                 include_input: bool = False):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(n_features, in_dim, generator=generator) * scale)
        self.include_input = include_input
        self.out_dim = 2 * n_features + (in_dim if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * x @ self.B.T
        parts = ([x] if self.include_input else []) + [torch.sin(angle), torch.cos(angle)]
        return torch.cat(parts, dim=-1)
