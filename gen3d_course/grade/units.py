"""The released assignment and hidden checks of a unit, and a submission made ready for nbval."""
from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..assign import AssignError, RAISES_TAG, questions
from .constants import GRADER_VERSION, STATION, GradeError



@dataclass(frozen=True)
class Check:
    id: str
    points: int
    source: str
    tags: tuple[str, ...]
    cell_id: str | None
    hidden: bool = False

    @property
    def checksum(self) -> str:
        return _checksum(self.source, self.tags)


@dataclass
class Unit:
    name: str  # file name, e.g. 01_vae.ipynb
    checks: list[Check]  # released checks in notebook order, then hidden ones
    hidden_cells: list[tuple[str, str | None]]  # (source, question id or None for setup)
    kernelspec: dict
    fingerprint: str  # of the released assignment and the hidden checks
    imports: str = ""  # the released assignment's top-level imports, run in the grader for its checks

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def _graded_tags(tags) -> list[str]:
    """The tags that matter to grading: ``raises-exception`` is dropped from check cells anyway
    (a solution's check cells lack it, an assignment's have it)."""
    return sorted(set(tags) - {RAISES_TAG})


def _checksum(source: str, tags) -> str:
    return hashlib.sha256(json.dumps([source, _graded_tags(tags)]).encode()).hexdigest()


def _tags(cell) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


_CELL_HEADER = re.compile(r"^# %%(.*)$")
_HEADER_TAGS = re.compile(r"tags\s*=\s*(\[[^\]]*\])")


def parse_hidden(text: str, where: str = "hidden checks") -> list[tuple[str, list[str]]]:
    """Split a jupytext percent-format file into code cells: ``[(source, tags)]``.

    ``[markdown]`` cells are dropped; code before the first ``# %%`` is a setup cell.
    """
    cells: list[tuple[str, list[str], bool]] = []
    lines: list[str] = []
    tags: list[str] = []
    markdown = False
    for number, line in enumerate(text.splitlines(), start=1):
        header = _CELL_HEADER.match(line)
        if not header:
            lines.append(line)
            continue
        cells.append(("\n".join(lines).strip("\n"), tags, markdown))
        rest = header.group(1)
        markdown = "[markdown]" in rest or "[md]" in rest
        found = _HEADER_TAGS.search(rest)
        try:
            tags = json.loads(found.group(1)) if found else []
        except json.JSONDecodeError as err:
            raise GradeError(f"{where}, line {number}: tags must be a JSON list: {err}") from None
        if not all(isinstance(t, str) for t in tags):
            raise GradeError(f"{where}, line {number}: tags must be strings, got {tags}")
        lines = []
    cells.append(("\n".join(lines).strip("\n"), tags, markdown))
    return [(source, tags) for source, tags, md in cells if not md and (source.strip() or tags)]


def load_unit(reference: Path, hidden: Path | None = None) -> Unit:
    """The graded questions of one released assignment, plus its hidden checks if any."""
    data = reference.read_bytes()
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    try:
        graded = questions(nb)
    except AssignError as err:
        raise GradeError(f"{reference}: {err}") from None
    if not graded:
        raise GradeError(f"{reference}: no cell is tagged question:<id> and points:<n>")
    checks = []
    for q in graded:
        cell = nb.cells[q["cell"]]
        checks.append(Check(q["id"], q["points"], cell.source, tuple(_tags(cell)), cell.get("id")))
    hidden_cells: list[tuple[str, str | None]] = []
    digest = hashlib.sha256(GRADER_VERSION.encode() + b"\0" + data)
    if hidden is not None and hidden.exists():
        text = hidden.read_text(encoding="utf-8")
        digest.update(b"\0hidden\0" + text.encode())
        cells = parse_hidden(text, str(hidden))
        as_nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells])
        try:
            hidden_questions = {q["cell"]: q for q in questions(as_nb)}
        except AssignError as err:
            raise GradeError(f"{hidden}: {err.args[0].replace('cell ', 'hidden cell ', 1)}") from None
        for index, (source, tags) in enumerate(cells):
            q = hidden_questions.get(index)
            if q and any(c.id == q["id"] for c in checks):
                raise GradeError(f"{hidden}: question {q['id']} is already a question of "
                                 f"{reference.name}; hidden checks need their own ids")
            if q:
                checks.append(Check(q["id"], q["points"], source, tuple(tags), None, hidden=True))
            hidden_cells.append((source, q["id"] if q else None))
    question_cells = {q["cell"] for q in graded}
    imports = released_imports([c.source for i, c in enumerate(nb.cells)
                                if c.cell_type == "code" and i not in question_cells])
    return Unit(reference.name, checks, hidden_cells, dict(nb.metadata.get("kernelspec", {})),
                digest.hexdigest(), imports)


def released_imports(sources: list[str]) -> str:
    """The top-level ``import`` statements of the released cells (IPython magics allowed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    from .reference import AST_LOCK

    transform = TransformerManager().transform_cell
    statements = []
    with AST_LOCK:
        for source in sources:
            try:
                tree = ast.parse(transform(source))
            except SyntaxError:
                continue
            statements += [ast.unparse(n) for n in tree.body
                           if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(statements)


# --- one submission -> the notebook that nbval runs ----------------------------------------


@dataclass
class Prepared:
    """A submission made ready for nbval, and what each of its code cells is."""

    notebook: nbformat.NotebookNode
    roles: list[tuple[str, object]]  # per code cell: ("student", (n, first line)), or a harness
    #                                  cell: ("check", id) | ("hidden", None)
    edited: dict[str, str] = field(default_factory=dict)  # question id -> what was changed


def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 60 else line[:57] + "..."


def read_submission(path: Path) -> nbformat.NotebookNode:
    """Parse a submitted notebook; raises ValueError with a short reason when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as err:
        raise ValueError(f"cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text: {err.reason}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError("valid JSON, but not a notebook (no list of cells)")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises several types for malformed notebooks
        raise ValueError(f"not a readable notebook: {type(err).__name__}: {err}") from None


def prepare(unit: Unit, nb: nbformat.NotebookNode) -> Prepared:
    """The graded copy of a student's notebook (package docstring, step 1)."""
    cells = [c for c in nb.cells if c.get("cell_type") == "code"]
    for cell in cells:
        cell.setdefault("source", "")
    released = [c for c in unit.checks if not c.hidden]
    ids = {c.id for c in released}
    found: dict[str, int] = {}
    for check in released:
        tagged = [i for i, c in enumerate(cells) if f"question:{check.id}" in _tags(c)]
        by_id = [i for i, c in enumerate(cells) if check.cell_id and c.get("id") == check.cell_id]
        by_source = [i for i, c in enumerate(cells) if c.source == check.source]
        for candidates in (tagged, by_id, by_source):
            free = [i for i in candidates if i not in found.values()]
            if len(free) == 1 or (free and candidates is by_source):
                found[check.id] = free[0]
                break
    edited: dict[str, str] = {}
    for check in released:
        if check.id not in found:
            edited[check.id] = "check cell deleted; the released check ran at the end"
            continue
        cell = cells[found[check.id]]
        if _checksum(cell.source, _tags(cell)) != check.checksum:
            what = [w for w, same in (("source", cell.source == check.source),
                                      ("tags", _graded_tags(_tags(cell)) == _graded_tags(check.tags)))
                    if not same]
            edited[check.id] = f"check cell {' and '.join(what)} edited; the released check ran instead"
    role_of = {index: qid for qid, index in found.items()}
    out_cells, roles = [], []
    for index, cell in enumerate(cells):
        if index in role_of:  # the check itself runs in the grader (judge.py); here, its harness
            out_cells.append(_code(STATION, []))
            roles.append(("check", role_of[index]))
            continue
        tags = _tags(cell)
        stray = [t for t in tags if t.startswith(("question:", "points:"))]
        for tag in stray:  # a question tag copied onto another cell: it grades nothing
            qid = tag.removeprefix("question:")
            if qid in ids and qid not in edited:
                edited[qid] = "question tag copied onto another cell; only the released check counts"
        out_cells.append(_code(cell.source, [t for t in tags if t not in stray]))
        roles.append(("student", (index + 1, _first_line(cell.source))))
    for check in released:
        if check.id not in found:
            out_cells.append(_code(STATION, []))
            roles.append(("check", check.id))
    if unit.hidden_cells:  # the hidden checks never enter the kernel: one harness cell serves them
        out_cells.append(_code(STATION, []))
        roles.append(("hidden", None))
    graded = nbformat.v4.new_notebook(cells=out_cells)
    if unit.kernelspec:
        graded.metadata["kernelspec"] = unit.kernelspec
    for index, cell in enumerate(graded.cells):
        cell.id = f"graded-{index}"
    return Prepared(graded, roles, edited)


def _code(source: str, tags) -> nbformat.NotebookNode:
    """A clean code cell."""
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell

