"""Seconds and peak GPU memory of every lecture in fast mode on CUDA, beside the CPU run.

Each lecture runs twice in a fresh kernel (nbclient): with ``GEN3D_DEVICE=cpu`` and with the
default device (cuda when present, through ``config.pick_device`` and ``train.on_device``). An
extra last cell reports ``torch.cuda.max_memory_allocated``. Needs a machine with CUDA.
Usage: python benchmarks/gpu.py [NOTEBOOK ...]   (writes benchmarks/results/gpu.md)
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
PEAK_CELL = ("import torch\nprint(torch.cuda.max_memory_allocated() / 2**20 "
             "if torch.cuda.is_available() else 0.0)")


def run(notebook: Path, device: str | None) -> tuple[float, float]:
    """(wall seconds, peak GPU MB) of one fast-mode run of ``notebook`` on ``device``."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    os.environ.update(GEN3D_MODE="fast", OMP_NUM_THREADS="1")
    os.environ.pop("GEN3D_DEVICE", None) if device is None else os.environ.update(GEN3D_DEVICE=device)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    seconds = time.perf_counter() - start
    return seconds, float(nb.cells[-1].outputs[-1]["text"].strip())


def main(argv: list[str]) -> int:
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: torch sees no CUDA device; run it on a GPU machine.", file=sys.stderr)
        return 2
    notebooks = [Path(a).resolve() for a in argv] or sorted(ROOT.glob("lectures/*.ipynb"))
    lines = [f"fast mode, {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
             "| lecture | CPU s | GPU s | peak GPU MB |", "|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for notebook in notebooks:
        cpu_seconds, _ = run(notebook, "cpu")
        gpu_seconds, peak = run(notebook, None)
        lines.append(f"| {notebook.relative_to(ROOT)} | {cpu_seconds:.1f} | {gpu_seconds:.1f} | {peak:.0f} |")
        print(lines[-1], flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
