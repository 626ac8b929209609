"""Colab-safe install: in a scratch venv that holds Colab's preinstalled versions
(``tests/colab_constraints.txt``), installing the course as the notebooks' install cell does
(plain ``pip install``, no constraints) changes none of the installed packages, and lecture 00 and
solution 01 then run in fast mode with static views under those versions.

Skipped, with the reason, when the package registry cannot be reached or when no local CPU
torch wheel of the pinned version is found (the test never lets pip fetch torch).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "tests" / "colab_constraints.txt"
NOTEBOOKS = ["lectures/00_representations.ipynb", "solutions/01_autoencoders.ipynb"]
# What Colab's kernel already has besides the pins; needed here to run the notebooks.
KERNEL = ["ipykernel", "nbclient"]
RUN = """
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
print("\\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])))
"""


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def local_torch_wheel(version: str) -> Path | None:
    """The CPU torch wheel of ``version`` in pip's find-links folders, for this Python."""
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                                capture_output=True, text=True)
    folders += configured.stdout.split()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in folders:
        folder = Path(folder.removeprefix("file://"))
        for wheel in sorted(folder.glob(f"torch-{version}*-{tag}-*.whl")) if folder.is_dir() else []:
            return wheel
    return None


def pip(python: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


def installed(python: Path) -> dict[str, str]:
    listed = json.loads(pip(python, "list", "--format=json").stdout)
    return {p["name"].lower(): p["version"] for p in listed}


@pytest.fixture
def scratch(tmp_path):
    """A folder removed after the test: its venv (torch included) is over a gigabyte."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_install_changes_no_colab_package_and_notebooks_run(scratch):
    pinned = pins()
    wheel = local_torch_wheel(pinned["torch"])
    if wheel is None:
        pytest.skip(f"no local CPU wheel torch=={pinned['torch']} in pip's find-links; "
                    f"this test never lets pip download torch (a CUDA build of several GB)")
    probe = pip(Path(sys.executable), "download", "--no-deps", "-d", str(scratch / "probe"),
                f"ipywidgets=={pinned['ipywidgets']}", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"the package registry is unreachable: {probe.stderr.strip().splitlines()[-1:]}")

    venv.create(scratch / "colab", with_pip=True)
    python = scratch / "colab" / "bin" / "python"
    colab = [str(wheel)] + [f"{name}=={version}" for name, version in pinned.items() if name != "torch"]
    done = pip(python, "install", "-q", "--no-compile", "-c", str(CONSTRAINTS), *colab, *KERNEL)
    assert done.returncode == 0, done.stderr[-3000:]
    before = installed(python)
    assert {name: before[name].split("+")[0] for name in pinned} == pinned

    source = scratch / "source"  # a clean copy: pip builds a folder in place, leaving build/ behind
    shutil.copytree(ROOT / "gen3d_course", source / "gen3d_course",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = pip(python, "install", "-q", "--no-compile", str(source))  # as the install cell does
    assert done.returncode == 0, done.stderr[-3000:]
    after = installed(python)
    changed = {name: (version, after.get(name)) for name, version in before.items()
               if after.get(name) != version}
    assert not changed, f"installing the course changed preinstalled packages: {changed}"
    assert after["gen3d-course"] and "anywidget" not in after

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package only
    env.update(GEN3D_MODE="fast", GEN3D_VIEWS="static", OMP_NUM_THREADS="1")
    for notebook in NOTEBOOKS:
        path = ROOT / notebook
        run = subprocess.run([str(python), "-c", RUN, str(path), str(path.parent)], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{notebook} failed under Colab's versions:\n{run.stderr[-3000:]}"
        sizes = re.findall(r"static view: .*?([\d.]+) MB", run.stdout)
        assert sizes or "lectures/" not in notebook, f"{notebook} showed no static view"
        assert all(float(size) <= 2.0 for size in sizes), f"{notebook}: static figures of {sizes} MB"
