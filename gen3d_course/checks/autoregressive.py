"""Autograder checks for unit 10 (autoregressive shape models): ``bits_per_code``, ``quantize``
(nearest code + straight-through gradient), ``causal_attention`` and ``next_code_probs``.

Each compares the student's function with the reference in :mod:`gen3d_course.models.vqvae` /
:mod:`gen3d_course.models.transformer` on random inputs and names the classic slip it looks like
(nats for bits, the farthest code, a missing or reversed straight-through, the mask off by one or
facing the future, temperature multiplied instead of divided, top-k off by one).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import transformer as ref_tr
from ..models import vqvae as ref_vq
from . import CheckFailure, _append_hint, _call_student, _mistake_hint, check_function, seeded

__all__ = ["check_bits_per_code", "check_quantize", "check_causal_attention", "check_next_code_probs"]


# --------------------------------------------------------------------------------------------
# Bits per code
# --------------------------------------------------------------------------------------------


def _bits_inputs(generator: torch.Generator):
    b, t, k = (int(torch.randint(lo, hi, (), generator=generator)) for lo, hi in ((2, 5), (3, 9), (4, 17)))
    logits = 2 * torch.randn(b, t, k, generator=generator)
    return logits, torch.randint(0, k, (b, t), generator=generator)


def check_bits_per_code(bits_per_code) -> bool:
    """``bits_per_code(logits (B, T, K), targets (B, T))`` -> 0-d tensor: mean -log2 p(target)."""
    name = "bits_per_code"
    logits, targets = _bits_inputs(seeded(1))
    got = _call_student(bits_per_code, (logits.clone(), targets.clone()), {}, name=name,
                        call=f"{name}(logits=Tensor{tuple(logits.shape)}, targets=Tensor{tuple(targets.shape)})")
    logp = F.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]  # (B, T) nats
    hint = _mistake_hint(got, {
        "the NLL in nats; divide by ln 2 for bits": -logp.mean(),
        "the NLL summed over codes; return the mean per code": -logp.sum() / math.log(2),
        "the log-likelihood (no minus sign): a NLL is positive": logp.mean() / math.log(2),
        "log2 of the raw logits; take log_softmax first (logits are not log-probabilities)":
            -logits.gather(-1, targets[..., None]).mean() / math.log(2),
        "bits per code, one per position; return the mean (a 0-d tensor)": -logp / math.log(2),
    })
    _append_hint(lambda: check_function(bits_per_code, ref_tr.bits_per_code, _bits_inputs, name=name),
                 hint, quiet=True)
    uniform = _call_student(bits_per_code, (torch.zeros(1, 4, 8), torch.zeros(1, 4, dtype=torch.long)), {},
                            name=name, call=f"{name}(logits=zeros(1, 4, 8), ...)")
    if abs(float(uniform) - 3.0) > 1e-5:
        raise CheckFailure(f"{name}: equal logits over K = 8 codes must cost log2 8 = 3 bits, got {float(uniform):.4g}")
    print(f"✔ {name}: matches the reference on 5 random inputs; a uniform guess over 8 codes costs 3 bits")
    return True


# --------------------------------------------------------------------------------------------
# Quantisation with the straight-through gradient
# --------------------------------------------------------------------------------------------


def _vq_inputs(generator: torch.Generator):
    n, k, d = (int(torch.randint(lo, hi, (), generator=generator)) for lo, hi in ((3, 12), (4, 10), (2, 6)))
    codebook = torch.randn(k, d, generator=generator)
    z = torch.randn(n, d, generator=generator)
    return z, codebook


def check_quantize(quantize) -> bool:
    """``quantize(z (N, D), codebook (K, D))`` -> (z_st (N, D), indices (N,)): nearest code by
    Euclidean distance, value e_k, gradient to z unchanged (straight-through), none to the codebook."""
    name = "quantize"
    z, codebook = _vq_inputs(seeded(2))
    call = f"{name}(z=Tensor{tuple(z.shape)}, codebook=Tensor{tuple(codebook.shape)})"
    got = _call_student(quantize, (z.clone(), codebook.clone()), {}, name=name, call=call)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailure(f"{name}: return a pair (z_st, indices), got {type(got).__name__}")
    d = torch.cdist(z, codebook)
    hint = _mistake_hint(got[1], {
        "the index of the *farthest* code (argmax); take argmin of the distance": d.argmax(1),
        "the code with the largest dot product z·e, which is not the nearest unless all codes "
        "have the same length": (z @ codebook.T).argmax(1),
    }) or _mistake_hint(got[0], {
        "z itself: the value must be the code e_k (write z + (e_k - z).detach(), not "
        "e_k + (z - e_k).detach())": z,
    })
    if isinstance(got[1], torch.Tensor) and got[1].shape == (codebook.shape[0],):
        hint += "\n  hint: indices have one entry per code; take argmin over the codebook axis (dim=1)"
    _append_hint(lambda: check_function(quantize, ref_vq.quantize, _vq_inputs, name=name),
                 hint, quiet=True)

    # the gradient: d z_st / d z = I, nothing to the codebook through z_st
    z_leaf, book = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    z_st, _ = _call_student(quantize, (z_leaf, book), {}, name=name, call=call)
    upstream = torch.randn(z_st.shape, generator=seeded(3))
    if not z_st.requires_grad:
        raise CheckFailure(f"{name}: z_st has no autograd history, so no gradient can reach the encoder; "
                           "return z + (e_k - z).detach() (the straight-through estimator)")
    grads = torch.autograd.grad(z_st, [z_leaf, book], upstream, allow_unused=True)
    if grads[0] is None or not grads[0].abs().sum() > 0:
        raise CheckFailure(f"{name}: no gradient reaches z (the encoder's output): argmin and indexing "
                           "have none. Copy the gradient past the quantiser: z_st = z + (e_k - z).detach()")
    if not torch.allclose(grads[0], upstream, atol=1e-6):
        raise CheckFailure(f"{name}: the gradient reaching z is not the incoming gradient unchanged; the "
                           "straight-through estimator treats quantisation as the identity (dz_st/dz = I)")
    if grads[1] is not None and grads[1].abs().sum() > 0:
        raise CheckFailure(f"{name}: gradient flows into the codebook through z_st; detach the "
                           "difference (e_k - z): the codebook loss, not the decoder, moves the codes")
    print(f"✔ {name}: nearest codes match the reference; the gradient reaches z unchanged and skips the codebook")
    return True


# --------------------------------------------------------------------------------------------
# Causal attention
# --------------------------------------------------------------------------------------------


def _attention_inputs(generator: torch.Generator):
    b, h, t, s = (int(torch.randint(lo, hi, (), generator=generator)) for lo, hi in ((1, 3), (1, 4), (3, 8), (2, 9)))
    return tuple(torch.randn(b, h, t, s, generator=generator) for _ in range(3))


def _attend(q, k, v, mask, scale=True, dim=-1):
    att = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    return F.softmax(att, dim=dim) @ v


def check_causal_attention(causal_attention) -> bool:
    """``causal_attention(q, k, v)`` with (B, nh, T, hs) inputs -> (B, nh, T, hs):
    softmax(q k^T / sqrt(hs), masked above the diagonal) v."""
    name = "causal_attention"
    q, k, v = _attention_inputs(seeded(4))
    t = q.shape[-2]
    got = _call_student(causal_attention, (q.clone(), k.clone(), v.clone()), {}, name=name,
                        call=f"{name}(q, k, v each Tensor{tuple(q.shape)})")
    ones = torch.ones(t, t, dtype=torch.bool)
    hint = _mistake_hint(got, {
        "attention with no mask: every position sees the future": _attend(q, k, v, None),
        "a mask facing the future (triu): position i sees j >= i instead of j <= i": _attend(q, k, v, ones.triu()),
        "a mask that also hides the diagonal (j < i): a position must see itself": _attend(
            q, k, v, ones.tril(-1)).nan_to_num(),
        "a mask that lets position i see i + 1 (off by one)": _attend(q, k, v, ones.tril(1)),
        "attention without the 1/sqrt(hs) scaling": _attend(q, k, v, ones.tril(), scale=False),
        "a softmax over the queries (dim=-2); normalise over the keys (dim=-1)": _attend(q, k, v, ones.tril(), dim=-2),
    })
    if isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
        hint += ("\n  hint: NaN appears when a whole row is masked: the first position must at least "
                 "see itself (keep the diagonal, j <= i)")
    _append_hint(lambda: check_function(causal_attention, ref_tr.causal_attention, _attention_inputs, name=name),
                 hint, quiet=True)
    # the law itself: changing what comes after position i leaves outputs 0..i unchanged
    i = t // 2
    k2, v2 = k.clone(), v.clone()
    k2[..., i + 1:, :] += 5 * torch.randn(k2[..., i + 1:, :].shape, generator=seeded(5))
    v2[..., i + 1:, :] += 5
    before = causal_attention(q.clone(), k.clone(), v.clone())[..., : i + 1, :]
    after = causal_attention(q.clone(), k2, v2)[..., : i + 1, :]
    if not torch.allclose(before, after, atol=1e-5):
        raise CheckFailure(f"{name}: changing keys and values after position {i} changed the outputs at "
                           f"positions 0..{i}: the future leaks; mask scores with j > i to -inf")
    print(f"✔ {name}: matches the reference on 5 random inputs; outputs ignore the future")
    return True


# --------------------------------------------------------------------------------------------
# One sampling step: temperature and top-k
# --------------------------------------------------------------------------------------------


def _probs_inputs(generator: torch.Generator):
    b, k = int(torch.randint(1, 5, (), generator=generator)), int(torch.randint(5, 12, (), generator=generator))
    temperature = round(float(torch.empty(()).uniform_(0.3, 2.0, generator=generator)), 2)
    top_k = int(torch.randint(2, k, (), generator=generator))
    return 3 * torch.randn(b, k, generator=generator), temperature, top_k


def check_next_code_probs(next_code_probs) -> bool:
    """``next_code_probs(logits (B, K), temperature, top_k)`` -> probabilities (B, K): softmax of
    logits / temperature over the top_k largest, zero elsewhere (top_k None: all codes)."""
    name = "next_code_probs"
    logits, temperature, top_k = _probs_inputs(seeded(6))
    got = _call_student(next_code_probs, (logits.clone(), temperature, top_k), {}, name=name,
                        call=f"{name}(logits=Tensor{tuple(logits.shape)}, temperature={temperature}, top_k={top_k})")

    def keep(l, n):
        kth = l.topk(n, -1).values[..., -1:]
        return l.masked_fill(l < kth, float("-inf"))

    hint = _mistake_hint(got, {
        "logits multiplied by the temperature; divide by it (tau < 1 must sharpen)":
            F.softmax(keep(logits * temperature, top_k), -1),
        "a distribution without the temperature": F.softmax(keep(logits, top_k), -1),
        "the top k + 1 codes kept (off by one)": F.softmax(keep(logits / temperature, min(top_k + 1, logits.shape[-1])), -1),
        "the top k - 1 codes kept (off by one)": F.softmax(keep(logits / temperature, top_k - 1), -1),
        "all codes kept; zero all but the top_k": F.softmax(logits / temperature, -1),
        "probabilities that do not sum to 1 after the top-k cut; renormalise (softmax after the cut)":
            F.softmax(logits / temperature, -1) * (keep(logits, top_k) > float("-inf")),
    })
    _append_hint(lambda: check_function(next_code_probs, ref_tr.next_code_probs, _probs_inputs, name=name),
                 hint, quiet=True)
    whole = _call_student(next_code_probs, (logits.clone(), 1.0, None), {}, name=name,
                          call=f"{name}(logits, temperature=1.0, top_k=None)")
    if not isinstance(whole, torch.Tensor) or not torch.allclose(whole, F.softmax(logits, -1), atol=1e-6):
        raise CheckFailure(f"{name}: with temperature 1 and top_k=None the result must be softmax(logits)")
    print(f"✔ {name}: matches the reference on 5 random inputs (temperature and top-k)")
    return True
