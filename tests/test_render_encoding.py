"""render.encoding: positional encoding and random Fourier features."""
import math

import pytest
import torch

from gen3d_course.render.encoding import (FourierFeatures, PositionalEncoding, encoding_size,
                                          positional_encoding)


def test_positional_encoding_layout_and_sizes():
    x = torch.tensor([[0.25, -0.5, 0.1]])
    out = positional_encoding(x, 3)
    assert out.shape == (1, encoding_size(3, 3)) == (1, 21)
    assert torch.equal(out[:, :3], x)
    for k in range(3):
        block = out[:, 3 + 6 * k: 9 + 6 * k]
        assert torch.allclose(block[:, :3], torch.sin(2**k * math.pi * x))
        assert torch.allclose(block[:, 3:], torch.cos(2**k * math.pi * x))
    assert torch.equal(positional_encoding(x, 0), x)
    assert positional_encoding(torch.zeros(4, 5, 2), 4, include_input=False).shape == (4, 5, 16)
    with pytest.raises(ValueError, match="no features"):
        positional_encoding(x, 0, include_input=False)
    with pytest.raises(ValueError, match="expected \\(..., 3\\)"):
        PositionalEncoding(3, 2)(torch.zeros(5, 2))


def test_fourier_features_are_seeded_and_bounded():
    a, b = FourierFeatures(3, 16, seed=1), FourierFeatures(3, 16, seed=1)
    x = torch.rand(10, 3)
    assert torch.equal(a(x), b(x)) and a(x).shape == (10, 32) and a(x).abs().max() <= 1
