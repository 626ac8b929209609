"""What the grader writes: grades.csv, the feedback files and its resume state, each atomically."""
from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path

from .constants import FIELDS, GRADER_VERSION, NOTEBOOK_ROW


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list for CSV injection


def cell_text(value):
    """A text cell no spreadsheet reads as a formula: a leading ``= + - @`` tab or CR gets a quote.

    A bare CR becomes a newline, which the writer quotes (it quotes only its line terminator).
    """
    if not isinstance(value, str):
        return value
    value = "'" + value if value.startswith(FORMULA_STARTS) else value
    return value.replace("\r\n", "\n").replace("\r", "\n")


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell_text(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def feedback_text(student: str, rows: list[dict], ignored: list[str]) -> str:
    """Markdown feedback: totals, a table per unit, then what each failing check said."""
    graded = [r for r in rows if r["question"] != NOTEBOOK_ROW]
    total, most = sum(int(r["points"]) for r in graded), sum(int(r["max"]) for r in graded)
    lines = [f"# Feedback for {student}", "", f"**Total: {total} / {most} points**", ""]
    for unit in dict.fromkeys(r["unit"] for r in rows):
        mine = [r for r in graded if r["unit"] == unit]
        notebook = next(r for r in rows if r["unit"] == unit and r["question"] == NOTEBOOK_ROW)
        got, out_of = sum(int(r["points"]) for r in mine), sum(int(r["max"]) for r in mine)
        lines += [f"## {unit}: {got} / {out_of}", "", "| question | points | status |",
                  "|---|---:|---|"]
        lines += [f"| {r['question']} | {r['points']} / {r['max']} | {r['status']} |" for r in mine]
        lines += ["", f"Notebook: **{notebook['status']}**. {notebook['message']}", ""]
        for r in mine:
            if r["status"] != "passed" and r["message"]:
                lines += [f"### {r['question']}: {r['status']}", "", "```text",
                          r["message"].replace("```", "'''"), "```", ""]
    if ignored:
        lines += ["## Not graded", "", *[f"- {name}: no released assignment has this name"
                                         for name in ignored], ""]
    return "\n".join(lines)


def load_state(path: Path, student: str, units: dict) -> tuple[dict, list[str]]:
    """The finished notebooks recorded in ``path``, and why any entry was dropped.

    An entry is kept only when it has the shape ``save_state`` writes and its rows are those of
    the unit as released now (its questions, their points, 0 or full marks, this student): a
    malformed or edited file costs a re-grade, never the run.
    """
    if not path.exists():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["units"]
        if not isinstance(entries, dict):
            raise TypeError("'units' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {}, [f"{path.name} is unreadable ({type(err).__name__}: {err}); every notebook "
                    "of this student is graded again"]
    kept, problems = {}, []
    for name, entry in entries.items():
        unit = units.get(name)  # a unit not graded in this run is kept as it is, unread
        problem = None if unit is None else _entry_problem(entry, student, unit)
        if problem is None:
            kept[name] = entry
        else:
            problems.append(f"{path.name}: the entry for {name} is not valid ({problem}); "
                            "graded again")
    return kept, problems


def _entry_problem(entry, student: str, unit) -> str | None:
    if not isinstance(entry, dict) or set(entry) != {"fingerprint", "rows", "complete"}:
        return "wrong keys"
    if not isinstance(entry["fingerprint"], str) or not isinstance(entry["complete"], bool):
        return "wrong types"
    rows = entry["rows"]
    expected = [(c.id, c.points) for c in unit.checks] + [(NOTEBOOK_ROW, 0)]
    if not isinstance(rows, list) or len(rows) != len(expected):
        return "wrong number of rows"
    for row, (question, most) in zip(rows, expected):
        if not isinstance(row, dict) or tuple(row) != FIELDS:
            return "a row with the wrong fields"
        if (row["student"], row["unit"], row["question"], row["max"]) != (
                student, unit.stem, question, most):
            return f"a row that is not {student}'s {question}"
        if row["points"] not in (0, most) or type(row["points"]) is not int or \
                not isinstance(row["status"], str) or not isinstance(row["message"], str):
            return f"impossible points or text in {question}"
    return None


def save_state(path: Path, units: dict) -> None:
    write_atomic(path, json.dumps({"version": GRADER_VERSION, "units": units}, indent=1))
