"""Every interactive panel in two forms, built from the same ``decode``/``render`` callable.

- **live**: a widget redrawn on every slider move (a plotly ``FigureWidget`` for meshes, an
  ``ipywidgets.Image`` for images; ``viz.widgets``, ``viz.image_sliders``). It needs a running
  kernel and a widget manager: JupyterLab, Binder.
- **static**: a plain ``plotly.graph_objects.Figure`` whose ``layout.sliders`` step through
  frames decoded in advance. It needs neither, so it works on Colab, in VS Code, in exported
  HTML and on the website. Each slider is sampled at ``values`` points (default ``VALUES``);
  each mesh is decimated (quadric error, ``fast_simplification``) to at most ``FACES`` faces and
  the whole figure to ``TOTAL_FACES``, which keeps a figure under ``MAX_BYTES`` (sizes per panel:
  ``benchmarks/sliders.py``). A multi-dimensional panel gets one slider per dimension around
  its start point: each moves that dimension with the others held at the start.

``form()`` alone decides which is used. A live panel whose widgets cannot be built falls back
to its static form and says so in one line; it never raises for that.
"""
from __future__ import annotations

import base64
import io
import itertools
import os
import sys
import time

import numpy as np
import plotly.graph_objects as go

from gen3d_course.viz import views3d

VIEWS_VARIABLE = "GEN3D_VIEWS"
FORMS = ("auto", "live", "static")
VALUES = 7  # samples per slider in the static form
FACES = 4000  # faces per static mesh frame
TOTAL_FACES = 72_000  # faces per static figure: about 24 bytes of plotly JSON each, 1.7 MB
MAX_BYTES = 2_000_000
SLIDER_ROW_PX = 80


def form() -> str:
    """``"live"`` or ``"static"``: ``GEN3D_VIEWS=live|static`` wins; ``auto`` (the default) picks.

    Auto is static on Colab (it renders no ``FigureWidget``: plotly.py #2202) and in VS Code
    (anywidget figures fail there: plotly.py #5027; ``VSCODE_PID`` is plotly's own test for it),
    and wherever the kernel was not started by a Jupyter server (``JPY_SESSION_NAME`` unset):
    nbconvert, nbval, a website build, a plain Python. Live in JupyterLab and Binder.
    """
    value = os.environ.get(VIEWS_VARIABLE, "auto").strip().lower() or "auto"
    if value not in FORMS:
        raise ValueError(f"{VIEWS_VARIABLE}={value!r}: use one of {', '.join(FORMS)}.")
    if value != "auto":
        return value
    if "google.colab" in sys.modules or "VSCODE_PID" in os.environ:
        return "static"
    return "live" if "JPY_SESSION_NAME" in os.environ else "static"


# --- images as PNG --------------------------------------------------------------------------

def _to_uint8(image) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) → (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3), (3, H, W), (1, H, W) or (H, W) image, "
                         f"got {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError("the image contains NaN or inf.")
    return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def png_bytes(images, scale: int = 4, gap: int = 2) -> bytes:
    """PNG of one image, or of several side by side (same height), each enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    images = images if isinstance(images, (list, tuple)) else [images]
    arrays = [_to_uint8(im) for im in images]
    height = max(a.shape[0] for a in arrays)
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = []
    for a in arrays:
        pad = np.full((height - a.shape[0], a.shape[1], 3), 255, np.uint8)
        row += [np.concatenate([a, pad]), spacer]
    strip = np.concatenate(row[:-1], axis=1).repeat(scale, 0).repeat(scale, 1)
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="PNG")
    return buffer.getvalue()


def _is_mesh(value) -> bool:
    return hasattr(value, "faces") and hasattr(value, "vertices")


# --- the static form ------------------------------------------------------------------------

def decimate(mesh, max_faces: int):
    """(vertices, faces) of ``mesh`` with at most about ``max_faces`` faces (quadric decimation)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) <= max_faces:
        return vertices, faces
    import fast_simplification

    vertices, faces = fast_simplification.simplify(vertices.astype(np.float32), faces.astype(np.int32),
                                                   target_reduction=1.0 - max_faces / len(faces))
    return np.asarray(vertices, np.float64), np.asarray(faces, np.int64)


def _mesh_frame(mesh, max_faces: int) -> dict:
    """Geometry only, as short JSON text (0.1 mm in a 1 m world), the same under plotly 5 and 6."""
    vertices, faces = decimate(mesh, max_faces)
    x, y, z = np.round(vertices, 4).T.tolist()
    i, j, k = faces.T.tolist()
    return dict(x=x, y=y, z=z, i=i, j=j, k=k)


def _image_frame(images) -> dict:
    return dict(source="data:image/png;base64,"
                + base64.b64encode(png_bytes(images, scale=1)).decode("ascii"))


def _image_figure(first, frame: dict, title: str) -> go.Figure:
    from PIL import Image

    width, height = Image.open(io.BytesIO(png_bytes(first, scale=1))).size
    scale = max(1, 256 // height)
    fig = go.Figure(go.Image(**frame, hoverinfo="skip"))
    fig.update_layout(width=max(width * scale, 600), height=height * scale + 30,
                      margin=dict(l=0, r=0, b=0, t=30),  # title left: the mode bar sits top right
                      title=dict(text=title, x=0.01, xanchor="left", font=dict(size=14)),
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def _height(images) -> int:
    return _to_uint8(images[0] if isinstance(images, (list, tuple)) else images).shape[0]


def _layout_sliders(fig: go.Figure, sliders: list[dict]) -> None:
    """Sliders under the plot, two a row in a wide figure; the figure grows to hold them."""
    plot_px = fig.layout.height - fig.layout.margin.t
    columns = 1 if len(sliders) == 1 or (fig.layout.width or 1000) < 600 else 2
    rows = -(-len(sliders) // columns)
    fig.layout.height += rows * SLIDER_ROW_PX
    fig.layout.margin.b = rows * SLIDER_ROW_PX
    for n, slider in enumerate(sliders):
        slider.update(x=(n % columns) / columns, len=1 / columns, xanchor="left", yanchor="top",
                      y=-(n // columns) * SLIDER_ROW_PX / plot_px, pad=dict(t=4, b=4, l=30, r=30))
    fig.layout.sliders = sliders


def static_panel(draw, start, sliders: dict, *, title: str = "", values_note: str = "",
                 max_faces: int = FACES):
    """A plotly Figure of ``draw(start)`` whose sliders show precomputed ``draw(point)`` frames.

    ``sliders`` maps a slider's name to its steps ``[(label, point, caption), ...]``; the step
    whose point is ``start`` (or the first) is active. ``draw`` returns a trimesh (drawn in the
    world cube, decimated) or an image / list of images (drawn side by side as one PNG).
    A step carries its frame's data (``method="update"``, not plotly frames, which renderers
    auto-play) and puts the other sliders back at the start, so what is drawn is what they show.
    Prints one line: frames, faces, megabytes and build time.
    """
    begin = time.perf_counter()
    start_key = _key(start)
    drawn = {start_key: draw(start)}
    for steps in sliders.values():
        for _, point, caption in steps:
            if _key(point) not in drawn:  # a point on several sliders (the start) is drawn once
                try:
                    drawn[_key(point)] = draw(point)
                except Exception as exc:
                    raise RuntimeError(f"static view: drawing the frame '{caption}' failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
    is_mesh = _is_mesh(drawn[start_key])
    n_steps = sum(len(steps) for steps in sliders.values())
    faces = max(200, min(max_faces, TOTAL_FACES // (n_steps + 1)))
    frames = {key: _mesh_frame(value, faces) if is_mesh else _image_frame(value)
              for key, value in drawn.items()}
    if is_mesh:
        fig = views3d.figure(go.Mesh3d(**frames[start_key], color=views3d.MESH_COLOR,
                                       flatshading=True, lighting=views3d.LIGHTING,
                                       lightposition=views3d.LIGHT_POSITION, hoverinfo="skip"),
                             title=title)
        fig.layout.margin.t = 30
    else:
        fig = _image_figure(drawn[start_key], frames[start_key], title)
    actives = [next((n for n, (_, point, _) in enumerate(steps) if _key(point) == start_key), 0)
               for steps in sliders.values()]
    layout_sliders = []
    for i, (name, steps) in enumerate(sliders.items()):
        others = {f"sliders[{j}].active": a for j, a in enumerate(actives) if j != i}
        plotly_steps = [dict(method="update", label=label, args=[
            {k: [v] for k, v in frames[_key(point)].items()}, {"title.text": caption, **others}, [0]])
            for label, point, caption in steps]
        layout_sliders.append(dict(active=actives[i], steps=plotly_steps, name=name,
                                   currentvalue=dict(prefix=f"{name} = ", font=dict(size=12))))
    _layout_sliders(fig, layout_sliders)
    size = len(fig.to_json())
    what = f"≤ {faces} faces a frame" if is_mesh else "PNG frames"
    print(f"static view: {n_steps} steps{values_note}, {len(drawn)} frames, {what}, "
          f"{size / 1e6:.2f} MB, built in {time.perf_counter() - begin:.1f} s")
    return fig


def _key(point):
    """A hashable identity for a slider point (a code, a value or a dict of control values)."""
    if isinstance(point, dict):
        return tuple(sorted(point.items()))
    return np.asarray(point, np.float64).tobytes()


def _samples(lo, hi, n: int, step=None) -> list:
    """``n`` evenly spaced values in [lo, hi] (snapped to ``step``; ints stay ints), no repeats."""
    values = np.linspace(lo, hi, n)
    if step:
        values = lo + np.round((values - lo) / step) * step
    if all(isinstance(v, int) for v in (lo, hi)) and (step is None or isinstance(step, int)):
        return list(dict.fromkeys(int(round(v)) for v in values))
    return list(dict.fromkeys(round(float(v), 6) for v in values))


# --- one API, two forms ---------------------------------------------------------------------

def _live(build):
    """``build()``'s widget, or None with one line saying why when widgets are unavailable."""
    try:
        return build()
    except ImportError as exc:
        print(f"live view unavailable ({exc}); showing the static form "
              f"(set {VIEWS_VARIABLE}=static to choose it).")
        return None


def _live_panel(sample, title: str):
    """The live panel that suits what the callable returns: a mesh or an image."""
    if _is_mesh(sample):
        from gen3d_course.viz.widgets import MeshPanel

        return MeshPanel(title=title)
    from gen3d_course.viz.image_sliders import RGBPanel

    return RGBPanel(title=title, scale=max(1, 256 // _height(sample)))


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def mesh_browser(make_mesh, *, values: int = 6, **controls):
    """A gallery: ``make_mesh(**choice)`` for each choice of the controls.

    Each control is a list of choices or an int ``(min, max[, step])``. Live: dropdowns and
    sliders, re-meshed on change. Static: one slider along every combination of the choices,
    int ranges sampled at ``values`` points.
    """
    if form() == "live":
        from gen3d_course.viz import widgets

        box = _live(lambda: widgets.mesh_browser(make_mesh, **controls))
        if box is not None:
            return box
    choices = {}
    for name, spec in controls.items():
        if isinstance(spec, list):
            choices[name] = spec
        elif isinstance(spec, tuple) and len(spec) in (2, 3):
            lo, hi, step = (*spec, 1)[:3]
            choices[name] = _samples(lo, hi, values, step)
        else:
            raise TypeError(f"{name}: expected a list of choices or an int (min, max[, step]) "
                            f"tuple, got {spec!r}")
    steps = []
    for combo in itertools.product(*choices.values()):
        point = dict(zip(choices, combo))
        label = " · ".join(_fmt(v) for v in combo)
        steps.append((label, point, ", ".join(f"{k} {_fmt(v)}" for k, v in point.items())))
    start = steps[0][1]
    return static_panel(lambda point: make_mesh(**point), start, {" · ".join(choices): steps},
                        values_note=f" ({' × '.join(str(len(c)) for c in choices.values())})")


def latent_sliders(decode, dim: int, *, names=None, value_range=(-3, 3), step=0.1, z0=None,
                   n_sliders=None, title: str = "", values: int = VALUES):
    """One slider per latent dimension (the first ``n_sliders``, default min(dim, 16)).

    ``decode(z)`` gets a float32 (dim,) code and returns a trimesh or an image. A slider moves
    its dimension with the others held at ``z0`` (default zeros). Static: each slider sampled at
    ``values`` points of ``value_range``.
    """
    z0 = np.zeros(dim, np.float32) if z0 is None else np.asarray(views3d.to_numpy(z0), np.float32).reshape(-1)
    if z0.shape != (dim,):
        raise ValueError(f"latent_sliders: z0 has shape {z0.shape}, expected ({dim},).")
    n = min(dim, 16) if n_sliders is None else n_sliders
    names = names or [f"z[{d}]" for d in range(n)]
    if form() == "live":
        from gen3d_course.viz import widgets

        box = _live(lambda: widgets.latent_sliders(
            decode, dim, names=names, value_range=value_range, step=step, z0=z0,
            n_sliders=n, panel=_live_panel(decode(z0.copy()), title)))
        if box is not None:
            return box
    grid = _samples(value_range[0], value_range[1], values, step)
    sliders = {}
    for d in range(n):
        steps = []
        for v in sorted(set(grid) | {float(z0[d])}):  # z0 itself is a step: the start
            z = z0.copy()
            z[d] = v
            steps.append((f"{v:.2f}", z, f"{names[d]} = {v:.2f}, others at z0"))
        sliders[names[d]] = steps
    return static_panel(lambda z: decode(z.copy()), z0, sliders, title=title,
                        values_note=f" ({n} sliders × {len(grid)} values + z0)")


def interpolation_slider(decode, z_a, z_b, *, steps: int = 21, t0: float = 0.0, title: str = ""):
    """The straight line (1 - t) z_a + t z_b in latent space, t in ``steps`` values from 0 to 1.

    t = 0 and t = 1 decode exactly z_a and z_b. The static form precomputes all ``steps``.
    """
    z_a = np.asarray(views3d.to_numpy(z_a), np.float64).reshape(-1)
    z_b = np.asarray(views3d.to_numpy(z_b), np.float64).reshape(-1)
    if z_a.shape != z_b.shape:
        raise ValueError(f"interpolation_slider: z_a {z_a.shape} and z_b {z_b.shape} differ.")
    ts = np.linspace(0.0, 1.0, steps)
    if form() == "live":
        from gen3d_course.viz import widgets

        box = _live(lambda: widgets.interpolation_slider(decode, z_a, z_b, steps=steps))
        if box is not None:
            box.slider.value = t0
            return box
    start = float(ts[np.argmin(np.abs(ts - t0))])
    line = [(f"{t:.2f}", float(t), f"t = {t:.2f}") for t in ts]
    return static_panel(lambda t: decode(((1 - t) * z_a + t * z_b).astype(np.float32)), start,
                        {"t": line}, title=title, values_note=f" ({steps} values of t)")


def image_sliders(render, *, title: str = "", values: int = VALUES, **controls):
    """Sliders whose values go to ``render(**values)``, which returns an image or a list of them.

    Each control is ``(min, max[, step[, start]])`` or a list of choices. Static: each slider
    sampled at ``values`` points with the others held at their start.
    """
    if form() == "live":
        from gen3d_course.viz import image_sliders as live

        box = _live(lambda: live.image_sliders(render, panel=live.RGBPanel(title=title), **controls))
        if box is not None:
            return box
    start, grids = {}, {}
    for name, spec in controls.items():
        if isinstance(spec, list):
            start[name], grids[name] = spec[0], spec
        elif isinstance(spec, tuple) and len(spec) in (2, 3, 4):
            lo, hi = spec[:2]
            step = spec[2] if len(spec) > 2 else None
            start[name] = spec[3] if len(spec) > 3 else lo
            grids[name] = sorted(set(_samples(lo, hi, values, step)) | {start[name]})
        else:
            raise TypeError(f"{name}: expected (min, max[, step[, start]]) or a list of choices, "
                            f"got {spec!r}")
    sliders = {name: [(_fmt(v), {**start, name: v}, f"{name} = {_fmt(v)}, others at start")
                      for v in grid] for name, grid in grids.items()}
    return static_panel(lambda point: render(**point), start, sliders, title=title,
                        values_note=f" ({len(grids)} sliders × ≤ {values + 1} values)")
