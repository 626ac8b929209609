"""The course website (`make book`): Sphinx + myst-nb, built offline into _build/site.

Lectures are executed (in the run mode GEN3D_MODE names) through jupyter-cache, so a rebuild
re-runs only the notebooks that changed; everything a page loads ships inside the site.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import plotly
from docutils import nodes
from gen3d_course import links
from gen3d_course.config import mode

ROOT = Path(__file__).resolve().parents[1]

# What the lecture kernels see: static views (plotly sliders over precomputed frames, no kernel
# needed) and plotly figures as HTML for the page's plotly.js (kernel_startup.py).
os.environ["GEN3D_VIEWS"] = "static"
os.environ["PYTHONSTARTUP"] = str(Path(__file__).with_name("kernel_startup.py"))


def _sync_lectures() -> None:
    """Copy lectures/*.ipynb to docs/lectures/ (git-ignored): Sphinx reads only inside docs/,
    and the same relative path keeps the README's links and the launch buttons right. Copies
    keep their time stamps, so an unchanged lecture is not read again."""
    target = Path(__file__).with_name("lectures")
    target.mkdir(exist_ok=True)
    sources = {p.name: p for p in (ROOT / "lectures").glob("*.ipynb")}
    for stale in target.glob("*.ipynb"):
        if stale.name not in sources:
            stale.unlink()
    for name, source in sources.items():
        copy = target / name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copy2(source, copy)


_sync_lectures()

project = "gen3d-course"
author = "the gen3d-course authors"
copyright = author
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.mathjax"]
exclude_patterns = ["**/.ipynb_checkpoints"]
myst_enable_extensions = ["dollarmath", "amsmath"]

# Execution: cached per run mode, so fast-mode outputs (CI) never stand in for lecture-mode ones;
# `make book` fills the cache several notebooks at a time first (docs/execute.py). A failing cell stops the build, naming
# the notebook and showing the cell's traceback.
nb_execution_mode = "cache"
nb_execution_cache_path = str(ROOT / "_build" / "jupyter_cache" / mode())
nb_execution_timeout = 1800  # per cell: a lecture-mode training cell takes a few minutes
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_ipywidgets_js = {}  # the default loads the widget manager from a CDN
nb_merge_streams = True

autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "description"

html_theme = "sphinx_book_theme"
html_title = "gen3d-course"
html_theme_options = {
    "repository_url": links.repository(ROOT),  # the launch buttons follow [project.urls]
    "repository_branch": links.BRANCH,
    "path_to_docs": "",  # lectures/NN.ipynb on the site is lectures/NN.ipynb in the repository
    "use_repository_button": True,
    "launch_buttons": {"binderhub_url": "https://mybinder.org",
                       "colab_url": "https://colab.research.google.com",
                       "notebook_interface": "jupyterlab"},
}
html_context = {"default_mode": "auto"}  # unset, the theme logs an error on a first visit

# Offline assets: MathJax 3 from the sphinx-mathjax-offline wheel (only the bundle and fonts
# this site uses) and plotly.js from the plotly wheel, each copied once into _static.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
MATHJAX = Path(importlib.util.find_spec("sphinx-mathjax-offline").origin).parent / "static/mathjax"
MATHJAX_FILES = ["tex-chtml-full.js", "output/chtml/fonts/woff-v2"]  # all TeX, no lazy loads
mathjax_path = "mathjax/" + MATHJAX_FILES[0]


def _copy_offline_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    shutil.copy2(PLOTLY_JS, static)
    (static / "mathjax").mkdir(exist_ok=True)
    shutil.copy2(MATHJAX / MATHJAX_FILES[0], static / "mathjax")
    shutil.copytree(MATHJAX / MATHJAX_FILES[1], static / "mathjax" / MATHJAX_FILES[1],
                    dirs_exist_ok=True)


def _plotly_where_needed(app, pagename, templatename, context, doctree):
    """plotly.js (4.7 MB) only on pages that draw a plotly figure."""
    if "plotly-graph-div" in context.get("body", ""):
        app.add_js_file("plotly.min.js")  # in <head>, before the figures' inline scripts


def _remote_images_as_text(app, doctree, docname):
    """A remote image (the notebooks' Binder/Colab badges) becomes its alt text, still a link:
    the site loads nothing from outside."""
    for image in list(doctree.findall(nodes.image)):
        if image["uri"].startswith(("http://", "https://")):
            image.replace_self(nodes.Text(image.get("alt", "")))


def _bars_are_text(app, what, name, obj, options, lines):
    """Docstrings write |x| for a norm; reStructuredText would read a substitution (an error)."""
    lines[:] = [re.sub(r"(``.*?``)|\|", lambda m: m[1] or r"\|", line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _bars_are_text)
    app.connect("build-finished", _copy_offline_assets)
    app.connect("html-page-context", _plotly_where_needed)
    app.connect("doctree-resolved", _remote_images_as_text)
