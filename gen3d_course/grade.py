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
5. This module is also the pytest plugin of that run (``-p gen3d_course.grade``): it writes one
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

import concurrent.futures
import csv
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .assign import AssignError, RAISES_TAG, questions

FIELDS = ("student", "unit", "question", "points", "max", "status", "message")
NOTEBOOK_ROW = "(notebook)"  # not a valid question id, so it can never clash with one
FLOOD_BYTES = 1_000_000  # output of one cell beyond this is reported
MESSAGE_CHARS = 1500
GRADER_VERSION = "1"  # part of every fingerprint: bump it to re-grade everything

# How a notebook run went, most severe first; the (notebook) row shows the worst.
SEVERITY = ("invalid", "missing", "grader-error", "time-limit", "kernel-died", "timeout",
            "tampered", "edited", "errors", "output-flood", "ok")

_ENV_RESULTS = "GEN3D_GRADE_RESULTS"
_ENV_KEY_FD = "GEN3D_GRADE_KEY_FD"
_ENV_NOTEBOOK = "GEN3D_GRADE_NOTEBOOK"
_ENV_RUN = "GEN3D_GRADE_RUN"  # inherited by everything the run starts: finds leftovers to kill


class GradeError(ValueError):
    """The grading run itself cannot start (bad folders, malformed hidden checks)."""


# --- the released assignments and the hidden checks ----------------------------------------


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
    return Unit(reference.name, checks, hidden_cells, dict(nb.metadata.get("kernelspec", {})),
                digest.hexdigest())


# --- one submission -> the notebook that nbval runs ----------------------------------------


@dataclass
class Prepared:
    """A submission made ready for nbval, and what each of its code cells is."""

    notebook: nbformat.NotebookNode
    roles: list[tuple[str, object]]  # per code cell: ("student", (n, first line)) | ("check", id)
    #                                  | ("hidden-setup", n) | ("hidden", id)
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
    """The graded copy of a student's notebook (module docstring, steps 2-3)."""
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
        if index in role_of:
            check = next(c for c in released if c.id == role_of[index])
            out_cells.append(_code(check.source, check.tags))
            roles.append(("check", check.id))
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
            out_cells.append(_code(check.source, check.tags))
            roles.append(("check", check.id))
    setup = 0
    for source, qid in unit.hidden_cells:
        out_cells.append(_code(source, [f"question:{qid}"] if qid else []))
        setup += qid is None
        roles.append(("hidden", qid) if qid else ("hidden-setup", setup))
    graded = nbformat.v4.new_notebook(cells=out_cells)
    if unit.kernelspec:
        graded.metadata["kernelspec"] = unit.kernelspec
    for index, cell in enumerate(graded.cells):
        cell.id = f"graded-{index}"
    return Prepared(graded, roles, edited)


def _code(source: str, tags) -> nbformat.NotebookNode:
    """A clean code cell; check cells never keep raises-exception (a raising check fails)."""
    cell = nbformat.v4.new_code_cell(source)
    tags = [t for t in tags if t != RAISES_TAG] if any(
        t.startswith("question:") for t in tags) else list(tags)
    if tags:
        cell.metadata["tags"] = tags
    return cell


# --- the nbval run ---------------------------------------------------------------------------


@dataclass
class Run:
    records: dict[int, dict]  # code-cell number -> what the plugin reported
    collected: bool
    killed: bool  # by the total time cap
    forged: int  # result lines with a bad signature
    returncode: int | None
    seconds: float
    tail: str


# ``python -m pytest``, minus one optional import: jsonschema (through nbformat) builds an IRI
# grammar at import when rfc3987_syntax is installed, 1-2 CPU seconds per run that nbformat's
# schema never uses. Without it, jsonschema skips that one format checker.
_PYTEST_MAIN = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); import pytest; "
                "sys.exit(pytest.main(sys.argv[1:]))")


class _Tail(threading.Thread):
    """Drain a pipe, keeping only its end: a notebook that floods stdout cannot fill memory."""

    def __init__(self, stream, keep: int = 8000):
        super().__init__(daemon=True)
        self.stream, self.keep, self.data = stream, keep, b""

    def run(self):
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.data = (self.data + chunk)[-self.keep:]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _sign(key: bytes, record: dict) -> str:
    return hmac.new(key, json.dumps(record, sort_keys=True).encode(), "sha256").hexdigest()


def _kill_tree(proc: subprocess.Popen, token: str) -> None:
    """Kill pytest, its kernel and anything the notebook started (found by the run's token)."""
    import psutil

    victims = []
    try:
        parent = psutil.Process(proc.pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        if p.pid == os.getpid() or p in victims:
            continue
        try:
            if p.environ().get(_ENV_RUN) == token:
                victims.append(p)
        except (psutil.Error, OSError):
            continue
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class Settings:
    timeout: float = 300.0  # per cell, as nbval's --nbval-cell-timeout
    notebook_timeout: float = 900.0  # whole notebook, kernel start included
    scratch: str | None = None  # parent of the private run folders (default: the system temp)
    stopping: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C


_SCRATCH_PREFIX = "gen3d-grade-"


def remove_stale_runs(scratch: str | None = None) -> None:
    """Remove the private run folders of graders that were killed (``kill -9``) mid-run.

    A grader killed in the second between writing a graded copy and pytest's collection of it
    would otherwise leave hidden-check sources in the temporary folder.
    """
    import psutil

    for folder in Path(scratch or tempfile.gettempdir()).glob(_SCRATCH_PREFIX + "*"):
        try:
            owner = int((folder / "owner").read_text())  # another user's folder is unreadable
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)


def run_nbval(nb: nbformat.NotebookNode, name: str, settings: Settings) -> Run:
    """Run one graded copy under nbval in a subprocess (module docstring, steps 4-5)."""
    work = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=settings.scratch))
    try:
        (work / "owner").write_text(str(os.getpid()))
        run_dir = work / "run"  # the kernel's working directory: empty once collected
        run_dir.mkdir()
        (work / "pytest.ini").write_text("[pytest]\n")
        results = work / "results.jsonl"
        results.touch()
        notebook = run_dir / name
        with open(notebook, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        key, token = secrets.token_bytes(32), secrets.token_hex(16)
        read_end, write_end = os.pipe()
        # TMPDIR: the kernel's sockets and the notebook's temporary files go where the run's
        # clean-up removes them, even when the run is killed.
        env = dict(os.environ, GEN3D_MODE="fast", OMP_NUM_THREADS="1", TMPDIR=str(work),
                   PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                   **{_ENV_RESULTS: str(results), _ENV_KEY_FD: str(read_end),
                      _ENV_NOTEBOOK: str(notebook), _ENV_RUN: token})
        command = [sys.executable, "-c", _PYTEST_MAIN, "-p", "nbval.plugin", "-p", __name__,
                   "-p", "no:cacheprovider", "-c", str(work / "pytest.ini"), "--rootdir", str(work),
                   "-q", "--tb=no", "-rN", "--color=no", "--nbval-lax", "--nbval-current-env",
                   f"--nbval-cell-timeout={settings.timeout:g}", str(notebook)]
        start = time.monotonic()
        with os.fdopen(write_end, "wb") as key_pipe:
            try:
                proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        pass_fds=(read_end,), start_new_session=True)
            finally:
                os.close(read_end)
            tail = _Tail(proc.stdout)
            tail.start()
            key_pipe.write(key)
        killed = False
        try:  # wait in slices: the time cap and Ctrl-C (another thread) both stop the run
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if settings.stopping.is_set():
                        break
                    if time.monotonic() - start > settings.notebook_timeout:
                        killed = True
                        break
        finally:
            _kill_tree(proc, token)
            tail.join(timeout=5)
            proc.stdout.close()
        seconds = time.monotonic() - start
        records, collected, forged = {}, False, 0
        with open(results, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    record, mac = entry["record"], entry["mac"]
                    genuine = hmac.compare_digest(_sign(key, record), mac)
                except (ValueError, KeyError, TypeError):
                    genuine = False
                if not genuine:
                    forged += 1
                elif record.get("event") == "collected":
                    collected = True
                elif record.get("event") == "cell":
                    cell = record["cell"]
                    if cell not in records or record["phase"] == "call":
                        records[cell] = record
        return Run(records, collected, killed, forged, proc.returncode, seconds, tail.text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the pytest plugin, inside the nbval subprocess ------------------------------------------


def pytest_configure(config):
    """Registered by ``-p gen3d_course.grade``; does nothing outside a grading run."""
    results = os.environ.pop(_ENV_RESULTS, None)
    if not results:
        return
    with os.fdopen(int(os.environ.pop(_ENV_KEY_FD)), "rb") as fh:
        key = fh.read()
    notebook = os.environ.pop(_ENV_NOTEBOOK)
    config.pluginmanager.register(_recorder(results, key, notebook), "gen3d-grade-recorder")
    _detect_dead_kernels()
    from .kernels import use_ipc_kernels_in_nbval

    use_ipc_kernels_in_nbval()  # with --jobs > 1, TCP kernels could race for a port


def _detect_dead_kernels() -> None:
    """Make nbval notice a dead kernel within a second instead of after the whole cell timeout.

    nbval waits for the cell's reply for up to ``--nbval-cell-timeout`` seconds and then for
    output for 5 s more; a kernel that died (``os._exit``, a segfault, the OOM killer) sends
    neither. Waiting in one-second slices and checking that the kernel lives changes when nbval
    gives up, not what it then reports.
    """
    from queue import Empty

    from nbval.kernel import RunningKernel

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Empty
            try:
                msg = self.get_message(stream="shell", timeout=1.0 if left is None else min(1.0, left))
            except Empty:
                if not self.is_alive():
                    self.gen3d_died = True
                    raise
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["content"]["status"] == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                return

    def get_message(self, stream, timeout=None):
        if getattr(self, "gen3d_died", False):  # nothing more will come from a dead kernel
            timeout = 0.5 if timeout is None else min(timeout, 0.5)
        return get_message_of_nbval(self, stream, timeout=timeout)

    get_message_of_nbval = RunningKernel.get_message
    RunningKernel.await_reply = await_reply
    RunningKernel.get_message = get_message


def _recorder(results: str, key: bytes, notebook: str):
    import pytest

    class Recorder:
        def __init__(self):
            self.out = open(results, "a", encoding="utf-8")

        def write(self, record: dict) -> None:
            self.out.write(json.dumps({"record": record, "mac": _sign(key, record)}) + "\n")
            self.out.flush()

        def pytest_collection_finish(self, session):
            # nbval holds the notebook in memory now and no cell has run: the file, hidden
            # checks included, goes before any student code can look for it.
            os.remove(notebook)
            self.write({"event": "collected", "items": len(session.items)})

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(self, item, call):
            report = yield
            if hasattr(item, "cell_num") and (call.when == "call" or (
                    call.when == "setup" and not report.passed)):
                try:
                    self.write(describe(item, call, report))
                except Exception as exc:  # recording must never break the run
                    self.write({"event": "cell", "cell": item.cell_num, "phase": call.when,
                                "passed": False, "kind": "error", "error": "",
                                "message": f"grader could not record this cell: {exc!r}",
                                "output_bytes": 0})
            return report

    return Recorder()


def describe(item, call, report) -> dict:
    """What one nbval cell item did: passed, the kind of failure, its message, output size.

    Kinds: ``ok``; ``error`` (the cell raised); ``timeout`` (this cell hit the per-cell limit);
    ``kernel-died`` (the kernel died while this cell ran); ``kernel-dead`` (it was already gone
    when this cell started); ``setup-error`` (nbval could not start the kernel); ``skipped``.
    """
    parent = item.parent
    kernel = getattr(parent, "kernel", None)
    outputs = getattr(item, "test_outputs", None) or []
    size = sum(len(o.get("text", "")) + len(str(o.get("data", {}).get("text/plain", "")))
               for o in outputs)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    error = ""
    if errors:
        ename, evalue = errors[-1].get("ename", ""), errors[-1].get("evalue", "")
        error = evalue if ename == "CheckFailure" else f"{ename}: {evalue}"
    new_timeout = getattr(parent, "timed_out", False) and not getattr(parent, "gen3d_timeout_seen", False)
    if new_timeout:
        parent.gen3d_timeout_seen = True
    exc = call.excinfo.value if call.excinfo is not None else None
    text = str(exc or "").strip()
    if call.when == "setup":
        kind = "setup-error"
    elif "Kernel dead on test start" in text:
        kind = "kernel-dead"
    elif getattr(kernel, "gen3d_died", False) and not getattr(kernel, "gen3d_reported", False):
        kind, kernel.gen3d_reported = "kernel-died", True
    elif new_timeout:
        kind = "timeout"
    elif report.passed:  # an xfail (nbval's mark after a timeout) that passed, passed
        kind = "ok"
    elif report.skipped and not hasattr(report, "wasxfail"):  # NBVAL_SKIP
        kind = "skipped"
    else:
        kind = "error"
    return {"event": "cell", "cell": item.cell_num, "phase": call.when, "passed": report.passed,
            "kind": kind, "error": error, "message": text.splitlines()[0] if text else "",
            "alive": bool(kernel is not None and kernel.is_alive()), "output_bytes": size}


# --- scoring ---------------------------------------------------------------------------------


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
          note: str = "") -> list[dict]:
    """Turn nbval's per-cell results into rows (module docstring, step 6)."""
    issues: dict[str, list[str]] = {}

    def where(number: int) -> str:
        role, what = prepared.roles[number]
        if role == "student":
            return f"code cell {what[0]} (`{what[1]}`)"
        if role == "hidden-setup":
            return f"hidden setup cell {what}"
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
        elif prepared.roles[number][0] in ("student", "hidden-setup") and kind in ("ok", "error") \
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

    cell_of = {what: n for n, (role, what) in enumerate(prepared.roles) if role in ("check", "hidden")}
    status_by_check = {}
    for check in unit.checks:
        record = run.records.get(cell_of[check.id])
        kind = record["kind"] if record else None
        if record is None:
            status, message = "not-run", (
                f"not reached: the notebook was stopped at its {settings.notebook_timeout:g} s "
                "time limit" if run.killed else "not run (see the notebook row)")
        elif kind == "ok":
            status, message = "passed", ""
        elif kind == "timeout":
            status, message = "timeout", f"the check did not finish within {settings.timeout:g} s"
        elif kind == "kernel-died":
            status, message = "kernel-died", "the kernel died while this check ran"
        elif kind == "kernel-dead" and stop is not None:
            status, message = ("kernel-died" if stop[0] == "kernel-died" else "not-run",
                               f"not run: {stop[1]}")
        elif kind in ("kernel-dead", "setup-error", "skipped"):
            status, message = "not-run", f"not run: {record['message'] or kind}"
        else:
            status, message = "failed", record["error"] or record["message"] or "the check failed"
        points = check.points if status == "passed" else 0
        if check.id in prepared.edited:
            message = f"{prepared.edited[check.id]}; with it, the check {status}" + (
                f": {message}" if message else "")
            status = "edited"
        status_by_check[check.id] = (points, status, message)

    worst = next((s for s in SEVERITY if s in issues), "ok")
    parts = [note] if note else []
    for kind in sorted(issues, key=SEVERITY.index):
        texts = issues[kind]
        parts.append("; ".join(texts[:3]) + (f"; and {len(texts) - 3} more" if len(texts) > 3 else ""))
    parts.append(f"ran in {run.seconds:.0f} s")
    return _rows(student, unit, status_by_check, worst, ". ".join(parts))


def grade_notebook(student: str, unit: Unit, path: Path | None, settings: Settings,
                   note: str = "") -> list[dict]:
    """Rows for one student's notebook of one unit (``path`` None: not submitted)."""
    if path is None:
        return unrun_rows(student, unit, "missing", note or f"no {unit.name} in the submission")
    try:
        nb = read_submission(path)
    except ValueError as err:
        return unrun_rows(student, unit, "invalid", f"{path.name}: {err}")
    prepared = prepare(unit, nb)
    run = run_nbval(prepared.notebook, unit.name, settings)
    return score(student, unit, prepared, run, settings, note)


# --- finding the submissions -----------------------------------------------------------------


def notebooks_in(folder: Path) -> list[Path]:
    """A student's notebooks, sub-folders included, without hidden ones (.ipynb_checkpoints)."""
    return sorted(p for p in folder.rglob("*.ipynb") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def find_notebook(folder: Path, files: list[Path], name: str,
                  others: set[str]) -> tuple[Path | None, str]:
    """The student's file for assignment ``name``, and a note when it was not an exact match."""
    exact = sorted((p for p in files if p.name == name), key=lambda p: (len(p.parts), str(p)))
    if exact:
        if len(exact) > 1 and len(exact[0].parts) == len(exact[1].parts):
            return None, f"ambiguous: several {name} in the submission"
        return exact[0], ""
    stem = Path(name).stem
    close = [p for p in files if p.name not in others and re.match(
        re.escape(stem) + r"(?![A-Za-z0-9])", p.stem)]
    if len(close) == 1:
        return close[0], f"graded {close[0].relative_to(folder)} as {name}"
    if close:
        names = ", ".join(sorted(str(p.relative_to(folder)) for p in close))
        return None, f"ambiguous: {names} could each be {name}"
    return None, ""


def _file_digest(path: Path | None, note: str) -> str:
    h = hashlib.sha256(note.encode())
    if path is not None:
        try:
            h.update(b"\0" + str(path.name).encode() + b"\0" + path.read_bytes())
        except OSError as err:
            h.update(f"unreadable: {err}".encode())
    return h.hexdigest()


# --- outputs ---------------------------------------------------------------------------------


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


# --- the whole run ---------------------------------------------------------------------------


@dataclass
class Result:
    rows: list[dict]  # everything in grades.csv
    graded: list[tuple[str, str]]  # (student, unit) run in this call
    cached: list[tuple[str, str]]  # (student, unit) taken from an earlier run
    out: Path


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def grade(submissions, *, assignments="assignments", hidden=None, out="grades",
          timeout: float = 300.0, notebook_timeout: float = 900.0, jobs: int = 1,
          rerun: bool = False, units=None, scratch=None, log=print) -> Result:
    """Grade every ``submissions/<student>/`` folder; write ``out/grades.csv`` and feedback.

    ``units`` restricts grading to those assignment names (default: every assignment that at
    least one student submitted). ``jobs`` notebooks run at once. See the module docstring.
    """
    submissions, assignments, out = Path(submissions), Path(assignments), Path(out)
    hidden = Path(hidden) if hidden is not None else None
    if not submissions.is_dir():
        raise GradeError(f"{submissions} is not a folder of student folders")
    if not assignments.is_dir():
        raise GradeError(f"{assignments} is not a folder of released assignments")
    if _inside(out, submissions):
        raise GradeError(f"--out {out} must not be inside the submissions folder {submissions}")
    if hidden is not None:
        if not hidden.is_dir():
            raise GradeError(f"--hidden {hidden} is not a folder")
        if _inside(hidden, submissions) or _inside(hidden, out):
            raise GradeError(f"--hidden {hidden} must be outside the submissions and --out folders")
    if timeout <= 0 or notebook_timeout <= 0 or jobs < 1:
        raise GradeError("timeouts must be positive and jobs at least 1")
    released = {p.name: p for p in sorted(assignments.glob("*.ipynb"))}
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise GradeError(f"{submissions} holds no student folder")
    files = {s: notebooks_in(submissions / s) for s in students}
    found = {s: {name: find_notebook(submissions / s, files[s], name, set(released) - {name})
                 for name in released} for s in students}
    if units:
        names = [u if u.endswith(".ipynb") else u + ".ipynb" for u in units]
        unknown = [n for n in names if n not in released]
        if unknown:
            raise GradeError(f"no released assignment {', '.join(unknown)} in {assignments}")
    else:
        names = [n for n in released if any(found[s][n][0] for s in students)]
        if not names:
            raise GradeError(f"no submitted notebook matches an assignment in {assignments}")
    loaded = {n: load_unit(released[n], hidden / f"{Path(n).stem}.py" if hidden else None)
              for n in names}
    if hidden is not None:
        for extra in sorted(set(p.stem for p in hidden.glob("*.py")) - {Path(n).stem for n in released}):
            log(f"warning: {hidden / (extra + '.py')} matches no released assignment")
    settings = Settings(timeout=timeout, notebook_timeout=notebook_timeout, scratch=scratch)
    remove_stale_runs(scratch)
    state_dir = out / "results"
    states = {s: _load_state(state_dir / f"{s}.json") for s in students}
    fingerprints = {(s, n): hashlib.sha256(
        (loaded[n].fingerprint + _file_digest(*found[s][n])).encode()).hexdigest()
        for s in students for n in names}
    todo = {s: [n for n in names if rerun or not states[s].get(n, {}).get("complete")
                or states[s][n].get("fingerprint") != fingerprints[s, n]] for s in students}
    graded = [(s, Path(n).stem) for s in students for n in todo[s]]
    cached = [(s, Path(n).stem) for s in students for n in names if n not in todo[s]]
    for s, u in cached:
        log(f"{s} {u}: already graded (use --rerun to grade again)")

    def rows_now() -> list[dict]:
        return [row for s in students for n in names
                if states[s].get(n, {}).get("fingerprint") == fingerprints[s, n]
                for row in states[s][n]["rows"]]

    def publish(student: str) -> None:
        rows = rows_now()
        write_atomic(out / "grades.csv", csv_text(rows))
        used = {found[student][n][0] for n in names}
        ignored = [p.name for p in files[student] if p.name not in released and p not in used]
        write_atomic(out / "feedback" / f"{student}.md",
                     feedback_text(student, [r for r in rows if r["student"] == student], ignored))

    def work(student: str) -> str:
        for name in todo[student]:
            if settings.stopping.is_set():
                raise KeyboardInterrupt
            path, note = found[student][name]
            try:
                rows = grade_notebook(student, loaded[name], path, settings, note)
            except Exception as err:  # a fault of the grader: shown, retried by the next run
                rows = unrun_rows(student, loaded[name], "grader-error",
                                  f"the grader failed on this notebook: {type(err).__name__}: {err}")
            if settings.stopping.is_set():  # killed by the interrupt: not a result
                raise KeyboardInterrupt
            states[student][name] = {"fingerprint": fingerprints[student, name], "rows": rows,
                                     "complete": rows[-1]["status"] != "grader-error"}
            _save_state(state_dir / f"{student}.json", states[student])
            got = sum(r["points"] for r in rows)
            most = sum(r["max"] for r in rows)
            log(f"{student} {Path(name).stem}: {got}/{most} ({rows[-1]['status']}: {rows[-1]['message']})")
        return student

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = [pool.submit(work, s) for s in students if todo[s]]
        for s in students:
            if not todo[s]:
                publish(s)
        for future in concurrent.futures.as_completed(futures):
            publish(future.result())
        write_atomic(out / "grades.csv", csv_text(rows_now()))
    except BaseException:
        settings.stopping.set()  # each running notebook is killed within half a second
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return Result(rows_now(), graded, cached, out)


def _load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["units"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_state(path: Path, units: dict) -> None:
    write_atomic(path, json.dumps({"version": GRADER_VERSION, "units": units}, indent=1))


def main_grade(args) -> int:
    """The ``gen3d-course grade`` command."""
    try:
        import nbval  # noqa: F401  (the grader runs notebooks with it)
        import psutil  # noqa: F401
    except ImportError as err:
        print(f"gen3d-course grade: {err.name} is missing; install the test extra: "
              "pip install -e '.[test]'", file=sys.stderr)
        return 2
    def stop(signum, frame):  # `kill` as well as Ctrl-C: stop the notebooks, keep grades.csv whole
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        result = grade(args.submissions, assignments=args.assignments, hidden=args.hidden,
                       out=args.out, timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                       jobs=args.jobs, rerun=args.rerun, units=args.unit)
    except GradeError as err:
        print(f"gen3d-course grade: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ngen3d-course grade: interrupted; grades.csv holds the notebooks finished so far. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    students = sorted({r["student"] for r in result.rows})
    print(f"graded {len(result.graded)} notebook(s), {len(result.cached)} already graded; "
          f"wrote {result.out / 'grades.csv'} ({len(result.rows)} rows) and "
          f"{len(students)} feedback file(s) in {result.out / 'feedback'}")
    return 0
