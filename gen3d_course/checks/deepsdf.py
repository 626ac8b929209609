"""Checks for unit 05 (DeepSDF): the clamped L1 loss and test-time code optimisation."""
from __future__ import annotations

import torch

from . import CheckFailure, _call_student, check_function, check_gradients_flow
from ..models.deepsdf import SDFDecoder, clamped_l1, code_objective, fit_code


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
