"""Plain data between the grader and a student's kernel: a JSON tree plus the arrays of an .npz.

Plain data: tensors, arrays, numbers, strings, None, and lists, tuples and string-keyed dicts of
them, plus CPU ``torch.Generator`` s (as their state, sent back after the call). From the grader
to the kernel only, networks and optimisers also cross, as references into one pickle
(:mod:`.objects`); the grader's ``decode`` refuses them.

Whatever comes from the kernel is data to be judged, never code: JSON and ``np.load`` with
``allow_pickle=False``, arrays of a few numeric dtypes only, a size cap, and every node checked
on arrival. Both ends import this module: the grader and the harness inside the sandbox.
"""
from __future__ import annotations

import io
import json
import math
import struct
import sys

import numpy as np

MAX_BYTES = 512 * 2**20  # one message, arrays included
MAX_HEADER = 4 * 2**20
MAX_DEPTH = 32
DTYPES = {np.dtype(t) for t in ("bool", "uint8", "int8", "int16", "int32", "int64",
                                 "float16", "float32", "float64")}


class NotData(BaseException):
    """A value that cannot cross as plain data (a module, a generator, a function...).

    A BaseException, so that a check's ``except Exception`` cannot turn it into a failure of the
    student's function: the question is then scored as the documentation says for such questions.
    """


class InvalidData(ValueError):
    """What arrived is not well-formed plain data."""


def encode(obj, arrays: dict, depth: int = 0, objects: list | None = None):
    """``obj`` as a JSON-able tree; its tensors and arrays go into ``arrays``.

    ``objects`` (the grader's calls only): networks, optimisers and instances of the library's
    classes are appended to it and sent as ``{"$o": index}``.
    """
    torch = sys.modules.get("torch")  # not imported: nothing here is a tensor (and no 3 s import)
    if depth > MAX_DEPTH:
        raise NotData("nested too deeply")
    if objects is not None and torch is not None and (isinstance(
            obj, (torch.nn.Module, torch.optim.Optimizer)) or library_object(obj)):
        index = next((i for i, o in enumerate(objects) if o is obj), len(objects))
        if index == len(objects):
            objects.append(obj)
        return {"$o": index}
    if torch is not None and isinstance(obj, torch.Tensor):
        plain = torch.Tensor.as_subclass(obj, torch.Tensor).detach().cpu()
        if plain.dtype == torch.bfloat16:
            plain = plain.float()
        key = f"a{len(arrays)}"
        arrays[key] = plain.resolve_conj().resolve_neg().numpy().copy()
        return {"$t": key, "grad": bool(obj.requires_grad)}
    if torch is not None and isinstance(obj, torch.Generator) and obj.device.type == "cpu":
        key = f"a{len(arrays)}"  # its state: the kernel draws what the grader would have drawn
        arrays[key] = obj.get_state().numpy().copy()
        return {"$g": key}
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(obj).copy()
        return {"$n": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(obj, tuple):
        return {"$tuple": [encode(o, arrays, depth + 1, objects) for o in obj]}
    if isinstance(obj, list):
        return [encode(o, arrays, depth + 1, objects) for o in obj]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {"$dict": {k: encode(v, arrays, depth + 1, objects) for k, v in obj.items()}}
    raise NotData(f"a {type(obj).__name__} is not plain data")


def library_object(obj) -> bool:
    """An instance of one of the course library's own classes (a check's counting field...)."""
    return not isinstance(obj, type) and type(obj).__module__.startswith("gen3d_course.")


def decode(node, arrays: dict, depth: int = 0, grads: bool = False, objects: list | None = None):
    """The tree back as Python values and plain ``torch.Tensor`` s; raises InvalidData.

    ``grads``: tensors sent as requiring grad do so again (arguments, in the kernel); the grader
    never takes that flag from the kernel, it routes gradients itself. ``objects``: the kernel's
    unpickled networks and optimisers, for ``$o`` references; the grader passes none.
    """
    if depth > MAX_DEPTH:
        raise InvalidData("nested too deeply")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [decode(n, arrays, depth + 1, grads, objects) for n in node]
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise InvalidData(f"unexpected node {str(node)[:80]}")
    if "$o" in node:
        index = node["$o"]
        if objects is None or not isinstance(index, int) or not 0 <= index < len(objects):
            raise InvalidData("an object reference where only plain data may be")
        return objects[index]
    if "$g" in node:
        return _generator(_array(node["$g"], arrays))
    if "$t" in node or "$n" in node:
        array = _array(node.get("$t", node.get("$n")), arrays)
        if "$n" in node:
            return array
        import torch

        tensor = torch.from_numpy(array)
        return tensor.requires_grad_(grads and node.get("grad") is True and tensor.is_floating_point())
    if "$f" in node and node["$f"] in ("nan", "inf", "-inf"):
        return float(node["$f"])
    if "$tuple" in node and isinstance(node["$tuple"], list):
        return tuple(decode(n, arrays, depth + 1, grads, objects) for n in node["$tuple"])
    if "$dict" in node and isinstance(node["$dict"], dict):
        return {str(k): decode(v, arrays, depth + 1, grads, objects) for k, v in node["$dict"].items()}
    raise InvalidData(f"unexpected node {str(node)[:80]}")


def _array(key, arrays: dict) -> np.ndarray:
    if not isinstance(key, str) or key not in arrays:
        raise InvalidData(f"reference to a missing array {str(key)[:40]}")
    return arrays[key]


def _generator(state: np.ndarray):
    import torch

    if state.dtype != np.uint8 or state.ndim != 1:
        raise InvalidData("a random generator's state must be a 1-D uint8 array")
    try:
        return torch.Generator().set_state(torch.from_numpy(state.copy()))
    except RuntimeError as err:
        raise InvalidData(f"not a random generator's state: {err}") from None


def restore(generator, state) -> None:
    """Set ``generator`` to a state sent back after a call (a call advances the generators it got)."""
    if not isinstance(state, np.ndarray) or state.shape != tuple(generator.get_state().shape):
        raise InvalidData("the kernel sent no valid state for a random generator it was given")
    generator.set_state(_generator(state).get_state())


def walk(obj, kind: str):
    """Every ``"Tensor"`` or ``"Generator"`` of torch in a (nested) value, in ``encode``'s order."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, getattr(torch, kind)):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from walk(o, kind)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from walk(o, kind)


def tensors(obj):
    """Every tensor in a (nested) value, in ``encode``'s order."""
    return walk(obj, "Tensor")


def send(sock, header: dict, arrays: dict | None = None) -> None:
    buffer = io.BytesIO()
    if arrays:
        np.savez(buffer, **arrays)
    head = json.dumps(header).encode()
    blob = buffer.getvalue()
    sock.sendall(struct.pack(">QQ", len(head), len(blob)) + head + blob)


def _exactly(sock, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(sock) -> tuple[dict, dict]:
    """One message: its header and its arrays, validated (InvalidData, EOFError, OSError)."""
    head_len, blob_len = struct.unpack(">QQ", _exactly(sock, 16))
    if head_len > MAX_HEADER or head_len + blob_len > MAX_BYTES:
        raise InvalidData(f"a message of {(head_len + blob_len) / 2**20:.0f} MiB is over the "
                          f"{MAX_BYTES / 2**20:.0f} MiB limit")
    try:
        header = json.loads(_exactly(sock, head_len))
    except ValueError as err:
        raise InvalidData(f"the header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise InvalidData("the header is not a JSON object")
    arrays = {}
    if blob_len:
        blob = _exactly(sock, blob_len)
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                for key in npz.files:
                    array = npz[key]
                    if array.dtype not in DTYPES:
                        raise InvalidData(f"array {key} has dtype {array.dtype}, not a plain number type")
                    arrays[key] = array
        except InvalidData:
            raise
        except Exception as err:  # numpy raises several types for a malformed file
            raise InvalidData(f"the arrays are not a valid .npz: {type(err).__name__}: {err}") from None
    return header, arrays
