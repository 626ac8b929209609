"""Grade submitted assignment notebooks: run each one under nbval and score its question cells.

Layout: ``SUBMISSIONS/<student>/NN_topic.ipynb``, matched by file name to the released
``assignments/NN_topic.ipynb`` (a copy such as ``NN_topic (1).ipynb`` is accepted when it is the
only candidate). The released assignment is the reference: it says which cells are the checks
(tags ``question:<id>`` and ``points:<n>``) and what each check cell must contain.

How one notebook is graded
1. It is read; a file that is not notebook JSON scores 0 on every question (status ``invalid``).
2. Each released check cell is found in it (by its question tag, then by cell id, then by
   identical source). A check cell whose source or tags differ from the released one (or which
   was deleted) is flagged ``edited`` and the released cell is put back for the run: an edited
   check can neither pass by itself nor go unnoticed, and the points shown are those the
   released check gave.
3. The graded copy holds the student's code cells in their order, outputs cleared; the check
   cells lose ``raises-exception``, so a check that raises fails, exactly as the check cells of
   a solution fail under ``make test``. Hidden checks, if any, are appended (see below).
4. ``python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=T`` runs the copy in
   a subprocess with its own kernel (``GEN3D_MODE=fast``, ``OMP_NUM_THREADS=1``), in an empty
   private temporary folder, under a total wall-clock cap; when the cap is hit the whole process
   tree (pytest, kernel, anything the notebook started) is killed.
5. :mod:`.plugin` is the pytest plugin of that run (``-p gen3d_course.grade.plugin``): it writes one
   JSON line per cell as soon as nbval reports it, so a run killed half-way still reports the
   cells it finished. Lines are signed with a key handed over through a pipe that is closed
   before the kernel starts, so notebook code cannot forge a passing result.
6. A question scores its points when nbval passes its cell. Everything else is a status with a
   reason: ``failed`` (the check's message), ``timeout`` (the per-cell limit), ``kernel-died``,
   ``not-run`` (the notebook was stopped before the cell), ``missing``, ``invalid``, ``edited``.
   One extra row per notebook (question ``(notebook)``, 0 of 0 points) says how the run went:
   errors in other cells, a cell that timed out, a dead kernel, the time cap, megabytes of output.

Hidden checks: ``HIDDEN/NN_topic.py`` in jupytext "percent" format. Cells start at ``# %%``
lines; a cell whose header has ``tags=["question:<id>", "points:<n>"]`` is a graded check, any
other cell is setup. They are appended after the student's last cell and run in the same
kernel, against the student's functions. Their source is only on disk between writing the graded
copy and pytest's collection of it: the plugin deletes the file before the kernel starts, the
private folder is removed after the run, and nothing of it reaches ``--out``.

Re-running ``grade`` resumes: a notebook is graded again only when the submission, the released
assignment or the hidden checks changed, when the grader failed on it, or with ``rerun=True``.
``grades.csv`` and the feedback files are replaced atomically (temporary file + rename), so an
interrupted run leaves the previous complete file, never a truncated one.

The grader is not a sandbox: notebook code runs with the instructor's permissions. For high
stakes, run ``gen3d-course grade`` in a container or as a user that cannot read anything else.
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
