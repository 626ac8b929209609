"""Small pretrained weights with a manifest, so a shipped file says how it was made.

Each checkpoint is a ``NAME.pt`` file holding a plain state dict (tensors only, loaded with
``torch.load(weights_only=True)`` — never pickled code) and an entry in ``manifest.json`` beside
it: sha256, size, the command that produced it, seed, metrics and model configuration.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); restore it from git.") from None


def _atomic_write(path: Path, write) -> None:
    """Write to a temporary file and rename it, so an interruption never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; shipped weights are for everyone
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def rounded(metrics, digits: int = 4):
    """``metrics`` with every float rounded (nested dicts too): what a manifest records."""
    if isinstance(metrics, dict):
        return {k: rounded(v, digits) for k, v in metrics.items()}
    return round(metrics, digits) if isinstance(metrics, float) else metrics


def save_checkpoint(name: str, model, *, command: str, seed: int, metrics: dict | None = None,
                    config: dict | None = None, directory: Path | str = WEIGHTS_DIR) -> Path:
    """Save ``model``'s state dict as ``directory/name.pt`` and record it in the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if hasattr(model, "state_dict") else model
    state = {k: v.detach().cpu() for k, v in state.items()}
    path = directory / f"{name}.pt"
    _atomic_write(path, lambda f: torch.save(state, f))
    manifest = _read_manifest(directory)
    manifest[name] = {
        "file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size,
        "command": command, "seed": seed, "metrics": metrics or {}, "config": config or {},
        "torch": torch.__version__, "created": time.strftime("%Y-%m-%d"),
    }
    _atomic_write(directory / MANIFEST,
                  lambda f: f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()))
    return path


def checkpoint_info(name: str, directory: Path | str = WEIGHTS_DIR) -> dict:
    """The manifest entry of ``name`` (command, seed, metrics, config)."""
    manifest = _read_manifest(Path(directory))
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none"
        raise CheckpointError(
            f"No checkpoint named {name!r} in {directory} (known: {known}). "
            f"Produce it with `gen3d-course train {name}`."
        )
    return manifest[name]


def load_checkpoint(name: str, model=None, directory: Path | str = WEIGHTS_DIR, device=None):
    """Load checkpoint ``name``; into ``model`` if given (and return it, moved to ``device``), else
    return the state dict (on ``device``; default the CPU, wherever the file was saved).

    Fails with a message that says what to do when the file is missing, does not match its
    recorded sha256 (corrupt or replaced), cannot be read, or does not fit the model.
    """
    directory = Path(directory)
    info = checkpoint_info(name, directory)
    path = directory / info["file"]
    if not path.exists():
        raise CheckpointError(f"Checkpoint file {path} is missing. Produce it with `{info['command']}`.")
    if _sha256(path) != info["sha256"]:
        raise CheckpointError(
            f"Checkpoint {path} does not match the sha256 in {directory / MANIFEST}: the file is "
            f"corrupt or was replaced. Restore it from git or re-run `{info['command']}`."
        )
    try:
        state = torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for unreadable files
        raise CheckpointError(f"Checkpoint {path} cannot be read: {err}") from None
    if model is None:
        return state
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"Checkpoint {name!r} does not fit this model ({type(model).__name__}): {err}\n"
            f"It was made with config {info['config']}; build the model with the same settings."
        ) from None
    return model.to(device) if device is not None else model
