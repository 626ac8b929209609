"""Interactive 3D views (plotly) of meshes, point sets, voxel grids and cameras.

Every figure uses the same fixed scene: the world cube [-0.5, 0.5]^3 with equal
aspect and the y axis up. A fixed scene (rather than plotly's auto-fit) is what
makes two views comparable: a shape that looks bigger *is* bigger.

Figures never choose a renderer; Jupyter's default decides how they are shown.
"""
import numpy as np
import plotly.graph_objects as go
from plotly.basedatatypes import BaseFigure
from plotly.subplots import make_subplots

from .. import config

# Flat shading with a key light: facets stay visible, so the eye reads shape
# (and tessellation artefacts) instead of a smooth, ambiguous blob.
LIGHTING = dict(ambient=0.45, diffuse=0.8, specular=0.15, roughness=0.7, fresnel=0.1)
LIGHT_POSITION = dict(x=1e3, y=2e3, z=1.5e3)
MESH_COLOR = "#8fa8c8"
POINT_COLOR = "#1f77b4"
CAMERA_COLOR = "#d62728"


def to_numpy(x):
    """Accept torch tensors as well as arrays, so notebooks can pass either."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _rgb_strings(colors):
    """(N, 3) floats in [0, 1] or integers in 0..255 -> plotly 'rgb(r,g,b)' strings."""
    colors = to_numpy(colors)[..., :3]
    if colors.dtype.kind == "f":
        colors = np.clip(colors, 0.0, 1.0) * 255.0
    colors = np.rint(colors).astype(int).reshape(-1, 3)
    return [f"rgb({r},{g},{b})" for r, g, b in colors]


def _mesh3d(vertices, faces, color=None, vertex_colors=None, name=None, opacity=1.0):
    vertices = np.asarray(vertices, dtype=float).reshape(-1, 3)
    faces = np.asarray(faces, dtype=int).reshape(-1, 3)
    return go.Mesh3d(
        x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2],
        i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
        color=None if vertex_colors is not None else (color or MESH_COLOR),
        vertexcolor=None if vertex_colors is None else _rgb_strings(vertex_colors),
        flatshading=True, lighting=LIGHTING, lightposition=LIGHT_POSITION,
        opacity=opacity, name=name, showlegend=name is not None, hoverinfo="skip",
    )


def mesh_trace(mesh, color=None, vertex_colors=None, name=None, opacity=1.0):
    """A trimesh as a flat-shaded Mesh3d; `vertex_colors` (N, 3) floats in [0, 1] or uint8."""
    return _mesh3d(mesh.vertices, mesh.faces, color, vertex_colors, name, opacity)


def points_trace(points, colors=None, size=2, name=None):
    """A point set as markers.

    `colors` is None, one colour (a string, or an RGB tuple of floats in [0, 1]
    or ints in 0..255), an (N,) array of
    scalars drawn through a colour scale (e.g. SDF values), or (N, 3) RGB.
    """
    points = to_numpy(points).reshape(-1, 3)
    marker = dict(size=size, color=POINT_COLOR)
    if isinstance(colors, str):
        marker["color"] = colors
    elif isinstance(colors, tuple):
        marker["color"] = _rgb_strings([colors])[0]
    elif colors is not None:
        colors = to_numpy(colors)
        if colors.ndim == 1:
            marker.update(color=colors, colorscale="Viridis", showscale=True,
                          colorbar=dict(thickness=10, len=0.6))
        else:
            marker["color"] = _rgb_strings(colors)
    return go.Scatter3d(x=points[:, 0], y=points[:, 1], z=points[:, 2], mode="markers",
                        marker=marker, name=name, showlegend=name is not None)


def voxel_trace(grid, bounds=config.WORLD, name=None, color=None):
    """The surface of an occupancy grid as one mesh.

    Only faces between an occupied and an empty cell (or the grid border) are
    kept, found with whole-array comparisons, so a 32^3 grid draws in
    milliseconds and hidden interior faces never reach the browser.
    `grid[i, j, k]` is the cell at x-index i, y-index j, z-index k; the grid
    spans `bounds` along every axis.
    """
    occupied = to_numpy(grid).astype(bool)
    padded = np.pad(occupied, 1)
    quads = []
    for axis in range(3):
        u, v = np.eye(3, dtype=int)[[(axis + 1) % 3, (axis + 2) % 3]]
        for side in (-1, 1):
            neighbour = [slice(1, -1)] * 3
            neighbour[axis] = slice(1 + side, padded.shape[axis] - 1 + side)
            cells = np.argwhere(occupied & ~padded[tuple(neighbour)])
            cells[:, axis] += int(side > 0)  # the face lies on the cell's far side
            corners = np.array([0 * u, u, u + v, v])  # counter-clockwise seen from +axis
            if side < 0:
                corners = corners[::-1]  # so every normal points out of the solid
            quads.append(cells[:, None, :] + corners[None])
    quads = np.concatenate(quads)  # (F, 4, 3) integer lattice corners
    # Weld shared corners (one integer id per lattice point, then unique) so the
    # mesh is watertight and no vertex is sent to the browser twice.
    lattice_shape = np.array(occupied.shape) + 1
    ids = np.ravel_multi_index(quads.reshape(-1, 3).T, lattice_shape)
    ids, index = np.unique(ids, return_inverse=True)
    lattice = np.stack(np.unravel_index(ids, lattice_shape), axis=1)
    index = index.reshape(-1, 4)
    faces = np.concatenate([index[:, [0, 1, 2]], index[:, [0, 2, 3]]])
    lo, hi = bounds
    vertices = lo + lattice * ((hi - lo) / np.array(occupied.shape))
    return _mesh3d(vertices, faces, color=color, name=name)


def camera_traces(c2w, focal, width, height, scale=0.1, name=None):
    """One pyramid frustum per camera-to-world pose, as line traces.

    Convention (OpenGL): in camera space the camera looks down -z, y is up and
    x is right; `c2w` (N, 4, 4) or (4, 4) maps camera to world coordinates.
    The apex is the camera centre; the base is the image rectangle placed at
    distance `scale` along the viewing direction, so its shape shows the field of
    view (`focal` in pixels, scalar or (N,), image `width` x `height` pixels).
    """
    c2w = to_numpy(c2w).reshape(-1, 4, 4)
    focal = np.broadcast_to(to_numpy(focal).astype(float), (len(c2w),))
    traces = []
    for n, (pose, f) in enumerate(zip(c2w, focal)):
        half_w, half_h = width / (2 * f), height / (2 * f)
        base = scale * np.array([[-half_w, half_h, -1], [half_w, half_h, -1],
                                 [half_w, -half_h, -1], [-half_w, -half_h, -1]])
        apex = pose[:3, 3]
        base = base @ pose[:3, :3].T + apex
        # apex, rectangle, then the three remaining apex edges; None breaks the line.
        path = [apex, *base, base[0], None, apex, base[1], None, apex, base[2], None, apex, base[3]]
        x, y, z = ([None if p is None else float(p[a]) for p in path] for a in range(3))
        traces.append(go.Scatter3d(
            x=x, y=y, z=z, mode="lines", line=dict(color=CAMERA_COLOR, width=3),
            name=name or "cameras", legendgroup=name or "cameras",
            showlegend=name is not None and n == 0, hoverinfo="skip",
        ))
    return traces


def _scene(bounds):
    axis = dict(range=list(bounds), autorange=False, zeroline=False,
                showbackground=True, backgroundcolor="#f4f4f4", gridcolor="#dddddd")
    return dict(xaxis=dict(axis, title="x"), yaxis=dict(axis, title="y"),
                zaxis=dict(axis, title="z"), aspectmode="cube",
                camera=dict(up=dict(x=0, y=1, z=0), eye=dict(x=1.2, y=0.9, z=1.6)))


def _layout(fig, title, bounds, n_scenes=1, reserve_title=False):
    """The one layout every view shares: fixed world cube, small and tight."""
    scenes = {("scene" if n == 0 else f"scene{n + 1}"): _scene(bounds) for n in range(n_scenes)}
    top = 30 if title or reserve_title else 0
    fig.update_layout(title=dict(text=title, x=0.5, font=dict(size=14)),
                      height=400, margin=dict(l=0, r=0, b=0, t=top),
                      legend=dict(x=0, y=1), **scenes)
    return fig


def _flatten(traces):
    """camera_traces returns a list; let callers mix lists and single traces."""
    for t in traces:
        if isinstance(t, (list, tuple)):
            yield from _flatten(t)
        else:
            yield t


def figure(*traces, title=None, bounds=config.WORLD):
    """A static figure of the traces over the world cube."""
    return _layout(go.Figure(data=list(_flatten(traces))), title, bounds)


def figure_widget(*traces, title=None, bounds=config.WORLD):
    """Like `figure`, but a live widget whose traces can be updated in place."""
    return _layout(go.FigureWidget(data=list(_flatten(traces))), title, bounds)


def show_mesh(mesh, title=None, bounds=config.WORLD, **trace_kw):
    return figure(mesh_trace(mesh, **trace_kw), title=title, bounds=bounds)


def show_points(points, title=None, bounds=config.WORLD, **trace_kw):
    return figure(points_trace(points, **trace_kw), title=title, bounds=bounds)


def show_voxels(grid, title=None, bounds=config.WORLD, **trace_kw):
    return figure(voxel_trace(grid, bounds=bounds, **trace_kw), title=title, bounds=bounds)


def side_by_side(figs_or_traces, titles=None, bounds=config.WORLD):
    """Several views in one row, each in its own identical scene.

    Each item is a figure, a trace or a list of traces. Comparing
    representations of one shape (mesh, points, voxels) only works when every
    panel shows the same world cube, which is why the scenes are not auto-fit.
    """
    n = len(figs_or_traces)
    fig = make_subplots(rows=1, cols=n, specs=[[{"type": "scene"}] * n],
                        subplot_titles=titles, horizontal_spacing=0.01)
    for col, item in enumerate(figs_or_traces, start=1):
        traces = item.data if isinstance(item, BaseFigure) else [item]
        for trace in _flatten(traces):
            fig.add_trace(trace, row=1, col=col)
    return _layout(fig, None, bounds, n_scenes=n, reserve_title=bool(titles))
