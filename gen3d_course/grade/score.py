"""Rows of grades.csv from what the plugin reported for each cell."""
from __future__ import annotations

from .constants import FLOOD_BYTES, MESSAGE_CHARS, NOTEBOOK_ROW, SEVERITY
from .run import Run, Settings
from .units import Prepared, Unit


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _rows(student: str, unit: Unit, status_by_check: dict[str, tuple[int, str, str]],
          notebook_status: str, notebook_message: str) -> list[dict]:
    rows = []
    for check in unit.checks:
        points, status, message = status_by_check[check.id]
        rows.append({"student": student, "unit": unit.stem, "question": check.id,
                     "points": points, "max": check.points, "status": status,
                     "message": _clip(message)})
    rows.append({"student": student, "unit": unit.stem, "question": NOTEBOOK_ROW, "points": 0,
                 "max": 0, "status": notebook_status, "message": _clip(notebook_message)})
    return rows


def unrun_rows(student: str, unit: Unit, status: str, message: str) -> list[dict]:
    """Every question scores 0 with the same reason (missing or invalid notebook)."""
    return _rows(student, unit, {c.id: (0, status, message) for c in unit.checks}, status, message)


def score(student: str, unit: Unit, prepared: Prepared, run: Run, settings: Settings,
          verdicts: dict, delegated: dict, note: str = "") -> list[dict]:
    """Rows from the verdicts and the per-cell reports (package docstring, step 5)."""
    issues: dict[str, list[str]] = {}

    def where(number: int) -> str:
        role, what = prepared.roles[number]
        if role == "student":
            return f"code cell {what[0]} (`{what[1]}`)"
        if role == "hidden":
            return "the hidden checks"
        return f"the check of {what}"

    stop = None  # why the kernel was gone for every cell after this point
    for number in sorted(run.records):
        record, kind = run.records[number], run.records[number]["kind"]
        if stop is None and (kind in ("kernel-died", "kernel-dead") or not record["alive"]):
            if kind == "timeout":
                stop = ("timeout", f"{where(number)} exceeded the {settings.timeout:g} s per-cell "
                                   "limit and ignored the interrupt, so the kernel was stopped")
            elif kind == "kernel-dead" and number > 0:
                stop = ("kernel-died", f"the kernel died after {where(number - 1)}")
            else:
                stop = ("kernel-died", f"the kernel died in {where(number)}")
            issues.setdefault(stop[0], []).append(stop[1])
        elif kind == "timeout":
            issues.setdefault("timeout", []).append(
                f"{where(number)} exceeded the {settings.timeout:g} s per-cell limit")
        elif kind == "setup-error" and "grader-error" not in issues:
            issues["grader-error"] = [f"nbval could not start the kernel: {record['message']}"]
        elif prepared.roles[number][0] == "student" and kind in ("ok", "error") \
                and (record["error"] or kind == "error"):
            issues.setdefault("errors", []).append(
                f"{where(number)} raised {record['error'] or record['message']}")
        if record["output_bytes"] > FLOOD_BYTES:
            issues.setdefault("output-flood", []).append(
                f"{where(number)} printed {record['output_bytes'] / 1e6:.1f} MB "
                f"(more than {FLOOD_BYTES / 1e6:g} MB)")
    if run.killed:
        issues.setdefault("time-limit", []).append(
            f"the notebook was stopped at its {settings.notebook_timeout:g} s time limit")
    if run.forged:
        issues.setdefault("tampered", []).append(
            f"{run.forged} result line(s) not written by the grader were ignored")
    if not run.killed and (not run.collected or run.returncode not in (0, 1)):
        issues.setdefault("grader-error", []).append(
            f"the nbval run ended abnormally (exit code {run.returncode}): {run.tail[-500:]}")
    if prepared.edited:
        issues.setdefault("edited", []).append(
            "check cells differ from the released ones: " + ", ".join(sorted(prepared.edited)))

    cell_of = {what: n for n, (role, what) in enumerate(prepared.roles) if role == "check"}
    hidden_cell = next((n for n, (role, _) in enumerate(prepared.roles) if role == "hidden"), None)
    status_by_check = {}
    for check in unit.checks:
        number = hidden_cell if check.hidden else cell_of[check.id]
        record = run.records.get(number)
        verdict = verdicts.get(check.id)
        if verdict is None:  # the kernel never served this check: say why, from its harness cell
            status, message = _unserved(record, stop, run, settings)
            passed = False
        elif verdict.status == "not-data" and not check.hidden:
            passed = bool(record) and record["kind"] == "ok"
            status = "kernel-scored"
            message = (f"scored in the student's kernel, because {verdict.message}; there the "
                       "check " + ("passed" if passed else "failed: " + (
                           record and (record["error"] or record["message"]) or "not run")))
            issues.setdefault("kernel-scored", []).append(f"{check.id} was scored in the kernel")
        elif verdict.status == "timeout":
            status, message = "timeout", f"the check did not finish within {settings.timeout:g} s"
            passed = False
        else:
            status, message = verdict.status, verdict.message
            passed = status == "passed"
        points = check.points if passed else 0
        if check.id in prepared.edited:
            message = f"{prepared.edited[check.id]}; with it, the check {status}" + (
                f": {message}" if message else "")
            status = "edited"
        if check.id in delegated:
            where_used = delegated[check.id]
            message = (f"the answer uses the library's own {where_used}; "
                       + ("scored 0" if settings.uses_reference == "zero" else "flagged only")
                       + f"; the check {status}" + (f": {message}" if message else ""))
            status = "uses-reference"
            points = 0 if settings.uses_reference == "zero" else points
            issues.setdefault("uses-reference", []).append(f"{check.id}: {where_used}")
        status_by_check[check.id] = (points, status, message)

    worst = next((s for s in SEVERITY if s in issues), "ok")
    parts = [note] if note else []
    for kind in sorted(issues, key=SEVERITY.index):
        texts = issues[kind]
        parts.append("; ".join(texts[:3]) + (f"; and {len(texts) - 3} more" if len(texts) > 3 else ""))
    parts.append(f"ran in {run.seconds:.0f} s")
    return _rows(student, unit, status_by_check, worst, ". ".join(parts))


def _unserved(record, stop, run: Run, settings: Settings) -> tuple[str, str]:
    """Status and message of a check whose harness cell never answered the grader."""
    kind = record["kind"] if record else None
    if record is None:
        return "not-run", (f"not reached: the notebook was stopped at its "
                           f"{settings.notebook_timeout:g} s time limit" if run.killed
                           else "not run (see the notebook row)")
    if kind == "timeout":
        return "timeout", f"the check did not finish within {settings.timeout:g} s"
    if kind == "kernel-died":
        return "kernel-died", "the kernel died while this check ran"
    if kind == "kernel-dead" and stop is not None:
        return ("kernel-died" if stop[0] == "kernel-died" else "not-run"), f"not run: {stop[1]}"
    if kind in ("kernel-dead", "setup-error", "skipped"):
        return "not-run", f"not run: {record['message'] or kind}"
    return "failed", ("the notebook never let the grader call its functions here (the grading "
                      "cell " + (f"raised {record['error'] or record['message']})" if kind == "error"
                                 else "ended without connecting)"))
