"""The live form of image panels (NeRF orbits, GRAF codes and cameras; ``viz.panels`` picks it).

``image_sliders(render, azimuth=(0, 360, 10), ...)`` calls ``render(**values)`` on every slider
move and shows the result in an ``RGBPanel``: one ``ipywidgets.Image`` whose PNG bytes are
replaced in place (a 64×64 view is a few kB, so a move costs the render, not the transfer).
The panel follows ``viz.widgets.MeshPanel``'s protocol: ``update``, ``show_error``,
``clear_error`` and ``last_update_s`` (for ``benchmarks/sliders.py``).
"""
from __future__ import annotations

import html
import time
import traceback

import ipywidgets as widgets

from gen3d_course.viz.panels import png_bytes
from gen3d_course.viz.widgets import PANEL_CLASS


class RGBPanel(widgets.VBox):
    """A colour image (or a row of images) updated in place, plus a line for errors."""

    def __init__(self, image=None, title: str = "", scale: int = 4):
        self.scale = scale
        self.title = widgets.HTML(f"<b>{html.escape(title)}</b>" if title else "")
        self.image = widgets.Image(format="png")
        self.message = widgets.HTML()
        self.last_update_s = None
        super().__init__([self.title, self.image, self.message])
        if image is not None:
            self.update(image)

    def update(self, image) -> None:
        """Show ``image`` (H, W, 3) in [0, 1], or a list of images side by side."""
        start = time.perf_counter()
        self.image.value = png_bytes(image, self.scale)
        self.last_update_s = time.perf_counter() - start

    def show_error(self, exc: BaseException) -> None:
        details = html.escape("".join(traceback.format_exception(exc)))
        self.message.value = (
            f"<div style='color:#b00020'><b>{html.escape(type(exc).__name__)}:</b> "
            f"{html.escape(str(exc))}<details><summary>traceback</summary>"
            f"<pre style='font-size:11px'>{details}</pre></details></div>")

    def clear_error(self) -> None:
        self.message.value = ""


def _control(name: str, spec):
    if isinstance(spec, widgets.ValueWidget):
        return spec
    if isinstance(spec, list):
        return widgets.Dropdown(options=spec, value=spec[0], description=name)
    if isinstance(spec, tuple) and len(spec) in (2, 3, 4):
        lo, hi = spec[:2]
        step = spec[2] if len(spec) > 2 else None
        value = spec[3] if len(spec) > 3 else lo
        kind = widgets.IntSlider if all(isinstance(v, int) for v in spec) else widgets.FloatSlider
        kwargs = {} if step is None else {"step": step}
        return kind(value=value, min=lo, max=hi, description=name, continuous_update=False,
                    style={"description_width": "initial"}, **kwargs)
    raise TypeError(f"{name}: expected (min, max[, step[, value]]), a list of choices or a widget, "
                    f"got {spec!r}")


def image_sliders(render, panel: RGBPanel | None = None, **controls):
    """Sliders (or dropdowns) whose values are passed to ``render(**values)``, shown in a panel.

    Each keyword is ``(min, max[, step[, start]])`` (ints → IntSlider, else FloatSlider), a list
    of choices (Dropdown) or a ready widget. ``render`` returns an image or a list of images.
    The returned VBox exposes ``.panel``, ``.controls`` (name → widget) and ``.redraw()``;
    setting a control's ``.value`` from code redraws exactly as dragging does. An exception in
    ``render`` is shown in the panel, and the last good image stays.
    """
    panel = RGBPanel() if panel is None else panel
    made = {name: _control(name, spec) for name, spec in controls.items()}

    def redraw(_change=None):
        try:
            panel.update(render(**{name: w.value for name, w in made.items()}))
        except Exception as exc:  # noqa: BLE001 - any renderer bug must reach the student
            panel.show_error(exc)
        else:
            panel.clear_error()

    for w in made.values():
        w.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox(list(made.values())), panel])
    box.add_class(PANEL_CLASS)
    box.panel, box.controls, box.redraw = panel, made, redraw
    redraw()
    return box
