"""A Gradescope autograder bundle that grades with this same grader, so local and Gradescope
scores agree.

``gen3d-course grade --export gradescope --out DIR`` writes ``DIR/gradescope/`` and
``DIR/gradescope/autograder.zip`` holding:

- ``setup.sh``: installs bubblewrap and the course library (the copy in the bundle, with its test
  extra) on Gradescope's image;
- ``run_autograder``: grades ``/autograder/submission/`` as one student with :func:`.batch.grade`
  (the sandbox, the harness, the outside checks) and writes ``/autograder/results/results.json``;
- ``source/``: the library, the released assignments and the hidden checks.

Gradescope's results: one test per question (``score``, ``max_score``, the check's message as
``output``); released checks ``visible``, hidden ones ``after_published``; the notebook row as the
top-level ``output``. Where bubblewrap cannot make namespaces in Gradescope's container, the run
falls back to ``--unsafe`` (Gradescope's per-submission container is then the only sandbox) and
says so in that output.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from .constants import NOTEBOOK_ROW
from .sandbox import library_folder

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap python3-pip python3-venv
python3 -m pip install -q "torch==${TORCH_VERSION:-2.13.0}" --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install -q "/autograder/source/course[test]"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for each submission: grade it, write results/results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
export GEN3D_MODE=fast OMP_NUM_THREADS=1
export PYTHONPATH="$ROOT/source/course${PYTHONPATH:+:$PYTHONPATH}"  # the library of this bundle
exec "${PYTHON:-python3}" -m gen3d_course.grade.gradescope "$ROOT/submission" \\
    "$ROOT/results/results.json" --source "$ROOT/source"
"""


def export(assignments: Path, hidden: Path | None, out: Path) -> Path:
    """Write the bundle folder and its zip under ``out/gradescope``; return the zip's path."""
    bundle = out / "gradescope"
    if bundle.exists():
        shutil.rmtree(bundle)
    course = bundle / "source" / "course"
    shutil.copytree(library_folder(), course / "gen3d_course",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = library_folder().parent / "pyproject.toml"
    if pyproject.exists():
        shutil.copy(pyproject, course / "pyproject.toml")
    shutil.copytree(assignments, bundle / "source" / "assignments",
                    ignore=lambda folder, names: [n for n in names if not n.endswith(".ipynb")])
    (bundle / "source" / "hidden").mkdir()
    for path in sorted(hidden.glob("*.py")) if hidden else []:
        shutil.copy(path, bundle / "source" / "hidden" / path.name)
    for name, text in (("setup.sh", SETUP), ("run_autograder", RUN)):
        (bundle / name).write_text(text)
        (bundle / name).chmod(0o755)
    archive = bundle / "autograder.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file() and path != archive:
                info = zipfile.ZipInfo.from_file(path, path.relative_to(bundle).as_posix())
                zf.writestr(info, path.read_bytes())
    return archive


def results(rows: list[dict], hidden_ids: set[str], note: str = "") -> dict:
    """Gradescope's ``results.json`` from the grader's rows for one submission."""
    graded = [r for r in rows if r["question"] != NOTEBOOK_ROW]
    notebooks = [f"{r['unit']}: {r['status']}. {r['message']}" for r in rows
                 if r["question"] == NOTEBOOK_ROW]
    return {
        "score": sum(int(r["points"]) for r in graded),
        "output": "\n".join(([note] if note else []) + notebooks),
        "tests": [{"name": f"{r['unit']} {r['question']}", "score": int(r["points"]),
                   "max_score": int(r["max"]), "status": "passed" if r["status"] == "passed" else "failed",
                   "output": f"{r['status']}: {r['message']}" if r["message"] else r["status"],
                   "visibility": "after_published" if r["question"] in hidden_ids else "visible"}
                  for r in graded]}


def run_autograder(submission: Path, target: Path, source: Path) -> dict:
    """Grade one Gradescope submission folder with the local grader; write ``target``."""
    from . import sandbox
    from .batch import grade
    from .constants import GradeError
    from .units import load_unit

    assignments, hidden = source / "assignments", source / "hidden"
    problem = sandbox.problem()
    note = (f"graded without bubblewrap ({problem}); Gradescope's container is the sandbox"
            if problem else "")
    with tempfile.TemporaryDirectory(prefix="gen3d-gradescope-") as tmp:
        subs = Path(tmp) / "submissions"
        shutil.copytree(submission, subs / "submission")
        try:
            rows = grade(subs, assignments=assignments, hidden=hidden, out=Path(tmp) / "out",
                         unsafe=problem is not None, log=lambda line: None).rows
        except GradeError as err:  # e.g. no notebook with a released name
            rows, note = [], "\n".join(filter(None, [note, f"not graded: {err}"]))
    hidden_ids = {c.id for path in sorted(assignments.glob("*.ipynb"))
                  for c in load_unit(path, hidden / f"{path.stem}.py").checks if c.hidden}
    data = results(rows, hidden_ids, note)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=1))
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gen3d_course.grade.gradescope")
    parser.add_argument("submission", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--source", type=Path, required=True)
    args = parser.parse_args(argv)
    run_autograder(args.submission, args.results, args.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
