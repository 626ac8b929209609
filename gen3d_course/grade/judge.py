"""Pass or fail, decided in the grader's process.

The released check cells (and the hidden checks) run here, in the grader, as they are written:
``check_kl_divergence(kl_divergence)``. Every name they use that the released assignment's own
imports do not define is looked up in the student's kernel: a function becomes a :class:`Remote`
that sends its arguments there as plain data, has the student's function called on them, and
reads the outputs back as plain data (:mod:`.wire`); plain data is copied over. Gradients reach
through a Remote by asking the kernel for the vector-Jacobian product. Networks and optimisers
among the arguments go to the kernel pickled and their state comes back as data
(:mod:`.objects`). A name whose value is not data (a class) becomes an :class:`Opaque`, on which
the check's ``checks.in_kernel`` parts run in the kernel and return facts as data. So the
references, the comparisons and the verdict all live here, on inputs drawn from the run's salt;
a hijacked kernel can only send numbers, which must still match the reference.

A check that needs anything else (an object that cannot be pickled, any other use of an
Opaque) raises :class:`~.wire.NotData`; such a released check is then run in the student's
kernel and scored from it (``kernel-scored``), a hidden one scores 0 (``not-data``).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

import torch

from ..checks import CheckFailure, fresh_inputs
from . import objects
from .reference import targets
from .wire import InvalidData, NotData, decode, encode, receive, restore, send, tensors, walk


class KernelGone(BaseException):
    """The kernel closed the connection (it died, or the notebook closed it)."""


class KernelTimeout(BaseException):
    """The kernel did not answer within the check's time limit."""


class Kernel:
    """The grader's end of one harness connection.

    ``budget``: seconds the kernel may spend answering, in all (the per-cell timeout: the
    grader's own work, references and imports, does not count against the student); ``cap``:
    the notebook's time cap, on the monotonic clock.
    """

    def __init__(self, sock: socket.socket, budget: float, cap: float):
        self.sock, self.budget, self.cap, self.broken = sock, budget, cap, None
        self.ids = itertools.count()

    def ask(self, header: dict, arrays: dict | None = None) -> tuple[dict, dict]:
        if self.broken is not None:
            raise self.broken
        start = time.monotonic()
        try:
            left = min(self.budget, self.cap - start)
            if left <= 0:
                raise socket.timeout
            self.sock.settimeout(left)
            send(self.sock, header, arrays)
            return receive(self.sock)
        except socket.timeout:
            self.broken = KernelTimeout()
        except (EOFError, OSError):
            self.broken = KernelGone()
        except InvalidData:
            self.broken = KernelGone()  # out of step with the kernel: nothing more can be read
            raise
        finally:
            self.budget -= time.monotonic() - start
        raise self.broken


def _replace(obj, new):
    """``obj`` with its tensors replaced, in order, by those of the iterator ``new``."""
    if isinstance(obj, torch.Tensor):
        return next(new)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_replace(o, new) for o in obj)
    if isinstance(obj, dict):
        return {k: _replace(v, new) for k, v in obj.items()}
    return obj


def _rebuilt(name: str, error: dict) -> BaseException:
    """The student's exception, as the checks expect to see it (type name, message, line)."""
    kind = str(error.get("type", "Exception"))[:60]
    message = str(error.get("message", ""))[:2000]
    if kind == "interrupted":
        return KernelTimeout()
    if kind == "NotImplementedError":
        exc = NotImplementedError(message)
    elif kind == "CheckFailure":  # a check's own part that ran in the kernel (checks.in_kernel)
        exc = CheckFailure(message)
    else:
        cls = type(kind if kind.isidentifier() else "Exception", (Exception,), {})
        exc = cls(message)
    exc.student_line = str(error.get("where", ""))[:300]
    return exc


class Remote:
    """Stands in for the student's function ``name``: calls it in the kernel, on plain data."""

    def __init__(self, kernel: Kernel, name: str, params: list, probe: str | None = None):
        self.kernel, self.__name__, self.probe = kernel, name, probe
        try:
            self.__signature__ = inspect.Signature(
                [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
        except (TypeError, ValueError):  # names sent by the kernel: not necessarily valid
            pass

    def __call__(self, *args, **kwargs):
        arrays: dict = {}
        sent: list = []  # the networks and optimisers among the arguments (module .objects)
        call = {"op": "call", "name": self.__name__, "id": next(self.kernel.ids),
                "args": encode(args, arrays, objects=sent),
                "kwargs": encode(kwargs, arrays, objects=sent), "probe": self.probe}
        if sent:
            arrays["objects"] = objects.pack(sent)
        # the inputs that gradients reach, fixed before the call, in the kernel's order
        leaves = [t for t in tensors((args, kwargs)) if t.requires_grad] + objects.parameters(sent)
        state = torch.get_rng_state()
        arrays["rng"] = state.numpy()
        reply, back = self.kernel.ask(call, arrays)
        if "notdata" in reply:
            raise NotData(f"{self.__name__} returned {reply['notdata']}")
        if "error" in reply:
            raise _rebuilt(self.__name__, reply["error"] if isinstance(reply["error"], dict) else {})
        out = decode(reply.get("out"), back)
        rng = back.get("rng")
        if rng is None or rng.dtype.name != "uint8" or rng.shape != tuple(state.shape):
            raise InvalidData("the kernel sent no valid random-number state")
        torch.set_rng_state(torch.from_numpy(rng))
        for index, generator in enumerate(walk((args, kwargs), "Generator")):
            restore(generator, back.get(f"g{index}"))
        if sent:
            objects.mirror(sent, reply.get("objects"), back)
        outputs = list(tensors(out))
        connected = reply.get("connected")
        if not isinstance(connected, list) or len(connected) != len(outputs):
            raise InvalidData("the kernel's gradient flags do not match its outputs")
        routed = [o for o, c in zip(outputs, connected) if c is True and o.is_floating_point()]
        if not leaves or not routed or not torch.is_grad_enabled():
            return out
        through = iter(_RemoteGrad.apply(self, call["id"], len(leaves), *leaves, *routed))
        return _replace(out, (next(through) if c is True and o.is_floating_point() else o
                              for o, c in zip(outputs, connected)))


    def __gen3d_in_kernel__(self, path: str, args: tuple, kwargs: dict):
        """A check's ``checks.in_kernel`` part, run in the kernel on this name's value."""
        return Remote(self.kernel, self.__name__, [], probe=path)(*args, **kwargs)


class _RemoteGrad(torch.autograd.Function):
    """Outputs computed in the kernel; their backward is the kernel's vector-Jacobian product."""

    @staticmethod
    def forward(ctx, remote, call_id, n_leaves, *values):  # the call's input leaves, its outputs
        ctx.remote, ctx.call_id = remote, call_id
        ctx.leaves = [(t.shape, t.dtype) for t in values[:n_leaves]]
        ctx.n_out = len(values) - n_leaves
        return tuple(t.clone() for t in values[n_leaves:])

    @staticmethod
    def backward(ctx, *weights):
        arrays: dict = {}
        reply, back = ctx.remote.kernel.ask(
            {"op": "vjp", "id": ctx.call_id, "grads": encode(list(weights), arrays)}, arrays)
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise RuntimeError(f"the gradient of {ctx.remote.__name__} could not be computed: "
                               f"{str(error.get('type'))[:60]}: {str(error.get('message'))[:500]}")
        grads = reply.get("grads")
        if not isinstance(grads, list) or len(grads) != len(ctx.leaves):
            raise InvalidData("the kernel sent the wrong number of gradients")
        decoded = []
        for node, (shape, dtype) in zip(grads, ctx.leaves):
            grad = None if node is None else decode(node, back)
            if grad is not None and (not isinstance(grad, torch.Tensor) or grad.shape != shape
                                     or grad.dtype != dtype):
                raise InvalidData("a gradient from the kernel has the wrong shape or dtype")
            decoded.append(grad)
        return (None, None, None, *decoded, *[None] * ctx.n_out)


class Opaque:
    """A name in the kernel whose value is not plain data (a class, a network): a check's
    ``checks.in_kernel`` parts run on it there; any other use of it stops the check."""

    def __init__(self, kernel: Kernel, name: str, kind: str):
        self.kernel, self.__name__, self.kind = kernel, name, kind

    def _refuse(self, *args, **kwargs):
        raise NotData(f"{self.__name__} is a {self.kind}, which cannot be sent as plain data")

    __gen3d_in_kernel__ = Remote.__gen3d_in_kernel__
    __call__ = __getattr__ = __getitem__ = __iter__ = __bool__ = __len__ = _refuse


# --- running the checks ------------------------------------------------------------------------


class _PerThreadStream(io.TextIOBase):
    """sys.stdout or sys.stderr that a grading thread can capture, leaving the others' output."""

    def __init__(self, real):
        self.real, self.local = real, threading.local()

    def write(self, text):
        target = getattr(self.local, "buffer", None)
        return (target or self.real).write(text)

    def flush(self):
        (getattr(self.local, "buffer", None) or self.real).flush()


_streams_lock = threading.Lock()


@contextlib.contextmanager
def _captured():
    """Check output (✔ lines, progress bars) of this thread goes nowhere, the others' unchanged."""
    with _streams_lock:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _PerThreadStream):
                setattr(sys, name, _PerThreadStream(getattr(sys, name)))
        routers = (sys.stdout, sys.stderr)
    for router in routers:
        router.local.buffer = io.StringIO()
    try:
        yield
    finally:
        for router in routers:
            router.local.buffer = None


_base_lock = threading.Lock()
_bases: dict[str, dict] = {}


def released_namespace(unit) -> dict:
    """The grader's namespace for a unit's checks: the released assignment's imports, run here.

    The grader calls it before any notebook starts: a harness cell waits for the grader within
    nbval's per-cell timeout, which the grader's own first imports must not eat.
    """
    with _base_lock:
        if unit.fingerprint not in _bases:
            os.environ.setdefault("MPLBACKEND", "Agg")
            import matplotlib.pyplot  # noqa: F401  (judge closes the checks' figures)

            namespace: dict = {"__name__": "__gen3d_check__"}
            exec(compile(unit.imports, f"<imports of {unit.name}>", "exec"), namespace)
            _bases[unit.fingerprint] = namespace
        return _bases[unit.fingerprint]


@dataclass
class Verdict:
    status: str  # passed | failed | timeout | kernel-died | not-data
    message: str


def _verdict(run, what: str) -> Verdict:
    try:
        run()
        return Verdict("passed", "")
    except KernelTimeout:
        return Verdict("timeout", "")
    except KernelGone:
        return Verdict("kernel-died", f"the notebook stopped answering during {what} (its "
                                      "kernel died or closed the grader's connection)")
    except NotData as exc:
        return Verdict("not-data", str(exc))
    except CheckFailure as exc:
        return Verdict("failed", str(exc))
    except InvalidData as exc:
        return Verdict("failed", f"the notebook sent back malformed data: {exc}")
    except Exception as exc:
        return Verdict("failed", f"{type(exc).__name__}: {exc}")


def judge(kernel: Kernel, unit, checks: list, setup: list[str], salt: bytes | None = None) -> dict:
    """Run ``checks`` (after the hidden ``setup`` cells) here; ``{question id: Verdict}``.

    ``salt``: the grading run's, from which the checks draw their inputs afresh
    (``checks.fresh_inputs``); None keeps the seeds the notebook's checks use.
    """
    import matplotlib.pyplot as plt

    base = released_namespace(unit)
    namespace = dict(base)
    wanted = sorted(set().union(*[targets(source, unit.imports) for source in setup + [
        c.source for c in checks]]) - set(base))
    verdicts: dict = {}
    looked = _verdict(lambda: namespace.update(_lookup(kernel, wanted)), "the look-up of names")
    figures = set(plt.get_fignums())
    with _captured(), (fresh_inputs(salt) if salt is not None else contextlib.nullcontext()):
        for source in setup if looked.status == "passed" else []:
            looked = _verdict(lambda: exec(compile(source, "<hidden setup>", "exec"), namespace),
                              "the hidden setup")
            if looked.status != "passed":
                looked.message = f"the hidden setup failed: {looked.message}"
        for check in checks:
            if looked.status != "passed":
                verdicts[check.id] = looked
                continue
            code = compile(check.source, f"<check {check.id}>", "exec")
            verdicts[check.id] = _verdict(lambda: exec(code, namespace), f"the check of {check.id}")
    for number in set(plt.get_fignums()) - figures:
        plt.close(number)
    return verdicts


def _lookup(kernel: Kernel, names: list[str]) -> dict:
    if not names:
        return {}
    reply, arrays = kernel.ask({"op": "lookup", "names": names})
    found = reply.get("names")
    if not isinstance(found, dict):
        raise InvalidData(f"the look-up of {', '.join(names)} failed: {str(reply.get('error'))[:300]}")
    namespace = {}
    for name in names:
        entry = found.get(name)
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "function":
            params = entry.get("params")
            namespace[name] = Remote(kernel, name, params if isinstance(params, list) else [])
        elif kind == "data":
            namespace[name] = decode(entry.get("value"), arrays)
        elif kind == "other":
            namespace[name] = Opaque(kernel, name, str(entry.get("type"))[:60])
    return namespace
