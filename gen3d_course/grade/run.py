"""One nbval run of a graded copy in a subprocess, under a time cap that kills its process tree."""
from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import sandbox
from .constants import ENV_HARNESS, ENV_KEY_FD, ENV_RESULTS, ENV_RUN, ENV_SANDBOX


@dataclass
class Run:
    records: dict[int, dict]  # code-cell number -> what the plugin reported
    collected: bool
    killed: bool  # by the total time cap
    forged: int  # result lines with a bad signature
    returncode: int | None
    seconds: float
    tail: str
    peak: int | None = None  # bytes, the run's control group at its fullest (None: no group)


# ``python -m pytest``, minus one optional import: jsonschema (through nbformat) builds an IRI
# grammar at import when rfc3987_syntax is installed, 1-2 CPU seconds per run that nbformat's
# schema never uses. Without it, jsonschema skips that one format checker.
_PYTEST_MAIN = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); import pytest; "
                "sys.exit(pytest.main(sys.argv[1:]))")


class _Tail(threading.Thread):
    """Drain a pipe, keeping only its end: a notebook that floods stdout cannot fill memory."""

    def __init__(self, stream, keep: int = 8000):
        super().__init__(daemon=True)
        self.stream, self.keep, self.data = stream, keep, b""

    def run(self):
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.data = (self.data + chunk)[-self.keep:]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def sign(key: bytes, record: dict) -> str:
    return hmac.new(key, json.dumps(record, sort_keys=True).encode(), "sha256").hexdigest()


def _kill_tree(proc: subprocess.Popen, token: str, group: sandbox.Cgroup | None) -> None:
    """Kill pytest, its kernel and anything the notebook started (found by the run's token, and
    every process of the run's control group)."""
    import psutil

    victims = []
    try:
        parent = psutil.Process(proc.pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        pass
    for pid in group.pids() if group else ():
        try:
            victims.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter():
        if p.pid == os.getpid() or p in victims:
            continue
        try:
            if p.environ().get(ENV_RUN) == token:
                victims.append(p)
        except (psutil.Error, OSError):
            continue
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(victims, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class Settings:
    timeout: float = 300.0  # per cell, as nbval's --nbval-cell-timeout
    notebook_timeout: float = 900.0  # whole notebook, kernel start included
    scratch: str | None = None  # parent of the private run folders (default: the system temp)
    unsafe: bool = False  # run notebooks with the grader's own permissions (no sandbox)
    memory_gb: float = 4.0  # memory cap: of the whole run where a control group can be made,
    #                         and always of each process's address space
    processes: int = 256  # most processes of one run at once (with a control group only)
    uses_reference: str = "flag"  # an answer that calls the library's reference: "flag" or "zero"
    stopping: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C


_SCRATCH_PREFIX = "gen3d-grade-"
_SOCKETS_PREFIX, _SOCKETS_DIR = "g3k-", "/tmp" if os.path.isdir("/tmp") else None


def remove_stale_runs(scratch: str | None = None) -> None:
    """Remove the private run folders of graders that were killed (``kill -9``) mid-run.

    Their notebooks and whatever the notebooks wrote would otherwise pile up in the temporary
    folder.
    """
    import psutil

    sockets = Path(_SOCKETS_DIR or tempfile.gettempdir()).glob(_SOCKETS_PREFIX + "*")
    for folder in [*Path(scratch or tempfile.gettempdir()).glob(_SCRATCH_PREFIX + "*"), *sockets]:
        try:
            owner = int((folder / "owner").read_text())  # another user's folder is unreadable
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(owner):
            shutil.rmtree(folder, ignore_errors=True)


def run_nbval(nb: nbformat.NotebookNode, name: str, settings: Settings, station=None) -> Run:
    """Run one graded copy under nbval in a subprocess (package docstring, step 2).

    Each harness cell of the copy connects to a socket of this process; ``station(index,
    kernel)`` then judges that cell's checks (:mod:`.judge`) and may return a released check's
    source for the kernel to run itself (a check that is not plain data).
    """
    work = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=settings.scratch))
    listener = sockets = None
    try:
        (work / "owner").write_text(str(os.getpid()))
        run_dir = work / "run"  # the kernel's working directory
        run_dir.mkdir()
        (work / "pytest.ini").write_text("[pytest]\n")
        results = work / "results.jsonl"
        results.touch()
        notebook = run_dir / name
        with open(notebook, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        # Unix sockets (the kernel's and the harness's) in a short-named folder: a socket's path
        # holds at most 107 bytes, and the run folder may be deep (--scratch, pytest's tmp_path)
        sockets = Path(tempfile.mkdtemp(prefix=_SOCKETS_PREFIX, dir=_SOCKETS_DIR))
        (sockets / "owner").write_text(str(os.getpid()))
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(sockets / "harness"))  # where the kernel can reach it
        listener.listen(1)
        listener.settimeout(0.25)
        key, token = secrets.token_bytes(32), secrets.token_hex(16)
        read_end, write_end = os.pipe()
        # The kernel's environment. TMPDIR: its sockets and the notebook's temporary files go
        # where the run's clean-up removes them, even when the run is killed.
        kernel_env = {"GEN3D_MODE": "fast", "OMP_NUM_THREADS": "1", "TMPDIR": str(run_dir),
                      ENV_HARNESS: str(sockets / "harness"), ENV_RUN: token}
        # pytest and nbval run here, outside the sandbox, with the key and the results file;
        # only the kernel they start is sandboxed (the plugin wraps its command in bubblewrap).
        ours = {**kernel_env, "TMPDIR": str(sockets),  # (where kernels.IPCKernelManager puts them)
                "JUPYTER_RUNTIME_DIR": str(run_dir), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                ENV_RESULTS: str(results), ENV_KEY_FD: str(read_end),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(sandbox.library_folder().parent),
                                                            os.environ.get("PYTHONPATH")]))}
        if not settings.unsafe:
            ours[ENV_SANDBOX] = json.dumps(sandbox.command([], [run_dir, sockets], run_dir,
                                                           sandbox.environment(kernel_env)))
        command = [sys.executable, "-c", _PYTEST_MAIN, "-p", "nbval.plugin", "-p",
                   "gen3d_course.grade.plugin", "-p", "no:cacheprovider", "-c",
                   str(work / "pytest.ini"), "--rootdir", str(work), "-q", "--tb=no", "-rN",
                   "--color=no", "--nbval-lax", "--nbval-current-env",
                   f"--nbval-cell-timeout={settings.timeout:g}", str(notebook)]
        env = dict(os.environ, **ours)
        group, preexec = None, None
        if not settings.unsafe:
            cap = int(settings.memory_gb * 2**30)
            group = sandbox.Cgroup.create(f"{_SCRATCH_PREFIX}{token}", cap, settings.processes)
            preexec = sandbox.limit_memory(cap, group)
        start = time.monotonic()
        with os.fdopen(write_end, "wb") as key_pipe:
            try:
                proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        pass_fds=(read_end,), start_new_session=True,
                                        preexec_fn=preexec)
            finally:
                os.close(read_end)
            tail = _Tail(proc.stdout)
            tail.start()
            key_pipe.write(key)
        killed, stations = False, 0
        try:  # wait in slices: the time cap and Ctrl-C (another thread) both stop the run
            while proc.poll() is None:
                if settings.stopping.is_set():
                    break
                cap = start + settings.notebook_timeout
                if time.monotonic() > cap:
                    killed = True
                    break
                try:
                    conn, _ = listener.accept()
                except (socket.timeout, BlockingIOError):
                    continue
                with conn:
                    _serve_station(conn, stations, station, settings.timeout, cap)
                stations += 1
        finally:
            _kill_tree(proc, token, group)
            peak = group.peak() if group else None
            if group:
                group.remove()
            tail.join(timeout=5)
            proc.stdout.close()
        seconds = time.monotonic() - start
        records, collected, forged = {}, False, 0
        with open(results, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    record, mac = entry["record"], entry["mac"]
                    genuine = hmac.compare_digest(sign(key, record), mac)
                except (ValueError, KeyError, TypeError):
                    genuine = False
                if not genuine:
                    forged += 1
                elif record.get("event") == "collected":
                    collected = True
                elif record.get("event") == "cell":
                    cell = record["cell"]
                    if cell not in records or record["phase"] == "call":
                        records[cell] = record
        return Run(records, collected, killed, forged, proc.returncode, seconds, tail.text(), peak)
    finally:
        if listener is not None:
            listener.close()
        shutil.rmtree(work, ignore_errors=True)
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)


def _serve_station(conn: socket.socket, index: int, station, budget: float, cap: float) -> None:
    """One harness cell: read its hello, let ``station`` judge, then release the cell."""
    from .judge import Kernel
    from .wire import InvalidData, receive, send

    conn.settimeout(max(0.1, min(budget, cap - time.monotonic())))
    try:
        receive(conn)  # the hello; its content is the kernel's and means nothing
        source = station(index, Kernel(conn, budget, cap)) if station else None
        conn.settimeout(5)
        send(conn, {"op": "run", "source": source} if source else {"op": "done"})
    except (OSError, EOFError, InvalidData):
        pass  # the kernel went away: its checks were judged from what it answered, if anything
