"""Run mode, sizes, seeding, device and the world cube: the one place the course asks "how big,
how long, where".

The run mode comes from the environment variable ``GEN3D_MODE``:

- ``fast``: tests and CI; small but still *learning* (each notebook's quality assert holds).
- ``lecture`` (default): what a student runs live on a laptop CPU.
- ``full``: producing the shipped checkpoints.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

MODES = ("fast", "lecture", "full")
MODE_VARIABLE = "GEN3D_MODE"
DEVICE_VARIABLE = "GEN3D_DEVICE"
# The world every shape, scene and field lives in: the cube [-0.5, 0.5]³ (y up). Grids, ray
# boxes and plots default to it; a real scene with a larger box passes its own bounds.
WORLD = (-0.5, 0.5)


def mode() -> str:
    """The current run mode, read on each call so a notebook can switch it with ``os.environ``."""
    value = os.environ.get(MODE_VARIABLE, "lecture").strip().lower() or "lecture"
    if value not in MODES:
        raise ValueError(
            f"{MODE_VARIABLE}={value!r} is not a run mode; use one of {', '.join(MODES)}."
        )
    return value


def budget(*, lecture, fast, full=None):
    """Pick a size for the current mode: ``steps = budget(lecture=3000, fast=150)``.

    ``full`` defaults to the lecture value, so a notebook names only what differs.
    """
    return {"fast": fast, "lecture": lecture, "full": lecture if full is None else full}[mode()]


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch so a second run gives the same numbers on the same machine.

    Returns a seeded ``torch.Generator`` for code that prefers an explicit one.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(prefer: str | None = None) -> torch.device:
    """The fastest available device: cuda > mps > cpu, or ``prefer`` if given, or the environment
    variable ``GEN3D_DEVICE`` (e.g. ``cpu``, to train on the CPU on a GPU machine)."""
    prefer = os.environ.get(DEVICE_VARIABLE) or None if prefer is None else prefer
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("pick_device: CUDA was asked for but torch sees no CUDA device.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe() -> str:
    """One line for a notebook's setup cell: mode, device, torch version and threads."""
    return (
        f"gen3d_course: mode={mode()} device={pick_device().type} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )
