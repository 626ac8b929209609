"""The assignment generator: stripping, tags, leaks, determinism, drift, and a real kernel run."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gen3d_course.assign import (
    AssignError,
    build_assignments,
    check_assignments_current,
    make_assignment,
    questions,
    strip_solution,
)

TODO_Q1 = 'raise NotImplementedError("Question q1: implement this and remove the raise")'


def notebook(*cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=list(cells))
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"  # fixed ids: the bytes must depend on the content only
    return nb


def code(source, *tags, outputs=()):
    cell = new_code_cell(source, execution_count=3 if outputs else None, outputs=list(outputs))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def tags_of(cell):
    return cell.metadata.get("tags", [])


# --- strip_solution --------------------------------------------------------------------------


def test_region_becomes_raise_with_the_begin_lines_indentation():
    source = (
        "def square(x):\n"
        "    # BEGIN SOLUTION\n"
        "    y = x * x\n"
        "    return y\n"
        "    # END SOLUTION\n"
        "\n"
        "print('kept')"
    )
    assert strip_solution(source, question="q1") == (
        f"def square(x):\n    {TODO_Q1}\n\nprint('kept')"
    )


def test_region_without_question_and_at_top_level():
    source = "x = 1\n# BEGIN SOLUTION\ny = 2\n# END SOLUTION\n"
    assert strip_solution(source) == (
        'x = 1\nraise NotImplementedError("Implement this and remove the raise")\n'
    )


def test_source_without_markers_is_unchanged():
    source = "def f(x):\n    return x  # a comment\n"
    assert strip_solution(source) == source


@pytest.mark.parametrize(
    "line, expected",
    [
        ("    z = mu + std * eps  # SOLUTION", "    z = None  # YOUR CODE HERE"),
        ("    mu, logvar = enc(x)  # SOLUTION", "    mu, logvar = None, None  # YOUR CODE HERE"),
        ("    a = b = f(x)  #SOLUTION", "    a = b = None  # YOUR CODE HERE"),
        ("    out: Tensor = f(x)  # SOLUTION", "    out: Tensor = None  # YOUR CODE HERE"),
        ("    return x * x  # SOLUTION", f"    {TODO_Q1}"),
        ("    total += x  # SOLUTION", f"    {TODO_Q1}"),
    ],
)
def test_one_liners(line, expected):
    assert strip_solution(f"def f(x):\n{line}\n", question="q1") == f"def f(x):\n{expected}\n"


@pytest.mark.parametrize(
    "source, message",
    [
        ("# BEGIN SOLUTION\nx = 1\n", "line 1: '# BEGIN SOLUTION' has no matching"),
        ("x = 1\n# END SOLUTION\n", "line 2: '# END SOLUTION' without"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "line 2: '# BEGIN SOLUTION' inside"),
        ("for i in range(3):  # SOLUTION\n    pass\n", "line 1: '# SOLUTION' ends a line that is not"),
        ("x = 1\n    # SOLUTION\n", "line 2: '# SOLUTION' marks a line without code"),
    ],
)
def test_malformed_markers_raise_naming_cell_and_line(source, message):
    with pytest.raises(AssignError, match="^cell 7, " + message):
        strip_solution(source, cell=7)


# --- make_assignment -------------------------------------------------------------------------


def solution_notebook():
    return notebook(
        new_markdown_cell("# Squares"),
        code("import torch", outputs=[new_output("stream", text="hi\n")]),
        code("SECRET = 42", "solution-only"),
        code("def square(x):\n    # BEGIN SOLUTION\n    return x * x\n    # END SOLUTION"),
        code("check(square)", "question:q1", "points:2",
             outputs=[new_output("stream", text="✔ square\n")]),
        code("def cube(x):\n    return x * x * x  # SOLUTION"),
        code("check(cube)", "question:q2", "points:1"),
        code("print('done')"),
    )


def test_make_assignment_strips_tags_and_clears():
    solution = solution_notebook()
    original = nbformat.writes(solution)
    nb = make_assignment(solution)
    assert nbformat.writes(solution) == original, "make_assignment must not modify its input"
    sources = [c.source for c in nb.cells]
    assert "SECRET = 42" not in sources, "solution-only cells are removed"
    assert len(nb.cells) == len(solution.cells) - 1
    square, check_q1, cube = nb.cells[2], nb.cells[3], nb.cells[4]
    assert square.source == f"def square(x):\n    {TODO_Q1}"
    assert cube.source == (
        'def cube(x):\n    raise NotImplementedError("Question q2: implement this and remove the raise")'
    )
    assert tags_of(square) == ["raises-exception"]
    assert tags_of(check_q1) == ["question:q1", "points:2", "raises-exception"]
    assert tags_of(nb.cells[1]) == [] and tags_of(nb.cells[-1]) == []
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    nbformat.validate(nb)


def test_existing_raises_exception_tag_is_not_duplicated():
    nb = make_assignment(notebook(code("x = f()  # SOLUTION", "raises-exception")))
    assert tags_of(nb.cells[0]) == ["raises-exception"]


def test_make_assignment_names_the_cell_of_a_malformed_region():
    nb = notebook(new_markdown_cell("intro"), code("ok = 1"), code("# BEGIN SOLUTION\nx = 1"))
    with pytest.raises(AssignError, match="^cell 2, line 1: '# BEGIN SOLUTION' has no matching"):
        make_assignment(nb)


@pytest.mark.parametrize(
    "cell",
    [
        new_markdown_cell("Hint: the code between BEGIN SOLUTION and END SOLUTION is hidden."),
        code("x = 1  # BEGIN SOLUTION"),  # a marker must stand alone on its line
        code("print('# SOLUTION')"),
    ],
)
def test_leaked_markers_are_an_error(cell):
    with pytest.raises(AssignError, match="^cell 1: the (markdown|code) cell still contains"):
        make_assignment(notebook(code("ok = 1"), cell))


def test_determinism_identical_bytes():
    first = nbformat.writes(make_assignment(solution_notebook()))
    second = nbformat.writes(make_assignment(solution_notebook()))
    assert first == second


# --- questions -------------------------------------------------------------------------------


def test_questions_parses_tags():
    assert questions(solution_notebook()) == [
        {"id": "q1", "points": 2, "cell": 4},
        {"id": "q2", "points": 1, "cell": 6},
    ]


NEEDS_ONE_EACH = "a graded cell needs exactly one 'question:<id>' and one 'points:<n>' tag"


@pytest.mark.parametrize(
    "tags, message",
    [
        (["question:q1", "points:0"], "points '0' of q1 must be a positive integer"),
        (["question:q1", "points:-1"], "points '-1' of q1 must be a positive integer"),
        (["question:q1", "points:1.5"], "points '1.5' of q1 must be a positive integer"),
        (["question:q1", "points:two"], "points 'two' of q1 must be a positive integer"),
        (["question:q1"], NEEDS_ONE_EACH),
        (["points:2"], NEEDS_ONE_EACH),
        (["question:q1", "points:1", "points:2"], NEEDS_ONE_EACH),
        (["question:", "points:1"], "question id '' must be"),
        (["question:q 1", "points:1"], "question id 'q 1' must be"),
    ],
)
def test_questions_rejects_malformed_tags(tags, message):
    with pytest.raises(AssignError, match="^cell 1: " + message.replace(".", r"\.")):
        questions(notebook(code("x = 1"), code("check()", *tags)))


def test_questions_rejects_duplicates_and_markdown():
    duplicate = notebook(code("check()", "question:q1", "points:1"),
                         code("check()", "question:q1", "points:2"))
    with pytest.raises(AssignError, match="^cell 1: question q1 is already defined in cell 0"):
        questions(duplicate)
    markdown = new_markdown_cell("Question 1")
    markdown.metadata["tags"] = ["question:q1", "points:1"]
    with pytest.raises(AssignError, match="^cell 0: question q1 must tag its check cell"):
        questions(notebook(markdown))


# --- build_assignments / check_assignments_current -------------------------------------------


def test_build_and_drift_detection(tmp_path):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_squares.ipynb")
    nbformat.write(notebook(code("y = g()  # SOLUTION")), solutions / "02_other.ipynb")

    assert check_assignments_current(solutions, assignments) == ["01_squares.ipynb", "02_other.ipynb"]
    written = build_assignments(solutions, assignments)
    assert written == [assignments / "01_squares.ipynb", assignments / "02_other.ipynb"]
    assert check_assignments_current(solutions, assignments) == []
    first = {p.name: p.read_bytes() for p in written}
    build_assignments(solutions, assignments)
    assert {p.name: p.read_bytes() for p in written} == first, "rebuilding changes no byte"
    assert nbformat.read(written[0], as_version=4).cells[2].source.endswith(TODO_Q1)

    edited = nbformat.read(written[0], as_version=4)
    edited.cells[2].source = "def square(x):\n    return x * x"
    nbformat.write(edited, written[0])
    (assignments / "02_other.ipynb").unlink()
    nbformat.write(notebook(code("x = 1")), assignments / "03_orphan.ipynb")
    assert check_assignments_current(solutions, assignments) == [
        "01_squares.ipynb", "02_other.ipynb", "03_orphan.ipynb",
    ]


def test_cells_without_ids_still_generate_identical_bytes(tmp_path):
    """nbformat invents random ids for 4.5 cells that lack one; the generator must not."""
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    data = json.loads(nbformat.writes(solution_notebook()))
    for cell in data["cells"]:
        del cell["id"]
    (solutions / "01_squares.ipynb").write_text(json.dumps(data))
    a, b = tmp_path / "a", tmp_path / "b"
    build_assignments(solutions, a)
    build_assignments(solutions, b)
    assert (a / "01_squares.ipynb").read_bytes() == (b / "01_squares.ipynb").read_bytes()


def test_build_names_the_bad_solution_and_writes_nothing(tmp_path):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    solutions.mkdir()
    nbformat.write(solution_notebook(), solutions / "01_good.ipynb")
    nbformat.write(notebook(code("# END SOLUTION")), solutions / "02_bad.ipynb")
    with pytest.raises(AssignError, match=r"02_bad\.ipynb: cell 0, line 1: '# END SOLUTION'"):
        build_assignments(solutions, assignments)
    assert not assignments.exists()


# --- a real kernel run -----------------------------------------------------------------------


def run(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def test_solution_passes_and_assignment_fails_in_a_kernel(tmp_path):
    solution = notebook(
        code("import torch\nfrom gen3d_course.checks import check_function"),
        code("def square(x):\n    # BEGIN SOLUTION\n    return x * x\n    # END SOLUTION"),
        code(
            "check_function(square, lambda x: x ** 2,\n"
            "               lambda g: (torch.randn(3, 4, generator=g),), name='square')",
            "question:q1", "points:1",
        ),
        code("import sys; print(sys.executable)"),
    )
    assignment = make_assignment(solution)
    run(solution, tmp_path)
    run(assignment, tmp_path)

    printed, result = solution.cells[2].outputs
    assert printed.text == "✔ square: matches the reference on 5 random inputs\n"
    assert result.data["text/plain"] == "True"
    assert Path(solution.cells[3].outputs[0].text.strip()).resolve() == Path(sys.executable).resolve()

    assert assignment.cells[1].outputs == []  # defining the stub does not raise
    (error,) = assignment.cells[2].outputs
    assert error.output_type == "error" and error.ename == "CheckFailure"
    assert error.evalue == (
        "square not implemented yet: Question q1: implement this and remove the raise"
    )
    assert error.traceback == [f"CheckFailure: {error.evalue}"], "no traceback through the checker"
