"""Autograder checks for unit 04 (3D-GAN, 3D-VAE-GAN): ``conv_output_size``, the voxel
``Generator``, the accuracy-gated ``discriminator_update`` and ``vae_gan_loss``.

Each compares the student's code with the reference in :mod:`gen3d_course.models.voxel_gan`:
output sizes on random layer settings, the generator layer by layer (type and output shape),
the discriminator step on copies of one network (returned values *and* the weights afterwards),
and the loss on random inputs (values and gradients).
"""
from __future__ import annotations

import copy

import torch

from ..models import voxel_gan as ref
from . import CheckFailure, _call_student, check_function, check_gradients_flow, in_kernel, seeded

__all__ = ["check_conv_output_size", "check_generator", "check_discriminator_update",
           "check_vae_gan_loss"]


# --------------------------------------------------------------------------------------------
# Output sizes
# --------------------------------------------------------------------------------------------


def _conv_inputs(generator: torch.Generator) -> dict:
    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (), generator=generator))

    kernel = draw(1, 5)
    return {"n": draw(kernel + 1, 40), "kernel": kernel, "stride": draw(1, 3),
            "padding": draw(0, kernel // 2), "transposed": bool(draw(0, 1))}


def check_conv_output_size(conv_output_size) -> bool:
    """``conv_output_size(n, kernel, stride, padding, transposed)`` -> int, for both kinds."""
    name = "conv_output_size"
    for transposed, expected, text in ((False, 16, "Conv3d(k=4, s=2, p=1) on 32"),
                                       (True, 64, "ConvTranspose3d(k=4, s=2, p=1) on 32")):
        got = _call_student(conv_output_size, (32, 4, 2, 1, transposed), {}, name=name,
                            call=f"{name}(n=32, kernel=4, stride=2, padding=1, transposed={transposed})")
        if got != expected:
            raise CheckFailure(f"{name}: a {text} gives {expected} cells per side (torch agrees), "
                               f"yours gives {got!r}.")
    check_function(conv_output_size, ref.conv_output_size, _conv_inputs, name=name, trials=40)
    return True


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------

_GENERATOR_CASES = ((200, (512, 256, 128, 64)), (16, (32, 16)), (8, (16, 8, 4)))


@in_kernel
def _generator_facts(Generator, z_dim: int, channels: tuple, z: torch.Tensor | None) -> dict:
    """What ``Generator(z_dim, channels)`` is, as plain data: its type, parameter count, and on
    ``z`` its leaf layers (name, type, output shape) and its eval-mode output."""
    call = f"Generator(z_dim={z_dim}, channels={channels})"
    model = _call_student(Generator, (z_dim, channels), {}, name="Generator", call=call)
    if not isinstance(model, torch.nn.Module):
        return {"type": type(model).__name__}
    facts = {"type": "Module", "params": sum(p.numel() for p in model.parameters())}
    if z is None:
        return facts
    try:
        facts["layers"] = [[name, kind, list(shape)] for name, kind, shape in ref.layer_shapes(model, z.clone())]
    except Exception as exc:  # the student's forward pass
        facts["error"] = f"{type(exc).__name__}: {exc}"
        return facts
    model.eval()
    with torch.no_grad():
        out = model(z)
    facts["out"] = out if isinstance(out, torch.Tensor) else type(out).__name__
    return facts


def check_generator(Generator) -> bool:
    """``Generator(z_dim, channels)`` built like the paper's: every leaf layer's type and output
    shape must match :class:`gen3d_course.models.voxel_gan.VoxelGenerator` (transposed output).

    The paper's own sizes (z 200, 512-256-128-64 channels) are only built and compared on paper
    (layer types and shapes via a 1-sample forward pass would cost 64^3 x 64 activations, so
    that case is checked on parameter count alone).
    """
    name = "Generator"
    for z_dim, channels in _GENERATOR_CASES:
        call = f"Generator(z_dim={z_dim}, channels={channels})"
        z = None if z_dim == 200 else torch.randn(2, z_dim, generator=seeded(z_dim))
        got = _generator_facts(Generator, z_dim, channels, z)
        if got["type"] != "Module":
            raise CheckFailure(f"{call} returned {got['type']}; expected an nn.Module.")
        reference = ref.VoxelGenerator(z_dim, channels, output="transposed")
        n_ref = sum(p.numel() for p in reference.parameters())
        if got["params"] != n_ref:
            raise CheckFailure(
                f"{call} has {got['params']:,} parameters; the reference has {n_ref:,}. Check the kernel size "
                "(4x4x4 everywhere), bias=False before batch norm, and one batch norm per hidden layer.")
        if z is None:
            continue
        expected = ref.layer_shapes(reference, z)
        if "error" in got:
            raise CheckFailure(f"{call}: the forward pass on z of shape (2, {z_dim}) raised {got['error']}")
        layers = [(n, t, tuple(s)) for n, t, s in got["layers"]]
        for i, (want, have) in enumerate(zip(expected, layers)):
            if want[1:] != have[1:]:
                raise CheckFailure(
                    f"{call}, layer {i} ({have[0] or 'the model'}): expected a {want[1]} with output "
                    f"shape {want[2]}, got a {have[1]} with output shape {have[2]}.\n  the reference's "
                    "layers: " + ", ".join(f"{t}{s[1:]}" for _, t, s in expected))
        if len(layers) != len(expected):
            raise CheckFailure(f"{call}: {len(layers)} layers ran, the reference has {len(expected)}: "
                               + ", ".join(f"{t}{s[1:]}" for _, t, s in expected))
        out = got["out"]
        r = ref.resolution_of(channels)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 1, r, r, r):
            raise CheckFailure(f"{call}(z) should return a (2, 1, {r}, {r}, {r}) tensor of occupancy "
                               f"probabilities, got {getattr(out, 'shape', out)}.")
        if not ((out >= 0) & (out <= 1)).all():
            raise CheckFailure(f"{call}: outputs must be probabilities in [0, 1] (end with a sigmoid).")
    print(f"✔ {name}: layer types and output shapes match the reference at every layer "
          f"({len(_GENERATOR_CASES)} configurations)")
    return True


# --------------------------------------------------------------------------------------------
# Accuracy-gated discriminator update
# --------------------------------------------------------------------------------------------


def _d_case(seed: int, last_accuracy: float, threshold: float):
    torch.manual_seed(seeded(seed).initial_seed())
    D = ref.VoxelDiscriminator(channels=(8, 4))
    g = seeded(seed)
    real = (torch.rand(6, 1, 16, 16, 16, generator=g) > 0.7).float()
    fake = torch.rand(6, 1, 16, 16, 16, generator=g)
    return D, real, fake, last_accuracy, threshold


def check_discriminator_update(discriminator_update) -> bool:
    """``discriminator_update(D, optimizer, real, fake, last_accuracy, threshold)`` ->
    (loss, accuracy, updated): computed on this batch, optimiser step only if
    ``last_accuracy <= threshold``. Compared with the reference on copies of one network."""
    name = "discriminator_update"
    cases = [(0, 0.5, 0.8), (1, 0.95, 0.8), (2, 0.8, 0.8), (3, 0.81, 0.8), (4, 0.3, 0.2)]
    for seed, last, threshold in cases:
        D, real, fake, last, threshold = _d_case(seed, last, threshold)
        D_ref = copy.deepcopy(D)
        opt = torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.5, 0.999))
        opt_ref = torch.optim.Adam(D_ref.parameters(), lr=0.01, betas=(0.5, 0.999))
        call = (f"{name}(D, optimizer, real=Tensor(6, 1, 16, 16, 16), fake=Tensor(6, 1, 16, 16, 16), "
                f"last_accuracy={last}, threshold={threshold})")
        want = ref.discriminator_update(D_ref, opt_ref, real.clone(), fake.clone(), last, threshold)
        got = _call_student(discriminator_update, (D, opt, real.clone(), fake.clone(), last, threshold),
                            {}, name=name, call=call)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailure(f"{name} should return (loss, accuracy, updated), got {got!r}\n  {call}")
        loss, accuracy, updated = got
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise CheckFailure(f"{name}: loss should be a one-number tensor, got {loss!r}\n  {call}")
        if not torch.allclose(loss.detach().float(), want[0], rtol=1e-4, atol=1e-5):
            raise CheckFailure(
                f"{name}: loss {float(loss):.6f}, expected {float(want[0]):.6f}: use binary cross-entropy "
                "on the logits, real grids with target 1 and fake grids with target 0, summed "
                f"(each averaged over its batch).\n  {call}")
        if not isinstance(accuracy, (int, float)) or abs(accuracy - want[1]) > 1e-6:
            raise CheckFailure(
                f"{name}: accuracy {accuracy!r}, expected {want[1]:.4f} (a Python float: the fraction "
                f"of real logits > 0 and fake logits < 0 over all {real.shape[0] + fake.shape[0]} "
                f"grids).\n  {call}")
        if bool(updated) != want[2]:
            rule = "not higher than" if want[2] else "higher than"
            raise CheckFailure(
                f"{name}: updated={updated!r} but last_accuracy={last} is {rule} threshold={threshold}, "
                f"so the step should {'' if want[2] else 'not '}be taken (gate on the PREVIOUS "
                f"batch's accuracy, not this one's).\n  {call}")
        for (pname, p), p_ref in zip(D.named_parameters(), D_ref.parameters()):
            if not torch.allclose(p, p_ref, rtol=1e-4, atol=1e-6):
                what = "changed although no step should be taken" if not want[2] else \
                    "differ from one Adam step on this loss"
                raise CheckFailure(f"{name}: after the call the weights {pname} {what}.\n  {call}")
    print(f"✔ {name}: loss, accuracy, gate and weights match the reference on {len(cases)} cases")
    return True


# --------------------------------------------------------------------------------------------
# 3D-VAE-GAN loss
# --------------------------------------------------------------------------------------------


def _vae_gan_inputs(generator: torch.Generator):
    b = int(torch.randint(2, 6, (), generator=generator))
    z = int(torch.randint(2, 9, (), generator=generator))
    r = 8
    return (torch.randn(b, generator=generator), torch.randn(b, z, generator=generator),
            torch.rand(b, z, generator=generator) * 2 - 1.5,
            torch.rand(b, 1, r, r, r, generator=generator),
            (torch.rand(b, 1, r, r, r, generator=generator) > 0.7).float(),
            float(torch.rand((), generator=generator) * 5), float(torch.rand((), generator=generator)))


def check_vae_gan_loss(vae_gan_loss) -> bool:
    """``vae_gan_loss(fake_logits, mu, logvar, recon, target, alpha1, alpha2)`` -> dict with
    total, gan, kl, recon (0-d tensors), equal to the reference's; gradients reach the network
    outputs it depends on."""
    name = "vae_gan_loss"
    check_function(vae_gan_loss, ref.vae_gan_loss, _vae_gan_inputs, name=name, trials=6)
    args = list(_vae_gan_inputs(seeded(7)))
    for i in range(4):
        args[i] = args[i].requires_grad_()
    check_gradients_flow(lambda fake_logits, mu, logvar, recon: vae_gan_loss(
        fake_logits, mu, logvar, recon, args[4], args[5], args[6])["total"],
        tuple(args[:4]), name=f"{name}(...)['total']")
    return True
