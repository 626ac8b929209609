"""Hostile submissions of unit 01, graded for real in one run: each attack scores 0 or is flagged,
and leaves no damage to other submissions, the outputs, the state, the library or processes.
Controls: the solution gets full marks (hidden check included), the blank assignment 0."""
import csv
import hashlib
import json
import secrets
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell

import gen3d_course
from gen3d_course.grade import NOTEBOOK_ROW, grade, load_unit, prepare
from gen3d_course.grade import run as grade_run
from gen3d_course.grade import sandbox
from gen3d_course.grade.outputs import FORMULA_STARTS, cell_text

pytestmark = pytest.mark.skipif(sandbox.problem() is not None,
                                reason=f"no sandbox: {sandbox.problem()} (make sandbox)")

ROOT = Path(__file__).resolve().parents[1]
UNIT = "01_autoencoders.ipynb"
MARKER = "HIDDEN-" + "HOSTILE-51f0"  # built at run time so no notebook spells it
TAG = "gen3d-" + "hostile-sleeper"  # in the command line of the processes meant to outlive a run
FULL = 10  # 8 released points + 2 hidden
HIDDEN = f"""# %%
import torch as _torch  # {MARKER}
from gen3d_course.models import autoencoders as _ae

# %% tags=["question:h1", "points:2"]
_mu, _logvar = _torch.randn(7, 5) * 3, _torch.randn(7, 5)
assert _torch.allclose(kl_divergence(_mu, _logvar), _ae.kl_divergence(_mu, _logvar), rtol=1e-4), \\
    "kl_divergence on wider inputs"
"""

WRONG_KL = "def kl_divergence(mu, logvar):\n    return torch.zeros(mu.shape[0])"


def attacks(paths: dict) -> dict:
    """student -> (cell index in the blank assignment, attack source)."""
    victim = paths["subs"] / "solution" / UNIT
    return {
        "custom-exc": (2, "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: [])"),
        "input-transformer": (2, (
            "def _rewrite(lines):\n"
            "    text = ''.join(lines)\n"
            "    return ['pass\\n'] if 'check_' in text or 'serve' in text else lines\n"
            "get_ipython().input_transformers_post.append(_rewrite)")),
        "replaced-checks": (2, "check_kl_divergence = check_reparameterize = check_vae_loss = "
                               "lambda *a, **k: True"),
        "patched-allclose": (4, WRONG_KL + "\n"
                                "torch.allclose = lambda *a, **k: True\n"
                                "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
                                "torch.Tensor.__eq__ = lambda a, b: torch.ones_like(a, dtype=torch.bool)"),
        "tensor-subclass": (4, (
            "class Liar(torch.Tensor):\n"
            "    @classmethod\n"
            "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
            "        name = getattr(func, '__name__', '')\n"
            "        if name in ('isclose', 'allclose', 'eq', '__eq__', 'equal'):\n"
            "            return True if name in ('allclose', 'equal') else torch.ones(args[0].shape, dtype=torch.bool)\n"
            "        return super().__torch_function__(func, types, args, kwargs or {})\n"
            "def kl_divergence(mu, logvar):\n"
            "    return torch.zeros(mu.shape[0]).as_subclass(Liar)")),
        "uses-reference": (4, (
            "import gen3d_course.models.autoencoders as lib\n"
            "from gen3d_course.models.autoencoders import vae_loss as _v\n"
            "m = lib\n"
            "kl_divergence = ae.kl_divergence\n"
            "reparameterize = getattr(m, 'reparameterize')\n"
            "vae_loss = _v")),
        "overwrite-other": (2, (
            f"open({str(victim)!r}, 'w').write('{{}}')")),
        "forge-state": (2, (
            f"import os\nos.makedirs({str(paths['out'] / 'results')!r}, exist_ok=True)\n"
            f"open({str(paths['out'] / 'results' / 'solution.json')!r}, 'w').write('{{}}')")),
        "rewrite-csv-later": (2, (
            "import subprocess\n"
            f"subprocess.Popen(['sh', '-c', 'sleep 8; echo =1+1 > {paths['out'] / 'grades.csv'}', "
            f"'{TAG}'], start_new_session=True)")),
        "kill-kernels": (2, (
            "import os, signal\n"
            "for _ in range(200):\n"
            "    for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
            "        if pid != os.getpid():\n"
            "            try:\n"
            "                os.kill(pid, signal.SIGKILL)\n"
            "            except OSError:\n"
            "                pass")),
        "poison-library": (2, (
            "import gen3d_course.checks.vae as v, gen3d_course.models.autoencoders as a\n"
            "errors = []\n"
            "for path in (v.__file__, a.__file__):\n"
            "    try:\n"
            "        open(path, 'a').write('\\ncheck_kl_divergence = lambda f: True\\n')\n"
            "    except OSError as err:\n"
            "        errors.append(type(err).__name__)\n"
            "raise RuntimeError('POISON' + ','.join(errors))")),
        "read-hidden": (2, (
            "import os\n"
            f"found = [p for p in ({str(paths['hidden'])!r}, {str(paths['hidden'] / '01_autoencoders.py')!r}) "
            "if os.path.exists(p)]\n"
            "raise RuntimeError('READ' + repr(found))")),
        "pre-run-hook": (2, (
            "seen = []\n"
            "get_ipython().events.register('pre_run_cell', lambda info: seen.append(info.raw_cell))\n"
            "get_ipython().events.register('post_run_cell', lambda result: open('/tmp/leak', 'a')"
            ".write(''.join(seen)))")),
        "=HYPERLINK(\"x\")": (4, (
            "def kl_divergence(mu, logvar):\n"
            "    raise ValueError('=HYPERLINK(\"http://evil\", \"click\")')")),
        "env-token-survivor": (2, (
            "import os, subprocess\n"
            "env = {k: v for k, v in os.environ.items() if 'GEN3D' not in k}\n"
            f"subprocess.Popen(['sh', '-c', 'sleep 30', '{TAG}'], env=env, start_new_session=True)")),
        "allocate-2gib": (2, "x = torch.ones(2**31, dtype=torch.uint8)\nprint(x.sum())"),
        "steal-key": (2, STEAL_KEY),
    }


KEY = b"SIGNING-" + b"KEY-MARKER-6d2e" + bytes(range(9))  # the run's key, 32 bytes, patched in
STEAL_KEY = (  # look for the key everywhere a notebook can read, then try to forge a row
    "import glob, json, os, stat\n"
    "needle = ('SIGNING-' + 'KEY-MARKER').encode()\n"
    "hits = [k for k in os.environ if 'KEY' in k or 'RESULTS' in k]\n"
    "def look(path, data):\n"
    "    if needle in data:\n"
    "        hits.append(path)\n"
    "for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]:\n"
    "    for name in ('environ', 'cmdline'):\n"
    "        try:\n"
    "            look(f'/proc/{pid}/{name}', open(f'/proc/{pid}/{name}', 'rb').read())\n"
    "        except OSError:\n"
    "            pass\n"
    "    try:\n"
    "        with open(f'/proc/{pid}/mem', 'rb') as mem:\n"
    "            for line in open(f'/proc/{pid}/maps'):\n"
    "                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
    "                try:\n"
    "                    mem.seek(lo)\n"
    "                    look(f'/proc/{pid}/mem', mem.read(min(hi - lo, 2**26)))\n"
    "                except (OSError, ValueError, OverflowError):\n"
    "                    pass\n"
    "    except OSError:\n"
    "        pass\n"
    "    for fd in glob.glob(f'/proc/{pid}/fd/*'):\n"
    "        try:  # its open files (a pipe or socket would block)\n"
    "            if stat.S_ISREG(os.stat(fd).st_mode):\n"
    "                look(fd, open(fd, 'rb').read(2**20))\n"
    "        except OSError:\n"
    "            pass\n"
    "tops = {os.getcwd(), os.path.dirname(os.getcwd()), '/tmp'}\n"
    "for top in tops:\n"
    "    for d, _, files in os.walk(top):\n"
    "        for f in files:\n"
    "            try:\n"
    "                if stat.S_ISREG(os.lstat(os.path.join(d, f)).st_mode):\n"
    "                    look(os.path.join(d, f), open(os.path.join(d, f), 'rb').read())\n"
    "            except OSError:\n"
    "                pass\n"
    "forged = []\n"
    "for path in ['../results.jsonl', *glob.glob('/tmp/**/results.jsonl', recursive=True)]:\n"
    "    try:\n"
    "        open(path, 'a').write(json.dumps({'record': {'event': 'collected'}, 'mac': '0'}) + '\\n')\n"
    "        forged.append(path)\n"
    "    except OSError:\n"
    "        pass\n"
    "raise RuntimeError('STOLEN' + json.dumps(sorted(set(hits))) + ' FORGED' + json.dumps(forged))")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    paths = {d: root / d for d in ("subs", "out", "hidden", "scratch")}
    for d in paths.values():
        d.mkdir()
    (paths["hidden"] / "01_autoencoders.py").write_text(HIDDEN)
    blank = nbformat.read(ROOT / "assignments" / UNIT, as_version=4)
    for student, (index, source) in attacks(paths).items():
        nb = nbformat.from_dict(json.loads(nbformat.writes(blank)))
        nb.cells.insert(index, new_code_cell(source))
        (paths["subs"] / student).mkdir()
        nbformat.write(nb, paths["subs"] / student / UNIT)
    for student, source in (("solution", ROOT / "solutions" / UNIT), ("blank", ROOT / "assignments" / UNIT)):
        (paths["subs"] / student).mkdir()
        shutil.copy(source, paths["subs"] / student / UNIT)
    library = {p: sha(p) for p in Path(gen3d_course.__file__).parent.rglob("*.py")}
    victim = sha(paths["subs"] / "solution" / UNIT)
    with pytest.MonkeyPatch.context() as patch:  # a known signing key, for steal-key to look for
        patch.setattr(grade_run, "secrets", SimpleNamespace(token_bytes=lambda n: KEY,
                                                            token_hex=secrets.token_hex))
        result = grade(paths["subs"], assignments=ROOT / "assignments", hidden=paths["hidden"],
                       out=paths["out"], jobs=2, scratch=paths["scratch"], uses_reference="zero",
                       log=lambda line: None)
    csv_after = (paths["out"] / "grades.csv").read_bytes()
    time.sleep(10)  # the delayed rewrite of grades.csv would have happened by now
    return {**paths, "root": root, "result": result, "library": library, "victim": victim,
            "csv_after": csv_after}


def rows(hostile) -> dict:
    with open(hostile["out"] / "grades.csv", newline="") as fh:
        return {(r["student"], r["question"]): r for r in csv.DictReader(fh)}


def points(hostile, student) -> int:
    mine = [r for (s, q), r in rows(hostile).items() if s == cell_text(student)]
    assert mine, f"no rows for {student}"
    return sum(int(r["points"]) for r in mine)


def notebook(hostile, student) -> dict:
    return rows(hostile)[cell_text(student), NOTEBOOK_ROW]


def test_controls_solution_full_marks_blank_zero(hostile):
    assert points(hostile, "solution") == FULL
    assert {q: r["status"] for (s, q), r in rows(hostile).items() if s == "solution"} == {
        "q1": "passed", "q2": "passed", "q3": "passed", "q4": "passed", "h1": "passed",
        NOTEBOOK_ROW: "ok"}
    assert points(hostile, "blank") == 0


@pytest.mark.parametrize("student", [
    "custom-exc", "input-transformer", "replaced-checks", "patched-allclose", "tensor-subclass",
    "overwrite-other", "forge-state", "rewrite-csv-later", "kill-kernels", "poison-library",
    "read-hidden", "pre-run-hook", "=HYPERLINK(\"x\")", "env-token-survivor",
    "allocate-2gib", "steal-key"])
def test_attack_scores_zero(hostile, student):
    assert points(hostile, student) == 0, rows(hostile)


def test_answering_with_the_library_reference_is_flagged_and_scored_zero(hostile):
    table = rows(hostile)
    for question in ("q1", "q2", "q3", "q4"):
        assert table["uses-reference", question]["status"] == "uses-reference"
        assert table["uses-reference", question]["points"] == "0"
    assert "ae.kl_divergence (cell 3)" in table["uses-reference", "q1"]["message"]
    assert "getattr(m, 'reparameterize')" in table["uses-reference", "q2"]["message"]
    assert "gen3d_course.models.autoencoders.vae_loss" in table["uses-reference", "q3"]["message"]
    assert "the check passed" in table["uses-reference", "q1"]["message"], "it would have passed"


def test_no_damage_to_other_submissions_outputs_or_library(hostile):
    assert sha(hostile["subs"] / "solution" / UNIT) == hostile["victim"], "victim's file intact"
    assert (hostile["out"] / "grades.csv").read_bytes() == hostile["csv_after"], "csv intact"
    assert json.loads((hostile["out"] / "results" / "solution.json").read_text())["units"][UNIT][
        "rows"][0]["points"] == 2
    assert {p: sha(p) for p in hostile["library"]} == hostile["library"], "library intact"
    assert "POISONOSError,OSError" in notebook(hostile, "poison-library")["message"]
    assert "READ[]" in notebook(hostile, "read-hidden")["message"], "the hidden folder is not there"
    assert list(hostile["scratch"].iterdir()) == []


def test_no_process_outlives_its_sandbox(hostile):
    survivors = []
    for p in psutil.process_iter(["cmdline"]):
        if TAG in " ".join(p.info["cmdline"] or []):
            survivors.append(p.pid)
    assert survivors == []


def test_hidden_sources_never_reach_the_kernel_or_any_file(hostile):
    unit = load_unit(ROOT / "assignments" / UNIT, hostile["hidden"] / "01_autoencoders.py")
    graded = prepare(unit, nbformat.read(ROOT / "solutions" / UNIT, as_version=4)).notebook
    assert MARKER not in nbformat.writes(graded)
    for path in hostile["root"].rglob("*"):
        if path.is_file() and hostile["hidden"] not in path.parents:
            assert MARKER.encode() not in path.read_bytes(), f"hidden source leaked into {path}"
    assert not Path("/tmp/leak").exists()


def test_no_csv_cell_starts_a_formula(hostile):
    with open(hostile["out"] / "grades.csv", newline="") as fh:
        cells = [cell for row in csv.reader(fh) for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    assert "'=HYPERLINK(\"x\")" in cells


def test_signing_key_and_results_are_out_of_the_notebooks_reach(hostile):
    """Not in its environment, its files, any process it can see, or any file it can open; and
    what it writes where the results file would be (``../results.jsonl``, on the sandbox's
    private /tmp) never reaches the grader: no line is flagged as forged."""
    message = notebook(hostile, "steal-key")["message"]
    assert "STOLEN[] FORGED" in message, message
    assert notebook(hostile, "steal-key")["status"] == "errors", message  # not "tampered"


def test_memory_cap_stops_a_2gib_allocation(hostile):
    message = notebook(hostile, "allocate-2gib")["message"]
    assert "can't allocate memory" in message or "MemoryError" in message or \
        notebook(hostile, "allocate-2gib")["status"] == "kernel-died", message


def test_kernel_deaths_are_only_self_inflicted(hostile):
    table = rows(hostile)
    died = sorted({s for (s, q), r in table.items() if r["status"] == "kernel-died"})
    assert died in ([], ["kill-kernels"]), died


# --- questions that take a network, an optimiser or a class (units 03 and 04) ----------------
# Each notebook keeps the released cells up to its last check used here, so the run stays short:
# 03 up to q3 (cell 10), 04 up to q2 (cell 8; its later checks then count as deleted).
CUT = {"03_wgan.ipynb": 11, "04_3dgan.ipynb": 9}
NETWORK_ATTACKS = {
    "custom-exc": (2, "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: [])"),
    "patched-allclose": (2, (
        "import torch\n"
        "torch.allclose = lambda *a, **k: True\n"
        "torch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
        "torch.equal = lambda *a, **k: True\n"
        "torch.Tensor.__eq__ = lambda a, b: torch.ones_like(a, dtype=torch.bool)")),
    "input-transformer": (2, (
        "def _rewrite(lines):\n"
        "    text = ''.join(lines)\n"
        "    return ['pass\\n'] if 'check' in text or 'serve' in text else lines\n"
        "get_ipython().input_transformers_post.append(_rewrite)")),
}
WRONG = {"03_wgan.ipynb": {  # cell index in the blank assignment -> a wrong answer
    6: "def clip_weights(critic, c=0.01):\n    pass",
    9: "def gradient_penalty(critic, real, fake, alpha):\n    return torch.zeros((), requires_grad=True)"},
    "04_3dgan.ipynb": {6: "class Generator(torch.nn.Module):\n    def __init__(self, z_dim, channels):\n"
                          "        super().__init__()\n        self.w = torch.nn.Linear(z_dim, 1)\n"
                          "    def forward(self, z):\n        return torch.sigmoid(self.w(z))"}}


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    root = tmp_path_factory.mktemp("networks")
    subs, out, scratch = root / "subs", root / "out", root / "scratch"
    scratch.mkdir()
    for name, cut in CUT.items():
        blank = nbformat.read(ROOT / "assignments" / name, as_version=4)
        blank.cells = blank.cells[:cut]
        solved = nbformat.read(ROOT / "solutions" / name, as_version=4)
        solved.cells = solved.cells[:cut]
        notebooks = {"solution": solved, "blank": blank}
        for student, (index, source) in NETWORK_ATTACKS.items():
            nb = nbformat.from_dict(json.loads(nbformat.writes(blank)))
            for cell, answer in WRONG[name].items():
                nb.cells[cell].source = answer
            nb.cells.insert(index, new_code_cell(source))
            notebooks[student] = nb
        for student, nb in notebooks.items():
            (subs / student).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, subs / student / name)
    grade(subs, assignments=ROOT / "assignments", out=out, jobs=2, scratch=scratch,
          units=list(CUT), log=lambda line: None)
    with open(out / "grades.csv", newline="") as fh:
        return {(r["student"], r["unit"], r["question"]): r for r in csv.DictReader(fh)}


MOVED = [("03_wgan", "q2"), ("03_wgan", "q3"), ("04_3dgan", "q2")]


def test_network_questions_are_scored_outside_the_kernel(networks):
    for unit, question in MOVED:
        row = networks["solution", unit, question]
        assert row["status"] == "passed" and row["points"] == row["max"], row
        assert networks["blank", unit, question]["points"] == "0"
    assert not [r for r in networks.values() if r["status"] == "kernel-scored"
                or "kernel-scored" in r["message"]]


@pytest.mark.parametrize("student", list(NETWORK_ATTACKS))
def test_network_question_attacks_score_zero(networks, student):
    for unit, question in MOVED:
        assert networks[student, unit, question]["points"] == "0", networks[student, unit, question]
