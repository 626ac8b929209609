"""Unit 10, step 1: nearest-code quantisation, the straight-through gradient, VQ losses, code
usage, dead-code restarts, the sequence order, a short fit and the `quantize` check."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gen3d_course.checks import CheckFailure
from gen3d_course.checks import autoregressive as checks
from gen3d_course.models import vqvae


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_quantiser_output_is_the_nearest_codebook_entry(n, k, d, seed):
    g = torch.Generator().manual_seed(seed)
    z, book = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    z_q, idx = vqvae.quantize(z, book)
    assert torch.allclose(z_q, book[idx], atol=1e-6)                 # a codebook entry
    assert torch.allclose(torch.cdist(z, book).min(1).values,         # the nearest one
                          (z - book[idx]).norm(dim=1), atol=1e-4)


def test_straight_through_gradient_equals_the_identitys():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=g, requires_grad=True)
    book = torch.randn(5, 3, generator=g, requires_grad=True)
    upstream = torch.randn(7, 3, generator=g)
    z_q, _ = vqvae.quantize(z, book)
    gz, gbook = torch.autograd.grad(z_q, [z, book], upstream, allow_unused=True)
    assert torch.equal(gz, upstream)       # what the identity would pass
    assert gbook is None                   # the codebook learns from its own loss only


def test_vq_losses_send_gradients_where_the_equations_say():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g, requires_grad=True)
    e = torch.randn(6, 4, generator=g, requires_grad=True)
    parts = vqvae.vq_losses(z, e, beta=0.25)
    assert torch.autograd.grad(parts["codebook"], z, allow_unused=True)[0] is None
    assert torch.autograd.grad(parts["commitment"], e, allow_unused=True)[0] is None
    assert torch.isclose(parts["codebook"], parts["commitment"])     # same value, different gradients
    assert torch.isclose(parts["vq"], 1.25 * parts["codebook"])


def test_code_usage_perplexity_and_dead_codes():
    even = vqvae.code_usage(torch.arange(8).repeat(3), 8)
    assert even["perplexity"] == pytest.approx(8) and even["dead"] == 0
    one = vqvae.code_usage(torch.zeros(10, dtype=torch.long), 8)
    assert one["perplexity"] == pytest.approx(1) and one["dead"] == 7


def test_restart_moves_only_dead_codes_onto_encodings():
    book = torch.zeros(4, 2)
    z = torch.tensor([[5.0, 5.0], [5.0, 5.0]])
    n = vqvae.restart_dead_codes(book, torch.tensor([3.0, 0.0, 1.0, 0.0]), z, noise=0.0)
    assert n == 2 and torch.equal(book[[0, 2]], torch.zeros(2, 2)) and torch.equal(book[[1, 3]], z)


def test_sequence_order_is_bottom_to_top_and_invertible():
    grid = torch.arange(2 * 64).view(2, 4, 4, 4)
    seq = vqvae.to_sequence(grid)
    assert torch.equal(vqvae.to_grid(seq), grid)
    first_half = seq[:, :32]
    assert set(first_half[0].tolist()) == set(grid[0, :, :2].flatten().tolist())   # lower half in y


def test_shapes_and_clear_errors():
    model = vqvae.VQVAE(vqvae.VQVAEConfig(width=4, code_dim=4, codebook_size=8))
    x = torch.rand(2, 16, 16, 16) > 0.8
    out = model(x)
    assert out["logits"].shape == (2, 16, 16, 16) and out["indices"].shape == (2, 4, 4, 4)
    assert model.decode_indices(model.encode_indices(x)).shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="expected \\(B, 16, 16, 16\\)"):
        model(torch.zeros(2, 8, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        vqvae.quantize(torch.full((2, 4), float("nan")), model.codebook)
    with pytest.raises(ValueError, match="codes must lie"):
        model.decode_indices(torch.full((1, 4, 4, 4), 8))


def _blocks(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 16, 16, 16, dtype=torch.bool)
    for i in range(n):
        a = torch.randint(0, 8, (3,), generator=g)
        s = torch.randint(4, 9, (3,), generator=g)
        x[i, a[0]:a[0] + s[0], a[1]:a[1] + s[1], a[2]:a[2] + s[2]] = True
    return x


def test_loss_drops_in_a_short_fit_and_restarts_keep_codes_alive():
    torch.manual_seed(0)
    cfg = vqvae.VQVAEConfig(width=8, code_dim=8, codebook_size=32, restart_every=10, batch=16)
    model = vqvae.VQVAE(cfg)
    history = vqvae.fit(model, _blocks(), 60, progress=False)
    assert history.mean("recon", window=5) < 0.7 * history.mean("recon", first=True, window=5)
    assert sum(history["restarted"]) > 0


def test_check_passes_on_the_reference_and_fails_on_classic_mistakes():
    assert checks.check_quantize(vqvae.quantize)

    def farthest(z, book):
        idx = torch.cdist(z, book).argmax(1)
        return z + (book[idx] - z).detach(), idx

    def no_straight_through(z, book):
        idx = torch.cdist(z, book).argmin(1)
        return book[idx], idx

    def reversed_straight_through(z, book):
        idx = torch.cdist(z, book).argmin(1)
        return book[idx] + (z - book[idx]).detach(), idx

    for wrong, message in ((farthest, "farthest"), (no_straight_through, "no gradient reaches z"),
                           (reversed_straight_through, "z itself")):
        with pytest.raises(CheckFailure, match=message):
            checks.check_quantize(wrong)
