"""Autograder checks that the assignment notebooks call after each piece of student code.

A check compares the student's function with the reference on random inputs and, on a mismatch,
raises :class:`CheckFailure` with a message meant for the student: what is wrong (not
implemented, an exception, None, type, shape, dtype, NaN/inf, values), on which input, and no
traceback through this module. Per-unit checks (``gen3d_course.checks.<unit>``) are thin
wrappers that supply the reference and the input generator.

Inputs returned by ``make_inputs`` (and the ``inputs`` of :func:`check_gradients_flow`) follow
one rule: a tuple is unpacked as positional arguments, a dict as keyword arguments, and anything
else is passed as the only argument.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import io
import math

import torch

__all__ = ["CheckFailure", "check_function", "check_gradients_flow"]


class CheckFailure(AssertionError):
    """A student-facing failure: its message alone says what to fix."""

    def _render_traceback_(self) -> list[str]:
        """IPython shows these lines instead of a traceback through the checker's internals."""
        return [f"{type(self).__name__}: {self}"]


_salt: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("gen3d_check_salt", default=None)


@contextlib.contextmanager
def fresh_inputs(salt: bytes):
    """Checks run inside draw inputs from ``salt`` too (the grader passes a fresh one per run, so a
    table of memorised answers to the notebook's inputs fails); outside, seeds stay as written."""
    token = _salt.set(salt)
    try:
        yield
    finally:
        _salt.reset(token)


def seeded(seed: int) -> torch.Generator:
    """The generator a check draws its inputs from: ``seed`` in a notebook, ``seed`` mixed with
    the grading run's salt under :func:`fresh_inputs`."""
    salt = _salt.get()
    if salt is not None:
        seed = int.from_bytes(hashlib.sha256(salt + seed.to_bytes(8, "little", signed=True)).digest()[:8],
                              "little") >> 1
    return torch.Generator().manual_seed(seed)


def in_kernel(fn):
    """Mark the part of a check that must hold the student's class or object itself (build it,
    hook its layers) and returns only plain data: the facts the check then compares.

    In a notebook it simply runs. Under ``gen3d-course grade`` the check runs in the grader,
    where the student's class is only a stand-in: the stand-in runs this part in the student's
    kernel and the facts come back as data (``gen3d_course.grade``; a class question registers
    itself this way).
    """
    @functools.wraps(fn)
    def run(student, *args, **kwargs):
        elsewhere = getattr(type(student), "__gen3d_in_kernel__", None)
        if elsewhere is not None:
            return elsewhere(student, f"{fn.__module__}:{fn.__qualname__}", args, kwargs)
        return fn(student, *args, **kwargs)

    run.in_kernel = True
    return run


def _split(inputs) -> tuple[tuple, dict]:
    if isinstance(inputs, tuple):
        return inputs, {}
    if isinstance(inputs, dict):
        return (), dict(inputs)
    return (inputs,), {}


def _clone(obj):
    """Fresh copies of the tensors, so that an in-place edit by one call cannot leak into the next."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"Tensor{_shape(obj)} {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(_describe(o) for o in obj)
        return f"({inner})" if isinstance(obj, tuple) else f"[{inner}]"
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return repr(obj)
    return type(obj).__name__


def _named(fn, args: tuple, kwargs: dict) -> list[tuple[str, object]]:
    """Arguments labelled by ``fn``'s parameter names, so messages can say ``logvar``, not ``#1``."""
    try:
        return list(inspect.signature(fn).bind(*args, **kwargs).arguments.items())
    except (TypeError, ValueError):
        return [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items())


def _call_text(name: str, named: list[tuple[str, object]]) -> str:
    return f"{name}(" + ", ".join(f"{k}={_describe(v)}" for k, v in named) + ")"


def _student_line(fn, exc: BaseException) -> str:
    """`` at line N: `code` `` for the deepest frame in the student's cell, or ''.

    When the grader called the function in the student's kernel, the kernel found the line
    (``exc.student_line``): the traceback stayed there.
    """
    if isinstance(getattr(exc, "student_line", None), str):
        return exc.student_line
    filename = getattr(getattr(fn, "__code__", None), "co_filename", None)
    frames = [f for f in inspect.getinnerframes(exc.__traceback__, 1) if f.filename == filename]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": `{frame.code_context[0].strip()}`" if frame.code_context else ""
    return f" at line {frame.lineno}{code}"


def _call_student(fn, args: tuple, kwargs: dict, *, name: str, call: str):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as exc:
        todo = str(exc) or "replace the `raise NotImplementedError` with your code"
        raise CheckFailure(f"{name} not implemented yet: {todo}") from None
    except Exception as exc:
        raise CheckFailure(
            f"{name} raised {type(exc).__name__}{_student_line(fn, exc)}: {exc}\n"
            f"  called as {call}"
        ) from None


def _mistake_hint(got, variants: dict[str, torch.Tensor]) -> str:
    """A hint naming the known mistake whose value the student's output matches, or ''."""
    if not isinstance(got, torch.Tensor):
        return ""
    for text, value in variants.items():
        if got.shape == value.shape and torch.allclose(got.detach().double(), value.double(),
                                                       rtol=1e-4, atol=1e-6):
            return f"\n  hint: your values match {text}"
    return ""


def _append_hint(run, hint: str, quiet: bool = False):
    """``run()`` a check; on failure add ``hint`` (from :func:`_mistake_hint`) to its message.
    ``quiet`` hides the pass line of a check that is only one step of a larger one."""
    try:
        if not quiet:
            return run()
        with contextlib.redirect_stdout(io.StringIO()):
            return run()
    except CheckFailure as failure:
        raise CheckFailure(f"{failure}{hint}") from None


def _index(idx: torch.Tensor) -> str:
    return str(tuple(idx.tolist()))


def _compare_tensor(expected: torch.Tensor, got, where: str, rtol: float, atol: float) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"wrong type{where}: expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"wrong shape{where}: expected {_shape(expected)}, got {_shape(got)}"
    if got.dtype != expected.dtype:
        return f"wrong dtype{where}: expected {expected.dtype}, got {got.dtype}"
    if got.device != expected.device:
        return f"wrong device{where}: expected {expected.device}, got {got.device}"
    expected, got = expected.detach(), got.detach()
    bad = ~torch.isfinite(got) & torch.isfinite(expected)
    if bad.any():
        return (
            f"NaN or inf{where} at {int(bad.sum())} of {got.numel()} entries "
            f"(first at index {_index(bad.nonzero()[0])}), where the reference is finite"
        )
    tolerance = f"(rtol={rtol:g}, atol={atol:g})"
    if expected.is_floating_point():
        close = torch.isclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)
        if close.all():
            return None
        error = torch.where(close, 0.0, (got - expected).abs().double().nan_to_num(nan=math.inf))
        at = (error == error.max()).nonzero()[0]
        return (
            f"values differ from the reference{where} at {int((~close).sum())} of {got.numel()} "
            f"entries; max abs error {error.max().item():.4g} at index {_index(at)}: expected "
            f"{expected[tuple(at)].item():.6g}, got {got[tuple(at)].item():.6g} {tolerance}"
        )
    wrong = got != expected
    if not wrong.any():
        return None
    at = wrong.nonzero()[0]
    return (
        f"values differ from the reference{where} at {int(wrong.sum())} of {got.numel()} "
        f"entries; first at index {_index(at)}: expected {expected[tuple(at)].item()}, "
        f"got {got[tuple(at)].item()}"
    )


def _compare(expected, got, where: str, rtol: float, atol: float) -> str | None:
    """What is wrong with ``got`` as a stand-in for ``expected``, or None when it matches."""
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(expected, got, where, rtol, atol)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"wrong type{where}: expected a tuple of {len(expected)}, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"wrong length{where}: expected {len(expected)} values, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = _compare(e, g, f"{where or ' in output'}[{i}]", rtol, atol)
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict) or set(got) != set(expected):
            return f"wrong type{where}: expected a dict with keys {sorted(expected)}, got {_describe(got)}"
        for key in expected:
            problem = _compare(expected[key], got[key], f"{where or ' in output'}[{key!r}]", rtol, atol)
            if problem:
                return problem
        return None
    number = (int, float)
    if isinstance(expected, number) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor):
            return f"wrong type{where}: expected a Python number, got a torch.Tensor (use .item())"
        if not isinstance(got, number) or isinstance(got, bool):
            return f"wrong type{where}: expected a number, got {type(got).__name__}"
        if not math.isfinite(got) and math.isfinite(expected):
            return f"the value{where} is {got}, where the reference is finite"
        if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
            return (
                f"value differs from the reference{where}: expected {expected:.6g}, got {got:.6g}; "
                f"abs error {abs(got - expected):.4g} (rtol={rtol:g}, atol={atol:g})"
            )
        return None
    if type(got) is not type(expected):
        return f"wrong type{where}: expected {type(expected).__name__}, got {type(got).__name__}"
    if got != expected:
        return f"value differs from the reference{where}: expected {expected!r}, got {got!r}"
    return None


def check_function(student_fn, reference_fn, make_inputs, *, name: str, trials: int = 5,
                   rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0) -> bool:
    """Check ``student_fn`` against ``reference_fn`` on ``trials`` random inputs.

    ``make_inputs(generator)`` draws one input from a seeded ``torch.Generator`` (:func:`seeded`:
    fresh under the grader), so a failure is reproducible. Both functions see their own copy of it, and the global torch RNG is reseeded
    identically before each call (and restored afterwards), so stochastic functions such as a
    reparameterisation compare equal when they draw the same random numbers.
    """
    generator = seeded(seed)
    for trial in range(1, trials + 1):
        inputs = make_inputs(generator)
        call_seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        args, kwargs = _split(inputs)
        call = _call_text(name, _named(reference_fn, args, kwargs))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(call_seed)
            expected = reference_fn(*_clone(args), **_clone(kwargs))
            torch.manual_seed(call_seed)
            got = _call_student(student_fn, *_split(_clone(inputs)), name=name, call=call)
        if got is None and expected is not None:
            raise CheckFailure(f"{name} returned None; did you forget the `return`?\n  called as {call}")
        problem = _compare(expected, got, "", rtol, atol)
        if problem:
            raise CheckFailure(f"{name}: {problem}\n  on random input {trial} of {trials}: {call}")
    print(f"✔ {name}: matches the reference on {trials} random inputs")
    return True


def _tensors(label: str, obj):
    """(label, tensor) for every tensor in a (nested) argument."""
    if isinstance(obj, torch.Tensor):
        yield label, obj
    elif isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            yield from _tensors(f"{label}[{i}]", o)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(f"{label}[{k!r}]", v)


def check_gradients_flow(fn, inputs, *, name: str) -> bool:
    """Check that ``fn``'s output is differentiable with respect to every input requiring grad.

    Catches the silent bugs that values alone cannot: ``.detach()``, ``.item()``, a round trip
    through NumPy, ``torch.no_grad()``, or a non-differentiable op such as ``round``. The output
    is weighted by fixed random numbers before differentiating, so an output whose plain sum is
    constant (a softmax, say) still shows its gradient.
    """
    args, kwargs = _split(_clone(inputs))
    named = _named(fn, args, kwargs)
    leaves = [(k, t) for label, v in named for k, t in _tensors(label, v) if t.requires_grad]
    if not leaves:
        raise ValueError(f"check_gradients_flow({name}): no input tensor has requires_grad=True")
    call = _call_text(name, named)
    output = _call_student(fn, args, kwargs, name=name, call=call)
    if output is None:
        raise CheckFailure(f"{name} returned None; did you forget the `return`?\n  called as {call}")
    outputs = [t for _, t in _tensors("output", output) if t.is_floating_point()]
    if not outputs:
        raise CheckFailure(f"{name}: expected a floating-point tensor output, got {_describe(output)}")
    connected = [t for t in outputs if t.requires_grad]
    if not connected:
        raise CheckFailure(
            f"{name}: the output is cut off from the inputs' gradients (it has no autograd "
            "history). Avoid .detach(), .item(), .numpy(), torch.no_grad() and building new "
            "tensors with torch.tensor(...) on the way from the inputs to the output."
        )
    weights = seeded(0)
    grad_outputs = [torch.randn(t.shape, generator=weights, dtype=t.dtype).to(t.device) for t in connected]
    grads = torch.autograd.grad(connected, [t for _, t in leaves], grad_outputs, allow_unused=True)
    for (label, _), grad in zip(leaves, grads):
        if grad is None:
            raise CheckFailure(
                f"{name}: no gradient reaches `{label}`; the output does not depend on it through "
                "differentiable operations (look for .detach(), .item(), .numpy() or a missing use)."
            )
        if not torch.isfinite(grad).all():
            raise CheckFailure(f"{name}: the gradient with respect to `{label}` contains NaN or inf")
        if not grad.any():
            raise CheckFailure(
                f"{name}: the gradient with respect to `{label}` is zero everywhere; a "
                "non-differentiable step (round, argmax, comparisons, sign) blocks it."
            )
    print(f"✔ {name}: gradients flow to {', '.join(label for label, _ in leaves)}")
    return True
