"""Sliders and 3D views proven in a real JupyterLab: nbval executes notebooks but never renders
a widget, so here a headless Chromium runs a lecture, moves a slider and reads the figure."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.browser

# (notebook, index of the explorer panel among the notebook's panels): one line per unit.
PANELS = [
    ("lectures/00_representations.ipynb", 0),  # the shape gallery (category x seed)
    ("lectures/01_autoencoders.ipynb", 1),  # the voxel VAE's latent sliders (re-meshed live)
]
RUN_TIMEOUT_MS = 240_000
MAX_LATENCY_S = 3.0
READ_MESH = "el => { const t = el.data[0]; return [t.type, t.x.length, Number(t.x[0])]; }"
WIDGET_ERROR_WORDS = ("widget", "anywidget", "plotly", "comm", "could not create", "model")


def _open_and_run(page, lab, notebook):
    base, token = lab
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    accept = page.locator(".jp-Dialog button.jp-mod-accept")  # "Select kernel", if asked
    try:
        accept.click(timeout=5_000)
    except Exception:  # noqa: BLE001 - no dialog is the usual case
        pass
    page.get_by_text("Run", exact=True).first.click()
    page.get_by_text("Run All Cells", exact=True).click()


@pytest.mark.parametrize("notebook, index", PANELS, ids=[n for n, _ in PANELS])
def test_slider_move_changes_the_rendered_mesh(lab, browser, artifacts, notebook, index):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    console = []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
    _open_and_run(page, lab, notebook)

    panel = page.locator(".gen3d-panel").nth(index)
    panel.wait_for(state="attached", timeout=RUN_TIMEOUT_MS)
    plot = panel.locator(".js-plotly-plot").first
    plot.wait_for(state="attached", timeout=60_000)
    panel.scroll_into_view_if_needed()
    page.wait_for_function("el => el.data && el.data[0].x.length > 0", arg=plot.element_handle(),
                           timeout=60_000)
    name = notebook.replace("/", "_").removesuffix(".ipynb") + f"_panel{index}"

    # The figure is drawn by WebGL (a canvas), not shown as an error or a text repr.
    kind, n_before, x_before = plot.evaluate(READ_MESH)
    assert kind == "mesh3d"
    assert plot.locator("canvas").count() >= 1, "no WebGL canvas in the plotly figure"
    assert "WebGL is not supported" not in plot.inner_text()
    panel.screenshot(path=str(artifacts / f"{name}_before.png"))

    handle = panel.locator(".noUi-handle").first
    handle.focus()
    start = time.perf_counter()
    handle.press("ArrowRight")
    while plot.evaluate(READ_MESH)[1:] == [n_before, x_before]:
        assert time.perf_counter() - start < 10, "the mesh did not change within 10 s of the move"
        time.sleep(0.02)
    latency = time.perf_counter() - start
    panel.screenshot(path=str(artifacts / f"{name}_after.png"))
    print(f"{notebook} panel {index}: mesh changed {latency * 1e3:.0f} ms after the key press "
          f"({n_before} -> {plot.evaluate(READ_MESH)[1]} vertex coordinates)")
    # Measured 0.74 s and 1.38 s (64³ re-mesh + software WebGL) with the machine at load 8-9;
    # the bound leaves room for a loaded CI machine.
    assert latency < MAX_LATENCY_S, f"the mesh changed only {latency:.2f} s after the slider moved"

    # Plain plotly outputs (not widgets) of the notebook render too.
    assert page.locator(".jp-OutputArea .js-plotly-plot").count() >= 2
    widget_errors = [text for kind, text in console if kind in ("error", "pageerror")
                     and any(w in text.lower() for w in WIDGET_ERROR_WORDS)]
    assert not widget_errors, f"widget errors in the browser console: {widget_errors}"
    page.close()
