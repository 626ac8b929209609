"""One bubblewrap sandbox per submission's kernel: what the notebook's processes can see and use.

Inside: its own user, PID, network, IPC and UTS namespaces, running as ``nobody`` (65534); no
network; read-only the system (``/usr``, ``/etc``), this Python and its packages, and the course
library's package folder alone (not the course repository, whose solutions sit beside it); a
private ``/tmp``; writable only the submission's run folder and its sockets folder. The grader's
keys, pytest, the submissions folder, the hidden checks, ``--out`` and the other runs' folders
are simply not there. Every
process ends with the sandbox (``--die-with-parent`` and its own PID namespace), and each process
has an address-space cap (``RLIMIT_AS``) set before bubblewrap starts; where the system allows,
a control group (:class:`Cgroup`) also caps the whole run's memory and process count.
"""
from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import time
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


def command(inner: list[str], writable: list[Path], cwd: Path, env: dict) -> list[str]:
    """``inner`` wrapped in bubblewrap with only the ``writable`` folders writable and ``env`` as
    its environment."""
    library = library_folder()
    # Mounts apply in order: the private /tmp first, so a Python, library or run folder that
    # lives under /tmp (a clone in /tmp, pytest's tmp_path) is bound on top of it, not hidden.
    args = [shutil.which("bwrap"), "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", NOBODY, "--gid", NOBODY, *_system_binds(), "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", *_python_binds(), "--ro-bind", str(library), str(library),
            *[arg for w in writable for arg in ("--bind", str(w), str(w))],
            "--chdir", str(cwd), "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + inner


def environment(extra: dict) -> dict:
    """The sandbox's whole environment: nothing of the grader's own (tokens, keys, paths)."""
    library = library_folder()
    return {"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "HOME": "/tmp",
            "LANG": "C.UTF-8", "PYTHONPATH": str(library.parent), "MPLBACKEND": "Agg",
            "PYTHONDONTWRITEBYTECODE": "1", **extra}


def limit_memory(nbytes: int, group: Cgroup | None = None):
    """A ``preexec_fn``: cap each process's address space (inherited by all it starts) and, when
    there is one, join the run's control group (one cap for all of them together)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if group is not None:
            group.join()
    return apply


class Cgroup:
    """One memory cap and one process-count cap for a run's whole process tree.

    ``RLIMIT_AS`` caps each process alone: a notebook that starts many processes could use that
    much memory in each. A control group counts them together; its processes are killed by the
    kernel's OOM killer inside the group when the group is over its cap, and it can start no more
    than ``pids`` processes. Made where this user may make one (cgroup v2 with the memory and
    pids controllers delegated to its own group, or cgroup v1 with writable memory and pids
    hierarchies); :meth:`create` returns None elsewhere, and the per-process caps alone apply.
    """

    def __init__(self, dirs: dict[str, Path]):
        self.dirs = dirs  # controller ("memory", "pids", or "unified") -> the group's folder

    @classmethod
    def create(cls, name: str, memory: int, pids: int) -> Cgroup | None:
        for make in ("_v2", "_v1"):
            group = cls({})
            try:
                getattr(group, make)(name, memory, pids)
                return group
            except (OSError, ValueError, _NoGroup):
                group.remove()
        return None

    def _v2(self, name: str, memory: int, pids: int) -> None:
        base = _mount("cgroup2", None) / _own_group("").lstrip("/")
        if not {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split()):
            raise _NoGroup
        (base / name).mkdir()
        self.dirs["unified"] = base / name
        (base / name / "memory.max").write_text(str(memory))
        if (base / name / "memory.swap.max").exists():
            (base / name / "memory.swap.max").write_text("0")
        (base / name / "pids.max").write_text(str(pids))

    def _v1(self, name: str, memory: int, pids: int) -> None:
        for controller in ("memory", "pids"):
            folder = _mount("cgroup", controller) / _own_group(controller).lstrip("/") / name
            folder.mkdir()
            self.dirs[controller] = folder
        (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory))
        try:  # memory + swap, where swap accounting is on
            (self.dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory))
        except OSError:
            pass
        (self.dirs["pids"] / "pids.max").write_text(str(pids))

    def join(self) -> None:
        """Move the calling process (and so all it will start) into the group."""
        for folder in self.dirs.values():
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> set[int]:
        """Every process still in the group."""
        found = set()
        for folder in self.dirs.values():
            try:
                found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def peak(self) -> int | None:
        """The most memory the group used at once, in bytes, where the kernel reports it."""
        for file in ("memory.peak", "memory.max_usage_in_bytes"):
            for folder in self.dirs.values():
                try:
                    return int((folder / file).read_text())
                except (OSError, ValueError):
                    continue
        return None

    def remove(self) -> None:
        """Remove the group (retried for a second or two while its killed processes exit)."""
        for _ in range(20):
            for folder in list(self.dirs.values()):
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                self.dirs = {k: v for k, v in self.dirs.items() if v != folder}
            if not self.dirs:
                return
            time.sleep(0.1)


class _NoGroup(Exception):
    """This system offers no control group this user can make."""


def _mount(fstype: str, controller: str | None) -> Path:
    """Where the cgroup hierarchy of ``fstype`` (and, for v1, ``controller``) is mounted."""
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == fstype and (
                    controller is None or controller in fields[dash + 3].split(",")):
                return Path(fields[4])
    raise _NoGroup


def _own_group(controller: str) -> str:
    """This process's group in the hierarchy of ``controller`` ("" for cgroup v2)."""
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, names, path = line.rstrip("\n").split(":", 2)
            if names.split(",") == [controller] or (controller and controller in names.split(",")):
                return path
    raise _NoGroup
