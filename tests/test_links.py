"""Tests for gen3d_course.links: the repository's address lives in pyproject.toml alone."""
import shutil
from pathlib import Path

import pytest

from gen3d_course import links
from gen3d_course.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_committed_badges_and_install_cells_match_pyproject():
    assert links.stale_links(ROOT) == [], "run `gen3d-course assign` (make assign) to rewrite them"


def fork(tmp_path, repository):
    """A copy of the course's linked files whose pyproject names another repository."""
    for name in ("pyproject.toml", "README.md", "lectures/00_representations.ipynb",
                 "solutions/01_autoencoders.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(
        links.repository(ROOT), repository))
    return tmp_path


def test_a_fork_changes_one_line_and_assign_rewrites_every_link(tmp_path, monkeypatch, capsys):
    root = fork(tmp_path, "https://github.com/someone/my-course")
    before = {p: p.read_text() for p in root.rglob("*") if p.suffix in (".md", ".ipynb")}
    assert sorted(links.stale_links(root)) == ["README.md", "lectures/00_representations.ipynb",
                                               "solutions/01_autoencoders.ipynb"]
    monkeypatch.chdir(root)
    assert main(["assign"]) == 0
    assert "relinked" in capsys.readouterr().out and links.stale_links(root) == []
    lecture = (root / "lectures/00_representations.ipynb").read_text()
    assert "mybinder.org/v2/gh/someone/my-course/main?labpath=lectures%2F00_representations.ipynb" in lecture
    assert "colab.research.google.com/github/someone/my-course/blob/main/lectures/00_representations.ipynb" in lecture
    assert '\\"gen3d-course @ git+https://github.com/someone/my-course\\"' in lecture
    solution = (root / "solutions/01_autoencoders.ipynb").read_text()
    assert "blob/main/assignments/01_autoencoders.ipynb" in solution  # students open the assignment
    assert "someone/my-course" in (root / "assignments/01_autoencoders.ipynb").read_text()
    for path, text in before.items():  # only the link lines changed
        old, new = text.splitlines(), path.read_text().splitlines()
        changed = [b for a, b in zip(old, new) if a != b]
        assert len(old) == len(new) and changed
        assert all("someone/my-course" in line for line in changed)
    assert main(["assign"]) == 0 and "relinked" not in capsys.readouterr().out


@pytest.mark.parametrize("value, message", [
    ("https://gitlab.com/someone/my-course", "not https://github.com/OWNER/NAME"),
    (None, "no Repository"),
])
def test_a_bad_repository_line_is_named(tmp_path, value, message):
    root = fork(tmp_path, value or "x")
    if value is None:
        text = (root / "pyproject.toml").read_text()
        (root / "pyproject.toml").write_text(text.replace('Repository = "x"', ""))
    with pytest.raises(ValueError, match=message):
        links.repository(root)
