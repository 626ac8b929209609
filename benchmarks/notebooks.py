"""Wall seconds and peak kernel memory of every lecture and solution notebook in fast mode.

Each notebook runs in a fresh child process (nbclient) with one torch thread, as under
`make test`; the child's children include the kernel, so their peak RSS is the kernel's and
their CPU seconds are the kernel's work (which, unlike wall time, does not grow when the
machine is busy).
Usage: python benchmarks/notebooks.py [NOTEBOOK ...]   (writes benchmarks/results/notebooks.md)
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ONE = """
import resource, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=600, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def run(notebook: Path) -> tuple[float, float, float, str]:
    env = dict(os.environ, GEN3D_MODE=os.environ.get("GEN3D_MODE", "fast"), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", RUN_ONE, str(notebook), str(notebook.parent)],
                            capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        return seconds, float("nan"), float("nan"), "FAILED: " + result.stderr.strip().splitlines()[-1]
    cpu, peak_kb = result.stdout.strip().splitlines()[-1].split()
    return seconds, float(cpu), int(peak_kb) / 1024, "ok"


def main(argv: list[str]) -> int:
    notebooks = [Path(a) for a in argv] or sorted(
        [*ROOT.glob("lectures/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
    lines = [f"mode={os.environ.get('GEN3D_MODE', 'fast')}, one torch thread, "
             f"{os.cpu_count()} cores", "", "| notebook | wall s | kernel CPU s | peak MB | status |",
             "|---|---:|---:|---:|---|"]
    print("\n".join(lines), flush=True)
    for notebook in notebooks:
        seconds, cpu, peak, status = run(notebook.resolve())
        line = (f"| {notebook.resolve().relative_to(ROOT)} | {seconds:.1f} | {cpu:.1f} | {peak:.0f} "
                f"| {status} |")
        print(line, flush=True)
        lines.append(line)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "notebooks.md").write_text("\n".join(lines) + "\n")
    return 0 if all("FAILED" not in line for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
