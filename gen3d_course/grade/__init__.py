"""Grade submitted assignment notebooks: run each one under nbval and score its question cells.

Layout: ``SUBMISSIONS/<student>/NN_topic.ipynb``, matched by file name to the released
``assignments/NN_topic.ipynb`` (a copy such as ``NN_topic (1).ipynb`` is accepted when it is the
only candidate). The released assignment is the reference: it says which cells are the checks
(tags ``question:<id>`` and ``points:<n>``) and what each check cell must contain.

How one notebook is graded (the modules, in the order they act):

1. :mod:`.units`: the notebook is read (not notebook JSON: every question ``invalid``); each
   released check cell is found in it (question tag, cell id, identical source) and compared with
   the released one (``edited`` when it differs or is gone; points always the released ones). The
   graded copy holds the student's code cells in order, outputs cleared, and a harness cell
   (``constants.STATION``) in place of each check, plus one at the end for the hidden checks.
2. :mod:`.run` runs the copy with ``pytest --nbval-lax --nbval-current-env
   --nbval-cell-timeout=T`` under a wall-clock cap, after which every process of the run is
   killed. pytest runs outside the sandbox; :mod:`.plugin` starts the kernel inside a
   :mod:`.sandbox` (bubblewrap: no network, read-only library, only the run folder writable,
   memory and process caps; ``--unsafe``: none) and reports each cell as nbval finishes it
   (signed JSON lines, out of the kernel's reach): the notebook row's facts.
3. Each harness cell (:mod:`.harness`, in the kernel) connects to the grader, and :mod:`.judge`
   runs the released check (or the hidden checks) in the grader's process, with a proxy for each
   student function that calls it in the kernel on plain data (:mod:`.wire`; networks and
   optimisers go there pickled and come back as their state, :mod:`.objects`), on inputs drawn
   afresh from a per-run salt. The verdict is the grader's; a check that needs more than plain
   data runs in the kernel (``kernel-scored``).
4. :mod:`.reference` marks answers that take the library's own function (``uses-reference``).
5. :mod:`.score` turns verdicts and cell reports into rows; :mod:`.outputs` writes grades.csv
   (no cell starts a formula), the feedback and the resume state; :mod:`.batch` drives it all.

Hidden checks: ``HIDDEN/NN_topic.py`` in jupytext "percent" format. Cells start at ``# %%``
lines; a cell whose header has ``tags=["question:<id>", "points:<n>"]`` is a graded check, any
other cell is setup. They run in the grader after the student's last cell, against the
student's functions through the same proxies; their source never enters the kernel.

Re-running ``grade`` resumes: a notebook is graded again only when the submission, the released
assignment or the hidden checks changed, when the grader failed on it, or with ``rerun=True``.
``grades.csv`` and the feedback files are replaced atomically (temporary file + rename), so an
interrupted run leaves the previous complete file, never a truncated one. A malformed or
inconsistent state entry is reported and graded again.
What this guarantees, and what not: docs/instructors.md, section 6.
"""
from __future__ import annotations

import importlib

# Where each public name lives. Loaded on first use, so that the harness cell in a student's
# kernel (``gen3d_course.grade.harness``) does not pay for nbformat and the grader's modules.
_HOME = {"Result": "batch", "grade": "batch", "grade_notebook": "batch", "main_grade": "batch",
         "FIELDS": "constants", "NOTEBOOK_ROW": "constants", "GradeError": "constants",
         "csv_text": "outputs", "feedback_text": "outputs", "write_atomic": "outputs",
         "Run": "run", "Settings": "run", "remove_stale_runs": "run", "run_nbval": "run",
         "Check": "units", "Unit": "units", "load_unit": "units", "parse_hidden": "units",
         "prepare": "units", "read_submission": "units"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
