"""The Gradescope bundle: exported by the CLI, its run_autograder run here as Gradescope would run
it (a folder laid out like /autograder), on unit 01's solution and blank assignment."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gen3d_course.cli import main
from gen3d_course.grade import sandbox

ROOT = Path(__file__).resolve().parents[1]
UNIT = "01_autoencoders.ipynb"
HIDDEN = """# %%
import torch as _torch

# %% tags=["question:h1", "points:1"]
assert kl_divergence(_torch.zeros(2, 3), _torch.zeros(2, 3)).abs().max() < 1e-6
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradescope")
    (root / "hidden").mkdir()
    (root / "hidden" / "01_autoencoders.py").write_text(HIDDEN)
    assert main(["grade", "--export", "gradescope", "--assignments", str(ROOT / "assignments"),
                 "--hidden", str(root / "hidden"), "--out", str(root / "out")]) == 0
    return root / "out" / "gradescope"


def autograde(bundle: Path, tmp: Path, notebook: Path) -> dict:
    """Lay out /autograder as Gradescope does and run the bundle's run_autograder."""
    home = tmp / "autograder"
    shutil.copytree(bundle / "source", home / "source")
    (home / "submission").mkdir(parents=True)
    shutil.copy(notebook, home / "submission" / UNIT)
    env = dict(os.environ, AUTOGRADER_ROOT=str(home), PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)  # the bundle's own copy of the library must be enough
    subprocess.run([str(bundle / "run_autograder")], env=env, check=True, timeout=600,
                   capture_output=True)
    return json.loads((home / "results" / "results.json").read_text())


def test_bundle_holds_what_gradescope_needs(bundle):
    with zipfile.ZipFile(bundle / "autograder.zip") as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert {"setup.sh", "run_autograder", "source/assignments/01_autoencoders.ipynb",
            "source/hidden/01_autoencoders.py", "source/course/gen3d_course/grade/judge.py"} <= names
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert not [n for n in names if n.startswith("source/course/solutions")]


def test_run_autograder_scores_solution_and_blank(bundle, tmp_path):
    solution = autograde(bundle, tmp_path / "s", ROOT / "solutions" / UNIT)
    blank = autograde(bundle, tmp_path / "b", ROOT / "assignments" / UNIT)
    assert solution["score"] == 9 and blank["score"] == 0
    tests = {t["name"]: t for t in solution["tests"]}
    assert set(tests) == {f"01_autoencoders {q}" for q in ("q1", "q2", "q3", "q4", "h1")}
    assert tests["01_autoencoders h1"]["visibility"] == "after_published"
    assert tests["01_autoencoders q1"] == {"name": "01_autoencoders q1", "score": 2, "max_score": 2,
                                           "status": "passed", "output": "passed",
                                           "visibility": "visible"}
    blank_q1 = next(t for t in blank["tests"] if t["name"] == "01_autoencoders q1")
    assert blank_q1["score"] == 0 and "kl_divergence not implemented yet" in blank_q1["output"]
    if sandbox.problem() is None:
        assert "without bubblewrap" not in solution["output"], "graded in the same sandbox"
