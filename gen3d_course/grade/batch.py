"""The whole grading run: find each student's notebooks, grade the ones not graded yet, write the outputs."""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from . import sandbox
from .constants import GradeError
from .judge import judge, released_namespace
from .outputs import csv_text, feedback_text, load_state, save_state, write_atomic
from .reference import targets, uses
from .run import Settings, remove_stale_runs, run_nbval
from .score import score, unrun_rows
from .units import Unit, load_unit, prepare, read_submission


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
    stations = [[c for c in unit.checks if c.id == what] if role == "check"
                else [c for c in unit.checks if c.hidden]
                for role, what in prepared.roles if role in ("check", "hidden")]
    setup = [source for source, qid in unit.hidden_cells if qid is None]
    verdicts: dict = {}
    salt = os.urandom(16)  # this run's: the checks draw their inputs afresh from it

    def station(index: int, kernel) -> str | None:
        if index >= len(stations):  # a connection the notebook made itself: it judges nothing
            return None
        checks = stations[index]
        verdicts.update(judge(kernel, unit, checks, setup if checks and checks[0].hidden else [],
                              salt))
        rerun = [c for c in checks if not c.hidden and verdicts[c.id].status == "not-data"]
        return rerun[0].source if rerun else None

    run = run_nbval(prepared.notebook, unit.name, settings, station)
    students_code = [(what[0], prepared.notebook.cells[n].source)
                     for n, (role, what) in enumerate(prepared.roles) if role == "student"]
    imports = "\n".join([unit.imports, *setup])  # hidden setup may import too; only imports count
    wanted = {c.id: targets(c.source, imports) for c in unit.checks}
    found = uses(students_code, set().union(*wanted.values()))
    delegated = {qid: "; ".join(found[n] for n in sorted(names & set(found)))
                 for qid, names in wanted.items() if names & set(found)}
    return score(student, unit, prepared, run, settings, verdicts, delegated, note)


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
          rerun: bool = False, units=None, scratch=None, unsafe: bool = False,
          memory_gb: float = 4.0, uses_reference: str = "flag", log=print) -> Result:
    """Grade every ``submissions/<student>/`` folder; write ``out/grades.csv`` and feedback.

    ``units`` restricts grading to those assignment names (default: every assignment that at
    least one student submitted). ``jobs`` notebooks run at once. See the package docstring.
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
    if timeout <= 0 or notebook_timeout <= 0 or jobs < 1 or memory_gb <= 0:
        raise GradeError("timeouts and memory must be positive and jobs at least 1")
    if uses_reference not in ("flag", "zero"):
        raise GradeError(f"uses_reference must be 'flag' or 'zero', not {uses_reference!r}")
    if not unsafe and sandbox.problem():
        raise GradeError(f"no sandbox: {sandbox.problem()}; install bubblewrap (`make sandbox`) "
                         "or pass --unsafe to run notebooks with your own permissions")
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
    for unit in loaded.values():
        released_namespace(unit)
    settings = Settings(timeout=timeout, notebook_timeout=notebook_timeout, scratch=scratch,
                        unsafe=unsafe, memory_gb=memory_gb, uses_reference=uses_reference)
    remove_stale_runs(scratch)
    state_dir = out / "results"
    states = {}
    for s in students:
        states[s], problems = load_state(state_dir / f"{s}.json", s, loaded)
        for problem in problems:
            log(f"warning: {problem}")
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
            save_state(state_dir / f"{student}.json", states[student])
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
    if args.export:
        from .gradescope import export

        archive = export(Path(args.assignments), Path(args.hidden) if args.hidden else None,
                         Path(args.out))
        print(f"wrote the Gradescope autograder {archive} (upload it as the autograder zip)")
        return 0
    if not args.submissions:
        print("gen3d-course grade: name the submissions folder (or use --export)", file=sys.stderr)
        return 2
    try:
        result = grade(args.submissions, assignments=args.assignments, hidden=args.hidden,
                       out=args.out, timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                       jobs=args.jobs, rerun=args.rerun, units=args.unit, unsafe=args.unsafe,
                       memory_gb=args.memory, uses_reference=args.uses_reference)
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
