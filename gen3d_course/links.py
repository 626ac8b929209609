"""The repository's address in one place, and the notebook links written from it.

The address is the ``Repository`` line of ``[project.urls]`` in ``pyproject.toml``. From it
``gen3d-course assign`` writes, in every lecture and solution (so in every assignment too) and in
the README, the Binder and Colab badges and the Colab install cell's ``%pip install`` line.
A fork changes that one line and runs ``gen3d-course assign``.

Badges open the notebook itself; a solution's badges open its assignment, which students run.
Links are rewritten in the file's text, so nothing else in a notebook changes.
"""
from __future__ import annotations

import re
from pathlib import Path

BRANCH = "main"
NOTEBOOK_FOLDERS = ("lectures", "solutions")
_REPOSITORY = re.compile(r'^\s*Repository\s*=\s*"([^"]+)"\s*$', re.MULTILINE)
_GITHUB = re.compile(r"^https://github\.com/([\w.-]+)/([\w.-]+?)/?$")
_BINDER = re.compile(r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]\([^)\s]*\)")
_COLAB = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/"
                    r"colab-badge\.svg\)\]\([^)\s]*\)")
_INSTALL = re.compile(r"gen3d-course @ git\+[^\\\"\s]+")


def repository(root=".") -> str:
    """``https://github.com/OWNER/NAME`` from ``[project.urls] Repository`` of ``root/pyproject.toml``."""
    path = Path(root) / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    urls = text.split("[project.urls]", 1)
    match = _REPOSITORY.search(urls[1].split("\n[", 1)[0]) if len(urls) == 2 else None
    if match is None:
        raise ValueError(f"{path}: no Repository = \"https://github.com/OWNER/NAME\" line under "
                         f"[project.urls]; the notebooks' badges and install cell are written from it.")
    if not _GITHUB.match(match.group(1)):
        raise ValueError(f"{path}: Repository = {match.group(1)!r} is not https://github.com/OWNER/NAME "
                         f"(Binder and Colab open notebooks from GitHub).")
    return match.group(1).rstrip("/")


def relink(text: str, target: str, repo: str) -> str:
    """``text`` (a notebook file or the README) with its badges opening ``target`` in ``repo``."""
    slug = _GITHUB.match(repo).expand(r"\1/\2")
    binder = (f"[![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/{slug}/"
              f"{BRANCH}?labpath={target.replace('/', '%2F')})")
    colab = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{slug}/blob/{BRANCH}/{target})")
    text = _BINDER.sub(lambda _: binder, text)
    text = _COLAB.sub(lambda _: colab, text)
    return _INSTALL.sub(lambda _: f"gen3d-course @ git+{repo}", text)


def _targets(root: Path) -> dict[Path, str]:
    """Each file that carries links → the repository path its badges open."""
    targets = {root / "README.md": "lectures/00_representations.ipynb"}
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((root / folder).glob("*.ipynb")):
            opens = "assignments" if folder == "solutions" else folder
            targets[path] = f"{opens}/{path.name}"
    return targets


def _relinked(root: Path):
    """(path, new text) for every file whose links differ from ``pyproject.toml``'s address."""
    repo = repository(root)
    for path, target in _targets(root).items():
        if path.exists():
            text = path.read_text(encoding="utf-8")
            new = relink(text, target, repo)
            if new != text:
                yield path, new


def stale_links(root=".") -> list[str]:
    """Files (relative to ``root``) whose links differ from what ``write_links`` writes."""
    root = Path(root)
    return [str(path.relative_to(root)) for path, _ in _relinked(root)]


def write_links(root=".") -> list[Path]:
    """Rewrite the badges and install lines from ``pyproject.toml``; returns the files changed."""
    changed = []
    for path, new in _relinked(Path(root)):
        path.write_bytes(new.encode("utf-8"))
        changed.append(path)
    return changed
