"""docs/errors.md, row by row: every bad input and what the user gets.

The tables of docs/errors.md are parsed here, and each row runs as one test:
its case name picks a small function below that performs the mistake, and the
test checks the exception class (exactly), its ``.status`` where the row gives
one, that the message contains the row's fragment, and the exit code and
error line of ``requence-task`` for the same mistake (run in-process with
``requence_task._cli.main``, the token in ``REQUENCE_TASK_ACCESS_TOKEN``).
The HTTP rows send their request to a local Requence and check the status,
the ``Allow`` header of a 405 and the body, then that the server still serves.

A row without a function fails, and so does a function without a row.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

import requence_task
from requence_task import (
    Client,
    RequenceError,
    RequenceFile,
    RequenceStream,
    RetryPolicy,
    Task,
    Timeouts,
    abort_task,
    ack_task,
    get_task,
    watch_tasks,
)
from requence_task._cli import main
from requence_task._files import frame as data_frame
from requence_task._protocol import TOKEN_SEPARATOR
from requence_task._token import _pack, _unpack, decode_access_token, encode_access_token
from requence_task.local import LocalRequence
from requence_task.local._faults import ENDPOINTS

from .faults.hostile import Handler, Hostile, frame, update
from .local.templates_for_tests import TEMPLATES, gate

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
TOKEN_VARS = ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
BUDGET_VAR = "REQUENCE_TASK_RETRY_BUDGET"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
GARBAGE = b"\xff\xfe{garbage\x00"
TINY_RETRY = RetryPolicy(budget=0.3, initial_backoff=0.02, max_backoff=0.1)
QUICK = Timeouts(connect=2, read=10, stream_inactivity=20)
WAIT = 10  # seconds any accessor of a case may wait

# --- parsing docs/errors.md --------------------------------------------------------------

CLIENT_HEADER = ("case", "what you pass", "what you get (class)", "message", "cli exit code")
SERVER_HEADER = ("case", "what you send", "what you get (http status)", "message")
_TICKED = re.compile(r"`([^`]*)`")


@dataclass(frozen=True)
class ClientRow:
    case: str
    section: str
    line: int
    cls: str
    status: int | None
    fragment: str
    cli_code: int | None
    cli_fragment: str | None
    timeout_too: bool = False  # "(also a `TimeoutError`)": a subclass that is one


@dataclass(frozen=True)
class ServerRow:
    case: str
    section: str
    line: int
    status: int
    allow: str | None
    fragment: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _ticked(cell: str, what: str, line: int) -> str:
    found = _TICKED.findall(cell)
    if not found:
        raise ValueError(f"docs/errors.md:{line}: the {what} cell has nothing in backticks")
    return str(found[0])


def parse(text: str) -> tuple[list[ClientRow], list[ServerRow]]:
    """The rows of every table; a table with another header is an error."""
    clients: list[ClientRow] = []
    servers: list[ServerRow] = []
    section = ""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            index += 1
            continue
        header = tuple(cell.lower() for cell in _cells(line))
        if header not in (CLIENT_HEADER, SERVER_HEADER):
            raise ValueError(f"docs/errors.md:{index + 1}: a table with the header {header}")
        if not set(lines[index + 1].replace("|", "").strip()) <= {"-", ":", " "}:
            raise ValueError(f"docs/errors.md:{index + 2}: no separator row under the header")
        index += 2
        while index < len(lines) and lines[index].startswith("|"):
            number = index + 1
            cells = _cells(lines[index])
            if len(cells) != len(header):
                raise ValueError(f"docs/errors.md:{number}: {len(cells)} cells, not {len(header)}")
            case = _ticked(cells[0], "case", number)
            if header == CLIENT_HEADER:
                status = re.search(r"\bstatus (\d{3})\b", cells[2])
                cli = cells[4]
                code = re.match(r"\d+", cli)
                if code is None and cli not in ("—", "-"):
                    raise ValueError(f"docs/errors.md:{number}: CLI exit code {cli!r}")
                clients.append(
                    ClientRow(
                        case=case,
                        section=section,
                        line=number,
                        cls=_ticked(cells[2], "class", number),
                        status=int(status.group(1)) if status else None,
                        fragment=_ticked(cells[3], "message", number),
                        cli_code=int(code.group()) if code else None,
                        cli_fragment=(_TICKED.findall(cli) or [None])[0],
                        timeout_too="also a `TimeoutError`" in cells[2],
                    )
                )
            else:
                code = re.match(r"\d{3}", cells[2])
                if code is None:
                    raise ValueError(f"docs/errors.md:{number}: HTTP status {cells[2]!r}")
                allow = [t for t in _TICKED.findall(cells[2]) if t.startswith("Allow: ")]
                servers.append(
                    ServerRow(
                        case=case,
                        section=section,
                        line=number,
                        status=int(code.group()),
                        allow=allow[0].removeprefix("Allow: ") if allow else None,
                        fragment=_ticked(cells[3], "message", number),
                    )
                )
            index += 1
    return clients, servers


CLIENT_ROWS, SERVER_ROWS = parse(DOC.read_text(encoding="utf-8"))


# --- the world the cases run in ----------------------------------------------------------


@dataclass
class Ctx:
    server: LocalRequence
    small: LocalRequence  # max_payload_size=10_000, max_file_size=10_000
    client: Client
    ended: str  # a task of the default project that has ended successfully
    other_project_task: str  # a task of another project
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def bearer(self) -> str:
        return decode_access_token(self.server.access_token).bearer

    def prepare(self, template: str = "echo", *, small: bool = False) -> tuple[str, str]:
        """A prepared (not finalized) task: its id and finalize URL."""
        rq = self.small if small else self.server
        answer = send(self, "POST", f"/task/prepare/{template}", rq=rq)
        assert answer.status == 200, answer.text
        body = json.loads(answer.text)
        return body["taskId"], body["finalizeUrl"]

    def task(self) -> Task:
        """A task that has ended successfully."""
        task = Task("echo", {"n": 1}, client=self.client)
        task.result(timeout=WAIT)
        return task


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def small() -> Iterator[LocalRequence]:
    with LocalRequence(TEMPLATES, max_payload_size=10_000, max_file_size=10_000) as rq:
        yield rq


@pytest.fixture(scope="module")
def ctx(server: LocalRequence, small: LocalRequence) -> Iterator[Ctx]:
    with (
        Client(server.access_token, retry=TINY_RETRY, timeouts=QUICK) as client,
        Client(server.token_for(f"errors-{uuid.uuid4().hex}"), timeouts=QUICK) as other,
    ):
        ended = Task("echo", {"n": 0}, client=client)
        ended.result(timeout=WAIT)
        foreign = Task("echo", client=other)
        foreign.result(timeout=WAIT)
        context = Ctx(
            server=server,
            small=small,
            client=client,
            ended=ended.task_id(),
            other_project_task=foreign.task_id(),
        )
        yield context
        context.session.close()


# --- client cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    """A ``requence-task`` command for a row; ``token=None`` is the server's own token."""

    argv: list[str]
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    no_token: bool = False  # no token variable at all


@dataclass(frozen=True)
class ClientCase:
    run: Callable[[Ctx], object]
    cli: Callable[[Ctx], Cli] | None


CLIENT_CASES: dict[str, ClientCase] = {}


def case(
    name: str, cli: Callable[[Ctx], Cli] | None = None
) -> Callable[[Callable[[Ctx], object]], Callable[[Ctx], object]]:
    def register(function: Callable[[Ctx], object]) -> Callable[[Ctx], object]:
        assert name not in CLIENT_CASES, f"two cases named {name}"
        CLIENT_CASES[name] = ClientCase(function, cli)
        return function

    return register


def run_echo(token: str | None = None, **env: str) -> Callable[[Ctx], Cli]:
    return lambda ctx: Cli(["run", "echo", "--input", "{}"], token=token, env=env)


def run_with(*argv: str) -> Callable[[Ctx], Cli]:
    return lambda ctx: Cli(["run", *argv])


def a_token(base_url: str = "http://127.0.0.1:8765") -> str:
    return encode_access_token("s3cret-bearer-for-a-mistype", base_url)


def mistyped(token: str) -> str:
    """The token with one symbol changed: its bearer now holds U+3033 (the
    symbols before it encode ``api`` and the separator, whatever the URL)."""
    bad = token[:13] + "z" + token[14:]
    assert "\u3033" in _unpack(bad)
    return bad


def dead_token() -> str:
    return encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{free_port()}")


# Tokens


@case("token-empty", cli=run_echo(token=""))
def token_empty(ctx: Ctx) -> object:
    return Task("echo", access_token="")


@case("token-missing", cli=lambda ctx: Cli(["run", "echo", "--input", "{}"], no_token=True))
def token_missing(ctx: Ctx) -> object:
    return Task("echo")  # the test runs in an empty directory with no token variables


@case("token-not-a-string")
def token_not_a_string(ctx: Ctx) -> object:
    return Task("echo", access_token=12345)  # type: ignore[arg-type]


@case("token-truncated", cli=lambda ctx: run_echo(ctx.server.access_token[:-10])(ctx))
def token_truncated(ctx: Ctx) -> object:
    return Task("echo", access_token=ctx.server.access_token[:-10])


def _wrong_alphabet(ctx: Ctx) -> str:
    token = ctx.server.access_token
    return token[:5] + "!" + token[5:]


@case("token-wrong-alphabet", cli=lambda ctx: run_echo(_wrong_alphabet(ctx))(ctx))
def token_wrong_alphabet(ctx: Ctx) -> object:
    return Task("echo", access_token=_wrong_alphabet(ctx))


def _service_token(ctx: Ctx) -> str:
    return encode_access_token(ctx.bearer, ctx.server.base_url, kind="svc")


@case("token-wrong-first-part", cli=lambda ctx: run_echo(_service_token(ctx))(ctx))
def token_wrong_first_part(ctx: Ctx) -> object:
    return Task("echo", access_token=_service_token(ctx))


def _two_parts(ctx: Ctx) -> str:
    return _pack(TOKEN_SEPARATOR.join(("api", ctx.bearer)))


@case("token-two-parts", cli=lambda ctx: run_echo(_two_parts(ctx))(ctx))
def token_two_parts(ctx: Ctx) -> object:
    return Task("echo", access_token=_two_parts(ctx))


def _no_scheme(ctx: Ctx) -> str:
    return encode_access_token(ctx.bearer, ctx.server.base_url.removeprefix("http://"))


@case("token-url-without-scheme", cli=lambda ctx: run_echo(_no_scheme(ctx))(ctx))
def token_url_without_scheme(ctx: Ctx) -> object:
    return Task("echo", access_token=_no_scheme(ctx))


@case("token-mistyped", cli=lambda ctx: run_echo(mistyped(a_token(ctx.server.base_url)))(ctx))
def token_mistyped(ctx: Ctx) -> object:
    with Client(mistyped(a_token(ctx.server.base_url)), retry=TINY_RETRY) as client:
        return Task("echo", client=client).finalized(timeout=WAIT)


def _refused(ctx: Ctx) -> str:
    return encode_access_token("not-a-bearer-of-this-server", ctx.server.base_url)


@case("token-refused", cli=lambda ctx: run_echo(_refused(ctx))(ctx))
def token_refused(ctx: Ctx) -> object:
    with Client(_refused(ctx), retry=TINY_RETRY) as client:
        return Task("echo", client=client).finalized(timeout=WAIT)


@case("token-unreachable", cli=lambda ctx: run_echo(dead_token(), **{BUDGET_VAR: "0.3"})(ctx))
def token_unreachable(ctx: Ctx) -> object:
    with Client(dead_token(), retry=TINY_RETRY) as client:
        return Task("echo", client=client).finalized(timeout=WAIT)


# Templates


@case("template-empty", cli=run_with("", "--input", "{}"))
def template_empty(ctx: Ctx) -> object:
    return Task("", client=ctx.client)


@case("template-blank", cli=run_with("   ", "--input", "{}"))
def template_blank(ctx: Ctx) -> object:
    return Task("   ", client=ctx.client)


@case("template-not-a-string")
def template_not_a_string(ctx: Ctx) -> object:
    return Task(None, client=ctx.client)  # type: ignore[arg-type]


@case("template-unknown", cli=run_with("no-such-template", "--input", "{}"))
def template_unknown(ctx: Ctx) -> object:
    return Task("no-such-template", client=ctx.client).finalized(timeout=WAIT)


@case("template-with-a-slash", cli=run_with("a/b", "--input", "{}"))
def template_with_a_slash(ctx: Ctx) -> object:
    return Task("a/b", client=ctx.client).finalized(timeout=WAIT)


# Inputs


@case("input-not-serialisable", cli=run_with("echo", "--input", "{when"))
def input_not_serialisable(ctx: Ctx) -> object:
    return Task("echo", {"when": object()}, client=ctx.client)


@case("input-nan", cli=run_with("echo", "--input", "NaN"))
def input_nan(ctx: Ctx) -> object:
    return Task("echo", float("nan"), client=ctx.client)


@case("input-lone-surrogate", cli=run_with("echo", "--input", '"\\ud800"'))
def input_lone_surrogate(ctx: Ctx) -> object:
    return Task("echo", "\ud800", client=ctx.client)


LARGE_INPUT = {"blob": "x" * 20_000}


@case(
    "input-too-large",
    cli=lambda ctx: Cli(
        ["run", "echo", "--input", json.dumps(LARGE_INPUT)],
        token=ctx.small.access_token,
    ),
)
def input_too_large(ctx: Ctx) -> object:
    with Client(ctx.small.access_token, retry=TINY_RETRY) as client:
        return Task("echo", LARGE_INPUT, client=client).finalized(timeout=WAIT)


# Files and streams


def _small_client(ctx: Ctx) -> Client:
    return Client(ctx.small.access_token, retry=TINY_RETRY, timeouts=QUICK)


def _a_file(size: int) -> str:
    where = Path(tempfile.mkdtemp()) / "doc.bin"
    where.write_bytes(b"x" * size)
    return str(where)


@case(
    "file-too-large",
    cli=lambda ctx: Cli(
        ["run", "echo", "--file", f"doc={_a_file(20_000)}"], token=ctx.small.access_token
    ),
)
def file_too_large(ctx: Ctx) -> object:
    with _small_client(ctx) as client:
        return Task("echo", {"doc": RequenceFile(b"x" * 20_000)}, client=client).finalized(
            timeout=WAIT
        )


@case("file-path-missing", cli=run_with("echo", "--file", "doc=no-such.pdf"))
def file_path_missing(ctx: Ctx) -> object:
    return RequenceFile.from_path("no-such.pdf")


@case("file-of-text")
def file_of_text(ctx: Ctx) -> object:
    return RequenceFile("some text")  # type: ignore[arg-type]


@case("file-mime-malformed")
def file_mime_malformed(ctx: Ctx) -> object:
    return RequenceFile(b"%PDF", mime="pdf")


@case("stream-twice")
def stream_twice(ctx: Ctx) -> object:
    rows = RequenceStream(iter([b"a"]))
    return Task("echo", {"a": rows, "b": rows}, client=ctx.client)


@case("stream-already-sent")
def stream_already_sent(ctx: Ctx) -> object:
    rows = RequenceStream(iter([b"a"]))
    Task("echo", {"rows": rows}, client=ctx.client).finalized(timeout=WAIT)
    return Task("echo", {"rows": rows}, client=ctx.client)


@case("stream-raises")
def stream_raises(ctx: Ctx) -> object:
    def rows() -> Iterator[bytes]:
        yield b"a,b\n"
        raise OSError("disk gone")

    return Task("echo", {"rows": RequenceStream(rows())}, client=ctx.client).finalized(timeout=WAIT)


@case("stream-too-large")
def stream_too_large(ctx: Ctx) -> object:
    rows = RequenceStream(iter([b"x" * 1000] * 20))
    with _small_client(ctx) as client:
        return Task("echo", {"rows": rows}, client=client).finalized(timeout=WAIT)


@case("stream-read-twice")
def stream_read_twice(ctx: Ctx) -> object:
    rows = RequenceStream(iter([b"a"]))
    rows.read()
    return rows.read()


@case("input-fails-the-schema", cli=run_with("greet", "--input", '{"name": 5}'))
def input_fails_the_schema(ctx: Ctx) -> object:
    return Task("greet", {"name": 5}, client=ctx.client).finalized(timeout=WAIT)


@case("input-missing", cli=run_with("greet"))
def input_missing(ctx: Ctx) -> object:
    return Task("greet", client=ctx.client).finalized(timeout=WAIT)


@case("name-not-a-string")
def name_not_a_string(ctx: Ctx) -> object:
    return Task("echo", name=5, client=ctx.client)  # type: ignore[arg-type]


# Priorities


@case("priority-too-high", cli=run_with("echo", "--input", "{}", "--priority", "11"))
def priority_too_high(ctx: Ctx) -> object:
    return Task("echo", priority=11, client=ctx.client)


@case("priority-negative", cli=run_with("echo", "--input", "{}", "--priority", "-1"))
def priority_negative(ctx: Ctx) -> object:
    return Task("echo", priority=-1, client=ctx.client)


@case("priority-fraction", cli=run_with("echo", "--input", "{}", "--priority", "5.5"))
def priority_fraction(ctx: Ctx) -> object:
    return Task("echo", priority=5.5, client=ctx.client)  # type: ignore[arg-type]


@case("priority-bool")
def priority_bool(ctx: Ctx) -> object:
    return Task("echo", priority=True, client=ctx.client)


@case("priority-string")
def priority_string(ctx: Ctx) -> object:
    return Task("echo", priority="5", client=ctx.client)  # type: ignore[arg-type]


# Time-outs


def watch_cli(*argv: str) -> Callable[[Ctx], Cli]:
    return lambda ctx: Cli(["watch", *argv])


@case("timeout-negative", cli=watch_cli("--timeout", "-1"))
def timeout_negative(ctx: Ctx) -> object:
    return ctx.task().result(timeout=-1)


@case("timeout-nan", cli=watch_cli("--timeout", "nan"))
def timeout_nan(ctx: Ctx) -> object:
    return ctx.task().finalized(timeout=float("nan"))


@case("timeout-string")
def timeout_string(ctx: Ctx) -> object:
    return next(iter(ctx.task().updates(timeout="5")))  # type: ignore[arg-type]


@case("timeout-abort-negative")
def timeout_abort_negative(ctx: Ctx) -> object:
    task = ctx.task()
    task.abort(timeout=-1)
    return task


@case("client-connect-timeout-negative")
def client_connect_timeout_negative(ctx: Ctx) -> object:
    return Timeouts(connect=-1)


@case("client-read-timeout-nan")
def client_read_timeout_nan(ctx: Ctx) -> object:
    return Timeouts(read=float("nan"))


@case("client-retry-budget-zero", cli=run_echo(**{BUDGET_VAR: "0"}))
def client_retry_budget_zero(ctx: Ctx) -> object:
    return RetryPolicy(budget=0)


@case("client-max-workers-zero")
def client_max_workers_zero(ctx: Ctx) -> object:
    return Client(ctx.server.access_token, max_workers=0)


@case("timeout-task-goes-on")
def timeout_task_goes_on(ctx: Ctx) -> object:
    key = uuid.uuid4().hex
    try:
        return Task("gated", {"gate": key}, client=ctx.client).result(timeout=0.5)
    finally:
        gate(key).set()


def _patient(token: str) -> Client:
    """A client that retries an unreachable Requence for 30 s."""
    return Client(token, retry=RetryPolicy(budget=30, initial_backoff=0.05, max_backoff=0.5))


@case("timeout-while-unreachable")
def timeout_while_unreachable(ctx: Ctx) -> object:
    with _patient(dead_token()) as client:
        return Task("echo", client=client).finalized(timeout=1)


@case("timeout-stream-unreachable")
def timeout_stream_unreachable(ctx: Ctx) -> object:
    down = threading.Event()

    def then_down(handler: Handler, body: dict[str, object]) -> None:
        handler.start_stream()
        handler.chunk(frame(1, "taskStart", update(input=None)))
        down.wait(WAIT)
        handler.close_connection = True

    with Hostile(watch=[then_down]) as hostile, _patient(hostile.access_token) as client:
        task = Task("echo", client=client)
        next(task.updates(timeout=WAIT))
        hostile.stop()
        down.set()
        return task.result(timeout=1)


# A Requence that breaks the protocol


@case("answer-trickled")
def answer_trickled(ctx: Ctx) -> object:
    def prepare(handler: Handler, body: dict[str, object]) -> None:
        handler.trickle_headers(0.5, limit=20)

    with (
        Hostile(prepare=prepare) as hostile,
        Client(
            hostile.access_token,
            timeouts=Timeouts(connect=1, read=2),
            retry=RetryPolicy(budget=4, initial_backoff=0.05, max_backoff=0.2),
        ) as client,
    ):
        return Task("echo", client=client).task_id(timeout=WAIT)


def _ended_with(result: object) -> Callable[[Handler, dict[str, object]], None]:
    def watch(handler: Handler, body: dict[str, object]) -> None:
        handler.stream(
            frame(1, "taskStart", update(input=None)),
            frame(2, "taskEnd", update(result=result, exit=None, requireAck=False)),
        )

    return watch


def _refusing(status: int) -> Callable[[Handler, dict[str, object]], None]:
    def answer(handler: Handler, body: dict[str, object]) -> None:
        handler.read_body()
        handler.send_bytes(status, b"no", "text/plain")

    return answer


def _client_of(hostile: Hostile) -> Client:
    return Client(hostile.access_token, shared_stream=False, timeouts=QUICK, retry=TINY_RETRY)


def _result_of(hostile: Hostile, client: Client, build: Callable[[str], object]) -> Any:
    hostile.scripts["watch"].append(_ended_with(build(hostile.base_url)))
    return Task("echo", client=client).result(timeout=WAIT).result


_TAG = "__REQUENCE_type"


@case("upload-answer-malformed")
def upload_answer_malformed(ctx: Ctx) -> object:
    def upload(handler: Handler, body: dict[str, object]) -> None:
        handler.read_body()
        handler.send_json(200, {"mime": "x/y", "size": 1})

    with (
        Hostile(files=True, upload=upload) as hostile,
        Client(hostile.access_token, timeouts=QUICK) as client,
    ):
        return Task("echo", {"doc": RequenceFile(b"x")}, client=client).finalized(timeout=WAIT)


@case("file-gone")
def file_gone(ctx: Ctx) -> object:
    routes = {"/files/f/gone": _refusing(404)}
    with Hostile(files=True, file_routes=routes) as hostile, _client_of(hostile) as client:
        result = _result_of(
            hostile,
            client,
            lambda base: {
                "doc": {
                    _TAG: "RequenceFile",
                    "url": f"{base}/files/f/gone",
                    "mime": "a/b",
                    "size": 1,
                }
            },
        )
        return result["doc"].read()


@case("file-truncated")
def file_truncated(ctx: Ctx) -> object:
    with Hostile(files=True) as hostile, _client_of(hostile) as client:
        url = hostile.store(b"abc")
        result = _result_of(
            hostile,
            client,
            lambda base: {"doc": {_TAG: "RequenceFile", "url": url, "mime": "a/b", "size": 10}},
        )
        return result["doc"].read()


@case("stream-stopped-early")
def stream_stopped_early(ctx: Ctx) -> object:
    def stopped(handler: Handler, body: dict[str, object]) -> None:
        handler.send_response(200)
        handler.send_header("x-requence-stream-protocol", "framed")
        payload = data_frame(0, b"a,b\n") + data_frame(2, b"exporter died")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    with (
        Hostile(files=True, file_routes={"/files/f/s": stopped}) as hostile,
        _client_of(hostile) as client,
    ):
        result = _result_of(
            hostile,
            client,
            lambda base: {
                "rows": {_TAG: "RequenceStream", "url": f"{base}/files/f/s", "mime": "a/b"}
            },
        )
        return result["rows"].read()


@case("claim-check-unreadable")
def claim_check_unreadable(ctx: Ctx) -> object:
    with (
        Hostile(files=True, file_routes={"/files/f/gone": _refusing(404)}) as hostile,
        _client_of(hostile) as client,
    ):
        result = _result_of(
            hostile,
            client,
            lambda base: {"rows": {_TAG: "ClaimCheck", "url": f"{base}/files/f/gone", "size": 9}},
        )
        return result


@case("callback-called")
def callback_called(ctx: Ctx) -> object:
    with Hostile(files=True) as hostile, _client_of(hostile) as client:
        result = _result_of(
            hostile, client, lambda base: {"call": {_TAG: "RequenceCallback", "lifetime": "task"}}
        )
        return result["call"]()


@case("terminal-update-malformed")
def terminal_update_malformed(ctx: Ctx) -> object:
    def watch(handler: Handler, body: dict[str, object]) -> None:
        handler.stream(
            frame(1, "taskStart", update(input=None)), frame(2, "taskEnd", update(exit=7))
        )

    with (
        Hostile(watch=[watch]) as hostile,
        Client(hostile.access_token, shared_stream=False, timeouts=QUICK) as client,
    ):
        return Task("echo", client=client).result(timeout=WAIT)


# Task ids


def id_cli(command: str, task_id: Callable[[Ctx], str]) -> Callable[[Ctx], Cli]:
    return lambda ctx: Cli([command, task_id(ctx)])


@case("id-unknown", cli=id_cli("get", lambda ctx: UNKNOWN_ID))
def id_unknown(ctx: Ctx) -> object:
    return get_task(UNKNOWN_ID, client=ctx.client)


@case("id-malformed", cli=id_cli("get", lambda ctx: "a/b"))
def id_malformed(ctx: Ctx) -> object:
    return get_task("a/b", client=ctx.client)


@case("id-empty", cli=id_cli("get", lambda ctx: ""))
def id_empty(ctx: Ctx) -> object:
    return get_task("", client=ctx.client)


@case("id-not-a-string")
def id_not_a_string(ctx: Ctx) -> object:
    return get_task(42, client=ctx.client)  # type: ignore[arg-type]


@case("id-of-another-project", cli=id_cli("get", lambda ctx: ctx.other_project_task))
def id_of_another_project(ctx: Ctx) -> object:
    return get_task(ctx.other_project_task, client=ctx.client)


@case("id-from-id-malformed")
def id_from_id_malformed(ctx: Ctx) -> object:
    return Task.from_id("../x", client=ctx.client)


@case("abort-unknown", cli=id_cli("abort", lambda ctx: UNKNOWN_ID))
def abort_unknown(ctx: Ctx) -> object:
    return abort_task(UNKNOWN_ID, client=ctx.client)


@case("abort-ended", cli=id_cli("abort", lambda ctx: ctx.ended))
def abort_ended(ctx: Ctx) -> object:
    return abort_task(ctx.ended, client=ctx.client)


@case("ack-not-awaiting")
def ack_not_awaiting(ctx: Ctx) -> object:
    return ack_task(ctx.ended, client=ctx.client)


@case("watch-since-malformed", cli=watch_cli("--since", "yesterday"))
def watch_since_malformed(ctx: Ctx) -> object:
    return watch_tasks("yesterday", client=ctx.client)


@case("watch-only-unknown", cli=watch_cli("--only", "bogus"))
def watch_only_unknown(ctx: Ctx) -> object:
    return watch_tasks(None, only=["bogus"], client=ctx.client)


# --- HTTP cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    headers: dict[str, str]


def send(
    ctx: Ctx,
    method: str,
    path: str,
    *,
    data: bytes | None = None,
    bearer: str | bool | None = True,
    rq: LocalRequence | None = None,
) -> Answer:
    """One request; at most 64 KiB of the answer is read, within 5 s."""
    rq = rq or ctx.server
    headers: dict[str, str] = {}
    if bearer is True:
        headers["Authorization"] = f"Bearer {decode_access_token(rq.access_token).bearer}"
    elif isinstance(bearer, str):
        headers["Authorization"] = f"Bearer {bearer}"
    url = path if "://" in path else rq.base_url + path
    with ctx.session.request(
        method, url, data=data, headers=headers, timeout=(5, 5), stream=True
    ) as response:
        body = bytearray()
        deadline = time.monotonic() + 5
        for chunk in response.iter_content(chunk_size=None):
            body += chunk
            if len(body) >= 64 * 1024 or time.monotonic() > deadline:
                break
        return Answer(
            response.status_code,
            body.decode("utf-8", "replace"),
            {name.lower(): value for name, value in response.headers.items()},
        )


def finalize(ctx: Ctx, data: bytes, template: str = "echo") -> Answer:
    _, url = ctx.prepare(template)
    return send(ctx, "POST", url, data=data)


SERVER_CASES: dict[str, Callable[[Ctx], Answer]] = {
    # A garbage body to each endpoint.
    "http-prepare-garbage": lambda ctx: send(ctx, "POST", "/task/prepare/echo", data=GARBAGE),
    "http-finalize-garbage": lambda ctx: finalize(ctx, GARBAGE),
    "http-watch-garbage": lambda ctx: send(
        ctx, "POST", f"/task/watch/{ctx.prepare()[0]}", data=GARBAGE
    ),
    "http-watch-all-garbage": lambda ctx: send(ctx, "POST", "/task/watch-all", data=GARBAGE),
    "http-abort-garbage": lambda ctx: send(
        ctx, "POST", f"/task/abort/{ctx.prepare()[0]}", data=GARBAGE
    ),
    "http-protect-garbage": lambda ctx: send(
        ctx, "POST", f"/task/protect/{ctx.prepare()[0]}", data=GARBAGE
    ),
    "http-ack-garbage": lambda ctx: send(ctx, "POST", f"/task/ack/{ctx.ended}", data=GARBAGE),
    "http-get-garbage": lambda ctx: send(ctx, "GET", f"/task/{ctx.ended}", data=GARBAGE),
    "http-types-garbage": lambda ctx: send(ctx, "GET", "/task/types/python", data=GARBAGE),
    "http-page-garbage": lambda ctx: send(ctx, "GET", f"/tasks/{ctx.ended}", data=GARBAGE),
    # A wrong method to each endpoint.
    "http-prepare-wrong-method": lambda ctx: send(ctx, "GET", "/task/prepare/echo"),
    "http-finalize-wrong-method": lambda ctx: send(ctx, "GET", ctx.prepare()[1]),
    "http-watch-wrong-method": lambda ctx: send(ctx, "GET", f"/task/watch/{ctx.prepare()[0]}"),
    "http-watch-all-wrong-method": lambda ctx: send(ctx, "GET", "/task/watch-all"),
    "http-abort-wrong-method": lambda ctx: send(ctx, "GET", f"/task/abort/{ctx.prepare()[0]}"),
    "http-protect-wrong-method": lambda ctx: send(ctx, "GET", f"/task/protect/{ctx.prepare()[0]}"),
    "http-ack-wrong-method": lambda ctx: send(ctx, "GET", f"/task/ack/{ctx.prepare()[0]}"),
    "http-get-wrong-method": lambda ctx: send(ctx, "POST", f"/task/{ctx.prepare()[0]}"),
    "http-types-wrong-method": lambda ctx: send(ctx, "POST", "/task/types/python"),
    "http-page-wrong-method": lambda ctx: send(ctx, "POST", f"/tasks/{ctx.prepare()[0]}"),
    # Finalize bodies.
    "http-finalize-empty": lambda ctx: finalize(ctx, b""),
    "http-finalize-not-an-object": lambda ctx: finalize(ctx, b"[1, 2]"),
    "http-finalize-nan": lambda ctx: finalize(ctx, b'{"input": NaN}'),
    "http-finalize-lone-surrogate": lambda ctx: finalize(ctx, b'{"input": "\\ud800"}'),
    "http-finalize-nested-too-deeply": lambda ctx: finalize(ctx, b"[" * 100_000),
    "http-finalize-name": lambda ctx: finalize(ctx, b'{"name": 5}'),
    "http-finalize-priority": lambda ctx: finalize(ctx, b'{"priority": "high"}'),
    "http-finalize-priority-range": lambda ctx: finalize(ctx, b'{"priority": 11}'),
    "http-finalize-require-ack": lambda ctx: finalize(ctx, b'{"requireAck": "yes"}'),
    "http-finalize-schema": lambda ctx: finalize(ctx, b'{"input": {"name": 5}}', "greet"),
}


def _case(name: str) -> Callable[[Callable[[Ctx], Answer]], Callable[[Ctx], Answer]]:
    def register(function: Callable[[Ctx], Answer]) -> Callable[[Ctx], Answer]:
        assert name not in SERVER_CASES, f"two cases named {name}"
        SERVER_CASES[name] = function
        return function

    return register


@_case("http-finalize-too-large")
def http_finalize_too_large(ctx: Ctx) -> Answer:
    _, url = ctx.prepare(small=True)
    body = json.dumps({"input": LARGE_INPUT}).encode()
    return send(ctx, "POST", url, data=body, rq=ctx.small)


@_case("http-finalize-twice")
def http_finalize_twice(ctx: Ctx) -> Answer:
    _, url = ctx.prepare()
    first = send(ctx, "POST", url, data=b'{"input": 1}')
    assert first.status == 200, first.text
    return send(ctx, "POST", url, data=b'{"input": 2}')


@_case("http-finalize-after-abort")
def http_finalize_after_abort(ctx: Ctx) -> Answer:
    task_id, url = ctx.prepare()
    aborted = send(ctx, "POST", f"/task/abort/{task_id}", data=b"changed my mind")
    assert aborted.status == 200, aborted.text
    return send(ctx, "POST", url, data=b'{"input": 1}')


SERVER_CASES.update(
    {
        "http-prepare-unknown-template": lambda ctx: send(
            ctx, "POST", "/task/prepare/no-such-template"
        ),
        "http-get-unknown-task": lambda ctx: send(ctx, "GET", f"/task/{UNKNOWN_ID}"),
        "http-watch-last-position": lambda ctx: send(
            ctx, "POST", f"/task/watch/{ctx.ended}", data=b'{"lastPosition": -1}'
        ),
        "http-watch-since": lambda ctx: send(
            ctx, "POST", f"/task/watch/{ctx.ended}", data=b'{"since": "yesterday"}'
        ),
        "http-watch-since-not-a-string": lambda ctx: send(
            ctx, "POST", f"/task/watch/{ctx.ended}", data=b'{"since": 5}'
        ),
        "http-watch-too-large": lambda ctx: send(
            ctx, "POST", f"/task/watch/{ctx.ended}", data=b" " * (70 * 1024)
        ),
        "http-watch-all-only": lambda ctx: send(
            ctx, "POST", "/task/watch-all", data=b'{"only": "taskEnd"}'
        ),
        "http-abort-too-long": lambda ctx: send(
            ctx, "POST", f"/task/abort/{ctx.prepare()[0]}", data=b"x" * (65 * 1024)
        ),
        "http-abort-ended": lambda ctx: send(ctx, "POST", f"/task/abort/{ctx.ended}"),
        "http-no-token": lambda ctx: send(ctx, "POST", "/task/prepare/echo", bearer=None),
        "http-unknown-token": lambda ctx: send(
            ctx, "POST", "/task/prepare/echo", bearer="not-a-bearer-of-this-server"
        ),
        "http-unknown-path": lambda ctx: send(ctx, "GET", "/no/such/path"),
    }
)


# --- the tests ----------------------------------------------------------------------------------


def test_the_page_has_every_section_and_enough_rows() -> None:
    sections = {row.section for row in CLIENT_ROWS} | {row.section for row in SERVER_ROWS}
    assert sections == {
        "Access tokens",
        "Templates",
        "Inputs",
        "Files and streams",
        "Priorities",
        "Time-outs",
        "Task ids, and the functions by id",
        "A Requence that breaks the protocol",
        "The local server's HTTP endpoints",
    }
    assert len(CLIENT_ROWS) >= 40
    assert len(SERVER_ROWS) >= 40
    names = [row.case for row in CLIENT_ROWS] + [row.case for row in SERVER_ROWS]
    assert len(names) == len(set(names)), "a case name is used twice"


def test_the_parser_reads_a_row_and_refuses_an_unknown_table() -> None:
    text = (
        "## S\n\n| case | what you pass | what you get (class) | message | CLI exit code |\n"
        "|---|---|---|---|---|\n"
        "| `c` | `x` | `TaskError` (status 404) | `no such` | 2 `says so` |\n"
        "| `d` | `y` | `ConfigurationError` | `bad` | — |\n\n"
        "| case | what you send | what you get (HTTP status) | message |\n|---|---|---|---|\n"
        "| `h` | `GET /` | 405, `Allow: POST` | `Method Not Allowed` |\n"
    )
    clients, servers = parse(text)
    assert clients == [
        ClientRow("c", "S", 5, "TaskError", 404, "no such", 2, "says so"),
        ClientRow("d", "S", 6, "ConfigurationError", None, "bad", None, None),
    ]
    assert servers == [ServerRow("h", "S", 10, 405, "POST", "Method Not Allowed")]
    with pytest.raises(ValueError, match="header"):
        parse("| a | b |\n|---|---|\n| `x` | y |\n")


def test_every_case_has_a_row() -> None:
    rows = {row.case for row in CLIENT_ROWS} | {row.case for row in SERVER_ROWS}
    missing = sorted((set(CLIENT_CASES) | set(SERVER_CASES)) - rows)
    assert not missing, f"cases in {Path(__file__).name} without a row in docs/errors.md: {missing}"


def test_every_row_has_a_case() -> None:
    missing = sorted(
        {row.case for row in CLIENT_ROWS} - set(CLIENT_CASES)
        | {row.case for row in SERVER_ROWS} - set(SERVER_CASES)
    )
    assert not missing, f"rows of docs/errors.md without a case in {Path(__file__).name}: {missing}"


def test_every_endpoint_has_a_garbage_and_a_wrong_method_row() -> None:
    rows = {row.case for row in SERVER_ROWS}
    for endpoint in (*ENDPOINTS, "page"):
        assert f"http-{endpoint}-garbage" in rows
        assert f"http-{endpoint}-wrong-method" in rows


def test_no_server_row_expects_a_5xx() -> None:
    assert all(400 <= row.status < 500 or row.status == 200 for row in SERVER_ROWS)


def _secrets(ctx: Ctx) -> list[str]:
    return [ctx.server.access_token, ctx.bearer]


@pytest.mark.parametrize("row", CLIENT_ROWS, ids=[row.case for row in CLIENT_ROWS])
def test_client_row(
    row: ClientRow,
    ctx: Ctx,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    implementation = CLIENT_CASES.get(row.case)
    if implementation is None:
        pytest.fail(f"docs/errors.md:{row.line}: no case {row.case!r} in {Path(__file__).name}")
    # No token from the environment or a pyproject.toml, unless a case sets one.
    for name in (*TOKEN_VARS, BUDGET_VAR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    expected = getattr(requence_task, row.cls, None)
    assert isinstance(expected, type) and issubclass(expected, RequenceError), row.cls
    try:
        implementation.run(ctx)
    except Exception as err:
        error: Exception = err
    else:
        pytest.fail(f"{row.case}: nothing was raised; docs/errors.md says {row.cls}")
    if row.timeout_too:
        # A subclass that is also a TimeoutError, and never says that the task goes on.
        assert isinstance(error, expected), f"{row.case}: {type(error).__name__}: {error!r}"
        assert isinstance(error, TimeoutError), f"{row.case}: {error!r}"
        assert not isinstance(error, requence_task.TaskTimeoutError), f"{row.case}: {error!r}"
    else:
        assert type(error) is expected, f"{row.case}: {type(error).__name__}: {error!r}"
    if row.status is not None:
        assert getattr(error, "status", None) == row.status, f"{row.case}: {error!r}"
    assert row.fragment in str(error), f"{row.case}: {error}"
    for secret in _secrets(ctx):
        assert secret not in str(error) and secret not in repr(error)

    if row.cli_code is None:
        assert implementation.cli is None, f"{row.case}: a CLI command, but the row says —"
        return
    assert implementation.cli is not None, f"{row.case}: the row gives a CLI exit code"
    command = implementation.cli(ctx)
    token = ctx.server.access_token if command.token is None else command.token
    if not command.no_token:
        monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", token)
    for name, value in command.env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    started = time.monotonic()
    code = main(command.argv)
    out, err = capsys.readouterr()
    assert time.monotonic() - started < WAIT
    assert code == row.cli_code, f"{row.case}: exit {code}; stderr: {err}"
    assert "Traceback" not in err
    assert "error: " in err
    assert (row.cli_fragment or row.fragment) in err, f"{row.case}: {err}"
    for secret in [*_secrets(ctx), token]:
        if len(secret) >= 8:
            assert secret not in out and secret not in err


def _methods(allow: str) -> set[str]:
    return {method.strip() for method in allow.split(",") if method.strip()}


@pytest.mark.parametrize("row", SERVER_ROWS, ids=[row.case for row in SERVER_ROWS])
def test_server_row(row: ServerRow, ctx: Ctx) -> None:
    implementation = SERVER_CASES.get(row.case)
    if implementation is None:
        pytest.fail(f"docs/errors.md:{row.line}: no case {row.case!r} in {Path(__file__).name}")
    answer = implementation(ctx)
    assert answer.status == row.status, f"{row.case}: HTTP {answer.status}: {answer.text[:300]}"
    assert row.fragment in answer.text, f"{row.case}: {answer.text[:300]}"
    if row.allow is not None:  # the same methods, in any order
        assert _methods(answer.headers.get("allow", "")) == _methods(row.allow)
    if answer.status >= 400:
        assert answer.headers.get("content-type", "").startswith("text/plain")
    # The server goes on serving.
    for rq in (ctx.server, ctx.small):
        after = send(ctx, "GET", "/task/types/python", rq=rq)
        assert after.status == 200
    assert send(ctx, "GET", f"/task/{ctx.ended}").status == 200
