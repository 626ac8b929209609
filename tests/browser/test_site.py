"""The course website (`make book`; `make test` builds it in fast mode first) in headless
Chromium with the network cut off: every lecture page shows its pictures and draws its plotly
figures from the site's own files, a static slider steps its figure through the frames, and no
request leaves the machine."""
from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "site"
LECTURES = sorted(p.stem for p in (ROOT / "lectures").glob("*.ipynb"))
MAX_PAGE_BYTES = 10_000_000
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
FIGURES = "[...document.querySelectorAll('.js-plotly-plot')]"
# What a slider step may change: the traces (animate/restyle) or the scene (relayout), not the
# slider's own position.
FIGURE_STATE = """gd => { const {sliders, ...layout} = gd.layout;
                          return JSON.stringify([gd.data, layout]); }"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """The built site served on a free localhost port."""
    if not (SITE / "index.html").exists():
        pytest.skip(f"no site in {SITE}: run `make book` (make test builds it in fast mode)")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _offline_page(browser):
    """A page whose every request to anything but this machine is refused and recorded, with
    its local failures and script errors recorded too."""
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.outside, page.failed, page.errors = [], [], []

    def route(request_route):
        url = urlparse(request_route.request.url)
        if url.scheme in ("data", "blob") or url.hostname in LOCAL_HOSTS:
            request_route.continue_()
        else:
            page.outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    return page


def test_landing_page_has_the_course_map(site, browser, artifacts):
    page = _offline_page(browser)
    page.goto(f"{site}/index.html")
    links = page.locator("article table a[href^='lectures/']")
    assert links.count() == len(LECTURES), "the course map should link every lecture"
    page.screenshot(path=str(artifacts / "site_index.png"))
    assert not page.outside, f"requests left the machine: {page.outside}"
    assert not page.failed and not page.errors, (page.failed, page.errors)
    page.close()


@pytest.mark.parametrize("lecture", LECTURES)
def test_lecture_page_offline(site, browser, artifacts, lecture):
    size = (SITE / "lectures" / f"{lecture}.html").stat().st_size
    assert size < MAX_PAGE_BYTES, f"the page is {size / 1e6:.1f} MB"
    page = _offline_page(browser)
    # SwiftShader draws every WebGL figure on the CPU while the page loads: at load 12 on two
    # cores some pages took over 30 s (about 5 s on a quiet machine).
    page.goto(f"{site}/lectures/{lecture}.html", wait_until="load", timeout=180_000)
    page.screenshot(path=str(artifacts / f"site_{lecture}.png"))
    notebook = f"lectures/{lecture}.ipynb"
    for launcher in ("mybinder.org/v2/gh/", "colab.research.google.com/github/"):
        assert page.locator(f"a[href*='{launcher}'][href$='{notebook}']").count() >= 1, \
            f"no link opening {notebook} through {launcher}"

    images = page.locator(".cell_output img")
    assert images.count() >= 1, "no image (matplotlib PNG) on the page"
    broken = page.evaluate("""() => [...document.querySelectorAll('.cell_output img')]
                                    .filter(i => !(i.complete && i.naturalWidth > 0)).length""")
    assert broken == 0, f"{broken} images did not load"

    page.wait_for_function(f"() => {FIGURES}.every(gd => gd._fullLayout)", timeout=60_000)
    drawn = page.evaluate(f"""() => {FIGURES}.filter(gd => gd.querySelector('canvas')
        || gd.querySelector('.overplot path, .overplot image')).length""")
    assert drawn >= 1, "no plotly figure was drawn (no WebGL canvas, no SVG plot)"
    page.locator(".js-plotly-plot").first.screenshot(path=str(artifacts / f"site_{lecture}_plot.png"))

    # Every figure with a slider: a click on its rail must change what is drawn.
    with_sliders = page.evaluate(f"""() => {FIGURES}.map((gd, i) => [i, gd])
        .filter(([i, gd]) => (gd.layout.sliders || []).length).map(([i]) => i)""")
    for index in with_sliders:
        figure = page.locator(".js-plotly-plot").nth(index)
        figure.scroll_into_view_if_needed()
        before = figure.evaluate(FIGURE_STATE)
        figure.screenshot(path=str(artifacts / f"site_{lecture}_slider{index}_before.png"))
        rail = figure.locator(".slider-rail-touch-rect").first.bounding_box()
        at_end = figure.evaluate("gd => { const s = gd._fullLayout.sliders[0];"
                                 " return s.active >= s.steps.length / 2; }")
        x = rail["x"] + (3 if at_end else rail["width"] - 3)  # the step farthest from the knob
        page.mouse.click(x, rail["y"] + rail["height"] / 2)
        page.wait_for_function(f"([gd, before]) => ({FIGURE_STATE})(gd) !== before",
                               arg=[figure.element_handle(), before], timeout=10_000)
        page.wait_for_timeout(500)  # let a transition finish before the picture
        figure.screenshot(path=str(artifacts / f"site_{lecture}_slider{index}_after.png"))
    print(f"{lecture}: {images.count()} images, {drawn} plotly figures drawn, "
          f"{len(with_sliders)} sliders moved")

    assert not page.outside, f"requests left the machine: {page.outside}"
    assert not page.failed, f"local requests failed: {page.failed}"
    assert not page.errors, f"script errors: {page.errors}"
    page.close()
