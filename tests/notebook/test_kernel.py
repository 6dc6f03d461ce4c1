"""A kernel interrupt cancels ``await task`` and friends in a real Jupyter kernel.

One ipykernel (the Python running these tests) serves the whole module, with a
local Requence started inside it. Each test runs an async cell that waits on a
task, interrupts the kernel the way Jupyter does (SIGINT), and checks that the
cell errors within a couple of seconds; then that a later cell still gets the
task's result (the interrupt neither aborted the task nor spoiled the future
the handle shares with every waiter).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipykernel", reason="the kernel tests need ipykernel")
pytest.importorskip("jupyter_client", reason="the kernel tests need jupyter_client")
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

# How long an interrupted cell may take to end, from the interrupt.
PROMPT = 3.0
# A held task ends by itself this long after it started, if no cell opens its gate:
# a lost interrupt then shows as a cell that ended "ok" long after the interrupt.
HOLD = 10.0
# The latency of the kernel's server in the afinalized test (two requests to start).
LATENCY = 2.5

SETUP = f"""
import asyncio, threading
from requence_task import Task
from requence_task.local import LocalRequence, Template, service

_gates = {{}}

def _gate(key):
    return _gates.setdefault(key, threading.Event())

def _held(ctx):
    key = ctx.input["gate"]
    return {{"gate": key, "opened": _gate(key).wait({HOLD})}}

rq = LocalRequence([Template("kernel-held", nodes=[service("held", _held)])], concurrency=4)
rq.__enter__()
"""


class Kernel:
    """A running ipykernel and a blocking client of it; every wait is bounded."""

    def __init__(self, manager: KernelManager) -> None:
        self.manager = manager
        self.client = manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply to the cell within {timeout} s")
            try:
                message = self.client.get_shell_msg(timeout=left)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") == msg_id:
                content: dict[str, Any] = message["content"]
                return content

    def run(self, code: str, timeout: float = 30) -> dict[str, Any]:
        """Run a cell that must succeed; its reply."""
        content = self.reply(self.client.execute(code), timeout)
        assert content["status"] == "ok", (
            f"{content.get('ename')}: {content.get('evalue')}\n"
            + "\n".join(content.get("traceback", []))
        )
        return content

    def wait_for_output(self, msg_id: str, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the cell did not print {marker!r} within {timeout} s")
            try:
                message = self.client.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if (
                message["parent_header"].get("msg_id") == msg_id
                and message["msg_type"] == "stream"
                and marker in message["content"]["text"]
            ):
                return

    def interrupted(self, code: str) -> tuple[dict[str, Any], float]:
        """Run ``print(marker)`` then ``code``, interrupt once it printed: the reply, and
        the seconds from the interrupt to the reply."""
        marker = f"waiting-{uuid.uuid4().hex}"
        msg_id = self.client.execute(f"print({marker!r}, flush=True)\n{code}")
        self.wait_for_output(msg_id, marker, timeout=30)
        time.sleep(0.2)  # well into the await (an earlier interrupt would do as well)
        sent = time.monotonic()
        self.manager.interrupt_kernel()
        content = self.reply(msg_id, timeout=30)
        return content, time.monotonic() - sent

    def close(self) -> None:
        try:
            self.reply(self.client.execute("rq.__exit__(None, None, None)"), timeout=15)
        except AssertionError:
            pass
        finally:
            self.client.stop_channels()
            self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("kernel")
    # A kernelspec of our own (never installed anywhere): the Python running the tests.
    spec = home / "kernels" / "requence-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "requence_task tests",
                "language": "python",
            }
        )
    )
    manager = KernelManager(
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(home / "kernels")]),
        kernel_name="requence-test",
        connection_file=str(home / "connection.json"),
    )
    env = {**os.environ, "IPYTHONDIR": str(home / "ipython")}
    manager.start_kernel(cwd=str(Path(__file__).parents[2]), env=env)
    try:
        started = Kernel(manager)
    except BaseException:
        manager.shutdown_kernel(now=True)
        raise
    try:
        started.run(SETUP, timeout=60)
        yield started
    finally:
        started.close()


def held_task(kernel: Kernel) -> str:
    """Start a task in the kernel that holds until its gate opens (or ``HOLD``); its key."""
    key = uuid.uuid4().hex
    kernel.run(
        f"task = Task('kernel-held', input={{'gate': {key!r}}}, access_token=rq.access_token)\n"
        "task.finalized(timeout=30)"
    )
    return key


def assert_cancelled_promptly(content: dict[str, Any], seconds: float) -> None:
    assert content["status"] == "error", (
        f"the interrupted cell ended {content['status']!r} {seconds:.1f} s after the interrupt"
    )
    assert content["ename"] in ("CancelledError", "KeyboardInterrupt"), content
    assert seconds < PROMPT, f"the interrupted cell ended {seconds:.1f} s after the interrupt"


RESULT_LATER = """
assert not task.future.cancelled()
_gate({key!r}).set()
later = await task.aresult(timeout=30)
assert later.result == {{"gate": {key!r}, "opened": True}}, later.result
assert task.result(timeout=0).result == later.result
assert (await task).result == later.result
"""


@pytest.mark.parametrize(
    "code",
    [
        "await task.aresult(timeout=60)",
        "await task",
        "async for update in task.aiter(timeout=60):\n    pass",
    ],
    ids=["aresult", "await", "aiter"],
)
def test_an_interrupt_cancels_the_wait_and_the_task_goes_on(kernel: Kernel, code: str) -> None:
    key = held_task(kernel)
    content, seconds = kernel.interrupted(code)
    assert_cancelled_promptly(content, seconds)
    kernel.run(RESULT_LATER.format(key=key))
    if "aiter" in code:
        kernel.run(
            "seen = [u.type async for u in task.aiter(timeout=30)]\n"
            "assert seen[0] == 'taskStart' and seen[-1] == 'taskEnd', seen"
        )


def test_an_interrupt_cancels_afinalized_and_the_task_still_starts(kernel: Kernel) -> None:
    key = uuid.uuid4().hex
    # Every request of the kernel's server waits: the task takes a while to start.
    kernel.run(
        f"rq.faults.latency = {LATENCY}\n"
        f"task = Task('kernel-held', input={{'gate': {key!r}}}, access_token=rq.access_token)"
    )
    try:
        content, seconds = kernel.interrupted("await task.afinalized(timeout=60)")
    finally:
        kernel.run("rq.faults.latency = 0")
    assert_cancelled_promptly(content, seconds)
    kernel.run(
        "assert not task._created.cancelled()\n"
        "task_id = await task.afinalized(timeout=30)\n"
        "assert task_id == task.task_id(0)\n" + RESULT_LATER.format(key=key)
    )


def test_the_kernel_still_times_out_a_wait(kernel: Kernel) -> None:
    """The tick that lets an interrupt through leaves time-outs as they are."""
    key = held_task(kernel)
    kernel.run(
        "from requence_task import TaskTimeoutError\n"
        "try:\n"
        "    await task.aresult(timeout=0.3)\n"
        "except TaskTimeoutError as error:\n"
        "    assert error.timeout == 0.3\n"
        "else:\n"
        "    raise AssertionError('no time-out')\n" + RESULT_LATER.format(key=key)
    )
