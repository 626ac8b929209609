"""The committed assignments are exactly what the generator makes of the solutions, and every
question's check fails on the untouched assignment (nbval runs the solutions, where they pass)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gen3d_course.assign import check_assignments_current, questions
from gen3d_course.kernels import IPCKernelManager

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_assignments_are_generated_from_the_solutions():
    stale = check_assignments_current(ROOT / "solutions", ROOT / "assignments")
    assert not stale, f"out of date: {stale}; run `gen3d-course assign` and commit the result"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_every_check_fails_on_the_untouched_assignment(solution, monkeypatch):
    monkeypatch.setenv("GEN3D_MODE", "fast")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assignment = nbformat.read(ROOT / "assignments" / solution.name, as_version=4)
    graded = questions(assignment)
    assert graded, f"{solution.name} has no graded question (tags question:<id>, points:<n>)"
    NotebookClient(assignment, timeout=300, allow_errors=True, kernel_name="python3",
                   kernel_manager_class=IPCKernelManager, resources={"metadata": {"path": str(ROOT / "assignments")}}).execute()
    for q in graded:
        outputs = assignment.cells[q["cell"]].get("outputs", [])
        errors = [o for o in outputs if o.get("output_type") == "error"]
        assert errors, f"{solution.name}: the check of {q['id']} passed on the untouched assignment"
