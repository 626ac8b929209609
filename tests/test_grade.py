"""The grader: one real `grade` run over a fixture class of submissions (correct, untouched,
partly right, crashing, looping, kernel-killing, print-flooding, over the time cap, invalid JSON,
edited checks, missing), then resume, interruption and secrecy checks on its outputs."""
import csv
import io
import json
import math
import os
import shutil
import socket
import struct
import threading
import time
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gen3d_course.grade import batch as grader
from gen3d_course.assign import make_assignment
from gen3d_course.cli import main
from gen3d_course.grade import (NOTEBOOK_ROW, GradeError, Run, csv_text, grade, load_unit,
                                parse_hidden, prepare, remove_stale_runs, write_atomic)
from gen3d_course.grade import sandbox
from gen3d_course.grade.constants import STATION
from gen3d_course.grade.judge import Verdict
from gen3d_course.grade.reference import targets, uses
from gen3d_course.grade.wire import InvalidData, NotData, decode, encode, receive, send

ROOT = Path(__file__).resolve().parents[1]
UNIT = "07_toy.ipynb"
MARKER = "HIDDEN-" + "SOURCE-7c1e"  # built at run time so no notebook spells it
SQUARE = "def square(x):\n    return x * x"
SCALE = "def scale(x, k):\n    return x * k"
CLAMP = "def clamp01(x):\n    return x.clamp(0, 1)"
CELL_TIMEOUT = 20  # s; importing torch alone can take 8 s on a loaded machine
CAP = 20  # s, the time cap of the torch-free notebook that never stops


def code(source, *tags):
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def check(fn, reference, inputs, qid, points):
    return code(f"check_function({fn}, {reference}, lambda g: {inputs}, name={fn!r})",
                f"question:{qid}", f"points:{points}")


def solution() -> nbformat.NotebookNode:
    nb = new_notebook(cells=[
        new_markdown_cell("# Toy unit"),
        code("import torch\nfrom gen3d_course.checks import check_function"),
        code("def square(x):\n    # BEGIN SOLUTION\n    return x * x\n    # END SOLUTION"),
        check("square", "lambda x: x ** 2", "(torch.randn(4, generator=g),)", "q1", 2),
        code("def scale(x, k):\n    return x * k  # SOLUTION"),
        check("scale", "lambda x, k: x * k", "(torch.randn(3, generator=g), 2.5)", "q2", 1),
        code("def clamp01(x):\n    # BEGIN SOLUTION\n    return x.clamp(0, 1)\n    # END SOLUTION"),
        check("clamp01", "lambda x: x.clamp(0, 1)", "(torch.randn(5, generator=g),)", "q3", 3),
    ])
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    return nb


HIDDEN = f"""# %%
import torch as _torch  # {MARKER}

# %% [markdown]
# Larger inputs than the visible check uses.

# %% tags=["question:q1_large", "points:2"]
check_function(square, lambda x: x ** 2, lambda g: (_torch.randn(50, generator=g) * 1e3,),
               name="square on large inputs")
"""
# cells of the assignment: 0 md, 1 imports, 2 square, 3 q1, 4 scale, 5 q2, 6 clamp01, 7 q3


def submission(assignment, answers=None, insert=(), edit=None):
    """A copy of the assignment: answers put in, then ``edit`` applied, then cells inserted."""
    nb = nbformat.from_dict(json.loads(nbformat.writes(assignment)))
    for index, source in (answers or {}).items():
        nb.cells[index].source = source
    if edit:
        edit(nb)
    for index, cell in sorted(insert, key=lambda pair: -pair[0]):
        nb.cells.insert(index, cell)
    return nb


def time_cap_course(root):
    """A torch-free unit whose one submission ignores interrupts and prints forever."""
    nb = new_notebook(cells=[code("answer = 42  # SOLUTION"),
                             code("assert answer == 42", "question:q1", "points:1"),
                             code("assert answer > 0", "question:q2", "points:1")])
    assignment = make_assignment(nb)
    (root / "assignments").mkdir(parents=True)
    nbformat.write(assignment, root / "assignments" / "08_cap.ipynb")
    (root / "subs" / "stuck").mkdir(parents=True)
    nbformat.write(submission(assignment, {0: "answer = 42"}, insert=[(2, code(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "while True:\n    print('.', end='', flush=True)\n    time.sleep(0.02)"))]),
        root / "subs" / "stuck" / "08_cap.ipynb")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Build the fixture course and grade every student in one run (the time-cap course runs
    beside it, in a thread); return the paths and results."""
    if sandbox.problem():
        pytest.skip(f"no sandbox: {sandbox.problem()} (make sandbox)")
    root = tmp_path_factory.mktemp("course")
    assignments, subs, hidden, scratch = (root / d for d in ("assignments", "subs", "hidden", "scratch"))
    for d in (assignments, subs, hidden, scratch):
        d.mkdir()
    assignment = make_assignment(solution())
    nbformat.write(assignment, assignments / UNIT)
    (hidden / "07_toy.py").write_text(HIDDEN)
    all_right = {2: SQUARE, 4: SCALE, 6: CLAMP}

    def edit_checks(nb):
        nb.cells[3].source = "True  # the check is fine, trust me"
        nb.cells[5].metadata["tags"] = ["question:q2", "points:10", "raises-exception"]
        del nb.cells[7]  # the q3 check cell

    forge = {"event": "cell", "cell": 2, "phase": "call", "passed": True, "kind": "ok",
             "error": "", "message": "", "alive": True, "output_bytes": 0}
    notebooks = {
        "correct": submission(assignment, all_right),
        "untouched": assignment,
        "partial": submission(assignment, {2: SQUARE, 4: "def scale(x, k):\n    return x + k"},
                              insert=[(8, code(  # a spy: what can the notebook see?
            "import json, os\n"
            f"marker = {MARKER[:7]!r} + {MARKER[7:]!r}\n"
            "tops = {os.getcwd(), os.path.dirname(os.getcwd()), '/tmp'}\n"
            "hits = [os.path.join(d, f) for top in tops for d, _, files in os.walk(top)\n"
            "        for f in files if os.path.isfile(os.path.join(d, f))  # not the kernel's sockets\n"
            "        and marker.encode() in open(os.path.join(d, f), 'rb').read()]\n"
            f"seen = [p for p in {[str(root / d) for d in ('hidden', 'subs', 'out', 'assignments')]!r} if os.path.exists(p)]\n"
            "raise RuntimeError('SPY' + json.dumps({'hits': hits, 'seen': seen}))"))]),
        "crash": submission(
            assignment, {2: SQUARE, 4: "def scale(x, k):\n    raise ValueError('oops')", 6: CLAMP},
            insert=[(2, code("settings = {}\nsettings['lr']")),
                    (4, code("for i in range(60_000):\n    print('spam ' * 10)")),
                    (8, code("import os\nos._exit(1)"))]),
        "loop": submission(assignment, {2: SQUARE, 6: CLAMP, 4: (
            "import time\ndef scale(x, k):\n    while True:\n        time.sleep(0.05)")}),
        "edited": submission(
            assignment, {2: "def square(x):\n    return x + x", 4: SCALE, 6: CLAMP}, edit=edit_checks,
            insert=[(2, code("import json\nwith open('../results.jsonl', 'a') as fh:\n"
                             f"    fh.write(json.dumps({{'record': {forge!r}, 'mac': '0' * 64}}) + '\\n')"))]),
    }
    for student, nb in notebooks.items():
        (subs / student).mkdir()
        nbformat.write(nb, subs / student / UNIT)
    (subs / "invalid").mkdir()
    (subs / "invalid" / UNIT).write_text(nbformat.writes(assignment)[:-300])
    (subs / "missing").mkdir()
    nbformat.write(assignment, subs / "missing" / "homework.ipynb")
    # a lone copy with another name is accepted, with a note
    os.rename(subs / "partial" / UNIT, subs / "partial" / "07_toy (1).ipynb")

    cap = root / "cap"
    time_cap_course(cap)
    capped = {}
    beside = threading.Thread(target=lambda: capped.update(result=grade(
        cap / "subs", assignments=cap / "assignments", out=cap / "out", timeout=5,
        notebook_timeout=CAP, scratch=scratch, log=lambda line: None)))
    beside.start()
    result = grade(subs, assignments=assignments, hidden=hidden, out=root / "out",
                   timeout=CELL_TIMEOUT, notebook_timeout=120, jobs=4, scratch=scratch,
                   log=lambda line: None)
    beside.join()
    return {"root": root, "subs": subs, "assignments": assignments, "hidden": hidden,
            "scratch": scratch, "out": root / "out", "result": result,
            "cap": capped["result"]}


def table(course) -> dict:
    with open(course["out"] / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {(r["student"], r["question"]): r for r in rows}


def total(rows, student):
    return sum(int(r["points"]) for (s, q), r in rows.items() if s == student)


def statuses(rows, student):
    return {q: r["status"] for (s, q), r in rows.items() if s == student}


def test_csv_has_one_row_per_question_and_notebook(course):
    with open(course["out"] / "grades.csv", newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["student", "unit", "question", "points", "max", "status", "message"]
        rows = list(reader)
    students = sorted(p.name for p in course["subs"].iterdir())
    assert len(rows) == len(students) * 5  # q1 q2 q3 q1_large + (notebook)
    maxima = {r[2]: int(r[4]) for r in rows}
    assert maxima == {"q1": 2, "q2": 1, "q3": 3, "q1_large": 2, NOTEBOOK_ROW: 0}
    assert {r[1] for r in rows} == {"07_toy"}


def test_correct_scores_full_marks_and_untouched_zero(course):
    rows = table(course)
    assert total(rows, "correct") == 8
    assert statuses(rows, "correct") == {"q1": "passed", "q2": "passed", "q3": "passed",
                                         "q1_large": "passed", NOTEBOOK_ROW: "ok"}
    assert total(rows, "untouched") == 0
    assert {q: s for q, s in statuses(rows, "untouched").items() if q != NOTEBOOK_ROW} == dict.fromkeys(
        ["q1", "q2", "q3", "q1_large"], "failed")
    assert "square not implemented yet" in rows["untouched", "q1"]["message"]


def test_partly_right_scores_exactly_its_right_questions(course):
    rows = table(course)
    assert {q: int(r["points"]) for (s, q), r in rows.items() if s == "partial"} == {
        "q1": 2, "q2": 0, "q3": 0, "q1_large": 2, NOTEBOOK_ROW: 0}
    assert "values differ from the reference" in rows["partial", "q2"]["message"]
    assert "clamp01 not implemented yet" in rows["partial", "q3"]["message"]
    assert "graded 07_toy (1).ipynb as 07_toy.ipynb" in rows["partial", NOTEBOOK_ROW]["message"]


def test_crash_flood_and_dead_kernel_are_graded_around_and_named(course):
    rows = table(course)
    assert statuses(rows, "crash") == {"q1": "passed", "q2": "failed", "q3": "passed",
                                       "q1_large": "kernel-died", NOTEBOOK_ROW: "kernel-died"}
    assert total(rows, "crash") == 5
    assert "scale raised ValueError" in rows["crash", "q2"]["message"]
    assert rows["crash", "q1_large"]["message"] == "not run: the kernel died in code cell 10 (`import os`)"
    notebook = rows["crash", NOTEBOOK_ROW]["message"]
    assert "the kernel died in code cell 10 (`import os`)" in notebook
    assert "code cell 2 (`settings = {}`) raised KeyError: 'lr'" in notebook
    assert "code cell 5 (`for i in range(60_000):`) printed 3.1 MB" in notebook


def test_infinite_loop_times_out_and_later_cells_still_count(course):
    rows = table(course)
    assert statuses(rows, "loop") == {"q1": "passed", "q2": "timeout", "q3": "passed",
                                      "q1_large": "passed", NOTEBOOK_ROW: "timeout"}
    assert total(rows, "loop") == 7
    assert rows["loop", "q2"]["message"] == f"the check did not finish within {CELL_TIMEOUT} s"
    assert (f"the check of q2 exceeded the {CELL_TIMEOUT} s per-cell limit"
            in rows["loop", NOTEBOOK_ROW]["message"])


def test_time_cap_stops_a_notebook_that_ignores_interrupts(course):
    rows = {r["question"]: r for r in course["cap"].rows}
    assert {q: r["status"] for q, r in rows.items()} == {
        "q1": "passed", "q2": "not-run", NOTEBOOK_ROW: "time-limit"}
    assert rows["q2"]["message"] == f"not reached: the notebook was stopped at its {CAP} s time limit"
    assert psutil.Process().children(recursive=True) == [], "pytest, kernels and loops are gone"


def test_invalid_and_missing_notebooks_score_zero_with_the_reason(course):
    rows = table(course)
    assert set(statuses(rows, "invalid").values()) == {"invalid"}
    assert "not valid JSON" in rows["invalid", "q1"]["message"]
    assert set(statuses(rows, "missing").values()) == {"missing"}
    feedback = (course["out"] / "feedback" / "missing.md").read_text()
    assert "homework.ipynb: no released assignment has this name" in feedback


def test_edited_checks_are_flagged_and_graded_with_the_released_cells(course):
    rows = table(course)
    assert statuses(rows, "edited") == {"q1": "edited", "q2": "edited", "q3": "edited",
                                        "q1_large": "failed", NOTEBOOK_ROW: "edited"}
    assert {q: int(r["points"]) for (s, q), r in rows.items() if s == "edited"} == {
        "q1": 0, "q2": 1, "q3": 3, "q1_large": 0, NOTEBOOK_ROW: 0}  # q2 is worth 1, not 10
    assert rows["edited", "q1"]["message"].startswith(
        "check cell source edited; the released check ran instead; with it, the check failed: "
        "square: values differ")
    assert "check cell tags edited" in rows["edited", "q2"]["message"]
    assert "check cell deleted" in rows["edited", "q3"]["message"]
    notebook = rows["edited", NOTEBOOK_ROW]["message"]
    # the results file is outside the sandbox: the forged line went to the sandbox's private /tmp
    assert "not written by the grader" not in notebook, notebook
    assert "check cells differ from the released ones: q1, q2, q3" in notebook


def test_feedback_lists_totals_and_failing_messages(course):
    text = (course["out"] / "feedback" / "partial.md").read_text()
    assert "**Total: 4 / 8 points**" in text
    assert "| q2 | 0 / 1 | failed |" in text and "### q2: failed" in text
    assert "values differ from the reference" in text
    assert "### q1:" not in text, "passing checks need no message"


def test_hidden_sources_are_never_where_student_code_can_read_them(course):
    message = table(course)["partial", NOTEBOOK_ROW]["message"]
    spy = json.loads(message[message.index("SPY") + 3:message.index("}") + 1])
    assert spy == {"hits": [], "seen": []}, "no hidden source, and no grader folder, in the sandbox"
    assert list(course["scratch"].iterdir()) == [], "run folders are removed"
    for path in course["root"].rglob("*"):
        if path.is_file() and course["hidden"] not in path.parents:
            assert MARKER.encode() not in path.read_bytes(), f"hidden source leaked into {path}"


def test_rerun_resumes_without_running_anything(course, monkeypatch):
    before = (course["out"] / "grades.csv").read_bytes()
    monkeypatch.setattr(grader, "run_nbval", lambda *a: pytest.fail("a finished notebook re-ran"))
    result = grade(course["subs"], assignments=course["assignments"], hidden=course["hidden"],
                   out=course["out"], log=lambda line: None)
    assert result.graded == [] and len(result.cached) == 8
    assert (course["out"] / "grades.csv").read_bytes() == before


def test_cli_grade_resumes_and_reports(course, capsys):
    argv = ["grade", str(course["subs"]), "--assignments", str(course["assignments"]),
            "--hidden", str(course["hidden"]), "--out", str(course["out"])]
    assert main(argv) == 0
    assert "graded 0 notebook(s), 8 already graded" in capsys.readouterr().out
    assert main(argv[:1] + [str(course["root"] / "nowhere")] + argv[2:]) == 2
    assert "is not a folder of student folders" in capsys.readouterr().err


# --- without kernels: resume, interruption, atomic writes, preparation -------------------------


def fake_run(nb, name, settings, station):
    """Every cell passes, instantly, and every check is judged passed."""
    ok = {"event": "cell", "phase": "call", "passed": True, "kind": "ok", "error": "",
          "message": "", "alive": True, "output_bytes": 0}
    for index in range(sum(cell.source == STATION for cell in nb.cells)):
        station(index, None)
    return Run({i: dict(ok, cell=i) for i in range(len(nb.cells))}, True, False, 0, 0, 0.0, "")


def all_passed(kernel, unit, checks, setup, salt=None):
    return {c.id: Verdict("passed", "") for c in checks}


def small_course(root):
    (root / "assignments").mkdir()
    nbformat.write(make_assignment(solution()), root / "assignments" / UNIT)
    for student in ("ann", "bea", "cid", "dan"):
        (root / "subs" / student).mkdir(parents=True)
        shutil.copy(root / "assignments" / UNIT, root / "subs" / student / UNIT)


def test_interrupted_run_leaves_a_complete_csv_and_resumes(tmp_path, monkeypatch):
    small_course(tmp_path)
    calls = []
    monkeypatch.setattr(grader, "judge", all_passed)
    monkeypatch.setattr(sandbox, "problem", lambda: None)  # fake runs: nothing to sandbox

    def interrupted(nb, name, settings, station):
        calls.append(name)
        if len(calls) == 3:  # Ctrl-C while cid runs: as in grade(), every worker is told to stop
            settings.stopping.set()
            raise KeyboardInterrupt
        return fake_run(nb, name, settings, station)

    monkeypatch.setattr(grader, "run_nbval", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "out",
              log=lambda line: None)
    with open(tmp_path / "out" / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    finished = {r["student"] for r in rows}
    assert "cid" not in finished and len(rows) == 4 * len(finished), "whole notebooks only"
    assert [p.name for p in (tmp_path / "out").rglob("*.tmp")] == []

    calls.clear()
    monkeypatch.setattr(grader, "run_nbval", lambda *a: calls.append(1) or fake_run(*a))
    result = grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "out",
                   log=lambda line: None)
    resumed = {student for student, _ in result.graded}
    assert resumed == {"ann", "bea", "cid", "dan"} - finished and len(calls) == len(resumed)
    assert total({(r["student"], r["question"]): r for r in result.rows}, "dan") == 6

    nb = nbformat.read(tmp_path / "subs" / "ann" / UNIT, as_version=4)
    nb.cells[2].source = SQUARE  # a resubmission is graded again, the others are not
    nbformat.write(nb, tmp_path / "subs" / "ann" / UNIT)
    calls.clear()
    assert grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "out",
                 log=lambda line: None).graded == [("ann", "07_toy")]
    assert len(grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "out",
                     rerun=True, log=lambda line: None).graded) == 4


def test_write_atomic_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "grades.csv"
    write_atomic(target, csv_text([]))
    old = target.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "student,unit\n" + "x,y\n" * 100_000)
    assert target.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_prepare_puts_a_harness_cell_where_each_check_was(tmp_path):
    (tmp_path / UNIT).write_text(nbformat.writes(make_assignment(solution())))
    unit = load_unit(tmp_path / UNIT)
    nb = make_assignment(solution())
    nb.cells[3].metadata["tags"].append("skip")  # would make nbval skip the check
    nb.cells[5].metadata["tags"].remove("raises-exception")  # not an edit: graded without it
    copied = code("True", "question:q2", "points:1")
    nb.cells.insert(4, copied)
    prepared = prepare(unit, nb)
    assert prepared.edited == {
        "q1": "check cell tags edited; the released check ran instead",
        "q2": "question tag copied onto another cell; only the released check counts"}
    harness = [(c.source, c.metadata.get("tags"), what)
               for c, (role, what) in zip(prepared.notebook.cells, prepared.roles) if role == "check"]
    assert harness == [(STATION, None, "q1"), (STATION, None, "q2"), (STATION, None, "q3")], \
        "the checks run in the grader; in the kernel, a cell that serves them"
    assert prepared.roles[3] == ("student", (4, "True")) and "tags" not in prepared.notebook.cells[3].metadata
    assert all(c.outputs == [] and c.execution_count is None for c in prepared.notebook.cells)


def test_hidden_checks_parse_and_validate(tmp_path):
    assert parse_hidden(HIDDEN) == [
        (f"import torch as _torch  # {MARKER}", []),
        ("check_function(square, lambda x: x ** 2, lambda g: (_torch.randn(50, generator=g) * 1e3,),\n"
         '               name="square on large inputs")', ["question:q1_large", "points:2"])]
    (tmp_path / UNIT).write_text(nbformat.writes(make_assignment(solution())))
    for text, message in [('# %% tags=["question:q1", "points:1"]\nx', "q1 is already a question"),
                          ('# %% tags=["question:h", "points:0"]\nx', "points '0' of h must be"),
                          ("# %% tags=[question]\nx", "tags must be a JSON list")]:
        (tmp_path / "h.py").write_text(text)
        with pytest.raises(GradeError, match=message):
            load_unit(tmp_path / UNIT, tmp_path / "h.py")


def test_refuses_output_or_hidden_inside_submissions(tmp_path):
    small_course(tmp_path)
    with pytest.raises(GradeError, match="must not be inside the submissions"):
        grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "subs" / "out")
    (tmp_path / "subs" / "hid").mkdir()
    with pytest.raises(GradeError, match="must be outside the submissions"):
        grade(tmp_path / "subs", assignments=tmp_path / "assignments", hidden=tmp_path / "subs" / "hid",
              out=tmp_path / "out")


def test_run_folders_of_killed_graders_are_removed(tmp_path):
    dead = psutil.Popen(["true"])
    dead.wait()
    for name, owner in (("gen3d-grade-dead", dead.pid), ("gen3d-grade-live", os.getpid())):
        (tmp_path / name / "run").mkdir(parents=True)
        (tmp_path / name / "owner").write_text(str(owner))
        (tmp_path / name / "run" / UNIT).write_text(HIDDEN)
    remove_stale_runs(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen3d-grade-live"]


# --- refusal, state and output hygiene, delegation, plain data -----------------------------------


def test_refuses_without_a_sandbox_unless_unsafe(tmp_path, monkeypatch, capsys):
    small_course(tmp_path)
    monkeypatch.setattr(sandbox, "problem", lambda: "bubblewrap (bwrap) is not installed")
    argv = ["grade", str(tmp_path / "subs"), "--assignments", str(tmp_path / "assignments"),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sandbox: bubblewrap (bwrap) is not installed" in err
    assert "--unsafe" in err and not (tmp_path / "out").exists()
    monkeypatch.setattr(grader, "run_nbval", fake_run)
    monkeypatch.setattr(grader, "judge", all_passed)
    assert main(argv + ["--unsafe"]) == 0


def test_malformed_or_inconsistent_state_is_reported_and_graded_again(tmp_path, monkeypatch):
    small_course(tmp_path)
    monkeypatch.setattr(sandbox, "problem", lambda: None)
    monkeypatch.setattr(grader, "judge", all_passed)
    monkeypatch.setattr(grader, "run_nbval", fake_run)
    kwargs = dict(assignments=tmp_path / "assignments", out=tmp_path / "out")
    grade(tmp_path / "subs", log=lambda line: None, **kwargs)
    results = tmp_path / "out" / "results"
    (results / "ann.json").write_text("{not json")
    bea = json.loads((results / "bea.json").read_text())
    bea["units"][UNIT]["rows"][0]["points"] = 99  # more than the question is worth
    (results / "bea.json").write_text(json.dumps(bea))
    cid = json.loads((results / "cid.json").read_text())
    cid["units"][UNIT]["rows"] = "all of them"
    (results / "cid.json").write_text(json.dumps(cid))
    lines = []
    result = grade(tmp_path / "subs", log=lines.append, **kwargs)
    assert sorted(result.graded) == [("ann", "07_toy"), ("bea", "07_toy"), ("cid", "07_toy")]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 3
    assert "ann.json is unreadable" in warnings[0]
    assert "impossible points or text in q1" in warnings[1]
    assert "wrong number of rows" in warnings[2]
    assert total({(r["student"], r["question"]): r for r in result.rows}, "bea") == 6


def test_csv_cells_never_start_a_formula():
    rows = [dict(student=lead + "name", unit="u", question="q", points=0, max=1, status="failed",
                 message=lead + 'HYPERLINK("http://x")') for lead in "=+-@\t\r"]
    rows.append(dict(student="plain", unit="u", question="q", points=1, max=1, status="passed",
                     message="fine"))
    parsed = list(csv.reader(io.StringIO(csv_text(rows), newline="")))[1:]
    assert len(parsed) == 7 and all(cell.startswith("'") for row in parsed[:-1] for cell in (row[0], row[6]))
    assert parsed[-1] == ["plain", "u", "q", "1", "1", "passed", "fine"]


def test_delegation_to_the_library_is_found_by_any_alias():
    cells = [(1, "from gen3d_course.models import autoencoders as ae\nimport gen3d_course as g"),
             (2, "def kl_divergence(mu, logvar):\n    return ae.kl_divergence(mu, logvar)"),
             (3, "m = g.models.autoencoders\nreparameterize = getattr(m, 'reparameterize')"),
             (4, "from gen3d_course.models.autoencoders import vae_loss as mine"),
             (5, "%matplotlib inline\nx = __import__('gen3d_course.models.autoencoders').models.autoencoders.bce"),
             (6, "def square(x):\n    return x * x  # ae.square would not be the library's")]
    found = uses(cells, {"kl_divergence", "reparameterize", "vae_loss", "bce", "square"})
    assert found == {
        "kl_divergence": "ae.kl_divergence (cell 2)",
        "reparameterize": "getattr(m, 'reparameterize') (cell 3)",
        "vae_loss": "gen3d_course.models.autoencoders.vae_loss (imported in cell 4)",
        "bce": "__import__('gen3d_course.models.autoencoders').models.autoencoders.bce (cell 5)"}
    assert targets("check_kl_divergence(kl_divergence)",
                   "from gen3d_course.checks.vae import check_kl_divergence") == {"kl_divergence"}


def test_plain_data_only_crosses_the_wire():
    left, right = socket.socketpair()
    with left, right:
        arrays = {}
        tree = encode((torch.ones(2, 3), {"k": [1.5, float("nan"), None, "s"]}, np.arange(3)), arrays)
        send(left, {"out": tree}, arrays)
        header, got = receive(right)
        out = decode(header["out"], got)
        assert type(out[0]) is torch.Tensor and out[0].shape == (2, 3) and not out[0].requires_grad
        assert out[1]["k"][0] == 1.5 and math.isnan(out[1]["k"][1]) and out[1]["k"][2:] == [None, "s"]
        generator = torch.Generator().manual_seed(5)  # a generator crosses as its state
        send(left, {"g": encode(generator, arrays := {})}, arrays)
        header, got = receive(right)
        copy = decode(header["g"], got)
        assert torch.equal(torch.rand(3, generator=copy), torch.rand(3, generator=generator))
        with pytest.raises(NotData, match="a Linear is not plain data"):
            encode(torch.nn.Linear(2, 2), {})
        # networks go to the kernel as references into a pickle; the grader never follows one
        sent = []
        assert encode([torch.nn.Linear(2, 2)], {}, objects=sent) == [{"$o": 0}] and len(sent) == 1
        with pytest.raises(InvalidData, match="object reference"):
            decode([{"$o": 0}], {})
        buffer = io.BytesIO()
        np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)  # a pickle inside
        raw = io.BytesIO()
        with zipfile.ZipFile(raw, "w") as z:
            z.writestr("a0.npy", buffer.getvalue())
        head = json.dumps({"out": {"$t": "a0"}}).encode()
        left.sendall(struct.pack(">QQ", len(head), len(raw.getvalue())) + head + raw.getvalue())
        with pytest.raises(InvalidData, match="not a valid .npz|not a plain number type"):
            receive(right)
        left.sendall(struct.pack(">QQ", 10, 2**40))
        with pytest.raises(InvalidData, match="over the"):
            receive(right)


def test_unsafe_grades_the_same_way_without_a_sandbox(tmp_path):
    """--unsafe (no bwrap: macOS, or Gradescope's container) keeps the checks in the grader."""
    nb = new_notebook(cells=[code("answer = 42  # SOLUTION"),
                             code("assert answer == 42, 'not the answer'", "question:q1", "points:1")])
    assignment = make_assignment(nb)
    (tmp_path / "assignments").mkdir()
    nbformat.write(assignment, tmp_path / "assignments" / "09_tiny.ipynb")
    for student, answer in (("right", "answer = 42"), ("wrong", "answer = 41")):
        (tmp_path / "subs" / student).mkdir(parents=True)
        nbformat.write(submission(assignment, {0: answer}), tmp_path / "subs" / student / "09_tiny.ipynb")
    result = grade(tmp_path / "subs", assignments=tmp_path / "assignments", out=tmp_path / "out",
                   timeout=CELL_TIMEOUT, unsafe=True, log=lambda line: None)
    rows = {(r["student"], r["question"]): r for r in result.rows}
    assert rows["right", "q1"]["status"] == "passed" and rows["wrong", "q1"]["status"] == "failed"
    assert rows["wrong", "q1"]["message"] == "AssertionError: not the answer"


def _judged(unit_name: str, qid: str, namespace: dict, salt: bytes | None = None, folder=None):
    """One released check judged in this process against a harness answering from ``namespace``
    over a socket pair (what the sandboxed kernel does in a real run)."""
    from gen3d_course.grade.harness import answer
    from gen3d_course.grade.judge import Kernel, judge

    unit = load_unit((folder or ROOT / "assignments") / unit_name)
    check = next(c for c in unit.checks if c.id == qid)
    left, right = socket.socketpair()
    with left, right:
        kernel_side = threading.Thread(target=answer, args=(right, namespace))
        kernel_side.start()
        receive(left)  # the hello
        verdict = judge(Kernel(left, 120, time.monotonic() + 300), unit, [check], [], salt)[qid]
        send(left, {"op": "done"})
        kernel_side.join()
    return verdict


def test_network_and_class_questions_are_judged_in_the_grader():
    """The questions that take a network, an optimiser, a class or a library object (a field that
    counts its queries) are judged here, on data; gradients through a network (12's prior) too."""
    from gen3d_course.checks.atlasnet import _reference_forward
    from gen3d_course.geometry.mise import mise_grid
    from gen3d_course.models import deepsdf, gans, voxel_gan, wgan
    from gen3d_course.models import score_distillation as sds

    class Generator(voxel_gan.VoxelGenerator):
        def __init__(self, z_dim, channels):
            super().__init__(z_dim, channels, output="transposed")

    class Wider(Generator):
        def __init__(self, z_dim, channels):
            super().__init__(z_dim, channels)
            self.extra = torch.nn.Linear(2, 2)

    def replaces(critic, c=0.01):  # right values, but new Parameter objects
        for m in critic.modules():
            for k, p in list(m._parameters.items()):
                m._parameters[k] = torch.nn.Parameter(p.detach().clamp(-c, c))

    def nudges(G, D, opt_g, opt_d, real, z):
        out = gans.gan_step(G, D, opt_g, opt_d, real, z)
        with torch.no_grad():
            next(G.parameters()).add_(1e-3)
        return out

    def stays_frozen(decoder, points, sdf, **kwargs):
        for p in decoder.parameters():
            p.requires_grad_(False)
        return deepsdf.fit_code(decoder, points, sdf, **kwargs)

    def step(model, optimizer, idx, points, sdf, delta=0.1, code_reg=1e-4):
        return deepsdf.autodecoder_step(model, optimizer, idx, points, sdf, delta, code_reg)["loss"]

    def weights_only(model, lr, code_lr):  # the codes never move
        return torch.optim.Adam(model.decoder.parameters(), lr=lr)

    def field(field, points, directions, z_shape, z_app, density_noise=0.0, generator=None):
        return field(points, directions, z_shape, z_app, density_noise, generator)

    def mise(field, start_res, levels, level):
        grid = mise_grid(field, start_res, levels, level)
        return torch.from_numpy(grid.values), grid.queries

    def dense(field, start_res, levels, level):  # right values, but the field is asked everywhere
        values, queries = mise(field, start_res, levels, level)
        field(torch.zeros(values.numel(), 3))
        return values, queries

    def through_unet(prior, image, t, noise, cond):  # the full diffusion loss: backward enters the prior
        return sds.denoising_loss(prior, image, t, noise, cond).sum() / len(image)

    cases = [("02_gans", "q3", {"gan_step": gans.gan_step}, "passed"),
             ("02_gans", "q3", {"gan_step": nudges}, "G.hidden.0.weight differs"),
             ("03_wgan", "q2", {"clip_weights": wgan.clip_weights}, "passed"),
             ("03_wgan", "q2", {"clip_weights": replaces}, "replaced the parameter"),
             ("03_wgan", "q3", {"gradient_penalty": wgan.gradient_penalty}, "passed"),
             ("03_wgan", "q3", {"gradient_penalty": lambda *a: wgan.gradient_penalty(*a).detach()},
              "cannot be back-propagated"),
             ("04_3dgan", "q2", {"Generator": Generator}, "passed"),
             ("04_3dgan", "q2", {"Generator": Wider}, "17,569,671 parameters"),
             ("04_3dgan", "q3", {"discriminator_update": voxel_gan.discriminator_update}, "passed"),
             ("05_deepsdf", "q2", {"fit_code": deepsdf.fit_code}, "passed"),
             ("05_deepsdf", "q2", {"fit_code": stays_frozen}, "left the decoder frozen"),
             ("05_deepsdf", "q3", {"make_optimizer": deepsdf.autodecoder_optimizer, "autodecoder_step": step},
              "passed"),
             ("05_deepsdf", "q3", {"make_optimizer": weights_only, "autodecoder_step": step},
              "codes (model.codes.parameters()) are not in the optimiser"),
             ("06_atlasnet", "q4", {"patch_forward": _reference_forward}, "passed"),
             ("07_occupancy_networks", "q3", {"mise_refine": mise}, "passed"),
             ("07_occupancy_networks", "q3", {"mise_refine": dense}, "as many as the dense"),
             ("09_graf", "q3", {"conditional_field": field}, "passed"),
             ("12_score_distillation", "q1", {"sample_views": sds.sample_views}, "passed"),
             ("12_score_distillation", "q2", {"sds_loss": sds.sds_loss}, "passed"),
             ("12_score_distillation", "q2", {"sds_loss": through_unet}, "went through the U-Net")]
    for unit, qid, namespace, expected in cases:  # on inputs drawn afresh, as in a grading run
        verdict = _judged(f"{unit}.ipynb", qid, namespace, salt=os.urandom(16))
        got = verdict.status if expected == "passed" else verdict.message
        assert expected in got, (unit, qid, verdict)
        assert expected == "passed" or verdict.status == "failed", (unit, qid, verdict)


FORK_ALLOCATORS = """import json, os, time
statuses = []
children = []
for _ in range(6):  # 6 x 600 MiB written, 3.6 GiB in all, each far under the per-process cap
    pid = os.fork()
    if pid == 0:
        try:
            block = b'x' * (600 << 20)
            time.sleep(3)
        finally:
            os._exit(0)
    children.append(pid)
for pid in children:
    statuses.append(os.waitpid(pid, 0)[1])
raise RuntimeError('STATUSES' + json.dumps(statuses))"""
FORK_MANY = """import os, time
started = 0
try:
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        started += 1
except OSError:
    pass
raise RuntimeError(f'STARTED {started}')"""


def test_one_memory_and_process_cap_for_the_whole_run(tmp_path):
    """Where a control group can be made, every process of a run shares one memory cap and one
    process-count cap: many allocators started by one notebook cannot add up past it."""
    from gen3d_course.grade.run import Settings, run_nbval

    if sandbox.problem():
        pytest.skip(f"no sandbox: {sandbox.problem()} (make sandbox)")
    probe = sandbox.Cgroup.create("gen3d-grade-probe", 2**30, 64)
    if probe is None:
        pytest.skip("no control group can be made here: only the per-process caps apply")
    probe.remove()
    cap = 1.5
    settings = Settings(timeout=60, notebook_timeout=120, memory_gb=cap, processes=64,
                        scratch=str(tmp_path))
    run = run_nbval(new_notebook(cells=[code(FORK_ALLOCATORS)]), "10_mem.ipynb", settings)
    assert run.peak is not None and run.peak <= cap * 2**30, run.peak
    record = run.records[0]
    assert not record["passed"], record
    if "STATUSES" in record["error"]:  # the OOM killer took children (SIGKILL), not the kernel
        statuses = json.loads(record["error"].split("STATUSES", 1)[1])
        assert any(status & 0x7F == 9 for status in statuses), statuses
    run = run_nbval(new_notebook(cells=[code(FORK_MANY)]), "10_many.ipynb", settings)
    started = int(run.records[0]["error"].split("STARTED ")[1])
    assert started < 64, started  # the kernel's own threads count too


def test_checks_draw_fresh_inputs_in_each_grading_run(tmp_path):
    """A table of answers memorised from the notebook's own (seeded) check passes that check, and
    fails in the grader, which draws the inputs afresh from a per-run salt."""
    nbformat.write(make_assignment(solution()), tmp_path / UNIT)
    seen = []  # the inputs the notebook's check of square uses, drawn as check_function does
    check_function = __import__("gen3d_course.checks", fromlist=["check_function"]).check_function
    check_function(lambda x: seen.append(x.clone()) or x * x, lambda x: x ** 2,
                   lambda g: (torch.randn(4, generator=g),), name="square")
    table = {x.numpy().tobytes(): x * x for x in seen}

    def square(x):
        return table.get(x.numpy().tobytes(), torch.zeros_like(x))

    assert _judged(UNIT, "q1", {"square": square}, folder=tmp_path).status == "passed"
    fresh = _judged(UNIT, "q1", {"square": square}, salt=os.urandom(16), folder=tmp_path)
    assert fresh.status == "failed" and "square: values differ" in fresh.message, fresh
    assert _judged(UNIT, "q1", {"square": lambda x: x * x}, salt=os.urandom(16),
                   folder=tmp_path).status == "passed"
