"""Notebook kernels talk over private Unix sockets, so parallel runs cannot race for TCP ports."""
import os
import tempfile

import pytest

from gen3d_course.kernels import IPCKernelManager, use_ipc_kernels_in_nbval

pytestmark = pytest.mark.skipif(os.name != "posix", reason="ZeroMQ IPC needs Unix sockets")


def test_each_kernel_manager_gets_its_own_absolute_socket_path(monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    a, b = IPCKernelManager(kernel_name="python3"), IPCKernelManager(kernel_name="python3")
    assert a.transport == b.transport == "ipc"
    assert os.path.isabs(a.ip) and a.ip != b.ip


def test_a_temporary_folder_too_long_for_a_socket_path_falls_back_to_tcp(monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/tmp/" + "x" * 100)
    assert IPCKernelManager(kernel_name="python3").transport == "tcp"


def test_an_ipc_kernel_runs_code_in_another_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")
    km = IPCKernelManager(kernel_name="python3")
    assert km.transport == "ipc"
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive("import os; assert os.getcwd() == %r" % str(tmp_path),
                                       timeout=30)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert not any(os.path.exists(f"{km.ip}-{n}") for n in range(1, 6)), "socket files left behind"


def test_nbval_starts_ipc_kernels():
    import nbval.kernel

    use_ipc_kernels_in_nbval()
    assert nbval.kernel.KernelManager is IPCKernelManager
