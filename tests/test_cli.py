import subprocess
import sys


def run(*args, env_mode="fast"):
    import os
    env = dict(os.environ, GEN3D_MODE=env_mode)
    return subprocess.run([sys.executable, "-m", "gen3d_course.cli", *args], capture_output=True,
                          text=True, env=env)


def test_doctor_reports_ready():
    result = run("doctor")
    assert result.returncode == 0, result.stderr
    for word in ("torch", "device", "mode        fast", "widgets     usable", "ready."):
        assert word in result.stdout


def test_doctor_fails_clearly_on_a_bad_mode():
    result = run("doctor", env_mode="turbo")
    assert result.returncode == 1
    assert "NOT ready" in result.stderr and "'turbo' is not a run mode" in result.stderr
