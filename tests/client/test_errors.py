"""The client's errors over real HTTP: wrong arguments, tokens from every place
(and none), refused and unknown things, an unreachable or flaky Requence, a
finalize whose answer is lost, an answer that is not the API, and no secret
in any message, ``repr`` or log line."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import requence_task
from requence_task import (
    ApiError,
    AuthenticationError,
    Client,
    ConfigurationError,
    InvalidTokenError,
    MissingTokenError,
    RequenceError,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from requence_task._token import decode_access_token, encode_access_token
from requence_task.local import LocalRequence

from .conftest import make_client, own_server, wait_until
from .losing_proxy import LosingProxy

TOKEN_VARS = ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
ALL_STATUSES = (
    "IDLE",
    "PENDING",
    "RUNNING",
    "SUCCESSFUL",
    "FAILED",
    "STOPPED",
    "AWAITING_DELIVERY",
)
TINY_BUDGET = RetryPolicy(budget=0.3, initial_backoff=0.02, max_backoff=0.1)

# Everything said by the cases below (messages, reprs, log lines), and every
# secret they used: the last test checks that no text holds any secret.
TEXTS: list[str] = []
SECRETS: set[str] = set()


def secret(token: str) -> str:
    """Remember a token (and the bearer inside it, when it decodes) as secret."""
    if len(token) >= 8:  # shorter ones would match by chance
        SECRETS.add(token)
    with contextlib.suppress(InvalidTokenError):
        SECRETS.add(decode_access_token(token).bearer)
    return token


def said(*things: Any) -> None:
    """Remember what an error, task or client says about itself."""
    for thing in things:
        if isinstance(thing, BaseException):
            seen: set[int] = set()
            err: BaseException | None = thing
            while err is not None and id(err) not in seen:
                seen.add(id(err))
                TEXTS.append(str(err))
                TEXTS.append(repr(err))
                TEXTS.extend(str(a) for a in err.args)
                for attr in ("server_message", "body", "message", "reason"):
                    value = getattr(err, attr, None)
                    if value is not None:
                        TEXTS.append(str(value))
                err = err.__cause__ or err.__context__
        else:
            TEXTS.append(repr(thing))
            TEXTS.append(str(thing))


class _LogTexts(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        TEXTS.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            said(record.exc_info[1])


@pytest.fixture(autouse=True)
def _collect_log_lines(server: LocalRequence) -> Iterator[None]:
    secret(server.access_token)
    logger = logging.getLogger("requence_task")
    handler = _LogTexts(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture()
def no_token_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_with_default_client(*args: Any, **kwargs: Any) -> Any:
    """Run a task on the default client it picks, then close that client."""
    task = Task(*args, **kwargs)
    try:
        result = task.result(timeout=10)
        said(task, task._client)
        return result
    finally:
        task._client.close()


# --- wrong arguments -----------------------------------------------------------------------------


class _NotJson:
    pass


BAD_ARGUMENTS = [
    pytest.param({"priority": -1}, ["priority", "-1", "0", "10"], id="priority=-1"),
    pytest.param({"priority": 11}, ["priority", "11"], id="priority=11"),
    pytest.param({"priority": 5.5}, ["priority", "5.5", "whole number"], id="priority=5.5"),
    pytest.param({"priority": True}, ["priority", "True"], id="priority=True"),
    pytest.param({"priority": "5"}, ["priority", "'5'"], id="priority='5'"),
    pytest.param({"template": ""}, ["template", "non-empty"], id="template=''"),
    pytest.param({"template": "  "}, ["template", "non-empty"], id="template=blank"),
    pytest.param({"template": None}, ["template", "None"], id="template=None"),
    pytest.param({"template": 5}, ["template", "5"], id="template=5"),
    pytest.param({"input": {"x": _NotJson()}}, ["input", "JSON", "_NotJson"], id="input=object"),
    pytest.param({"input": float("nan")}, ["input", "JSON"], id="input=nan"),
    pytest.param({"input": {"x": [1, math.inf]}}, ["input", "JSON"], id="input=inf"),
    # Not JSON in UTF-8 either: the server would refuse it, so it must not get that far.
    pytest.param({"input": {"x": "\ud800"}}, ["input"], id="input=lone-surrogate"),
    pytest.param({"input": {"\udc00": 1}}, ["input"], id="input=surrogate-key"),
    pytest.param({"name": 5}, ["name", "string", "int"], id="name=5"),
    pytest.param({"on_update": 5}, ["on_update", "callable"], id="on_update=5"),
    pytest.param({"require_ack": "yes"}, ["require_ack"], id="require_ack='yes'"),
]


@pytest.mark.parametrize(("kwargs", "words"), BAD_ARGUMENTS)
def test_bad_argument(server: LocalRequence, kwargs: dict[str, Any], words: list[str]) -> None:
    with make_client(server.access_token) as c:
        arguments: dict[str, Any] = {"template": "echo", "client": c, **kwargs}
        with pytest.raises(ConfigurationError) as info:
            Task(**arguments)
        err = info.value
        assert isinstance(err, ValueError) and isinstance(err, RequenceError)
        message = str(err)
        for word in words:
            assert word in message, (word, message)
        said(err)
        # Before any request: nothing was given to the client's pool to send.
        time.sleep(0.02)
        assert c._pool.thread_count == 0


def test_client_and_access_token_both(client: Client, server: LocalRequence) -> None:
    with pytest.raises(ConfigurationError) as info:
        Task("echo", access_token=server.access_token, client=client)
    assert "client=" in str(info.value) and "access_token=" in str(info.value)
    said(info.value)


def test_client_that_is_not_a_client(server: LocalRequence) -> None:
    with pytest.raises(ConfigurationError) as info:
        Task("echo", client=server.access_token)  # type: ignore[arg-type]
    assert "requence_task.Client" in str(info.value)
    said(info.value)


@pytest.mark.parametrize("bad", [-1, math.nan, "1"], ids=["-1", "nan", "'1'"])
def test_bad_timeout_on_every_accessor(client: Client, bad: Any) -> None:
    task = Task("echo", {"t": 1}, client=client)
    accessors: dict[str, Callable[[], Any]] = {
        "task_id": lambda: task.task_id(timeout=bad),
        "task_url": lambda: task.task_url(timeout=bad),
        "finalized": lambda: task.finalized(timeout=bad),
        "result": lambda: task.result(timeout=bad),
        "updates": lambda: task.updates(timeout=bad),
        "abort": lambda: task.abort("x", timeout=bad),
        "protect": lambda: task.protect(timeout=bad),
    }
    for name, call in accessors.items():
        with pytest.raises(ConfigurationError) as info:
            call()
        assert "timeout" in str(info.value), name
        assert repr(bad) in str(info.value), name
        said(info.value)
    # None of that touched the task.
    assert task.result(timeout=5).result == {"input": {"t": 1}}


def test_abort_reason_must_be_text(client: Client) -> None:
    task = Task("echo", client=client)
    with pytest.raises(ConfigurationError) as info:
        task.abort(5)  # type: ignore[arg-type]
    assert "reason" in str(info.value)
    assert task.result(timeout=5).result == {"input": None}


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda t: Client(t, max_workers=0), "max_workers"),
        (lambda t: Client(t, max_workers=True), "max_workers"),
        (lambda t: Client(t, max_workers="4"), "max_workers"),
        (lambda t: Client(t, timeouts=5), "timeouts"),
        (lambda t: Client(t, retry=5), "retry"),
        (lambda t: RetryPolicy(budget=-1), "budget"),
        (lambda t: RetryPolicy(initial_backoff=math.nan), "initial_backoff"),
        (lambda t: RetryPolicy(jitter=2), "jitter"),
        (lambda t: requence_task.Timeouts(connect=0), "connect"),
        (lambda t: requence_task.Timeouts(stream_inactivity=math.inf), "stream_inactivity"),
    ],
    ids=[
        "max_workers=0",
        "max_workers=True",
        "max_workers='4'",
        "timeouts=5",
        "retry=5",
        "budget=-1",
        "initial_backoff=nan",
        "jitter=2",
        "connect=0",
        "stream_inactivity=inf",
    ],
)
def test_bad_client_settings(server: LocalRequence, make: Callable[[str], Any], word: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make(server.access_token)
    assert word in str(info.value)
    said(info.value)


# --- where the token comes from ------------------------------------------------------------------


def test_no_token_anywhere(no_token_anywhere: Path) -> None:
    for make in (lambda: Task("echo"), lambda: Client()):
        with pytest.raises(MissingTokenError) as info:
            make()
        message = str(info.value)
        assert isinstance(info.value, ConfigurationError)
        assert "REQUENCE_TASK_ACCESS_TOKEN" in message
        assert "REQUENCE_ACCESS_TOKEN" in message
        assert "pyproject.toml" in message
        said(info.value)


def test_empty_explicit_token(no_token_anywhere: Path) -> None:
    with pytest.raises(MissingTokenError) as info:
        Task("echo", access_token="  ")
    assert "access_token" in str(info.value)


def test_token_from_task_env_var_wins(
    no_token_anywhere: Path, monkeypatch: pytest.MonkeyPatch, server: LocalRequence
) -> None:
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", server.access_token)
    monkeypatch.setenv("REQUENCE_ACCESS_TOKEN", "not a token at all!")
    assert run_with_default_client("echo", {"env": 1}).result == {"input": {"env": 1}}


def test_token_from_generic_env_var(
    no_token_anywhere: Path, monkeypatch: pytest.MonkeyPatch, server: LocalRequence
) -> None:
    monkeypatch.setenv("REQUENCE_ACCESS_TOKEN", server.access_token)
    assert run_with_default_client("echo", {"env": 2}).result == {"input": {"env": 2}}


def test_explicit_token_wins_over_env(
    no_token_anywhere: Path, monkeypatch: pytest.MonkeyPatch, server: LocalRequence
) -> None:
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", "not a token at all!")
    result = run_with_default_client("echo", {"env": 3}, access_token=server.access_token)
    assert result.result == {"input": {"env": 3}}


def test_token_from_pyproject_tool_table(no_token_anywhere: Path, server: LocalRequence) -> None:
    (no_token_anywhere / "pyproject.toml").write_text(
        "[requence]\n"
        'access_token = "not a token at all!"\n'
        "[tool.requence]\n"
        f'task_access_token = "{server.access_token}"\n'
        'access_token = "not a token at all!"\n',
        encoding="utf-8",
    )
    assert run_with_default_client("echo", {"toml": 1}).result == {"input": {"toml": 1}}


def test_token_from_pyproject_top_table(no_token_anywhere: Path, server: LocalRequence) -> None:
    (no_token_anywhere / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n[requence]\naccess_token = "{server.access_token}"\n',
        encoding="utf-8",
    )
    assert run_with_default_client("echo", {"toml": 2}).result == {"input": {"toml": 2}}


def test_env_wins_over_pyproject(
    no_token_anywhere: Path, monkeypatch: pytest.MonkeyPatch, server: LocalRequence
) -> None:
    (no_token_anywhere / "pyproject.toml").write_text(
        '[tool.requence]\ntask_access_token = "not a token at all!"\n', encoding="utf-8"
    )
    monkeypatch.setenv("REQUENCE_ACCESS_TOKEN", server.access_token)
    assert run_with_default_client("echo", {"toml": 3}).result == {"input": {"toml": 3}}


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "AGEAcABp0",  # "api" alone: no bearer, no URL
        encode_access_token("bearer-x", "http://127.0.0.1:1", kind="service"),
        encode_access_token("bearer-y", "ftp://example.org"),
        "A",
    ],
    ids=["garbage", "one-part", "service-kind", "not-http", "too-short"],
)
def test_invalid_token(token: str) -> None:
    secret(token)
    for make in (lambda: Task("echo", access_token=token), lambda: Client(token)):
        with pytest.raises(InvalidTokenError) as info:
            make()
        assert isinstance(info.value, ConfigurationError)
        said(info.value)


def test_wrong_bearer_is_an_authentication_error(server: LocalRequence) -> None:
    token = secret(encode_access_token(f"wrong-{uuid.uuid4().hex}", server.base_url))
    with make_client(token) as c:
        task = Task("echo", client=c)
        started = time.monotonic()
        for call in (task.task_id, task.finalized, task.result, task.task_url):
            with pytest.raises(AuthenticationError) as info:
                call(timeout=5)
            assert info.value.status == 401
            assert "refused the access token" in str(info.value)
            said(info.value)
        assert time.monotonic() - started < 2  # 401 is not retried
        with pytest.raises(AuthenticationError):
            task.abort("x", timeout=5)
        said(task, c)


def test_unknown_template(client: Client) -> None:
    name = f"no-such-template-{uuid.uuid4().hex[:8]}"
    task = Task(name, client=client)
    with pytest.raises(TaskError) as info:
        task.task_id(timeout=5)
    err = info.value
    assert type(err) is TaskError
    assert err.status == 404
    assert err.template == name
    assert name in str(err)
    assert err.server_message is not None and err.server_message.startswith(
        f"Unknown task template '{name}'"
    )
    for call in (task.finalized, task.result):
        with pytest.raises(TaskError) as again:
            call(timeout=5)
        assert again.value is err
    said(err, task)


def test_input_rejected_by_schema(client: Client) -> None:
    task = Task("greet", {"name": 5}, client=client)
    task_id = task.task_id(timeout=5)  # created, then rejected at finalize
    with pytest.raises(TaskError) as info:
        task.finalized(timeout=5)
    err = info.value
    assert type(err) is TaskError
    assert (err.status, err.template, err.task_id) == (422, "greet", task_id)
    assert err.server_message is not None and "name" in err.server_message
    assert err.server_message in str(err)
    with pytest.raises(TaskError) as again:
        task.result(timeout=5)
    assert again.value is err
    said(err, task)


# --- unreachable, and gateway storms -------------------------------------------------------------


def test_unreachable(dead_token: str) -> None:
    secret(dead_token)
    with make_client(dead_token, retry=TINY_BUDGET) as c:
        task = Task("echo", client=c)
        started = time.monotonic()
        with pytest.raises(RequenceUnreachableError) as info:
            task.task_id(timeout=5)
        assert time.monotonic() - started < TINY_BUDGET.budget + 1
        err = info.value
        assert err.status is None
        assert err.attempts >= 2
        assert "not reachable" in str(err)
        with pytest.raises(RequenceUnreachableError) as again:
            task.result(timeout=5)
        assert again.value is err
        with pytest.raises(RequenceUnreachableError):
            task.abort(timeout=5)
        said(err, task, c)


def test_prepare_503_storm_within_budget(client: Client, server: LocalRequence) -> None:
    server.faults.fail_next(3, endpoint="prepare")
    task = Task("echo", {"storm": 1}, client=client)
    assert task.result(timeout=5).result == {"input": {"storm": 1}}
    assert server.faults.pending_failures == 0


def test_prepare_503_storm_past_budget(server: LocalRequence) -> None:
    with make_client(server.access_token, retry=TINY_BUDGET) as c:
        server.faults.fail_next(10_000, endpoint="prepare")
        try:
            task = Task("echo", client=c)
            started = time.monotonic()
            with pytest.raises(RequenceUnreachableError) as info:
                task.task_id(timeout=5)
            assert time.monotonic() - started < TINY_BUDGET.budget + 1
        finally:
            server.faults.clear()
        err = info.value
        assert err.status == 503
        assert err.attempts > 1
        assert "HTTP 503" in str(err)
        said(err, task)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_prepare_gateway_statuses_are_retried(
    client: Client, server: LocalRequence, status: int
) -> None:
    server.faults.fail_next(2, status=status, endpoint="prepare")
    assert Task("echo", {"s": status}, client=client).result(timeout=5).result == {
        "input": {"s": status}
    }
    assert server.faults.pending_failures == 0


@pytest.mark.parametrize("endpoint", ["watch-all", "watch"])
def test_watch_503_storm(server: LocalRequence, endpoint: str) -> None:
    # A task this client creates is followed on the shared watch-all stream; a
    # task known by id on its own stream. (A client of its own: the shared
    # stream of the session's client may be open already.)
    client = make_client(server.access_token)
    server.faults.fail_next(3, endpoint=endpoint)
    task = Task("greet", {"name": "W", "steps": 1}, client=client)
    if endpoint == "watch":
        task = Task.from_id(task.finalized(timeout=5), client=client)
    assert task.result(timeout=5).result == {"message": "Hello, W!"}
    assert [u.type for u in task.updates(timeout=5)] == [
        "taskStart",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "nodeStart",
        "nodeUpdate",
        "nodeEnd",
        "taskEnd",
    ]
    assert server.faults.pending_failures == 0
    client.close()


def _tasks_and_starts(rq: LocalRequence) -> tuple[int, int]:
    tasks = rq.store.tasks_with_status(ALL_STATUSES)
    starts = sum(
        1
        for t in tasks
        for e in rq.store.task_events(t.id, after=None, since=None, limit=1000)
        if e.type == "taskStart"
    )
    return len(tasks), starts


@pytest.mark.parametrize("statuses", [[503, 504, 502], [502, 502], [504]], ids=str)
def test_finalize_gateway_errors_create_one_task(statuses: list[int]) -> None:
    with own_server() as rq, make_client(rq.access_token) as c:
        for status in statuses:
            rq.faults.fail_next(1, status=status, endpoint="finalize")
        task = Task("echo", {"f": 1}, client=c)
        assert task.result(timeout=5).result == {"input": {"f": 1}}
        assert rq.faults.pending_failures == 0
        assert _tasks_and_starts(rq) == (1, 1)


# --- a finalize whose answer is lost -------------------------------------------------------------


@pytest.mark.parametrize(
    "drop",
    [
        {("POST", "/task/finalize/"): 1},
        {("POST", "/task/finalize/"): 1, ("GET", "/task/"): 1},
    ],
    ids=["finalize-answer-lost", "finalize-and-check-answers-lost"],
)
def test_finalize_answer_lost_creates_one_task(drop: dict[tuple[str, str], int]) -> None:
    with own_server() as rq, LosingProxy(rq.base_url, drop) as proxy:
        bearer = decode_access_token(rq.access_token).bearer
        token = secret(encode_access_token(bearer, proxy.base_url))
        with make_client(token) as c:
            task = Task("echo", {"lost": 1}, client=c)
            task_id = task.finalized(timeout=10)
            assert task.result(timeout=10).result == {"input": {"lost": 1}}
            assert task.task_url(timeout=0) == f"{proxy.base_url}/tasks/{task_id}"
        assert len(proxy.dropped) == sum(drop.values())
        assert _tasks_and_starts(rq) == (1, 1)
        said(task)


# --- an answer that is not the task API ----------------------------------------------------------


class _HtmlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<!doctype html><title>Welcome</title><p>Our new website!</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = answer
    do_POST = answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_non_json_answer_is_an_api_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = secret(
            encode_access_token(
                f"html-{uuid.uuid4().hex}", f"http://127.0.0.1:{server.server_address[1]}"
            )
        )
        with make_client(token) as c:
            task = Task("echo", client=c)
            started = time.monotonic()
            with pytest.raises(ApiError) as info:
                task.task_id(timeout=5)
            assert time.monotonic() - started < 3
            err = info.value
            assert err.status == 200
            assert "not JSON" in str(err)
            assert "text/html" in str(err)
            assert err.body is not None and "Our new website" in err.body
            with pytest.raises(ApiError):
                task.result(timeout=5)
            said(err, task, c)
    finally:
        server.shutdown()
        server.server_close()


# --- a closed client -----------------------------------------------------------------------------


def test_task_on_a_closed_client_raises_a_requence_error(server: LocalRequence) -> None:
    c = make_client(server.access_token)
    c.close()
    assert c.closed
    with pytest.raises(RequenceError) as info:
        Task("echo", client=c)
    said(info.value)


def test_closing_the_client_ends_waits_with_an_error(gate_key: str) -> None:
    # A server of our own whose streams send a keep-alive only every 4 s.
    with own_server(keepalive_interval=4) as rq:
        c = make_client(rq.access_token)
        task = Task("gated", {"gate": gate_key}, client=c)
        task.finalized(timeout=5)
        waiter: list[BaseException] = []

        def wait() -> None:
            try:
                task.result(timeout=8)
            except BaseException as err:
                waiter.append(err)

        thread = threading.Thread(target=wait)
        thread.start()
        wait_until(lambda: c._follower.shared_open)
        time.sleep(0.2)  # the shared stream is reading (a silent stream)
        closed = time.monotonic()
        c.close()
        close_took = time.monotonic() - closed
        thread.join(10)
        ended = time.monotonic() - closed
        assert not thread.is_alive()
        assert len(waiter) == 1
        said(waiter[0], task, c)
        # "Waits and streams in progress end with an error soon after" (Client.close).
        error = waiter[0]
        outcome = (
            close_took < 1,
            ended < 1.5,
            isinstance(error, RequenceError) and not isinstance(error, TaskTimeoutError),
        )
        assert outcome == (True, True, True), (
            f"close() took {close_took:.1f} s, the wait ended {ended:.1f} s after it "
            f"with {waiter[0]!r}"
        )


# --- the error tree ------------------------------------------------------------------------------


def test_every_error_is_a_requence_error() -> None:
    errors = [
        getattr(requence_task, name)
        for name in requence_task.__all__
        if isinstance(getattr(requence_task, name), type)
        and issubclass(getattr(requence_task, name), BaseException)
        and not issubclass(getattr(requence_task, name), Warning)
    ]
    assert len(errors) >= 12
    assert [cls.__name__ for cls in errors if not issubclass(cls, RequenceError)] == []
    assert issubclass(TaskTimeoutError, TimeoutError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidTokenError, ConfigurationError)
    assert issubclass(MissingTokenError, ConfigurationError)
    assert issubclass(TaskFailedError, TaskError)
    assert issubclass(TaskAbortedError, TaskError)
    assert issubclass(TaskNotFoundError, LookupError)
    assert issubclass(requence_task.BranchWarning, UserWarning)


def test_timeout_error_is_a_builtin_timeout(client: Client, gate_key: str) -> None:
    task = Task("gated", {"gate": gate_key}, client=client)
    waits: list[Callable[[], Any]] = [
        lambda: task.result(timeout=0.05),
        lambda: list(task.updates(timeout=0.05)),
    ]
    for wait in waits:
        with pytest.raises(TimeoutError) as info:
            wait()
        assert isinstance(info.value, TaskTimeoutError)
        assert info.value.timeout == 0.05
        said(info.value)


def test_no_text_holds_a_secret(client: Client, server: LocalRequence) -> None:
    said(client)
    if len(TEXTS) < 50:
        pytest.skip("run with the whole module: it checks what the other tests collected")
    assert len(SECRETS) >= 10
    leaks = [(s[:6] + "…", t) for t in TEXTS for s in SECRETS if s in t]
    assert leaks == []
