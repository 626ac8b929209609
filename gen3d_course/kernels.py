"""Jupyter kernels that talk over Unix sockets, so notebook runs started together cannot collide.

A TCP kernel's five ports are picked by the client (bind to port 0, then close) and bound by the
kernel about a second later. When two notebook runs start at once (the two pytest-xdist workers
of ``make test``, ``gen3d-course grade --jobs 2``, or the website's parallel build) the other run can take a port in that gap,
and the kernel dies with "Address already in use" (this failed a CI run). A Unix socket under a
fresh random name cannot be taken by anyone else.
"""
from __future__ import annotations

import os
import tempfile
import uuid

from jupyter_client.manager import KernelManager


class IPCKernelManager(KernelManager):
    """A KernelManager whose sockets are the files ``<tmp>/gen3d-kernel-<random>-<n>``.

    The path is absolute because the kernel runs in the notebook's folder, not the client's.
    On Windows (no IPC transport in ZeroMQ) or under a very long temporary folder, it is a plain
    TCP KernelManager.
    """

    def __init__(self, **kwargs):
        prefix = os.path.join(tempfile.gettempdir(), f"gen3d-kernel-{uuid.uuid4().hex[:16]}")
        if os.name == "posix" and len(prefix) < 100:  # a Unix socket path holds at most 107 bytes
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", prefix)
        super().__init__(**kwargs)


def use_ipc_kernels_in_nbval() -> None:
    """Make nbval start its kernels with ``IPCKernelManager`` (it looks the class up by module name)."""
    import nbval.kernel

    nbval.kernel.KernelManager = IPCKernelManager
