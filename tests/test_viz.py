"""Tests for gen3d_course.viz: geometry of the traces, figure structure, widget wiring."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402

from gen3d_course.viz import plots, views3d, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def sphere_decoder(calls):
    """A trivial decoder: an icosphere of radius |z| (capped to stay in the world)."""
    def decode(z):
        calls.append(z)
        radius = min(float(np.linalg.norm(z)), 0.45)
        return trimesh.creation.icosphere(subdivisions=1, radius=radius)
    return decode


def trace_vertices(trace):
    return np.stack([np.asarray(trace.x), np.asarray(trace.y), np.asarray(trace.z)], axis=1)


def trace_faces(trace):
    return np.stack([np.asarray(trace.i), np.asarray(trace.j), np.asarray(trace.k)], axis=1)


# --- views3d -----------------------------------------------------------------

def test_voxel_trace_single_voxel_is_a_welded_cube():
    grid = np.zeros((4, 4, 4), bool)
    grid[1, 2, 3] = True
    trace = views3d.voxel_trace(grid)
    v, f = trace_vertices(trace), trace_faces(trace)
    assert v.shape == (8, 3) and f.shape == (12, 3)
    np.testing.assert_allclose(v.min(0), [-0.25, 0.0, 0.25])
    np.testing.assert_allclose(v.max(0), [0.0, 0.25, 0.5])
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(0.25 ** 3)  # positive: normals point outwards


def test_voxel_trace_block_keeps_only_exposed_faces():
    grid = np.zeros((8, 8, 8), bool)
    grid[2:4, 2:4, 2:4] = True  # 2x2x2 block: 6 sides x 4 faces = 24 quads
    trace = views3d.voxel_trace(grid, bounds=(-1.0, 1.0))
    v, f = trace_vertices(trace), trace_faces(trace)
    assert len(f) == 48
    assert len(v) == 26  # lattice points on the surface of a 3x3x3 lattice
    assert v.min() >= -1.0 and v.max() <= 1.0


def test_voxel_trace_full_grid_stays_in_world_and_empty_grid_is_empty():
    full = views3d.voxel_trace(torch.ones(32, 32, 32, dtype=torch.bool))
    v = trace_vertices(full)
    assert len(trace_faces(full)) == 6 * 32 * 32 * 2
    assert v.min() == pytest.approx(-0.5) and v.max() == pytest.approx(0.5)
    empty = views3d.voxel_trace(np.zeros((3, 3, 3)))
    assert len(trace_faces(empty)) == 0 and len(trace_vertices(empty)) == 0


def test_mesh_trace_carries_geometry_and_colours():
    mesh = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    trace = views3d.mesh_trace(mesh, name="box")
    assert isinstance(trace, go.Mesh3d)
    assert len(trace.x) == len(mesh.vertices) and len(trace.i) == len(mesh.faces)
    np.testing.assert_array_equal(trace_faces(trace), mesh.faces)
    assert trace.flatshading and trace.lighting.diffuse > 0
    floats = views3d.mesh_trace(mesh, vertex_colors=np.tile([1.0, 0.0, 0.5], (8, 1)))
    assert floats.vertexcolor[0] == "rgb(255,0,128)" and floats.color is None
    bytes_ = views3d.mesh_trace(mesh, vertex_colors=np.full((8, 3), 7, np.uint8))
    assert bytes_.vertexcolor[-1] == "rgb(7,7,7)"


def test_points_trace_colour_modes():
    pts = torch.rand(50, 3) - 0.5
    default = views3d.points_trace(pts)
    assert len(default.x) == 50 and isinstance(default.marker.color, str)
    assert views3d.points_trace(pts, colors="red").marker.color == "red"
    assert views3d.points_trace(pts, colors=(0.0, 1.0, 0.0)).marker.color == "rgb(0,255,0)"
    assert views3d.points_trace(pts, colors=(0, 255, 0)).marker.color == "rgb(0,255,0)"
    scalar = views3d.points_trace(pts, colors=np.linspace(-1, 1, 50))
    assert len(scalar.marker.color) == 50 and scalar.marker.showscale
    rgb = views3d.points_trace(pts, colors=np.ones((50, 3)), size=4)
    assert rgb.marker.color[0] == "rgb(255,255,255)" and rgb.marker.size == 4


def look_at(eye, target=(0, 0, 0), up=(0, 1, 0)):
    """OpenGL camera-to-world: -z looks from eye at target."""
    eye, target, up = map(np.asarray, (eye, target, up))
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = eye
    return c2w


def test_camera_traces_apex_at_centre_pointing_down_minus_z():
    poses = np.stack([look_at((0, 0, 2)), look_at((1.5, 0.5, 0)), look_at((0, -1, 1))])
    traces = views3d.camera_traces(poses, focal=100, width=200, height=100, scale=0.2)
    assert len(traces) == 3
    for pose, trace in zip(poses, traces):
        pts = np.array([p for p in zip(trace.x, trace.y, trace.z) if None not in p])
        apex = pts[0]
        np.testing.assert_allclose(apex, pose[:3, 3])
        base = np.unique(pts[~np.all(np.isclose(pts, apex), axis=1)].round(9), axis=0)
        assert len(base) == 4
        forward = base.mean(0) - apex
        np.testing.assert_allclose(forward, -0.2 * pose[:3, 2], atol=1e-9)
        # 200x100 pixels at focal 100: the base is 0.4 wide (along x) and 0.2 tall (along y)
        extent_x = np.ptp((base - apex) @ pose[:3, 0])
        extent_y = np.ptp((base - apex) @ pose[:3, 1])
        assert extent_x == pytest.approx(0.4) and extent_y == pytest.approx(0.2)


def test_figure_layout_is_the_fixed_world_cube_and_forces_no_renderer():
    fig = views3d.figure(views3d.mesh_trace(trimesh.creation.icosphere(radius=0.3)),
                         views3d.camera_traces(np.eye(4), 50, 64, 64), title="t")
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    scene = fig.layout.scene
    assert scene.aspectmode == "cube"
    for axis in (scene.xaxis, scene.yaxis, scene.zaxis):
        assert tuple(axis.range) == (-0.5, 0.5)
    assert fig.layout.height == 400 and fig.layout.margin.l == 0
    assert "renderer" not in fig.to_dict()["layout"]
    widget = views3d.figure_widget(views3d.points_trace(np.zeros((2, 3))))
    assert isinstance(widget, go.FigureWidget)
    assert widget.layout.scene.to_plotly_json() == views3d.figure().layout.scene.to_plotly_json()


def test_show_helpers_and_side_by_side():
    mesh = trimesh.creation.icosphere(radius=0.4)
    grid = np.zeros((4, 4, 4), bool)
    grid[0, 0, 0] = True
    figs = [views3d.show_mesh(mesh, color="orange"), views3d.show_points(mesh.vertices),
            views3d.show_voxels(grid)]
    assert all(isinstance(f, go.Figure) and len(f.data) == 1 for f in figs)
    both = views3d.side_by_side(figs + [views3d.points_trace(mesh.vertices)],
                                titles=["mesh", "points", "voxels", "trace"])
    assert len(both.data) == 4
    assert [t.scene for t in both.data] == ["scene", "scene2", "scene3", "scene4"]
    for name in ("scene", "scene2", "scene3", "scene4"):
        assert both.layout[name].aspectmode == "cube"
        assert tuple(both.layout[name].xaxis.range) == (-0.5, 0.5)
    assert [a.text for a in both.layout.annotations] == ["mesh", "points", "voxels", "trace"]


# --- plots -------------------------------------------------------------------

def test_image_grid_shows_exactly_n_axes():
    gray = np.random.rand(5, 8, 8)
    fig = plots.image_grid(gray, titles=list("abcde"))
    assert len(fig.axes) == 5 and fig.axes[0].get_title() == "a"
    rgb = torch.rand(3, 8, 8, 3) * 2 - 0.5  # out of range: must be clipped, not crash
    fig = plots.image_grid(rgb, nrow=3)
    data = fig.axes[0].images[0].get_array()
    assert len(fig.axes) == 3 and data.min() >= 0 and data.max() <= 1
    channels_first = plots.image_grid(torch.rand(2, 3, 8, 8))
    assert channels_first.axes[0].images[0].get_array().shape == (8, 8, 3)


def test_loss_curves_one_line_per_key():
    history = {"train": list(np.linspace(1, 0.1, 20)), "val": [1.0, 0.5, 0.3]}
    fig = plots.loss_curves(history, logy=True, smooth=0.5)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train", "val"]
    assert ax.get_yscale() == "log"
    np.testing.assert_array_equal(ax.get_lines()[1].get_xdata(), [0, 1, 2])
    raw = plots.loss_curves({"val": [1.0, 0.5, 0.3]})
    np.testing.assert_allclose(raw.axes[0].get_lines()[0].get_ydata(), [1.0, 0.5, 0.3])


def test_scatter2d_labels_and_given_axes():
    fig = plots.scatter2d(np.random.randn(30, 2), labels=np.arange(30) % 3, title="latents")
    ax = fig.axes[0]
    assert len(ax.collections) == 3 and ax.get_title() == "latents"
    own_fig, own_ax = plt.subplots()
    assert plots.scatter2d(torch.randn(10, 2), ax=own_ax) is own_fig


# --- widgets -----------------------------------------------------------------

def test_mesh_panel_updates_in_place_and_handles_empty_surface():
    panel = widgets.MeshPanel(trimesh.creation.box(extents=(0.2, 0.2, 0.2)))
    trace_id = id(panel.fig.data[0])
    assert len(panel.fig.data[0].i) == 12
    panel.update(trimesh.creation.icosphere(subdivisions=1, radius=0.3))
    assert id(panel.fig.data[0]) == trace_id and len(panel.fig.data) == 1
    assert len(panel.fig.data[0].i) == 80 and len(panel.fig.data[0].x) == 42
    assert isinstance(panel.last_update_s, float) and panel.last_update_s >= 0
    panel.update(trimesh.Trimesh())
    assert len(panel.fig.data[0].i) == 0 and "empty surface" in panel.fig.layout.title.text
    assert id(panel.fig.data[0]) == trace_id


def test_latent_sliders_decode_on_change_and_report_errors():
    calls = []
    decode = sphere_decoder(calls)
    ui = widgets.latent_sliders(decode, 20, z0=np.full(20, 0.01), names=None)
    assert len(ui.sliders) == 16 and len(calls) == 1
    before = trace_vertices(ui.panel.fig.data[0]).copy()
    ui.sliders[3].value = 0.4
    z = calls[-1]
    assert z.dtype == np.float32 and z.shape == (20,)
    assert z[3] == pytest.approx(0.4) and z[19] == pytest.approx(0.01)
    after = trace_vertices(ui.panel.fig.data[0])
    assert not np.allclose(before, after)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), np.linalg.norm(z), rtol=1e-3)

    def broken(z):
        raise ValueError("decoder exploded")
    ui = widgets.latent_sliders(broken, 2)
    assert "decoder exploded" in ui.panel.message.value
    ui.sliders[0].value = 1.0  # still alive: the message is refreshed, nothing raises
    assert "ValueError" in ui.panel.message.value


def test_interpolation_endpoints_decode_exactly():
    calls = []
    z_a, z_b = np.array([0.1, 0.2, 0.3]), torch.tensor([0.3, 0.0, -0.1])
    ui = widgets.interpolation_slider(sphere_decoder(calls), z_a, z_b, steps=11)
    np.testing.assert_array_equal(calls[-1], z_a.astype(np.float32))
    ui.slider.value = 1.0
    np.testing.assert_array_equal(calls[-1], z_b.numpy())
    ui.slider.value = 0.5
    np.testing.assert_allclose(calls[-1], [0.2, 0.1, 0.1], atol=1e-6)
    assert ui.panel.last_update_s is not None


def test_mesh_browser_calls_make_mesh_with_chosen_values():
    calls = []

    def make_mesh(category, seed):
        calls.append((category, seed))
        return trimesh.creation.box() if category == "box" else trimesh.creation.icosphere()
    ui = widgets.mesh_browser(make_mesh, category=["sphere", "box"], seed=(0, 9))
    assert calls == [("sphere", 0)]
    ui.controls["category"].value = "box"
    ui.controls["seed"].value = 7
    assert calls[-2:] == [("box", 0), ("box", 7)]
    assert len(ui.panel.fig.data[0].i) == 12
    with pytest.raises(TypeError):
        widgets.mesh_browser(make_mesh, seed=5)


def test_tables_align_numbers_right_and_text_left():
    from gen3d_course.viz.tables import format_table
    text = format_table([{"model": "GAN", "COV": 0.5, "n": 1200}, {"model": "diffusion", "COV": 0.625, "n": 8}],
                        formats={"COV": ".2f"}, title="held-out")
    lines = text.splitlines()
    assert lines[0] == "held-out"
    assert lines[1].split() == ["model", "COV", "n"]
    assert lines[3] == "GAN        0.50  1,200"
    assert lines[4] == "diffusion  0.62      8"


def test_tables_name_the_missing_column():
    from gen3d_course.viz.tables import format_table
    with pytest.raises(KeyError, match="row 1 has no column 'b'"):
        format_table([{"a": 1, "b": 2}, {"a": 3}])
    with pytest.raises(ValueError, match="no rows"):
        format_table([])
