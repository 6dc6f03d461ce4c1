"""The ``requence-task`` command line against a local Requence.

Most commands run in-process (``requence_task._cli.main([...])`` with capsys);
what needs a real process (Ctrl-C, standard input, a terminal, ``python -m``)
runs in a subprocess against the session's local server, which lives in this
test process, so the "gated" template's gates can be opened from here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import queue
import re
import select
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
import venv
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import requence_task
from requence_task import (
    Client,
    Task,
    TaskFailedError,
    TaskStatus,
    abort_task,
    get_task,
    watch_tasks,
)
from requence_task._cli import INTERRUPT_REASON, main
from requence_task._token import decode_access_token, encode_access_token
from requence_task.local import LocalRequence

from .local.templates_for_tests import gate

TOKEN_VARS = ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
BUDGET_VAR = "REQUENCE_TASK_RETRY_BUDGET"
ID = r"[0-9a-f-]{36}"


# --- helpers --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No token or retry budget leaks in from the environment of the test run."""
    for name in (*TOKEN_VARS, BUDGET_VAR):
        monkeypatch.delenv(name, raising=False)


class Cli:
    """``main(argv)`` in-process, with stdout and stderr captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str], token: str) -> None:
        self.capsys = capsys
        self.token = token

    def __call__(self, *args: str, token: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "--access-token", token or self.token])
        out, err = self.capsys.readouterr()
        return code, out, err

    def bare(self, *args: str) -> tuple[int, str, str]:
        """Without ``--access-token``."""
        self.capsys.readouterr()
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], server: LocalRequence) -> Cli:
    return Cli(capsys, server.access_token)


@pytest.fixture()
def client(server: LocalRequence) -> Iterator[Client]:
    with Client(server.access_token) as c:
        yield c


@pytest.fixture()
def project_token(server: LocalRequence) -> str:
    """A token of a project of its own: its watch streams see only this test's tasks."""
    return server.token_for(f"cli-{uuid.uuid4().hex}")


@pytest.fixture()
def gates() -> Iterator[list[str]]:
    """Gate keys a test creates; all opened at the end."""
    keys: list[str] = []
    yield keys
    for key in keys:
        gate(key).set()


def new_gate(gates: list[str]) -> str:
    key = uuid.uuid4().hex
    gates.append(key)
    return key


def secrets_of(token: str) -> list[str]:
    return [token, decode_access_token(token).bearer]


def assert_no_secret(token: str, *texts: str) -> None:
    for text in texts:
        for secret in secrets_of(token):
            assert secret not in text


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("requence-task: error: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix("requence-task: error: ")


def wait_status(client: Client, task_id: str, *statuses: TaskStatus, timeout: float = 5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        info = get_task(task_id, client=client)
        if info.status in statuses:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} stayed {info.status}, wanted {statuses}")
        time.sleep(0.02)


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*TOKEN_VARS, BUDGET_VAR)}
    env.update(extra)
    return env


class Lines:
    """A subprocess of the CLI, its stdout read line by line on a thread."""

    def __init__(self, *args: str, token: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "requence_task", *args],
            env=subprocess_env(REQUENCE_TASK_ACCESS_TOKEN=token),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = 10) -> str:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the output ended"
        return line

    def interrupt(self, timeout: float = 10) -> tuple[int, str]:
        """Send SIGINT; the exit code and stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def close(self) -> None:
        stop(self.process)
        self._reader.join(5)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


GREET_LINES = [
    "taskStart",
    "nodeStart greeter",
    'nodeUpdate greeter {"message": "Hello, Ann!"}',
    "nodeEnd greeter",
    "nodeStart counter",
    'nodeUpdate counter {"step": 1}',
    'nodeUpdate counter {"step": 2}',
    'nodeUpdate counter {"step": 3}',
    "nodeEnd counter",
    "taskEnd",
]
GREET_TYPES = [line.split()[0] for line in GREET_LINES]


# --- run ------------------------------------------------------------------------------


def test_run_prints_plain_lines_then_the_pretty_result(cli: Cli) -> None:
    code, out, err = cli("run", "greet", "--input", '{"name": "Ann"}')
    assert (code, err) == (0, "")
    assert out.splitlines() == [*GREET_LINES, "{", '  "message": "Hello, Ann!"', "}"]


def test_run_json_prints_one_object_per_update_then_the_result(
    cli: Cli, client: Client, server: LocalRequence
) -> None:
    code, out, err = cli("run", "greet", "--input", '{"name": "Ann"}', "--name", "n1", "--json")
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    *updates, last = lines
    assert [u["type"] for u in updates] == GREET_TYPES
    task_id = last["taskId"]
    assert re.fullmatch(ID, task_id)
    assert last == {
        "result": {"message": "Hello, Ann!"},
        "exit": None,
        "taskId": task_id,
        "taskUrl": f"{server.base_url}/tasks/{task_id}",
    }
    assert all(u["taskId"] == task_id for u in updates)
    positions = [u["position"] for u in updates]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    for u in updates:
        assert datetime.fromisoformat(u["timestamp"]).tzinfo is not None
    assert updates[0]["input"] == {"name": "Ann"}
    assert updates[1]["node"]["alias"] == "greeter"
    assert updates[1]["node"]["type"] == "service"
    assert updates[2]["data"] == {"message": "Hello, Ann!"}
    assert updates[-1]["result"] == {"message": "Hello, Ann!"}
    assert updates[-1]["requireAck"] is False
    info = get_task(task_id, client=client)
    assert (info.status, info.name) == (TaskStatus.SUCCESSFUL, "n1")


def test_run_input_from_stdin(server: LocalRequence) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "requence_task", "run", "echo", "--input", "-", "--json"],
        input='{"x": [1, 2], "s": "é"}',
        env=subprocess_env(REQUENCE_TASK_ACCESS_TOKEN=server.access_token),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [u.get("type") for u in lines] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
        None,
    ]
    assert lines[-1]["result"] == {"input": {"x": [1, 2], "s": "é"}}
    assert done.stderr == ""


def test_run_input_from_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"name": "Bo", "age": 3}\n', encoding="utf-8")
    code, out, err = cli("run", "greet", "--input", f"@{path}", "--json")
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["input"] == {"name": "Bo", "age": 3}
    assert lines[-1]["result"] == {"message": "Hello, Bo!"}


def test_run_file_puts_a_file_into_the_input_and_get_saves_it(cli: Cli, tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.7 " + bytes(range(256)))
    code, out, err = cli(
        "run",
        "echo",
        "--input",
        '{"n": 1}',
        "--file",
        f"doc={scan}",
        "--file",
        f"a.b={scan}",
        "--json",
    )
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    shown = {
        "__REQUENCE_type": "RequenceFile",
        "mime": "application/pdf",
        "size": 265,
        "name": "scan.pdf",
    }
    assert lines[0]["input"] == {"n": 1, "doc": shown, "a": {"b": shown}}  # no URL
    assert "/files/" not in out
    task_id = lines[-1]["taskId"]
    folder = tmp_path / "saved"
    code, out, err = cli("get", task_id, "--save-files", str(folder))
    assert code == 0, err
    names = sorted(path.name for path in folder.iterdir())
    assert "input.doc.pdf" in names and "input.a.b.pdf" in names
    assert "nodes.echo.data.input.doc.pdf" in names
    assert (folder / "input.doc.pdf").read_bytes() == scan.read_bytes()
    assert "saved input.doc to" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--file", "doc"], "--file takes KEY=PATH"),
        (["--file", "=x"], "--file takes KEY=PATH"),
        (["--file", "doc=no-such-file.pdf"], "cannot read 'no-such-file.pdf'"),
        (["--input", "[1]", "--file", "doc=x"], "needs the input to be a JSON object"),
    ],
)
def test_run_bad_file_options_exit_2(cli: Cli, args: list[str], message: str) -> None:
    code, _out, err = cli("run", "echo", *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{bad", "the task input from --input is not valid JSON: Expecting property name"),
        ("NaN", "the task input from --input is not valid JSON: NaN is not JSON"),
        ("  ", "the task input from --input is empty; give JSON, such as null or {}"),
        ("@", "--input @FILE needs a file name after the @"),
    ],
)
def test_run_bad_input_exits_2(cli: Cli, value: str, message: str) -> None:
    code, out, err = cli("run", "echo", "--input", value)
    assert (code, out) == (2, "")
    assert one_error_line(err).startswith(message)


def test_run_unreadable_input_file_exits_2(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    code, out, err = cli("run", "echo", "--input", f"@{missing}")
    assert (code, out) == (2, "")
    assert one_error_line(err) == f"--input: no such file: {missing}"
    code, out, err = cli("run", "echo", "--input", f"@{tmp_path}")
    assert (code, out) == (2, "")
    assert one_error_line(err) == f"--input: cannot read {tmp_path}: Is a directory"
    bad = tmp_path / "bad.json"
    bad.write_text("[1,", encoding="utf-8")
    code, out, err = cli("run", "echo", "--input", f"@{bad}")
    assert code == 2
    assert one_error_line(err).startswith(f"the task input from {bad} is not valid JSON: ")


def test_run_rejected_input_exits_2_with_the_servers_message(cli: Cli) -> None:
    code, out, err = cli("run", "greet", "--input", '{"age": 3}')
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        "Requence rejected the task of template 'greet' (HTTP 422): The input failed the "
        "template's input schema at the top level: 'name' is a required property"
    )
    code, out, err = cli("run", "greet", "--input", '{"name": "A", "age": "x"}')
    assert code == 2
    assert "age" in one_error_line(err)


def test_run_unknown_template_or_bad_priority_exits_2(cli: Cli) -> None:
    code, _, err = cli("run", "no-such-template")
    assert code == 2
    assert one_error_line(err).startswith(
        "Requence refused to create a task of template 'no-such-template' (HTTP 404): "
        "Unknown task template 'no-such-template'."
    )
    code, _, err = cli("run", "echo", "--priority", "11")
    assert code == 2
    assert one_error_line(err) == (
        "priority must be a whole number from 0 (low) to 10 (high), got 11"
    )


def test_run_failed_task_exits_1(cli: Cli) -> None:
    code, out, err = cli("run", "fail", "--input", '{"name": "Ann"}')
    assert code == 1
    assert out.splitlines()[-2:] == [
        "nodeError boom: the boiler exploded",
        "taskError: node 'boom' failed: the boiler exploded",
    ]
    assert re.fullmatch(
        f"Task {ID} failed: node 'boom' failed: the boiler exploded", one_error_line(err)
    )


def test_run_aborted_task_exits_1(
    capsys: pytest.CaptureFixture[str], project_token: str, gates: list[str]
) -> None:
    key = new_gate(gates)
    codes: list[int] = []
    run_args = ["run", "gated", "--input", json.dumps({"gate": key}), "--json"]
    runner = threading.Thread(
        target=lambda: codes.append(main([*run_args, "--access-token", project_token])),
        daemon=True,
    )
    with (
        Client(project_token) as project,
        watch_tasks(None, only=["nodeStart"], client=project) as watcher,
    ):
        runner.start()
        started = next(iter(watcher.updates(timeout=10)))
        abort_task(started.task_id, "stop right there", client=project)
        runner.join(10)
    assert codes == [1]
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [u["type"] for u in lines] == ["taskStart", "nodeStart", "taskAborted"]
    assert lines[-1]["reason"] == "stop right there"
    assert one_error_line(err) == f"Task {started.task_id} was aborted: stop right there"


def test_run_no_wait_prints_id_and_url_and_the_task_runs_on(
    cli: Cli, client: Client, server: LocalRequence, gates: list[str]
) -> None:
    key = new_gate(gates)
    started = time.monotonic()
    code, out, err = cli("run", "gated", "--input", json.dumps({"gate": key}), "--no-wait")
    assert time.monotonic() - started < 5
    assert (code, err) == (0, "")
    task_id, url = out.splitlines()
    assert re.fullmatch(ID, task_id)
    assert url == f"{server.base_url}/tasks/{task_id}"
    wait_status(client, task_id, TaskStatus.RUNNING)
    gate(key).set()
    info = wait_status(client, task_id, TaskStatus.SUCCESSFUL)
    assert info.context.result == {"opened": key}
    # --json: one object.
    code, out, err = cli("run", "echo", "--no-wait", "--json")
    assert (code, err) == (0, "")
    started_json = json.loads(out)
    assert started_json == {
        "taskId": started_json["taskId"],
        "taskUrl": f"{server.base_url}/tasks/{started_json['taskId']}",
    }


def test_run_dev_branch_warns_on_one_line(cli: Cli) -> None:
    code, out, err = cli("run", "dev-branch", "--no-wait")
    assert code == 0
    assert re.fullmatch(f"({ID})\n.*/tasks/\\1\n", out)
    assert err.startswith(
        "requence-task: warning: Task template 'dev-branch' runs on the development branch "
        "'feature-x', not 'live'."
    )
    assert len(err.splitlines()) == 1


def run_on_terminal(
    args: list[str], token: str, *, while_running: Any = None
) -> tuple[int, str, list[str]]:
    """``python -m requence_task ARGS`` with stdout on a terminal (a pty): its exit
    code, what the terminal showed, and stderr split into its ``\\r`` frames.
    ``while_running()`` is called once the process started."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "requence_task", *args],
        env=subprocess_env(REQUENCE_TASK_ACCESS_TOKEN=token, COLUMNS="200"),
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    shown = b""
    try:
        if while_running is not None:
            while_running()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(10)
        assert process.stderr is not None
        err = process.stderr.read().decode("utf-8")  # bytes: keep every \r
    finally:
        os.close(primary)
        stop(process)
    # (a pty turns \n into \r\n)
    return code, shown.decode("utf-8").replace("\r\n", "\n"), err.split("\r")


def status_texts(frames: list[str]) -> list[str]:
    """The status lines drawn, without their elapsed time."""
    return [re.sub(r" · [\d.]+ s *$", "", frame) for frame in frames if " · " in frame]


def test_run_on_a_terminal_shows_a_status_line(server: LocalRequence) -> None:
    code, shown, frames = run_on_terminal(
        ["run", "greet", "--input", '{"name": "Ann"}'], server.access_token
    )
    assert code == 0
    # The terminal gets only the result.
    assert shown == '{\n  "message": "Hello, Ann!"\n}\n'
    assert frames[1].startswith("creating the task · 0 nodes done · ")
    texts = status_texts(frames[1:-2])
    assert "running greeter · 0 nodes done" in texts
    assert "running counter · 1 node done" in texts
    assert texts[-1] == "task succeeded · 2 nodes done"
    assert frames[-2].strip() == ""  # the status line is cleared
    assert re.fullmatch(
        rf"Task ({ID}) succeeded in [\d.]+ s: {re.escape(server.base_url)}/tasks/\1\n", frames[-1]
    )


def test_run_on_a_terminal_of_a_failed_task(server: LocalRequence) -> None:
    code, shown, frames = run_on_terminal(
        ["run", "fail", "--input", '{"name": "Ann"}'], server.access_token
    )
    assert (code, shown) == (1, "")
    texts = status_texts(frames)
    assert "running boom · 1 node done" in texts
    assert texts[-1] == "task failed · 1 node done, 1 failed"
    assert "node boom failed: the boiler exploded\n" in "".join(frames)
    assert re.fullmatch(
        f"requence-task: error: Task {ID} failed: node 'boom' failed: the boiler exploded\n",
        frames[-1].strip(" "),
    )


def test_run_on_a_terminal_of_an_aborted_task_shows_no_node_running_after(
    server: LocalRequence, project_token: str, gates: list[str]
) -> None:
    key = new_gate(gates)
    with (
        Client(project_token) as project,
        watch_tasks(None, only=["nodeStart"], client=project) as watcher,
    ):

        def abort_once_running() -> None:
            started = next(iter(watcher.updates(timeout=10)))
            time.sleep(0.3)  # a redraw or two with the node running
            abort_task(started.task_id, "stop right there", client=project)

        code, shown, frames = run_on_terminal(
            ["run", "gated", "--input", json.dumps({"gate": key})],
            project_token,
            while_running=abort_once_running,
        )
    assert (code, shown) == (1, "")
    texts = status_texts(frames)
    assert "running wait · 0 nodes done" in texts
    ended = texts.index("task aborted · 0 nodes done, 1 aborted")
    assert not [text for text in texts[ended:] if text.startswith("running")]
    assert re.fullmatch(
        f"requence-task: error: Task {ID} was aborted: stop right there\n", frames[-1].strip(" ")
    )


# --- Ctrl-C ---------------------------------------------------------------------------


def _run_until_running(server: LocalRequence, key: str, *extra: str) -> tuple[Lines, str]:
    cli = Lines(
        "run",
        "gated",
        "--input",
        json.dumps({"gate": key}),
        "--json",
        *extra,
        token=server.access_token,
    )
    first = json.loads(cli.next())
    assert first["type"] == "taskStart"
    assert json.loads(cli.next())["type"] == "nodeStart"
    return cli, first["taskId"]


def test_ctrl_c_exits_130_and_leaves_the_task_running(
    server: LocalRequence, client: Client, gates: list[str]
) -> None:
    key = new_gate(gates)
    cli, task_id = _run_until_running(server, key)
    try:
        code, err = cli.interrupt()
    finally:
        cli.close()
    assert code == 130
    assert err == (
        f"requence-task: interrupted; task {task_id} goes on: {server.base_url}/tasks/{task_id} "
        f"(abort it with: requence-task abort {task_id})\n"
    )
    assert get_task(task_id, client=client).status is TaskStatus.RUNNING
    gate(key).set()
    wait_status(client, task_id, TaskStatus.SUCCESSFUL)


def test_ctrl_c_with_abort_on_interrupt_stops_the_task(
    server: LocalRequence, client: Client, gates: list[str]
) -> None:
    key = new_gate(gates)
    cli, task_id = _run_until_running(server, key, "--abort-on-interrupt")
    try:
        code, err = cli.interrupt()
    finally:
        cli.close()
    assert code == 130
    assert err == f"requence-task: interrupted; task {task_id} aborted\n"
    info = get_task(task_id, client=client)
    assert info.status is TaskStatus.STOPPED
    assert info.status_text == INTERRUPT_REASON == "interrupted from the command line"


def test_ctrl_c_ends_watch_with_130(project_token: str, gates: list[str]) -> None:
    key = new_gate(gates)
    with Client(project_token) as project:
        task_id = Task("gated", {"gate": key}, client=project).finalized(timeout=10)
    cli = Lines("watch", "--since", "all", token=project_token)
    try:
        assert cli.next().split()[1:] == [task_id, "taskStart"]
        assert cli.next().split()[1:] == [task_id, "nodeStart", "wait"]
        code, err = cli.interrupt()
    finally:
        cli.close()
    assert (code, err) == (130, "")


# --- connection and token trouble -----------------------------------------------------


API_COMMANDS = [
    ["run", "echo"],
    ["run", "echo", "--no-wait"],
    ["get", "some-task"],
    ["abort", "some-task"],
    ["protect", "some-task"],
    ["watch"],
    ["generate-types"],
]


@pytest.mark.parametrize("args", API_COMMANDS, ids=lambda a: "-".join(a))
def test_unreachable_exits_3(
    cli: Cli, args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(BUDGET_VAR, "0.2")
    base_url = f"http://127.0.0.1:{dead_port()}"
    token = encode_access_token(f"bearer-{uuid.uuid4().hex}", base_url)
    started = time.monotonic()
    code, out, err = cli(*args, token=token)
    assert time.monotonic() - started < 4
    assert (code, out) == (3, "")
    message = one_error_line(err)
    assert "Requence is not reachable right now" in message
    assert message.endswith(f"(Requence base URL {base_url})")
    assert_no_secret(token, out, err)
    assert not (tmp_path / "typings").exists()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_bad_retry_budget_exits_2(cli: Cli, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_VAR, value)
    code, _, err = cli("get", "some-task")
    assert code == 2
    assert one_error_line(err) == (
        f"REQUENCE_TASK_RETRY_BUDGET must be a positive number of seconds, got {value!r}"
    )


@pytest.mark.parametrize("args", API_COMMANDS, ids=lambda a: "-".join(a))
def test_refused_token_exits_4(
    cli: Cli,
    server: LocalRequence,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    token = encode_access_token(f"wrong-{uuid.uuid4().hex}", server.base_url)
    code, out, err = cli(*args, token=token)
    assert (code, out) == (4, "")
    assert one_error_line(err).startswith("Requence refused the access token (HTTP 401): ")
    assert_no_secret(token, out, err)


def test_missing_token_exits_2_and_names_where_it_looked(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject.toml here
    for args in (["run", "echo"], ["get", "x"], ["watch"], ["generate-types"]):
        code, out, err = cli.bare(*args)
        assert (code, out) == (2, "")
        message = one_error_line(err)
        assert message.startswith("No Requence access token found.")
        for place in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN", "pyproject.toml"):
            assert place in message


def test_token_from_environment_and_pyproject(
    cli: Cli, server: LocalRequence, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.requence]\ntask_access_token = "{server.access_token}"\n', encoding="utf-8"
    )
    code, out, _ = cli.bare("run", "echo", "--json")
    assert code == 0
    assert json.loads(out.splitlines()[-1])["result"] == {"input": None}
    (tmp_path / "pyproject.toml").unlink()
    monkeypatch.setenv("REQUENCE_ACCESS_TOKEN", server.access_token)
    code, out, _ = cli.bare("run", "echo", "--json")
    assert code == 0


def test_invalid_token_exits_2_without_showing_it(cli: Cli) -> None:
    token = "AbCdEfGhIjKlMnOpQrStUvWxYz-not-a-token"
    for args in (["--access-token", token, "get", "x"], ["get", "x", "--access-token", token]):
        code, out, err = cli.bare(*args)
        assert (code, out) == (2, "")
        assert one_error_line(err) == (
            "The access token does not end in its padding digit (0-5): it looks truncated or "
            "altered; copy it again in full."
        )
        assert token not in err
    code, _, err = cli.bare("get", "x", "--access-token", "")
    assert code == 2
    assert one_error_line(err).startswith("access_token is empty")


def test_access_token_before_or_after_the_command(cli: Cli, client: Client) -> None:
    task_id = Task("echo", {"a": 1}, client=client).finalized(timeout=10)
    for args in (
        ["--access-token", cli.token, "get", task_id, "--json"],
        ["get", task_id, "--json", "--access-token", cli.token],
        ["--access-token", "x", "get", task_id, "--access-token", cli.token, "--json"],
    ):
        code, out, err = cli.bare(*args)
        assert (code, err) == (0, ""), args
        assert json.loads(out)["input"] == {"a": 1}


def test_debug_shows_the_traceback(cli: Cli) -> None:
    code, _, err = cli("get", "no-such-task", "--debug")
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith("requence-task: error: get of task no-such-task: ")
    assert_no_secret(cli.token, err)


# --- get, abort, protect --------------------------------------------------------------


@pytest.fixture()
def greeted(client: Client) -> str:
    task = Task("greet", {"name": "Ann"}, name="greeting", client=client)
    task.result(timeout=10)
    return task.task_id()


def test_get_text(cli: Cli, greeted: str) -> None:
    code, out, err = cli("get", greeted)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"Task:     {greeted}",
        "Status:   SUCCESSFUL",
        "Template: greet",
        "Name:     greeting",
        "Branch:   live",
        "Input:    {",
        '            "name": "Ann"',
        "          }",
        "Result:   {",
        '            "message": "Hello, Ann!"',
        "          }",
        "Node data:",
        "  greeter: {",
        '      "message": "Hello, Ann!"',
        "    }",
        "  counter: {",
        '      "step": 3',
        "    }",
    ]


def test_get_json(cli: Cli, greeted: str) -> None:
    code, out, err = cli("get", greeted, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "taskId": greeted,
        "status": "SUCCESSFUL",
        "statusText": None,
        "template": "greet",
        "name": "greeting",
        "branch": "live",
        "rootTaskId": None,
        "exit": None,
        "input": {"name": "Ann"},
        "result": {"message": "Hello, Ann!"},
        "nodeData": {"greeter": {"message": "Hello, Ann!"}, "counter": {"step": 3}},
        "nodeErrors": {},
    }


def test_get_failed_task_shows_errors(cli: Cli, client: Client) -> None:
    task = Task("fail", {"name": "Ann"}, client=client)
    with pytest.raises(TaskFailedError):
        task.result(timeout=10)
    code, out, _ = cli("get", task.task_id())
    assert code == 0
    assert "Status:   FAILED (node 'boom' failed: the boiler exploded)" in out.splitlines()
    assert out.splitlines()[-2:] == ["Node errors:", "  boom: the boiler exploded"]


@pytest.mark.parametrize("command", ["get", "abort", "protect"])
def test_unknown_task_id_exits_2(cli: Cli, command: str) -> None:
    code, out, err = cli(command, "no-such-task")
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        f"{command} of task no-such-task: no task no-such-task exists for this token "
        "(No task with id 'no-such-task' exists in this project.)"
    )


def test_abort_with_reason_then_get_shows_stopped(
    cli: Cli, client: Client, gates: list[str]
) -> None:
    key = new_gate(gates)
    task_id = Task("gated", {"gate": key}, client=client).finalized(timeout=10)
    wait_status(client, task_id, TaskStatus.RUNNING)
    code, out, err = cli("abort", task_id, "--reason", "not needed")
    assert (code, out, err) == (0, f"Task {task_id} aborted.\n", "")
    code, out, _ = cli("get", task_id)
    assert code == 0
    assert "Status:   STOPPED (not needed)" in out.splitlines()
    # Nothing left to abort: bad usage.
    code, out, err = cli("abort", task_id)
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        f"abort of task {task_id}: Task {task_id} has already ended (STOPPED); "
        "there is nothing to abort."
    )


def test_protect(cli: Cli, server: LocalRequence, greeted: str) -> None:
    row = server.store.task(greeted)
    assert row is not None and not row.protected
    code, out, err = cli("protect", greeted)
    assert (code, out, err) == (0, f"Task {greeted} protected.\n", "")
    row = server.store.task(greeted)
    assert row is not None and row.protected


# --- watch ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
def test_watch_only_task_end_limit_1_while_a_task_runs(
    capsys: pytest.CaptureFixture[str], project_token: str, gates: list[str], as_json: bool
) -> None:
    key = new_gate(gates)
    with Client(project_token) as project:
        task = Task("gated", {"gate": key}, client=project)
        task_id = task.finalized(timeout=10)
        wait_status(project, task_id, TaskStatus.RUNNING)
        since = datetime.now(timezone.utc).isoformat()
        codes: list[int] = []
        args = ["watch", "--since", since, "--only", "taskEnd", "--limit", "1", "--timeout", "10"]
        args += ["--json"] if as_json else []
        watcher = threading.Thread(
            target=lambda: codes.append(main([*args, "--access-token", project_token])),
            daemon=True,
        )
        capsys.readouterr()
        watcher.start()
        gate(key).set()
        watcher.join(15)
        assert task.result(timeout=10).result == {"opened": key}
    assert codes == [0]
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    if as_json:
        update = json.loads(lines[0])
        assert (update["type"], update["taskId"], update["result"]) == (
            "taskEnd",
            task_id,
            {"opened": key},
        )
        assert isinstance(update["position"], int)
    else:
        stamp, shown_id, rest = lines[0].split(" ", 2)
        assert datetime.fromisoformat(stamp) >= datetime.fromisoformat(since)
        assert (shown_id, rest) == (task_id, "taskEnd")


def test_watch_since_now_skips_history_and_all_replays_it(
    capsys: pytest.CaptureFixture[str], project_token: str
) -> None:
    with Client(project_token) as project:
        task_id = Task("echo", {"e": 1}, client=project).result(timeout=10).task_id
    capsys.readouterr()
    started = time.monotonic()
    assert main(["watch", "--timeout", "0.3", "--access-token", project_token]) == 0
    assert 0.25 < time.monotonic() - started < 3
    assert capsys.readouterr() == ("", "")
    argv = ["watch", "--since", "all", "--limit", "5", "--json", "--access-token", project_token]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    updates = [json.loads(line) for line in out.splitlines()]
    assert [u["type"] for u in updates] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert {u["taskId"] for u in updates} == {task_id}
    assert updates[2]["data"] == {"input": {"e": 1}}
    # Text lines, and --only with two types.
    argv = ["watch", "--since", "all", "--only", "nodeStart", "taskEnd", "--limit", "2"]
    assert main([*argv, "--access-token", project_token]) == 0
    out, _ = capsys.readouterr()
    assert [line.split(" ", 1)[1] for line in out.splitlines()] == [
        f"{task_id} nodeStart echo",
        f"{task_id} taskEnd",
    ]


def test_watch_bad_options_exit_2(cli: Cli) -> None:
    code, out, err = cli("watch", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert one_error_line(err) == (
        "since must be a datetime, a date or an ISO-8601 string, got 'yesterday'"
    )
    code, _, err = cli("watch", "--only", "taskFinished")
    assert code == 2
    assert "invalid choice: 'taskFinished'" in err
    code, _, err = cli("watch", "--limit", "-1")
    assert code == 2
    assert one_error_line(err) == "--limit must be 0 or more, got -1"


# --- generate-types -------------------------------------------------------------------


def test_generate_types_writes_a_module_that_compiles(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("generate-types")
    path = Path("typings", "requence", "task", "task_types.py")
    assert (code, out, err) == (0, f"Wrote {path}\n", "")
    source = (tmp_path / path).read_text(encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(compile(source, str(path), "exec"), namespace)
    assert "greet" in namespace["TEMPLATE_INPUTS"]
    assert "GreetInput" in namespace
    # --outdir
    code, out, _ = cli("generate-types", "--outdir", str(tmp_path / "elsewhere"))
    assert code == 0
    assert out == f"Wrote {tmp_path / 'elsewhere' / 'requence' / 'task' / 'task_types.py'}\n"


class _TypesServer:
    """A tiny HTTP server that answers GET /task/types/python with a fixed body."""

    def __init__(self, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode("utf-8")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/task/types/python" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.token = encode_access_token(
            "types-bearer", f"http://127.0.0.1:{self.httpd.server_address[1]}"
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.mark.parametrize("name", ["../evil.py", "a/b.py", "a\\b.py", "..", "x..py", ""])
def test_generate_types_refuses_unsafe_file_names(cli: Cli, tmp_path: Path, name: str) -> None:
    server = _TypesServer({"task_types.py": "X = 1\n", name: "import os\n"})
    try:
        code, out, err = cli("generate-types", "--outdir", str(tmp_path), token=server.token)
    finally:
        server.close()
    assert (code, out) == (1, "")
    assert one_error_line(err) == (
        f"Requence sent a types file named {name!r}; refusing to write it "
        "(a file name must not contain path separators or '..')"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the good file


# --- the program itself ---------------------------------------------------------------


def test_python_m_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "requence_task", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: requence-task ")
    for word in ("run", "get", "abort", "protect", "watch", "generate-types", "local", "demo"):
        assert re.search(rf"^\s+{re.escape(word)}\s", done.stdout, re.MULTILINE), word
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^  {code}\s+\S", done.stdout, re.MULTILINE), code


def test_usage_errors_exit_2(cli: Cli) -> None:
    code, out, err = cli.bare("run")
    assert (code, out) == (2, "")
    assert "the following arguments are required: TEMPLATE" in err
    code, _, err = cli.bare("frobnicate")
    assert code == 2
    code, _, err = cli("run", "echo", "--priority", "high")
    assert code == 2
    assert "invalid int value: 'high'" in err


def test_demo_runs_a_task_and_shows_a_rejected_input(capsys: pytest.CaptureFixture[str]) -> None:
    from requence_task._cli import main as cli_main

    assert cli_main(["demo", "--name", "Ada"]) == 0
    out = capsys.readouterr().out
    lines = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert lines[0] == "taskStart" and "taskEnd" in lines
    assert '"shout": "HELLO, ADA!"' in out
    assert "rejected (HTTP 422)" in out and "'name'" in out


# --- another package's requence-task command ------------------------------------------


def test_an_unknown_command_says_how_to_reach_this_ones_help(cli: Cli) -> None:
    code, out, err = cli.bare("frobnicate")
    assert (code, out) == (2, "")
    assert "requence-task: error: argument COMMAND: invalid choice: 'frobnicate'" in err
    assert "python -m requence_task --help" in err
    # A subcommand's usage error names that subcommand's help.
    code, _, err = cli.bare("run")
    assert code == 2
    assert "python -m requence_task run --help" in err


# What the official client's command answers to ours (requence 0.8.2, as seen).
OTHER_CLI = """\
import sys


def main():
    print("usage: requence-task [-h] {generate-types} ...", file=sys.stderr)
    print(
        "requence-task: error: argument command: invalid choice: 'local' "
        "(choose from 'generate-types')",
        file=sys.stderr,
    )
    return 2
"""


def _record_line(name: str, content: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(content)}"


def build_other_wheel(directory: Path) -> Path:
    """A wheel of a package named ``requence`` whose console script ``requence-task``
    is not ours, as the official client's is."""
    info = "requence-0.8.2.dist-info"
    files = {
        "other_requence/__init__.py": b"",
        "other_requence/cli.py": OTHER_CLI.encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: requence\nVersion: 0.8.2\n",
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": (
            b"[console_scripts]\nrequence-task = other_requence.cli:main\n"
        ),
    }
    record = [_record_line(name, content) for name, content in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    path = directory / "requence-0.8.2-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)
    return path


def venv_env(scripts: Path) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PATH"] = os.pathsep.join([str(scripts), os.defpath])
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.fixture(scope="module")
def other_command_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A virtual environment that has this package and, installed after it, a
    ``requence`` whose ``requence-task`` command replaced ours: its python and
    scripts directory."""
    pytest.importorskip("pip")
    root = tmp_path_factory.mktemp("other-command")
    venv.create(root / "venv", with_pip=False, symlinks=os.name != "nt")
    python = root / "venv" / ("Scripts" if os.name == "nt" else "bin") / "python"
    where = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    purelib = Path(where.stdout.strip())
    # This package, its dependencies and pip come from the environment running the tests.
    outer = [str(Path(requence_task.__file__).resolve().parents[1])]
    outer += [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
    (purelib / "outer_environment.pth").write_text("\n".join(outer) + "\n", encoding="utf-8")
    scripts = python.parent
    env = venv_env(scripts)
    ours = (
        f"#!{python}\nimport sys\nfrom requence_task._cli import console_main\n"
        "if __name__ == '__main__':\n    sys.exit(console_main())\n"
    )
    (scripts / "requence-task").write_text(ours, encoding="utf-8")
    (scripts / "requence-task").chmod(0o755)
    ok = subprocess.run(
        [str(scripts / "requence-task"), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("requence-task "), ok.stderr
    installed = subprocess.run(
        [
            *(str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--no-input"),
            *("--disable-pip-version-check", str(build_other_wheel(root))),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python, scripts


def test_another_packages_command_over_ours_is_named_with_the_way_out(
    other_command_venv: tuple[Path, Path],
) -> None:
    python, scripts = other_command_venv
    env = venv_env(scripts)
    command = scripts / "requence-task"
    # The situation: the command answers "invalid choice: 'local'".
    theirs = subprocess.run(
        [str(command), "local", "serve", "x.py"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert theirs.returncode == 2 and "invalid choice: 'local'" in theirs.stderr
    # Ours, run as python -m requence_task, works, and says what is wrong and what to do.
    ours = subprocess.run(
        [str(python), "-m", "requence_task", "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ours.returncode == 0 and ours.stdout.startswith("requence-task ")
    [warning] = ours.stderr.splitlines()
    assert warning.startswith("requence-task: warning: ")
    assert f"the requence-task command at {command} is not this package's" in warning
    assert "it runs other_requence.cli of the 'requence' distribution" in warning
    assert "python -m requence_task" in warning
    assert "separate virtual environment" in warning
    # A usage error says it too, once, after the error and the way to the help.
    wrong = subprocess.run(
        [str(python), "-m", "requence_task", "frobnicate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 2
    lines = wrong.stderr.splitlines()
    assert any("invalid choice: 'frobnicate'" in line for line in lines)
    assert "python -m requence_task --help" in wrong.stderr
    assert sum("is not this package's" in line for line in lines) == 1


def test_no_warning_when_the_command_is_ours(tmp_path: Path) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    done = subprocess.run(
        [sys.executable, "-m", "requence_task", "--version"],
        env={**subprocess_env(), "PATH": os.pathsep.join([str(scripts), os.defpath])},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, "")
