"""Names shared by the grader and the pytest plugin inside its child process (no imports: no cycle)."""
from __future__ import annotations

FIELDS = ("student", "unit", "question", "points", "max", "status", "message")
NOTEBOOK_ROW = "(notebook)"  # not a valid question id, so it can never clash with one
FLOOD_BYTES = 1_000_000  # output of one cell beyond this is reported
MESSAGE_CHARS = 1500
GRADER_VERSION = "2"  # part of every fingerprint: bump it to re-grade everything

# How a notebook run went, most severe first; the (notebook) row shows the worst.
SEVERITY = ("invalid", "missing", "grader-error", "time-limit", "kernel-died", "timeout",
            "tampered", "edited", "uses-reference", "kernel-scored", "errors", "output-flood", "ok")
STATION = '__import__("gen3d_course.grade.harness").grade.harness.serve(globals())'  # a harness cell

ENV_RESULTS = "GEN3D_GRADE_RESULTS"
ENV_KEY_FD = "GEN3D_GRADE_KEY_FD"
ENV_HARNESS = "GEN3D_GRADE_HARNESS"  # the grader's socket, for the harness cells
ENV_RUN = "GEN3D_GRADE_RUN"  # inherited by everything the run starts: finds leftovers to kill
ENV_SANDBOX = "GEN3D_GRADE_SANDBOX"  # the bubblewrap command (JSON) the plugin starts the kernel in


class GradeError(ValueError):
    """The grading run itself cannot start (bad folders, malformed hidden checks)."""

