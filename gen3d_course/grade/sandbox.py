"""One bubblewrap sandbox per submission: what the notebook's processes can see and use.

Inside: its own user, PID, network, IPC and UTS namespaces, running as ``nobody`` (65534); no
network; read-only the system (``/usr``, ``/etc``), this Python and its packages, and the course
library's package folder alone (not the course repository, whose solutions sit beside it); a
private ``/tmp``; writable only the submission's run folder. The grader's keys, the submissions
folder, the hidden checks, ``--out`` and the other runs' folders are simply not there. Every
process ends with the sandbox (``--die-with-parent`` and its own PID namespace), and each process
has an address-space cap (``RLIMIT_AS``) set before bubblewrap starts.
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

NOBODY = "65534"
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """Why no sandbox can be made here, in one line, or None when bubblewrap works."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        probe = subprocess.run([bwrap, "--unshare-all", "--uid", NOBODY, "--gid", NOBODY,
                                *_system_binds(), "--proc", "/proc", "--dev", "/dev", "true"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap could not start: {err}"
    if probe.returncode != 0:
        return f"bubblewrap cannot create namespaces here: {probe.stderr.strip()[:200]}"
    return None


def _system_binds() -> list[str]:
    binds = []
    for path in SYSTEM:
        if os.path.islink(path):
            binds += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            binds += ["--ro-bind", path, path]
    return binds


def library_folder() -> Path:
    """The course library's package folder (bound alone, read-only)."""
    return Path(__file__).resolve().parents[1]


def _python_binds() -> list[str]:
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    roots = sorted(r for r in roots if not any(r.startswith(s + "/") for s in SYSTEM))
    kept = [r for r in roots if not any(r.startswith(o + "/") for o in roots if o != r)]
    return [arg for r in kept for arg in ("--ro-bind", r, r)]


def command(inner: list[str], work: Path, cwd: Path, env: dict) -> list[str]:
    """``inner`` wrapped in bubblewrap with only ``work`` writable and ``env`` as its environment."""
    library = library_folder()
    # Mounts apply in order: the private /tmp first, so a Python, library or run folder that
    # lives under /tmp (a clone in /tmp, pytest's tmp_path) is bound on top of it, not hidden.
    args = [shutil.which("bwrap"), "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", NOBODY, "--gid", NOBODY, *_system_binds(), "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", *_python_binds(), "--ro-bind", str(library), str(library),
            "--bind", str(work), str(work), "--chdir", str(cwd), "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + inner


def environment(extra: dict) -> dict:
    """The sandbox's whole environment: nothing of the grader's own (tokens, keys, paths)."""
    library = library_folder()
    return {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": "/tmp",
            "LANG": "C.UTF-8", "PYTHONPATH": str(library.parent), "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1", **extra}


def limit_memory(nbytes: int):
    """A ``preexec_fn``: cap each process's address space (inherited by all it starts)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply
