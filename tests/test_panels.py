"""Tests for gen3d_course.viz.panels: the one switch, and both forms built from one callable."""
import sys

import numpy as np
import plotly.graph_objects as go
import pytest
import trimesh

from gen3d_course.viz import panels


@pytest.fixture
def static(monkeypatch):
    monkeypatch.setenv(panels.VIEWS_VARIABLE, "static")


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setenv(panels.VIEWS_VARIABLE, "live")


def sphere(radius):
    return trimesh.creation.icosphere(subdivisions=2, radius=radius)


def step_data(fig, slider, step):
    return fig.layout.sliders[slider].steps[step].args[0]


def test_form_is_decided_in_one_place(monkeypatch):
    for name in (panels.VIEWS_VARIABLE, "JPY_SESSION_NAME", "VSCODE_PID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert panels.form() == "static"  # nbconvert, nbval, plain Python: no widget manager
    monkeypatch.setenv("JPY_SESSION_NAME", "lectures/00.ipynb")
    assert panels.form() == "live"  # a kernel of a Jupyter server: JupyterLab, Binder
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert panels.form() == "static"
    monkeypatch.setenv(panels.VIEWS_VARIABLE, "live")
    assert panels.form() == "live"  # the user's switch wins
    monkeypatch.setenv(panels.VIEWS_VARIABLE, "LIVE ")
    assert panels.form() == "live"
    monkeypatch.setenv(panels.VIEWS_VARIABLE, "widgets")
    with pytest.raises(ValueError, match="GEN3D_VIEWS='widgets'"):
        panels.form()


def test_static_latent_sliders_move_one_dimension_around_z0(static, capsys):
    calls = []

    def decode(z):
        calls.append(z.copy())
        return sphere(0.1 + 0.1 * abs(float(z[0])) + 0.05 * abs(float(z[2])))

    z0 = np.array([0.25, 0.0, -0.5], np.float32)
    fig = panels.latent_sliders(decode, 3, z0=z0, value_range=(-2, 2), step=0.5, values=5)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    assert all(z.dtype == np.float32 and z.shape == (3,) for z in calls)
    assert len(fig.layout.sliders) == 3
    for d, slider in enumerate(fig.layout.sliders):
        labels = [s.label for s in slider.steps]
        assert labels[slider.active] == f"{z0[d]:.2f}"  # z0 is a step, and the active one
        assert len(labels) == 5 + (z0[d] not in (-2, -1, 0, 1, 2))
        others = slider.steps[0].args[1]
        assert {k: v for k, v in others.items() if k.startswith("sliders")} == {
            f"sliders[{j}].active": fig.layout.sliders[j].active for j in range(3) if j != d}
    moved = [z for z in calls if not np.array_equal(z, z0)]
    assert all(np.count_nonzero(z != z0) == 1 for z in moved)  # one dimension, the others held
    assert len(calls) == len({z.tobytes() for z in calls})  # each code decoded once
    low, start = step_data(fig, 0, 0), step_data(fig, 0, fig.layout.sliders[0].active)
    assert low["x"] != start["x"] and "title.text" in fig.layout.sliders[0].steps[0].args[1]
    line = capsys.readouterr().out.strip()
    assert line.startswith("static view:") and "\n" not in line and "MB" in line


def test_static_meshes_are_decimated_and_figures_stay_small(static):
    big = trimesh.creation.icosphere(subdivisions=6, radius=0.4)  # 81 920 faces
    fig = panels.mesh_browser(lambda shape, seed: big.copy(), shape=["a", "b"], seed=(0, 50, 1),
                              values=6)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps[:2]] == ["a · 0", "a · 10"] and len(steps) == 12
    budget = min(panels.FACES, panels.TOTAL_FACES // (len(steps) + 1))
    for step in steps:
        faces = len(step.args[0]["i"][0])
        assert 0.8 * budget <= faces <= budget
        assert np.abs(np.array(step.args[0]["x"][0])).max() <= 0.41
    assert len(fig.to_json()) <= panels.MAX_BYTES
    with pytest.raises(TypeError, match="seed"):
        panels.mesh_browser(lambda seed: big, seed=5)


def test_static_interpolation_ends_decode_exactly_and_t0_is_active(static):
    calls = []
    z_a, z_b = np.array([0.1, 0.2]), np.array([0.3, -0.2])

    def decode(z):
        calls.append(z)
        return sphere(0.1 + abs(float(z[0])))

    fig = panels.interpolation_slider(decode, z_a, z_b, steps=11, t0=0.5)
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == 11 and slider.active == 5 and slider.steps[5].label == "0.50"
    assert any(np.array_equal(z, z_a.astype(np.float32)) for z in calls)
    assert any(np.array_equal(z, z_b.astype(np.float32)) for z in calls)
    with pytest.raises(ValueError, match="differ"):
        panels.interpolation_slider(decode, z_a, np.zeros(3))


def test_static_image_sliders_are_png_frames(static):
    def render(azimuth, mode):
        return [np.full((8, 8, 3), azimuth / 360), np.zeros((8, 8)) if mode == "rgb" else np.ones((8, 8))]

    fig = panels.image_sliders(render, azimuth=(0.0, 360.0, 15.0, 30.0), mode=["rgb", "depth"])
    assert isinstance(fig.data[0], go.Image) and fig.data[0].source.startswith("data:image/png;base64,")
    azimuth, mode = fig.layout.sliders
    assert [s.label for s in azimuth.steps] == ["0", "30", "60", "120", "180", "240", "300", "360"]
    assert azimuth.active == 1 and [s.label for s in mode.steps] == ["rgb", "depth"]
    sources = {step_data(fig, 0, n)["source"][0] for n in range(8)}
    assert len(sources) == 8
    with pytest.raises(TypeError, match="azimuth"):
        panels.image_sliders(render, azimuth=30.0)


def test_live_forms_are_widgets_built_from_the_same_callable(live):
    from gen3d_course.viz.image_sliders import RGBPanel
    from gen3d_course.viz.widgets import MeshPanel

    box = panels.latent_sliders(lambda z: sphere(0.1 + abs(float(z[0])) / 10), 3)
    assert isinstance(box.panel, MeshPanel) and len(box.sliders) == 3
    box.sliders[0].value = 2.0
    assert max(box.panel.fig.data[0].x) == pytest.approx(0.3, abs=1e-3)
    image = panels.latent_sliders(lambda z: np.full((1, 16, 16), float(z[0])), 2, title="decoder")
    assert isinstance(image.panel, RGBPanel) and image.panel.scale == 16
    assert image.panel.image.value[:4] == b"\x89PNG"
    lerp = panels.interpolation_slider(lambda z: sphere(0.1 + abs(float(z[0]))), [0.0], [0.2], steps=5, t0=0.5)
    assert lerp.slider.value == 0.5
    orbit = panels.image_sliders(lambda azimuth: np.zeros((4, 4, 3)), azimuth=(0.0, 90.0, 10.0))
    assert isinstance(orbit.panel, RGBPanel)


def test_live_falls_back_to_static_with_one_line_when_widgets_are_missing(live, monkeypatch, capsys):
    from gen3d_course.viz import widgets

    def no_anywidget(*args, **kwargs):
        raise ImportError("Please install anywidget to use the FigureWidget class")

    monkeypatch.setattr(widgets, "mesh_browser", no_anywidget)
    fig = panels.mesh_browser(lambda seed: sphere(0.1 + seed / 100), seed=(0, 5))
    assert isinstance(fig, go.Figure) and len(fig.layout.sliders[0].steps) == 6
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("live view unavailable (Please install anywidget")
    assert "GEN3D_VIEWS=static" in lines[0] and lines[1].startswith("static view:")


def test_a_failing_static_frame_is_named(static):
    def decode(z):
        if z[0] > 2.5:
            raise ValueError("decoder exploded")
        return sphere(0.2)

    with pytest.raises(RuntimeError, match=r"'z\[0\] = 3.00, others at z0' failed: ValueError: decoder exploded"):
        panels.latent_sliders(decode, 1)
