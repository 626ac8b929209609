"""Networks, optimisers and library objects in a check's call: sent to the kernel whole, read
back as plain data.

Many questions take an ``nn.Module`` or an optimiser (``gan_step(G, D, opt_g, opt_d, ...)``,
``clip_weights(critic, c)``). The grader sends the objects it built for the check to the kernel
as one pickle (grader → kernel only: the kernel unpickles what the grader made; the grader never
unpickles anything), so shared parameters stay shared. After the student's function ran, the
kernel sends back each object's state as plain data: every parameter's value, ``requires_grad``,
``.grad`` and whether it is still the same object; buffers; an optimiser's ``state_dict``; the
attributes of another object of the library's classes (a field that counts its queries). The
grader writes that state into its own objects, so the check goes on as if the function had run
here. Gradients reach the parameters through the same vector-Jacobian round trip as the inputs.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from .wire import InvalidData, NotData, decode, encode

KINDS = (torch.nn.Module, torch.optim.Optimizer)


def pack(objects: list) -> np.ndarray:
    """The grader's objects as one pickle, in a uint8 array (NotData when one cannot be pickled)."""
    try:
        return np.frombuffer(pickle.dumps(objects), dtype=np.uint8).copy()
    except Exception as err:  # pickle raises several types (a lambda, a lock, a local class)
        raise NotData(f"{', '.join(type(o).__name__ for o in objects)} cannot be sent to the "
                      f"kernel ({type(err).__name__}: {err})") from None


def unpack(array: np.ndarray) -> list:
    """In the kernel only: the objects the grader sent."""
    return pickle.loads(array.tobytes())


def parameters(objects) -> list[torch.Tensor]:
    """The parameters of the modules among ``objects`` that take gradients, in a fixed order."""
    return [p for o in objects if isinstance(o, torch.nn.Module)
            for p in o.parameters() if p.requires_grad]


def snapshot(objects) -> list:
    """Before the call, in the kernel: each module's parameters, to tell replaced ones later."""
    return [dict(o.named_parameters()) if isinstance(o, torch.nn.Module) else None for o in objects]


def state(objects, before: list, arrays: dict) -> list:
    """After the call, in the kernel: each object's state as a plain-data tree."""
    out = []
    for obj, old in zip(objects, before):
        if isinstance(obj, torch.nn.Module):
            out.append({"params": [
                [name, encode(p.detach(), arrays), bool(p.requires_grad),
                 None if p.grad is None else encode(p.grad.detach(), arrays), old.get(name) is p]
                for name, p in obj.named_parameters()],
                "buffers": [[name, encode(b, arrays)] for name, b in obj.named_buffers()]})
        elif not isinstance(obj, torch.optim.Optimizer):  # a library object: its attributes
            try:
                attrs = dict(vars(obj))
            except TypeError:
                raise NotData(f"a {type(obj).__name__} has no attributes to send back") from None
            out.append({"attrs": encode(attrs, arrays)})
        else:
            sd = obj.state_dict()
            out.append({"optimizer": encode({"state": [[k, v] for k, v in sd["state"].items()],
                                             "param_groups": sd["param_groups"]}, arrays)})
    return out


def mirror(objects, states, arrays: dict) -> None:
    """In the grader: write the kernel's state after the call into the grader's own objects."""
    if not isinstance(states, list) or len(states) != len(objects):
        raise InvalidData("the kernel sent the wrong number of object states")
    with torch.no_grad():
        for obj, node in zip(objects, states):
            if not isinstance(node, dict):
                raise InvalidData("an object state is not a JSON object")
            if isinstance(obj, torch.nn.Module):
                _module(obj, node, arrays)
            elif isinstance(obj, torch.optim.Optimizer):
                _optimizer(obj, node, arrays)
            else:
                attrs = decode(node.get("attrs"), arrays)
                if not isinstance(attrs, dict):
                    raise InvalidData("a library object's attributes are malformed")
                vars(obj).update(attrs)


def _tensor(node, arrays) -> torch.Tensor:
    value = decode(node, arrays)
    if not isinstance(value, torch.Tensor):
        raise InvalidData("a parameter or buffer sent back is not a tensor")
    return value


def _owner(module: torch.nn.Module, name: str):
    path, _, leaf = name.rpartition(".")
    try:
        return (module.get_submodule(path) if path else module), leaf
    except AttributeError:
        raise InvalidData(f"the kernel sent back {name[:80]}, which the network does not have") from None


def _module(module: torch.nn.Module, node: dict, arrays: dict) -> None:
    params, buffers = node.get("params"), node.get("buffers")
    if not isinstance(params, list) or not isinstance(buffers, list):
        raise InvalidData("a network's state must list its parameters and buffers")
    for entry in params:
        if not isinstance(entry, list) or len(entry) != 5 or not isinstance(entry[0], str):
            raise InvalidData("a parameter entry is malformed")
        name, value, grad_flag, grad, same = entry
        value = _tensor(value, arrays)
        owner, leaf = _owner(module, name)
        old = owner._parameters.get(leaf)
        float_like = value.is_floating_point()
        if same is True and old is not None and old.shape == value.shape and old.dtype == value.dtype:
            old.copy_(value)
            param = old
        else:  # the student's function put a new Parameter there
            param = torch.nn.Parameter(value, requires_grad=bool(grad_flag) and float_like)
            owner._parameters[leaf] = param
        if float_like:
            param.requires_grad_(grad_flag is True)
        if grad is None:
            param.grad = None
        else:
            grad = _tensor(grad, arrays)
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise InvalidData(f"the gradient of {name[:80]} has the wrong shape or dtype")
            param.grad = grad
    for entry in buffers:
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str):
            raise InvalidData("a buffer entry is malformed")
        owner, leaf = _owner(module, entry[0])
        owner._buffers[leaf] = _tensor(entry[1], arrays)


def _optimizer(optimizer: torch.optim.Optimizer, node: dict, arrays: dict) -> None:
    sent = decode(node.get("optimizer"), arrays)
    if not isinstance(sent, dict) or not isinstance(sent.get("state"), list):
        raise InvalidData("an optimiser's state is malformed")
    try:
        optimizer.load_state_dict({"state": {int(k): v for k, v in sent["state"]},
                                   "param_groups": sent["param_groups"]})
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidData(f"an optimiser's state could not be loaded: {err}") from None
