"""Live explorers: sliders and dropdowns that re-decode a shape and redraw it (the live form
that ``viz.panels`` picks where a widget manager runs).

The point of these widgets is speed of feedback: one plotly FigureWidget is
created once and its mesh arrays are replaced in place, so a slider move only
ships new vertex and face arrays to the browser.
"""
import html
import time
import traceback

import ipywidgets as widgets
import numpy as np
import trimesh

from .. import config
from . import views3d

# CSS class on every explorer box, so browser tests find the panels in a rendered notebook.
PANEL_CLASS = "gen3d-panel"


class MeshPanel(widgets.VBox):
    """A FigureWidget with exactly one Mesh3d trace, plus a line for errors.

    `update(mesh)` swaps the geometry in place and records how long that took
    in `last_update_s`, so benchmarks can measure interaction latency.
    """

    def __init__(self, mesh=None, title="", color=None, bounds=config.WORLD):
        self.base_title = title
        self.fig = views3d.figure_widget(views3d.mesh_trace(trimesh.Trimesh(), color=color),
                                         title=title, bounds=bounds)
        self.fig.layout.margin.t = 30  # room for the "empty surface" notice
        self.trace = self.fig.data[0]
        self.message = widgets.HTML()
        self.last_update_s = None
        super().__init__([self.fig, self.message])
        if mesh is not None:
            self.update(mesh)

    def update(self, mesh):
        """Replace the drawn surface; an empty mesh is shown as an empty trace."""
        start = time.perf_counter()
        vertices = np.asarray(mesh.vertices, dtype=float).reshape(-1, 3)
        faces = np.asarray(mesh.faces, dtype=np.int32).reshape(-1, 3)  # int64 would be sent as a list
        with self.fig.batch_update():
            self.trace.x, self.trace.y, self.trace.z = vertices.T
            self.trace.i, self.trace.j, self.trace.k = faces.T
            self.fig.layout.title.text = "empty surface" if len(faces) == 0 else self.base_title
        self.last_update_s = time.perf_counter() - start

    def show_error(self, exc):
        """Show a failure in the widget: the drawn shape stays, the cause is visible."""
        details = html.escape("".join(traceback.format_exception(exc)))
        self.message.value = (
            f"<div style='color:#b00020'><b>{html.escape(type(exc).__name__)}:</b> "
            f"{html.escape(str(exc))}<details><summary>traceback</summary>"
            f"<pre style='font-size:11px'>{details}</pre></details></div>")

    def clear_error(self):
        self.message.value = ""


def _redraw(panel, make, *args, **kwargs):
    """Call `make` and draw its mesh, or report its exception in the panel."""
    try:
        panel.update(make(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - any decoder bug must reach the student
        panel.show_error(exc)
    else:
        panel.clear_error()


def _float32(z):
    return np.asarray(views3d.to_numpy(z), dtype=np.float32).reshape(-1)


def latent_sliders(decode, dim, *, names=None, value_range=(-3, 3), step=0.1, z0=None,
                   continuous_update=False, n_sliders=None, panel=None):
    """One slider per latent dimension, redrawing `decode(z)` on every change.

    `decode(z)` gets a float32 array of shape (dim,) and returns a trimesh.
    Large codes get sliders for the first `n_sliders` dimensions (default
    min(dim, 16)); the others stay at `z0` (default zeros). The returned VBox
    exposes `.panel`, `.sliders` and the current code `.z`; setting a slider's
    `.value` from code redraws exactly as dragging does.
    `panel` replaces the default MeshPanel, e.g. `image_sliders.RGBPanel()` for a
    decoder that returns an image; `decode` then returns what that panel's `update` takes.
    """
    z = np.zeros(dim, np.float32) if z0 is None else _float32(z0).copy()
    n = min(dim, 16) if n_sliders is None else n_sliders
    names = names or [f"z[{d}]" for d in range(n)]
    panel = MeshPanel() if panel is None else panel
    sliders = []
    for d in range(n):
        slider = widgets.FloatSlider(
            value=float(z[d]), min=value_range[0], max=value_range[1], step=step,
            description=names[d], continuous_update=continuous_update,
            style={"description_width": "initial"}, layout=widgets.Layout(width="auto"))

        def on_change(change, d=d):
            z[d] = change["new"]
            _redraw(panel, decode, z.copy())

        slider.observe(on_change, names="value")
        sliders.append(slider)
    controls = widgets.GridBox(sliders, layout=widgets.Layout(
        grid_template_columns="repeat(auto-fill, minmax(220px, 1fr))"))
    box = widgets.VBox([panel, controls])
    box.add_class(PANEL_CLASS)
    box.panel, box.sliders, box.z = panel, sliders, z
    _redraw(panel, decode, z.copy())
    return box


def interpolation_slider(decode, z_a, z_b, steps=21, continuous_update=False):
    """Walk the straight line (1 - t) z_a + t z_b in latent space with one slider.

    t = 0 and t = 1 decode exactly z_a and z_b, so the ends can be checked
    against the shapes they came from. Exposes `.panel` and `.slider`.
    """
    z_a = views3d.to_numpy(z_a).astype(np.float64).reshape(-1)
    z_b = views3d.to_numpy(z_b).astype(np.float64).reshape(-1)
    panel = MeshPanel()
    slider = widgets.FloatSlider(value=0.0, min=0.0, max=1.0, step=1.0 / (steps - 1),
                                 description="t", continuous_update=continuous_update)

    def on_change(change):
        t = change["new"]
        _redraw(panel, decode, _float32((1 - t) * z_a + t * z_b))

    slider.observe(on_change, names="value")
    box = widgets.VBox([panel, slider])
    box.add_class(PANEL_CLASS)
    box.panel, box.slider = panel, slider
    _redraw(panel, decode, _float32(z_a))
    return box


def mesh_browser(make_mesh, **controls):
    """A gallery explorer: `make_mesh(**values)` redrawn whenever a control changes.

    Each keyword is either a list of choices (a Dropdown) or an int tuple
    (min, max) or (min, max, step) (an IntSlider), e.g.
    `mesh_browser(load, category=["chair", "table"], seed=(0, 9))`.
    Exposes `.panel` and `.controls` (name -> widget).
    """
    made = {}
    for key, spec in controls.items():
        if isinstance(spec, list):
            made[key] = widgets.Dropdown(options=spec, value=spec[0], description=key)
        elif isinstance(spec, tuple) and len(spec) in (2, 3):
            lo, hi, step = (*spec, 1)[:3]
            made[key] = widgets.IntSlider(value=lo, min=lo, max=hi, step=step,
                                          description=key, continuous_update=False)
        else:
            raise TypeError(f"{key}: expected a list of choices or an int (min, max[, step]) "
                            f"tuple, got {spec!r}")
    panel = MeshPanel()

    def redraw(_change=None):
        _redraw(panel, make_mesh, **{key: w.value for key, w in made.items()})

    for w in made.values():
        w.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox(list(made.values())), panel])
    box.add_class(PANEL_CLASS)
    box.panel, box.controls = panel, made
    redraw()
    return box
