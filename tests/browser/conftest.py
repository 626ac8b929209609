"""A real JupyterLab and a real (headless) Chromium for the widget tests.

The server runs from this project's environment on a free localhost port with a one-off token,
over a temporary copy of the notebooks (so autosave never touches the repository). Chromium is
Debian's (`make browser` installs it); without it the tests are skipped with the reason.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless in a closed network: no GPU, no background connections; WebGL via SwiftShader.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """Base URL and token of a JupyterLab serving a copy of lectures/ in fast mode."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "lectures", root / "lectures")
    port, token = _free_port(), secrets.token_hex(16)
    # GEN3D_VIEWS=auto: a kernel of a Jupyter server must choose the live panels by itself.
    env = dict(os.environ, GEN3D_MODE="fast", OMP_NUM_THREADS="1", GEN3D_VIEWS="auto",
               JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
         "--LabApp.news_url=", "--ServerApp.open_browser=False"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {root / 'lab.log'}:\n"
                                       + (root / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found ({CHROMIUM}); `make browser` installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
