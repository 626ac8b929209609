"""Checks for unit 05 (DeepSDF): the clamped L1 loss, the auto-decoder's joint update of codes and
weights, and test-time code optimisation."""
from __future__ import annotations

import copy

import torch

from . import CheckFailure, _call_student, check_function, check_gradients_flow
from ..models.deepsdf import (AutoDecoder, SDFDecoder, autodecoder_optimizer, autodecoder_step, clamped_l1,
                              code_objective, code_regularization, fit_code)


def _loss_inputs(generator: torch.Generator):
    """Predictions and targets straddling ±δ, so both the clamp and the inside part matter."""
    shape = tuple(int(n) for n in torch.randint(1, 6, (2,), generator=generator))
    delta = float(torch.empty(()).uniform_(0.05, 0.2, generator=generator))
    pred = torch.randn(shape, generator=generator) * 0.15
    target = torch.randn(shape, generator=generator) * 0.15
    return pred, target, delta


def check_clamped_l1(fn) -> bool:
    """``fn(pred, target, delta)`` must equal mean |clamp(pred, ±δ) − clamp(target, ±δ)|."""
    check_function(fn, clamped_l1, _loss_inputs, name="clamped_l1", trials=8)
    pred = torch.tensor([0.0, 0.02, -0.03, 0.5]).requires_grad_(True)
    target = torch.tensor([0.01, 0.0, 0.4, -0.2])
    check_gradients_flow(fn, (pred, target, 0.1), name="clamped_l1")
    far = _call_student(fn, (torch.tensor([0.3, -0.6]), torch.tensor([0.9, -0.2]), 0.1), {},
                        name="clamped_l1", call="clamped_l1([0.3, -0.6], [0.9, -0.2], delta=0.1)")
    if float(far) != 0.0:
        raise CheckFailure(
            "clamped_l1: a prediction of 0.3 for a target of 0.9 (and −0.6 for −0.2) should cost "
            f"nothing with delta=0.1 — both are beyond δ on the same side — but it cost {float(far):.4g}.")
    print("✔ clamped_l1: beyond ±δ on the right side costs nothing")
    return True


def check_fit_code(fn, *, steps: int = 150, lr: float = 2e-2) -> bool:
    """``fn(decoder, points, sdf, steps, lr, delta, code_reg) -> z`` must minimise
    J(z) = clamped L1 + code_reg·||z||² about as well as the library's :func:`fit_code`,
    without changing (or accumulating gradients in) the decoder.

    The samples are made by the decoder itself at a hidden code z*, so a perfect fit exists.
    """
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    decoder = SDFDecoder(latent_dim=8, hidden=32, layers=4)
    points = torch.rand(512, 3, generator=generator) - 0.5
    z_star = torch.randn(8, generator=generator)
    with torch.no_grad():
        sdf = decoder(z_star, points)
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    for code_reg in (1e-4, 0.05):
        call = (f"fit_code(decoder, points=Tensor(512, 3), sdf=Tensor(512,), steps={steps}, "
                f"lr={lr}, delta=0.1, code_reg={code_reg})")
        for p in decoder.parameters():
            p.grad = None
        z = _call_student(fn, (decoder, points.clone(), sdf.clone()),
                          {"steps": steps, "lr": lr, "delta": 0.1, "code_reg": code_reg},
                          name="fit_code", call=call)
        if z is None:
            raise CheckFailure(f"fit_code returned None; did you forget the `return`?\n  called as {call}")
        if not isinstance(z, torch.Tensor) or z.shape != (8,):
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise CheckFailure(f"fit_code: expected a code of shape (8,) (the decoder's latent_dim), "
                               f"got {got}\n  called as {call}")
        if not torch.isfinite(z).all():
            raise CheckFailure(f"fit_code: the code contains NaN or inf\n  called as {call}")
        changed = [k for k, v in decoder.state_dict().items() if not torch.equal(v, before[k])]
        if changed:
            raise CheckFailure(f"fit_code changed the decoder's weights ({', '.join(changed)}): at "
                               "test time only the code is optimised; the decoder stays frozen.")
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters()):
            raise CheckFailure(
                "fit_code: the decoder's parameters received gradients. Freeze them "
                "(p.requires_grad_(False) for p in decoder.parameters()) while fitting: backward "
                "then skips the weight gradients, and nothing leaks into a later training step.")
        if not all(p.requires_grad for p in decoder.parameters()):
            raise CheckFailure(
                "fit_code left the decoder frozen (requires_grad=False) after returning; restore "
                "the flags (e.g. in a `finally:` block) so the decoder can be trained again.")
        with torch.no_grad():
            got = float(code_objective(decoder, z.detach().float(), points, sdf, 0.1, code_reg))
            start = float(code_objective(decoder, torch.zeros(8), points, sdf, 0.1, code_reg))
        z_ref = fit_code(decoder, points, sdf, steps=steps, lr=lr, code_reg=code_reg)
        with torch.no_grad():
            reference = float(code_objective(decoder, z_ref, points, sdf, 0.1, code_reg))
        if not got <= 1.25 * reference + 1e-3:
            raise CheckFailure(
                f"fit_code: the code reaches J(z) = clamped L1 + code_reg·||z||² = {got:.4g}, the "
                f"reference {reference:.4g} (J at z = 0 is {start:.4g}) with code_reg={code_reg}. "
                "Optimise z (and only z) with Adam on J, including the code_reg·||z||² term, "
                f"for the given steps and lr.\n  called as {call}")
        print(f"✔ fit_code (code_reg={code_reg}): J(z) = {got:.4f}, reference {reference:.4f}, "
              f"from {start:.4f} at z = 0; decoder untouched")
    return True


def _step_inputs():
    """A small auto-decoder whose codes are far from 0 (so the prior matters) and SDF samples of
    a sphere that straddle ±δ (so the clamp matters), for shapes 4, 1 and 2 of 6."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = AutoDecoder(6, latent_dim=8, hidden=32, layers=4)
    with torch.no_grad():
        model.codes.weight.copy_(torch.randn(6, 8, generator=generator))
    idx = torch.tensor([4, 1, 2])
    points = torch.rand(3, 64, 3, generator=generator) - 0.5
    sdf = points.norm(dim=-1) - 0.3
    return model, idx, points, sdf


def _same_weights(a, b) -> bool:
    return all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def check_autodecoder_step(make_optimizer, step_fn, *, lr: float = 1e-2, code_lr: float = 5e-2,
                           code_reg: float = 0.05) -> bool:
    """``make_optimizer(model, lr, code_lr)`` must return Adam over the decoder's weights (lr) and
    the codes (code_lr); ``step_fn(model, optimizer, idx, points, sdf, delta, code_reg)`` must take
    one joint step on clamped L1 + code_reg·mean ||z_i||² and return that loss, as the library's
    :func:`~gen3d_course.models.deepsdf.autodecoder_step` does (two steps in a row, compared)."""
    model, idx, points, sdf = _step_inputs()
    call = f"make_optimizer(model, lr={lr}, code_lr={code_lr})"
    optimizer = _call_student(make_optimizer, (model,), {"lr": lr, "code_lr": code_lr},
                              name="make_optimizer", call=call)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise CheckFailure(f"make_optimizer should return a torch optimiser (torch.optim.Adam), got "
                           f"{type(optimizer).__name__}.\n  called as {call}")
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    if id(model.codes.weight) not in rates:
        raise CheckFailure(
            "make_optimizer: the codes (model.codes.parameters()) are not in the optimiser, so they "
            "would never move. An auto-decoder has no encoder: its codes are parameters, learned by "
            "the same optimiser as the weights (a second parameter group with lr=code_lr).")
    missing = [n for n, p in model.decoder.named_parameters() if id(p) not in rates]
    if missing:
        raise CheckFailure(f"make_optimizer: the decoder's parameters {', '.join(missing[:3])}... are "
                           "not in the optimiser; pass model.decoder.parameters() as one group.")
    if rates[id(model.codes.weight)] != code_lr or any(
            rates[id(p)] != lr for p in model.decoder.parameters()):
        raise CheckFailure(f"make_optimizer: the decoder's group should have lr={lr} and the codes' "
                           f"group lr={code_lr} (two parameter groups: "
                           "[{'params': ..., 'lr': lr}, {'params': ..., 'lr': code_lr}]).")
    if not isinstance(optimizer, torch.optim.Adam):
        raise CheckFailure(f"make_optimizer: use torch.optim.Adam (got {type(optimizer).__name__}).")
    print("✔ make_optimizer: Adam over the decoder's weights (lr) and the codes (code_lr)")

    model, idx, points, sdf = _step_inputs()
    student, reference = copy.deepcopy(model), copy.deepcopy(model)
    opt_student = autodecoder_optimizer(student, lr, code_lr)
    opt_reference = autodecoder_optimizer(reference, lr, code_lr)
    call = (f"autodecoder_step(model, optimizer, idx={idx.tolist()}, points=Tensor(3, 64, 3), "
            f"sdf=Tensor(3, 64), delta=0.1, code_reg={code_reg})")
    for attempt in ("first", "second"):
        with torch.no_grad():
            codes = reference.codes(idx)
            pred = reference.decoder(codes, points)
            reg = float(code_regularization(codes, code_reg))
            variants = {"no code prior (the code_reg·||z||² term is missing)": float(clamped_l1(pred, sdf, 0.1)),
                        "no clamp (plain L1 instead of the clamped one)": float((pred - sdf).abs().mean()) + reg,
                        "the prior summed over the batch instead of averaged": float(clamped_l1(pred, sdf, 0.1))
                        + code_reg * float(codes.pow(2).sum())}
        got = _call_student(step_fn, (student, opt_student, idx.clone(), points.clone(), sdf.clone()),
                            {"delta": 0.1, "code_reg": code_reg}, name="autodecoder_step", call=call)
        expected = autodecoder_step(reference, opt_reference, idx, points, sdf, 0.1, code_reg)["loss"]
        try:
            got = float(got.detach() if isinstance(got, torch.Tensor) else got)
        except (TypeError, ValueError):
            raise CheckFailure(f"autodecoder_step should return the loss (a number or a 0-d tensor), got "
                               f"{type(got).__name__}.\n  called as {call}") from None
        if abs(got - expected) > 1e-4 * max(1.0, abs(expected)):
            hint = next((f" It matches {name}." for name, v in variants.items()
                         if abs(got - v) <= 1e-4 * max(1.0, abs(v))), "")
            raise CheckFailure(f"autodecoder_step ({attempt} call): the loss is {got:.6g}, the reference "
                               f"clamped L1 + code_reg·mean_i ||z_i||² is {expected:.6g}.{hint}\n  called as {call}")
        if torch.allclose(student.codes.weight, model.codes.weight):
            raise CheckFailure(
                "autodecoder_step: the codes did not move. Take them as model.codes(idx) inside the step "
                "(not detached, not under torch.no_grad()), so that backward reaches the code table.")
        if not _same_weights(student.decoder, reference.decoder) or not torch.allclose(
                student.codes.weight, reference.codes.weight, atol=1e-6):
            raise CheckFailure(
                f"autodecoder_step ({attempt} call): the loss is right but the weights or codes after the "
                "step differ from the reference. Call optimizer.zero_grad() before loss.backward() (or "
                "gradients pile up from the previous step), then optimizer.step() once.")
    print(f"✔ autodecoder_step: loss {expected:.4f} and the updated weights and codes match the reference "
          "over two steps")
    return True
