"""Generate student assignments from the solution notebooks.

``solutions/NN_topic.ipynb`` is the single source of truth; ``assignments/NN_topic.ipynb`` is
derived from it, so the two can never disagree on anything but the answers. The generation is a
pure, deterministic function of the solution's bytes, which lets a test regenerate every
assignment and fail when a committed one has drifted.

Conventions, in the solution notebooks:

* In a code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` (markers included)
  become one ``raise NotImplementedError("Question q1: implement this and remove the raise")``,
  indented like the ``BEGIN`` line. Regions may not nest.
* A single line may instead end with ``# SOLUTION``. An assignment keeps its targets and gets
  ``None`` as value (``z = None  # YOUR CODE HERE``); any other statement becomes the raise.
* A cell tagged ``solution-only`` is removed.
* The check cell that grades a question (the code cell after the student's code that calls
  ``gen3d_course.checks``) is tagged ``question:<id>`` and ``points:<positive int>``. The raise
  names the first question at or after its cell.
* Every cell whose code was stripped, and every question cell, is tagged ``raises-exception``:
  in the assignment they raise until the student answers, and nbval must accept that.
* All outputs and execution counts are cleared.

Anything that still spells a marker after stripping (a marker in a markdown cell, or one that is
not alone on its line) is a leak of the answer and stops the generation.
"""
from __future__ import annotations

import ast
import bisect
import copy
import json
import re
from pathlib import Path

import nbformat

RAISES_TAG = "raises-exception"
SOLUTION_ONLY_TAG = "solution-only"
QUESTION_PREFIX = "question:"
POINTS_PREFIX = "points:"
LEAK_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "# SOLUTION")

_BEGIN = re.compile(r"^(\s*)#+\s*BEGIN SOLUTION\b")
_END = re.compile(r"^\s*#+\s*END SOLUTION\b")
_ONE_LINE = re.compile(r"#\s*SOLUTION\s*$")
_QUESTION_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_POINTS = re.compile(r"^[1-9][0-9]*$")


class AssignError(ValueError):
    """A solution notebook that cannot be turned into an assignment safely."""


def _where(cell: int | None, line: int | None = None) -> str:
    parts = ([f"cell {cell}"] if cell is not None else []) + ([f"line {line}"] if line else [])
    return ", ".join(parts) + ": " if parts else ""


def _todo(question: str | None) -> str:
    if question:
        return f"Question {question}: implement this and remove the raise"
    return "Implement this and remove the raise"


def _strip_line(line: str, message: str, where: str) -> str:
    """Blank one ``# SOLUTION`` line; an assignment keeps its targets so later code still reads."""
    indent = line[: len(line) - len(line.lstrip())]
    code = _ONE_LINE.sub("", line).strip()
    try:
        body = ast.parse(code).body
    except SyntaxError:
        raise AssignError(
            f"{where}'# SOLUTION' ends a line that is not a complete statement: {line.strip()!r}. "
            "Wrap multi-line code in '# BEGIN SOLUTION' / '# END SOLUTION'."
        ) from None
    if not body:
        raise AssignError(f"{where}'# SOLUTION' marks a line without code.")
    stmt = body[0]
    value = getattr(stmt, "value", None)
    if len(body) == 1 and isinstance(stmt, (ast.Assign, ast.AnnAssign)) and value is not None:
        targets = code.encode()[: value.col_offset].decode().rstrip()  # col_offset counts bytes
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[-1]
        unpacked = isinstance(target, (ast.Tuple, ast.List)) and not any(
            isinstance(e, ast.Starred) for e in target.elts
        )
        none = ", ".join(["None"] * len(target.elts)) if unpacked else "None"
        return f"{indent}{targets} {none}  # YOUR CODE HERE"
    return f'{indent}raise NotImplementedError("{message}")'


def strip_solution(source: str, *, cell: int | None = None, question: str | None = None) -> str:
    """Replace the solution regions and lines of one code cell's source (see module docstring).

    ``cell`` only labels error messages; ``question`` is named in the generated raise so the
    student knows which check the gap belongs to. A source without markers comes back unchanged.
    """
    message = _todo(question)
    out: list[str] = []
    begin_line = None
    for number, line in enumerate(source.split("\n"), start=1):
        begin = _BEGIN.match(line)
        if begin:
            if begin_line is not None:
                raise AssignError(
                    f"{_where(cell, number)}'# BEGIN SOLUTION' inside the region opened on "
                    f"line {begin_line}; regions cannot nest."
                )
            begin_line = number
            out.append(f'{begin.group(1)}raise NotImplementedError("{message}")')
        elif _END.match(line):
            if begin_line is None:
                raise AssignError(
                    f"{_where(cell, number)}'# END SOLUTION' without a '# BEGIN SOLUTION' before it."
                )
            begin_line = None
        elif begin_line is not None:
            continue
        elif _ONE_LINE.search(line):
            out.append(_strip_line(line, message, _where(cell, number)))
        else:
            out.append(line)
    if begin_line is not None:
        raise AssignError(
            f"{_where(cell, begin_line)}'# BEGIN SOLUTION' has no matching '# END SOLUTION'."
        )
    return "\n".join(out)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def questions(nb: nbformat.NotebookNode) -> list[dict]:
    """The graded questions, ``[{"id": "q1", "points": 2, "cell": index}]`` in notebook order.

    Grading sums these, so a typo in a tag must fail loudly rather than silently drop points.
    """
    found: list[dict] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        tags = _tags(cell)
        ids = [t[len(QUESTION_PREFIX):] for t in tags if t.startswith(QUESTION_PREFIX)]
        points = [t[len(POINTS_PREFIX):] for t in tags if t.startswith(POINTS_PREFIX)]
        if not ids and not points:
            continue
        where = _where(index)
        if len(ids) != 1 or len(points) != 1:
            raise AssignError(
                f"{where}a graded cell needs exactly one '{QUESTION_PREFIX}<id>' and one "
                f"'{POINTS_PREFIX}<n>' tag; it has {tags}."
            )
        qid, pts = ids[0], points[0]
        if not _QUESTION_ID.match(qid):
            raise AssignError(f"{where}question id {qid!r} must be letters, digits, '_', '.' or '-'.")
        if not _POINTS.match(pts):
            raise AssignError(f"{where}points {pts!r} of {qid} must be a positive integer.")
        if cell.cell_type != "code":
            raise AssignError(f"{where}question {qid} must tag its check cell, a code cell.")
        if qid in seen:
            raise AssignError(f"{where}question {qid} is already defined in cell {seen[qid]}.")
        seen[qid] = index
        found.append({"id": qid, "points": int(pts), "cell": index})
    return found


def make_assignment(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return the student version of a solution notebook; ``nb`` itself is left untouched."""
    graded = questions(nb)
    starts = [q["cell"] for q in graded]
    question_cells = set(starts)
    out = nbformat.from_dict(copy.deepcopy(dict(nb)))
    kept = []
    for index, cell in enumerate(out.cells):
        if SOLUTION_ONLY_TAG in _tags(cell):
            continue
        if cell.cell_type == "code":
            after = bisect.bisect_left(starts, index)
            question = graded[after]["id"] if after < len(graded) else None
            source = strip_solution(cell.source, cell=index, question=question)
            if (source != cell.source or index in question_cells) and RAISES_TAG not in _tags(cell):
                cell.metadata["tags"] = _tags(cell) + [RAISES_TAG]
            cell.source = source
            cell.outputs = []
            cell.execution_count = None
        for marker in LEAK_MARKERS:
            if marker in cell.source:
                raise AssignError(
                    f"{_where(index)}the {cell.cell_type} cell still contains {marker!r} after "
                    "stripping: markers only count alone on their line in a code cell."
                )
        kept.append(cell)
    out.cells = kept
    return out


def _read(path: Path) -> nbformat.NotebookNode:
    """Read a notebook; cells without an id get one from their position.

    nbformat would invent random ids for them, and the output must depend on the input only.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("nbformat") == 4 and data.get("nbformat_minor", 0) >= 5:
        for index, cell in enumerate(data.get("cells", [])):
            cell.setdefault("id", f"cell-{index}")
    return nbformat.reads(json.dumps(data), as_version=4)


def _render(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def _generate(solutions_dir) -> dict[str, nbformat.NotebookNode]:
    generated = {}
    for path in sorted(Path(solutions_dir).glob("*.ipynb")):
        try:
            generated[path.name] = make_assignment(_read(path))
        except AssignError as err:
            raise AssignError(f"{path}: {err}") from None
    return generated


def build_assignments(solutions_dir="solutions", assignments_dir="assignments") -> list[Path]:
    """Write one assignment per solution notebook; returns the paths written.

    Every notebook is generated before any is written, so a bad solution leaves the
    assignments as they were.
    """
    generated = _generate(solutions_dir)
    target = Path(assignments_dir)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in generated.items():
        path = target / name
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            nbformat.write(nb, fh, version=4)
        written.append(path)
    return written


def check_assignments_current(solutions_dir="solutions", assignments_dir="assignments") -> list[str]:
    """Names of assignments that differ from a fresh generation, are missing, or have no solution.

    An empty list means the committed assignments are exactly what ``build_assignments`` writes.
    """
    generated = _generate(solutions_dir)
    existing = {p.name: p for p in Path(assignments_dir).glob("*.ipynb")}
    stale = [
        name
        for name, nb in generated.items()
        if name not in existing or existing[name].read_text(encoding="utf-8") != _render(nb)
    ]
    return sorted(stale + [name for name in existing if name not in generated])
