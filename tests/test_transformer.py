"""Unit 10, step 2: the causal transformer prior: the mask, bits per code, sampling with
temperature and top-k, a short fit, completion, the shipped checkpoint and the checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from gen3d_course import checkpoints
from gen3d_course.checks import CheckFailure
from gen3d_course.checks import autoregressive as checks
from gen3d_course.experiments import autoregressive as experiments
from gen3d_course.models import transformer as tr
from gen3d_course.models import vqvae

SMALL = tr.TransformerConfig(vocab_size=6, n_classes=2, block_size=8, n_layer=2, n_head=2, n_embd=16, batch=16)


def test_causal_mask_output_at_i_is_independent_of_inputs_after_i():
    torch.manual_seed(0)
    model = tr.CodeTransformer(SMALL).eval()
    tokens = torch.randint(0, 6, (3, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 6          # change the future of position 4
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_causal_attention_equals_torchs_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 4, generator=g) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(tr.causal_attention(q, k, v), expected, atol=1e-5)


def test_bits_of_a_known_distribution():
    # a model that puts probability 1/2 on the target costs exactly one bit per code
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(2, 4, 3)
    assert tr.bits_per_code(logits, torch.zeros(2, 4, dtype=torch.long)).item() == pytest.approx(1.0)
    assert tr.bits_per_code(torch.zeros(1, 5, 8), torch.zeros(1, 5, dtype=torch.long)).item() == pytest.approx(3.0)


def test_next_code_probs_temperature_and_top_k():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = tr.next_code_probs(logits, 1.0, top_k=2)
    assert torch.allclose(p, torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1), 0.0, 0.0]]))
    assert tr.next_code_probs(logits, 0.01)[0, 0] > 0.999              # tau -> 0: argmax
    assert torch.allclose(tr.next_code_probs(logits, 1e4), torch.full((1, 4), 0.25), atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        tr.next_code_probs(logits, 0.0)


def test_loss_drops_in_a_short_fit_and_the_prior_learns_a_rule():
    # sequences "count up from a random start" are deterministic after the first code
    torch.manual_seed(0)
    starts = torch.randint(0, 6, (64, 1))
    codes = (starts + torch.arange(8)) % 6
    labels = torch.zeros(64, dtype=torch.long)
    model = tr.CodeTransformer(tr.TransformerConfig(**{**SMALL.to_dict(), "lr": 3e-3}))
    history = tr.fit(model, codes, labels, 150, progress=False)
    assert history.mean("bits", window=5) < 0.5 * history.mean("bits", first=True, window=5)
    bits = model.nll_bits(codes, model.start_tokens(labels)).detach()
    assert bits[:, 1:].mean() < 0.3                                       # the rule is learned
    sample = model.generate(model.start_tokens(labels[:4]), generator=torch.Generator().manual_seed(0))
    assert ((sample[:, 1:] - sample[:, :-1]) % 6 == 1).float().mean() > 0.9


def test_train_step_reads_shifted_tokens_clips_and_steps():
    torch.manual_seed(0)
    model = tr.CodeTransformer(SMALL).eval()
    codes, start = torch.randint(0, 6, (4, 8)), model.start_tokens(torch.tensor([0, 1, 0, 1]))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    expected = F.cross_entropy(model(torch.cat([start[:, None], codes[:, :-1]], 1)).transpose(1, 2), codes) / math.log(2)
    bits = tr.train_step(model, opt, codes, start)
    assert bits == pytest.approx(expected.item(), abs=1e-6)
    moved = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < moved.norm() <= 0.5 * 1.0 + 1e-5  # SGD moves by lr × the clipped gradient, norm ≤ 1
    with pytest.raises(ValueError, match="codes have shape"):
        tr.train_step(model, opt, codes[:, :5], start)


def test_generate_keeps_the_prefix_and_checks_its_input():
    model = tr.CodeTransformer(SMALL).eval()
    prefix = torch.tensor([[1, 2, 3], [4, 5, 0]])
    out = model.generate(model.start_tokens(None, 2), prefix=prefix, top_k=2,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and torch.equal(out[:, :3], prefix)
    with pytest.raises(ValueError, match="in \\[0, 6\\)"):
        model.nll_bits(torch.full((1, 8), 6), model.start_tokens(None, 1))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        model.start_tokens(torch.tensor([2]))


def test_checkpoint_round_trip(tmp_path, monkeypatch):
    vq = vqvae.VQVAE(vqvae.VQVAEConfig(width=4, code_dim=4, codebook_size=6))
    prior = tr.CodeTransformer(tr.TransformerConfig(**{**SMALL.to_dict(), "block_size": 64}))
    model = experiments.AutoregressiveShapes(vq, prior).eval()
    checkpoints.save_checkpoint("ar_test", model, command="test", seed=0, directory=tmp_path,
                                config={"vqvae": vq.cfg.to_dict(), "prior": prior.cfg.to_dict()})
    monkeypatch.setattr(experiments, "CHECKPOINT", "ar_test")
    monkeypatch.setattr(experiments, "checkpoint_info", lambda name: checkpoints.checkpoint_info(name, tmp_path))
    monkeypatch.setattr(experiments, "load_checkpoint",
                        lambda name, device=None: checkpoints.load_checkpoint(name, directory=tmp_path, device=device))
    loaded = experiments.load_pretrained()
    assert not loaded.training
    x = torch.rand(2, 16, 16, 16) > 0.7
    assert torch.equal(loaded.codes(x), model.codes(x))
    assert torch.allclose(loaded.bits(x), model.bits(x))
    a = loaded.sample(2, seed=3)
    assert torch.equal(a, model.sample(2, seed=3)) and a.shape == (2, 16, 16, 16)


def test_completion_fidelity_of_a_perfect_and_an_empty_completion():
    target = torch.rand(16, 16, 16) > 0.6
    perfect = experiments.completion_fidelity(torch.stack([target, target]).float(), target)
    assert perfect["observed_IoU"] == 1 and perfect["rest_diversity"] == 0
    empty = experiments.completion_fidelity(torch.zeros(2, 16, 16, 16), target)
    assert empty["observed_IoU"] == 0


def test_shipped_checkpoint_beats_the_baselines():
    info = experiments.checkpoint_info(experiments.CHECKPOINT)
    m = info["metrics"]
    assert info["bytes"] < 5 * 2**20
    assert m["bits_per_code"] < m["unigram_bits"] < m["uniform_bits"]
    model = experiments.load_pretrained()
    assert not model.training and isinstance(model, torch.nn.Module)


def test_checks_pass_on_the_reference_and_fail_on_classic_mistakes():
    assert checks.check_bits_per_code(tr.bits_per_code)
    assert checks.check_causal_attention(tr.causal_attention)
    assert checks.check_next_code_probs(tr.next_code_probs)

    def nats(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def no_mask(q, k, v):
        return F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v

    def future_mask(q, k, v):
        t = q.shape[-2]
        att = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(
            ~torch.ones(t, t, dtype=torch.bool).tril(1), float("-inf"))
        return F.softmax(att, -1) @ v

    def times_temperature(logits, temperature, top_k):
        return tr.next_code_probs(logits * temperature ** 2, temperature, top_k)

    for check, wrong, message in ((checks.check_bits_per_code, nats, "nats"),
                                  (checks.check_causal_attention, no_mask, "no mask"),
                                  (checks.check_causal_attention, future_mask, "off by one"),
                                  (checks.check_next_code_probs, times_temperature, "multiplied")):
        with pytest.raises(CheckFailure, match=message):
            check(wrong)
    with pytest.raises(CheckFailure, match="not implemented"):
        def todo(*args):
            raise NotImplementedError
        checks.check_bits_per_code(todo)
