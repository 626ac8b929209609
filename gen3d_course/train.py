"""One training loop for every unit: a step budget, a progress bar, a loss history.

The loop owns only what is the same everywhere (counting, timing, logging, stopping on NaN);
each model's ``step`` function owns its forward pass, loss and optimiser updates — a GAN's
alternating updates fit as naturally as a single regression loss.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import config


class History(dict):
    """Logged values per name, e.g. ``history["loss"]`` is a list over logged steps."""

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []
        self.seconds = 0.0

    def log(self, step: int, values: dict[str, float]) -> None:
        self.steps.append(step)
        for name, value in values.items():
            self.setdefault(name, []).append(float(value))

    def mean(self, name: str, first: bool = False, window: int = 10) -> float:
        """Mean of the first or last ``window`` logged values of ``name`` (smooths noisy losses)."""
        values = self[name][:window] if first else self[name][-window:]
        return sum(values) / len(values)


def train(step: Callable[[int], dict | float], steps: int, *, desc: str = "training",
          log_every: int = 1, max_seconds: float | None = None, progress: bool = True,
          checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0,
          stop: Callable[[], bool] | None = None) -> History:
    """Call ``step(i)`` for i in range(steps) and return the history of what it returned.

    ``step`` returns a float (logged as "loss") or a dict of floats. A NaN or inf stops the run
    with a message naming the step and the value, instead of training on garbage.
    ``max_seconds`` stops early on slow machines, and so does ``stop()`` returning True after a
    step (e.g. a CPU-time budget the step keeps); ``checkpoint(i)`` is called every
    ``checkpoint_every`` steps and at the end.
    """
    if steps < 1:
        raise ValueError(f"train: steps must be at least 1, got {steps}.")
    history = History()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    running = defaultdict(float)
    for i in bar:
        values = step(i)
        values = {"loss": values} if not isinstance(values, dict) else values
        values = {k: float(v) for k, v in values.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"train ({desc}): step {i} produced {bad}. The run diverged; try a lower learning "
                "rate, check the inputs for NaN, or clip gradients."
            )
        if i % log_every == 0 or i == steps - 1:
            history.log(i, values)
        for k, v in values.items():
            running[k] = 0.9 * running[k] + 0.1 * v if i else v
        if progress and i % 10 == 0:
            bar.set_postfix({k: f"{v:.4g}" for k, v in running.items()}, refresh=False)
        if checkpoint is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
            checkpoint(i)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        if stop is not None and stop():
            break
    bar.close()
    history.seconds = time.perf_counter() - start
    if checkpoint is not None:
        checkpoint(history.steps[-1] if history.steps else 0)
    return history


@contextmanager
def on_device(*modules: torch.nn.Module, device=None):
    """Train on the fastest device, then hand the modules back where they were.

    ``with on_device(model) as device:`` moves ``model`` to ``device`` (default
    ``config.pick_device()``: cuda > mps > cpu) and yields it, so the loop can move each batch
    there; on exit the modules return to the device they came from, so a notebook's later cells
    keep using CPU tensors. Batches should be drawn on the CPU (with a CPU generator) and moved,
    which keeps every run on a CPU bit for bit what it was.
    """
    homes = [next(m.parameters()).device for m in modules]
    target = config.pick_device(device)
    for m in modules:
        m.to(target)
    try:
        yield target
    finally:
        for m, home in zip(modules, homes):
            m.to(home)
