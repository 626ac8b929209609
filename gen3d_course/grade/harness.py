"""The student's end of grading, in the kernel: call the student's functions on the grader's inputs.

The graded copy of a notebook has, in place of each released check cell (and after the last cell,
for hidden checks), a cell ``serve(globals())``. It connects to the grader's socket and answers
its requests until told to stop:

- ``lookup``: what each name in the check is here (a function, plain data, missing, other);
- ``call``: call a function on the arguments sent, with the grader's torch RNG state; reply with
  the outputs and the RNG state after the call, as plain data;
- ``vjp``: the gradient of an earlier call's outputs, weighted by the vectors sent, with respect
  to its inputs (how the grader's autograd reaches through the student's function);
- ``run``: a check that cannot be reduced to data runs here, in the student's kernel.

Nothing here is trusted: a notebook can replace this module. The grader only ever reads data back
and judges it against its own reference on inputs it drew for this run.
"""
from __future__ import annotations

import collections
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
    args = decode(request["args"], arrays, grads=True)
    kwargs = decode(request["kwargs"], arrays, grads=True)
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
    if any(connected):
        leaves = [t for t in tensors((args, kwargs)) if t.requires_grad]
        graphs[request["id"]] = ([o for o, c in zip(outputs, connected) if c], leaves)
        while len(graphs) > KEEP_GRAPHS:
            graphs.popitem(last=False)
    replies["rng"] = state.numpy()
    for index, generator in enumerate(walk((args, kwargs), "Generator")):
        replies[f"g{index}"] = generator.get_state().numpy()
    return {"out": tree, "connected": connected}, replies


def _vjp(request: dict, arrays: dict, graphs: dict) -> tuple[dict, dict]:
    import torch

    outputs, leaves = graphs.pop(request["id"])
    weights = decode(request["grads"], arrays)
    grads = torch.autograd.grad(outputs, leaves, weights, allow_unused=True)
    replies: dict = {}
    return {"grads": [None if g is None else encode(g, replies) for g in grads]}, replies


def serve(namespace: dict) -> None:
    """Answer the grader until it says ``done``; a ``run`` request executes a check here."""
    path = os.environ.get(ENV_HARNESS)
    if not path:
        return  # not a grading run: the cell does nothing
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    graphs: collections.OrderedDict = collections.OrderedDict()
    source = None
    with sock:
        send(sock, {"op": "hello"})
        while True:
            request, arrays = receive(sock)
            op = request.get("op")
            if op == "done":
                break
            if op == "run":
                source = request["source"]
                break
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
    if source is not None:
        exec(compile(source, "<released check>", "exec"), namespace)

