"""The student's end of grading, in the kernel: call the student's functions on the grader's inputs.

The graded copy of a notebook has, in place of each released check cell (and after the last cell,
for hidden checks), a cell ``serve(globals())``. It connects to the grader's socket and answers
its requests until told to stop:

- ``lookup``: what each name in the check is here (a function, plain data, missing, other);
- ``call``: call a function on the arguments sent, with the grader's torch RNG state; reply with
  the outputs, the RNG state after the call and the state of the networks and optimisers it was
  given (:mod:`.objects`), as plain data;
- ``vjp``: the gradient of an earlier call's outputs, weighted by the vectors sent, with respect
  to its inputs (how the grader's autograd reaches through the student's function);
- ``run``: a check that cannot be reduced to data runs here, in the student's kernel.

Nothing here is trusted: a notebook can replace this module. The grader only ever reads data back
and judges it against its own reference on inputs it drew for this run.
"""
from __future__ import annotations

import collections
import functools
import importlib
import inspect
import os
import socket

from .constants import ENV_HARNESS
from .wire import NotData, decode, encode, receive, send, tensors, walk

KEEP_GRAPHS = 256  # calls whose autograd graph is kept for a later vjp request


def _describe(name: str, namespace: dict, arrays: dict) -> dict:
    if name not in namespace:
        return {"kind": "missing"}
    value = namespace[name]
    if callable(value) and not isinstance(value, type):
        try:
            params = [p.name for p in inspect.signature(value).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        return {"kind": "function", "params": params}
    try:
        return {"kind": "data", "value": encode(value, arrays)}
    except (NotData, Exception):
        return {"kind": "other", "type": type(value).__name__}


def _call(request: dict, arrays: dict, namespace: dict, graphs: dict) -> tuple[dict, dict]:
    import torch

    fn = namespace.get(request["name"])
    if request.get("probe"):  # a check's in_kernel part, on the student's value of this name
        fn = functools.partial(_probe(request["probe"]).__wrapped__, fn)
    objects = []
    if "objects" in arrays:
        from . import objects as sent

        objects = sent.unpack(arrays["objects"])
    args = decode(request["args"], arrays, grads=True, objects=objects)
    kwargs = decode(request["kwargs"], arrays, grads=True, objects=objects)
    # the inputs gradients are taken for, fixed before the call (the grader fixes the same ones)
    leaves = [t for t in tensors((args, kwargs)) if t.requires_grad]
    if objects:
        leaves += sent.parameters(objects)
        before = sent.snapshot(objects)
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(torch.from_numpy(arrays["rng"]))
        try:
            out = fn(*args, **kwargs)
        except KeyboardInterrupt:
            return {"error": {"type": "interrupted", "message": "", "where": ""}}, {}
        except Exception as exc:
            from ..checks import _student_line

            return {"error": {"type": type(exc).__name__, "message": str(exc)[:2000],
                              "where": _student_line(fn, exc)}}, {}
        state = torch.get_rng_state()
    replies: dict = {}
    tree = encode(out, replies)
    outputs = list(tensors(out))
    connected = [bool(o.requires_grad) for o in outputs]
    if objects:
        reply_objects = sent.state(objects, before, replies)
    if any(connected):
        graphs[request["id"]] = ([o for o, c in zip(outputs, connected) if c], leaves)
        while len(graphs) > KEEP_GRAPHS:
            graphs.popitem(last=False)
    replies["rng"] = state.numpy()
    for index, generator in enumerate(walk((args, kwargs), "Generator")):
        replies[f"g{index}"] = generator.get_state().numpy()
    reply = {"out": tree, "connected": connected}
    if objects:
        reply["objects"] = reply_objects
    return reply, replies


def _probe(path: str):
    """The library function ``module:qualname``, which must be a check's ``in_kernel`` part."""
    module, _, qualname = str(path).partition(":")
    if not module.startswith("gen3d_course.checks"):
        raise ValueError(f"{path[:80]} is not a check's part")
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    if not getattr(fn, "in_kernel", False):
        raise ValueError(f"{path[:80]} is not marked in_kernel")
    return fn


def _vjp(request: dict, arrays: dict, graphs: dict) -> tuple[dict, dict]:
    import torch

    outputs, leaves = graphs.pop(request["id"])
    weights = decode(request["grads"], arrays)
    live = [t for t in leaves if t.requires_grad]  # a frozen parameter (requires_grad_(False))
    found = iter(torch.autograd.grad(outputs, live, weights, allow_unused=True) if live else ())
    grads = [next(found) if t.requires_grad else None for t in leaves]
    replies: dict = {}
    return {"grads": [None if g is None else encode(g, replies) for g in grads]}, replies


def serve(namespace: dict) -> None:
    """Answer the grader until it says ``done``; a ``run`` request executes a check here."""
    path = os.environ.get(ENV_HARNESS)
    if not path:
        return  # not a grading run: the cell does nothing
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    with sock:
        source = answer(sock, namespace)
    if source is not None:
        exec(compile(source, "<released check>", "exec"), namespace)


def answer(sock, namespace: dict) -> str | None:
    """The requests of one connection, answered from ``namespace``; a check to run here, if any."""
    graphs: collections.OrderedDict = collections.OrderedDict()
    send(sock, {"op": "hello"})
    while True:
        request, arrays = receive(sock)
        op = request.get("op")
        if op == "done":
            return None
        if op == "run":
            return request["source"]
        try:
            if op == "lookup":  # one .npz for every name's value: encode numbers them
                replies = {}
                reply = {"names": {name: _describe(name, namespace, replies)
                                   for name in request["names"]}}
            elif op == "call":
                reply, replies = _call(request, arrays, namespace, graphs)
            elif op == "vjp":
                reply, replies = _vjp(request, arrays, graphs)
            else:
                reply, replies = {"error": {"type": "protocol", "message": f"unknown op {op}"}}, {}
        except NotData as exc:
            reply, replies = {"notdata": str(exc)}, {}
        except Exception as exc:
            reply, replies = {"error": {"type": type(exc).__name__, "message": str(exc)[:2000],
                                        "where": ""}}, {}
        send(sock, reply, replies)

