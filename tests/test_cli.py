import subprocess
import sys


def run(*args, env_mode="fast", views="auto"):
    import os
    env = dict(os.environ, GEN3D_MODE=env_mode, GEN3D_VIEWS=views)
    return subprocess.run([sys.executable, "-m", "gen3d_course.cli", *args], capture_output=True,
                          text=True, env=env)


def test_doctor_reports_ready():
    result = run("doctor")
    assert result.returncode == 0, result.stderr
    for word in ("torch", "device", "mode        fast", "views       static here", "widgets     usable",
                 "ready."):
        assert word in result.stdout


def test_doctor_fails_clearly_on_a_bad_views_switch():
    result = run("doctor", views="widgets")
    assert result.returncode == 1 and "GEN3D_VIEWS='widgets'" in result.stderr


def test_doctor_fails_clearly_on_a_bad_mode():
    result = run("doctor", env_mode="turbo")
    assert result.returncode == 1
    assert "NOT ready" in result.stderr and "'turbo' is not a run mode" in result.stderr


def test_train_names_the_available_models_for_an_unknown_one():
    result = run("train", "no_such_model")
    assert result.returncode == 2
    assert "no model named 'no_such_model'; available:" in result.stderr


def test_assign_on_an_empty_folder(tmp_path):
    (tmp_path / "solutions").mkdir()
    result = run("assign", "--solutions", str(tmp_path / "solutions"),
                 "--assignments", str(tmp_path / "assignments"))
    assert result.returncode == 0, result.stderr
