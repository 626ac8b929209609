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


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
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


def load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["units"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save_state(path: Path, units: dict) -> None:
    write_atomic(path, json.dumps({"version": GRADER_VERSION, "units": units}, indent=1))
