"""Static views proven in exported HTML: lectures executed in fast mode with ``GEN3D_VIEWS=static``,
exported with plotly.js beside the page (no CDN), opened in headless Chromium with every request
off the machine blocked. Moving a slider must change the drawn mesh or image, with no kernel."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import plotly
import plotly.io as pio
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from gen3d_course.kernels import IPCKernelManager

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["lectures/00_representations.ipynb", "lectures/01_autoencoders.ipynb"]
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# What a figure shows: for a mesh its vertex count and first coordinate, for an image its PNG.
READ_FRAME = ("gd => { const t = gd.data[0]; return t.type === 'image' ? [t.type, t.source] "
              ": [t.type, t.x.length, Number(t.x[0]), gd.layout.title.text]; }")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}


def export_html(nb: nbformat.NotebookNode, out: Path) -> Path:
    """``nb`` (executed) as one HTML page whose plotly figures load ``plotly.min.js`` from disk."""
    first = True
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get(PLOTLY_MIME)
            if figure is not None:
                output["data"]["text/html"] = pio.to_html(
                    figure, full_html=False, include_plotlyjs="directory" if first else False)
                first = False
    # No CDN: no MathJax (formulas stay TeX), no require.js (nothing here needs it).
    html, _ = HTMLExporter(template_name="lab", mathjax_url="", require_js_url="").from_notebook_node(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out.parent)
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Lecture name → exported HTML path, each executed in fast mode with static views."""
    out = tmp_path_factory.mktemp("static")
    saved = {k: os.environ.get(k) for k in ("GEN3D_VIEWS", "GEN3D_MODE", "OMP_NUM_THREADS")}
    os.environ.update(GEN3D_VIEWS="static", GEN3D_MODE="fast", OMP_NUM_THREADS="1")
    try:
        paths = {}
        for notebook in NOTEBOOKS:
            nb = nbformat.read(ROOT / notebook, as_version=4)
            NotebookClient(nb, timeout=300, kernel_name="python3", kernel_manager_class=IPCKernelManager,
                           store_widget_state=False,  # tqdm bars: no widget manager from a CDN
                           resources={"metadata": {"path": str(ROOT / "lectures")}}).execute()
            paths[notebook] = export_html(nb, out / (Path(notebook).stem + ".html"))
        yield paths
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_static_slider_changes_the_drawing_offline(pages, browser, artifacts, notebook):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    left, errors = [], []

    def route(r):
        url = urlparse(r.request.url)
        if url.scheme in ("file", "data", "blob") or url.hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(pages[notebook].as_uri())
    panels = page.locator(".js-plotly-plot").filter(has=page.locator(".slider-container"))
    panels.first.wait_for(state="attached", timeout=60_000)
    assert panels.count() >= 1, "no static slider panel in the exported page"
    name = Path(notebook).stem
    for n in range(panels.count()):
        plot = panels.nth(n)
        plot.scroll_into_view_if_needed()
        page.wait_for_timeout(500)  # the first WebGL draw
        before = plot.evaluate(READ_FRAME)
        shot_before = plot.screenshot(path=str(artifacts / f"static_{name}_panel{n}_before.png"))
        rail = plot.locator(".slider-rail-rect").first
        box = rail.bounding_box()
        page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + box["height"] / 2)
        page.wait_for_function(f"([gd, b]) => JSON.stringify(({READ_FRAME})(gd)) !== JSON.stringify(b)",
                               arg=[plot.element_handle(), before], timeout=10_000)
        page.wait_for_timeout(500)  # the redraw
        after = plot.evaluate(READ_FRAME)
        shot_after = plot.screenshot(path=str(artifacts / f"static_{name}_panel{n}_after.png"))
        print(f"{notebook} panel {n}: {before[0]} {before[1:] if before[0] != 'image' else 'png'} -> "
              f"{after[1:] if after[0] != 'image' else 'another png'}")
        assert after[0] == before[0] and after != before
        assert shot_after != shot_before, "the slider moved but the drawn pixels did not change"
        if before[0] == "mesh3d":
            assert plot.locator("canvas").count() >= 1, "no WebGL canvas: the mesh is not drawn"
    page.close()
    assert not errors, f"script errors in the page: {errors}"
    # Only the README badges (images in the title cell) point off the machine; nothing the
    # figures need does, and what tried to leave was stopped here.
    assert all(u.startswith(("https://mybinder.org/badge", "https://colab.research.google.com/assets"))
               for u in left), f"requests that would have left the machine: {left}"
