"""The pytest plugin of a grading run (``-p gen3d_course.grade.plugin``), in the nbval
subprocess: one signed JSON line per cell as soon as nbval reports it, and the kernel started
inside the sandbox.

pytest and nbval run outside the sandbox, as the grader's child: the signing key (read from a
pipe), the results file and this process are out of the notebook's reach. Only the kernel runs in
bubblewrap: its command is prefixed with the sandbox's (``ENV_SANDBOX``), and nbval interrupts it
with a message on the control channel, not a signal (a SIGINT to bubblewrap would end it)."""
from __future__ import annotations

import json
import os
import time

from .constants import ENV_KEY_FD, ENV_RESULTS, ENV_SANDBOX
from .run import sign


def pytest_configure(config):
    """Registered by ``-p gen3d_course.grade.plugin``; does nothing outside a grading run."""
    results = os.environ.pop(ENV_RESULTS, None)
    if not results:
        return
    with os.fdopen(int(os.environ.pop(ENV_KEY_FD)), "rb") as fh:
        key = fh.read()
    config.pluginmanager.register(_recorder(results, key), "gen3d-grade-recorder")
    _detect_dead_kernels()
    from ..kernels import use_ipc_kernels_in_nbval

    use_ipc_kernels_in_nbval()  # with --jobs > 1, TCP kernels could race for a port
    prefix = os.environ.pop(ENV_SANDBOX, None)
    if prefix:
        _sandbox_kernels(json.loads(prefix))


def _sandbox_kernels(prefix: list[str]) -> None:
    """nbval's kernels start inside ``prefix`` (the bubblewrap command) and take interrupts as
    messages."""
    import nbval.kernel

    base = nbval.kernel.KernelManager

    class SandboxedKernelManager(base):
        @property
        def kernel_spec(self):
            spec = base.kernel_spec.fget(self)
            if spec is not None:
                spec.interrupt_mode = "message"
            return spec

        def format_kernel_cmd(self, extra_arguments=None):
            return prefix + super().format_kernel_cmd(extra_arguments)

    nbval.kernel.KernelManager = SandboxedKernelManager


def _detect_dead_kernels() -> None:
    """Make nbval notice a dead kernel within a second instead of after the whole cell timeout.

    nbval waits for the cell's reply for up to ``--nbval-cell-timeout`` seconds and then for
    output for 5 s more; a kernel that died (``os._exit``, a segfault, the OOM killer) sends
    neither. Waiting in one-second slices and checking that the kernel lives changes when nbval
    gives up, not what it then reports.
    """
    from queue import Empty

    from nbval.kernel import RunningKernel

    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Empty
            try:
                msg = self.get_message(stream="shell", timeout=1.0 if left is None else min(1.0, left))
            except Empty:
                if not self.is_alive():
                    self.gen3d_died = True
                    raise
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                if msg["content"]["status"] == "aborted":
                    raise RuntimeError("Kernel aborted execution request")
                return

    def get_message(self, stream, timeout=None):
        if getattr(self, "gen3d_died", False):  # nothing more will come from a dead kernel
            timeout = 0.5 if timeout is None else min(timeout, 0.5)
        return get_message_of_nbval(self, stream, timeout=timeout)

    get_message_of_nbval = RunningKernel.get_message
    RunningKernel.await_reply = await_reply
    RunningKernel.get_message = get_message


def _recorder(results: str, key: bytes):
    import pytest

    class Recorder:
        def __init__(self):
            self.out = open(results, "a", encoding="utf-8")

        def write(self, record: dict) -> None:
            self.out.write(json.dumps({"record": record, "mac": sign(key, record)}) + "\n")
            self.out.flush()

        def pytest_collection_finish(self, session):
            self.write({"event": "collected", "items": len(session.items)})

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(self, item, call):
            report = yield
            if hasattr(item, "cell_num") and (call.when == "call" or (
                    call.when == "setup" and not report.passed)):
                try:
                    self.write(describe(item, call, report))
                except Exception as exc:  # recording must never break the run
                    self.write({"event": "cell", "cell": item.cell_num, "phase": call.when,
                                "passed": False, "kind": "error", "error": "",
                                "message": f"grader could not record this cell: {exc!r}",
                                "output_bytes": 0})
            return report

    return Recorder()


def describe(item, call, report) -> dict:
    """What one nbval cell item did: passed, the kind of failure, its message, output size.

    Kinds: ``ok``; ``error`` (the cell raised); ``timeout`` (this cell hit the per-cell limit);
    ``kernel-died`` (the kernel died while this cell ran); ``kernel-dead`` (it was already gone
    when this cell started); ``setup-error`` (nbval could not start the kernel); ``skipped``.
    """
    parent = item.parent
    kernel = getattr(parent, "kernel", None)
    outputs = getattr(item, "test_outputs", None) or []
    size = sum(len(o.get("text", "")) + len(str(o.get("data", {}).get("text/plain", "")))
               for o in outputs)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    error = ""
    if errors:
        ename, evalue = errors[-1].get("ename", ""), errors[-1].get("evalue", "")
        error = evalue if ename == "CheckFailure" else f"{ename}: {evalue}"
    new_timeout = getattr(parent, "timed_out", False) and not getattr(parent, "gen3d_timeout_seen", False)
    if new_timeout:
        parent.gen3d_timeout_seen = True
    exc = call.excinfo.value if call.excinfo is not None else None
    text = str(exc or "").strip()
    if call.when == "setup":
        kind = "setup-error"
    elif "Kernel dead on test start" in text:
        kind = "kernel-dead"
    elif getattr(kernel, "gen3d_died", False) and not getattr(kernel, "gen3d_reported", False):
        kind, kernel.gen3d_reported = "kernel-died", True
    elif new_timeout:
        kind = "timeout"
    elif report.passed:  # an xfail (nbval's mark after a timeout) that passed, passed
        kind = "ok"
    elif report.skipped and not hasattr(report, "wasxfail"):  # NBVAL_SKIP
        kind = "skipped"
    else:
        kind = "error"
    return {"event": "cell", "cell": item.cell_num, "phase": call.when, "passed": report.passed,
            "kind": kind, "error": error, "message": text.splitlines()[0] if text else "",
            "alive": bool(kernel is not None and kernel.is_alive()), "output_bytes": size}

