"""Security: no token in logs, messages, reprs or CLI output; TLS verification;
the local server on loopback, behind its tokens, with projects kept apart.

Hypothesis round-trip and fuzz tests of the token codec are in
tests/test_token.py, and of the SSE folding in tests/test_updates.py; they are
not repeated here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests

from requence_task import (
    AuthenticationError,
    Client,
    ConfigurationError,
    InvalidTokenError,
    RequenceError,
    RequenceUnreachableError,
    RetryPolicy,
    Task,
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    Timeouts,
    abort_task,
    get_task,
    protect_task,
    watch_tasks,
)
from requence_task._cli import _parser, main
from requence_task._token import decode_access_token, encode_access_token
from requence_task.local import LocalRequence

from .local.templates_for_tests import TEMPLATES, gate

FAST = RetryPolicy(budget=5, initial_backoff=0.02, max_backoff=0.2)
TINY = RetryPolicy(budget=0.3, initial_backoff=0.02, max_backoff=0.1)
# The budget bounds a whole call: a server that answers (if slowly, under load) needs room.
HEALTHY = RetryPolicy(budget=10, initial_backoff=0.02, max_backoff=0.1)
QUICK = Timeouts(connect=2, read=10, stream_inactivity=20)
WAIT = 10
TOKEN_VARS = ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
LOGGERS = ("requence_task", "requence_task.local", "urllib3", "uvicorn", "uvicorn.error")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer_of(token: str) -> str:
    return decode_access_token(token).bearer


def forms(secret: str) -> set[str]:
    """The secret as text may show it: as is, and escaped as ``repr`` does."""
    return {secret, repr(secret)[1:-1], secret.encode("unicode_escape").decode("ascii")}


def leaks(texts: list[str], secrets: set[str]) -> list[tuple[str, str]]:
    """``(secret, the text around it)`` for every text that shows a secret."""
    found = []
    for text in texts:
        for secret in secrets:
            for form in forms(secret):
                at = text.find(form)
                if at >= 0:
                    found.append((secret, text[max(0, at - 80) : at + len(form) + 40]))
    return found


def chain_texts(err: BaseException) -> list[str]:
    """What an error and the errors chained to it say: str, repr, args, attributes."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *(repr(a) for a in current.args)]
        for name in ("server_message", "body", "message", "reason", "context"):
            value = getattr(current, name, None)
            if value is not None:
                texts.append(repr(value))
        current = current.__cause__ or current.__context__
    return texts


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, self.format(record)))


@dataclass
class Seen:
    """Everything the scenario made the package say, and every secret it used."""

    logs: _Records
    exceptions: list[BaseException] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def secret(self, token: str) -> str:
        self.secrets.add(token)
        with contextlib.suppress(InvalidTokenError):
            self.secrets.add(bearer_of(token))
        return token

    def raised(self, action: Callable[[], object], kind: type[BaseException]) -> BaseException:
        try:
            action()
        except BaseException as err:
            self.exceptions.append(err)
            assert isinstance(err, kind), repr(err)
            return err
        raise AssertionError(f"nothing was raised; expected {kind.__name__}")

    def said(self, *things: object) -> None:
        for thing in things:
            self.reprs += [repr(thing), str(thing)]


@pytest.fixture(scope="module")
def records() -> Iterator[_Records]:
    """Every log record at DEBUG, of every logger, while the module runs."""
    handler = _Records()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *LOGGERS)}
    root.addHandler(handler)
    for name in ("", *LOGGERS):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def rq(records: _Records) -> Iterator[LocalRequence]:
    with LocalRequence(TEMPLATES) as server:
        yield server


@pytest.fixture(scope="module")
def seen(rq: LocalRequence, records: _Records) -> Seen:
    """A full scenario with every kind of outcome; what was said is kept."""
    seen = Seen(records)
    token = seen.secret(rq.access_token)
    wrong = seen.secret(encode_access_token(f"wrong-{uuid.uuid4().hex}", rq.base_url))
    dead = seen.secret(
        encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{free_port()}")
    )
    truncated = token[:-10]
    seen.secrets.add(truncated)
    key = uuid.uuid4().hex
    try:
        with Client(token, retry=FAST, timeouts=QUICK) as client:
            seen.said(client, client._transport, decode_access_token(token), rq)
            # Success, with an acknowledged delivery.
            ok = Task("greet", {"name": "Ann"}, client=client, require_ack=True, name="sec")
            seen.said(ok)
            updates = list(ok.updates(timeout=WAIT))
            result = ok.result(timeout=WAIT)
            seen.said(ok, result, *updates, *(u.context for u in updates))
            info = get_task(ok.task_id(), client=client)
            seen.said(info, info.context, Task.from_id(ok.task_id(), client=client))
            # Failure.
            failed = Task("fail", client=client)
            seen.raised(lambda: failed.result(timeout=WAIT), TaskFailedError)
            seen.said(failed)
            # Protect and abort while it runs; abort again once it ended.
            gated = Task("gated", {"gate": key}, client=client)
            gated.task_id(timeout=WAIT)
            gated.protect()
            protect_task(gated.task_id(), client=client)
            gated.abort("stop it")
            seen.raised(lambda: gated.result(timeout=WAIT), TaskAbortedError)
            seen.raised(lambda: gated.abort("again"), TaskError)
            seen.said(gated)
            # Rejected input, wrong arguments, an unknown id.
            rejected = Task("greet", {"name": 5}, client=client)
            seen.raised(lambda: rejected.finalized(timeout=WAIT), TaskError)
            seen.said(rejected)
            seen.raised(lambda: Task("echo", priority=11, client=client), ConfigurationError)
            seen.raised(lambda: get_task(str(uuid.uuid4()), client=client), TaskNotFoundError)
            seen.raised(lambda: abort_task("a/b", client=client), ConfigurationError)
            # Every update of the project, on one stream.
            with watch_tasks(None, client=client) as watcher:
                seen.said(watcher)
                ends = 0
                for update in watcher.updates(timeout=WAIT):
                    seen.said(update)
                    ends += update.is_terminal
                    if ends >= 3:
                        break
            seen.said(watcher)
        seen.said(client)
        # A token the server refuses.
        with Client(wrong, retry=HEALTHY, timeouts=QUICK) as refused:
            seen.said(refused)
            seen.raised(
                lambda: Task("echo", client=refused).finalized(timeout=WAIT), AuthenticationError
            )
            seen.raised(lambda: get_task("x", client=refused), AuthenticationError)
            seen.raised(lambda: abort_task("x", client=refused), AuthenticationError)
            with watch_tasks(None, client=refused) as watcher:
                seen.raised(lambda: list(watcher.updates(timeout=WAIT)), AuthenticationError)
                seen.said(watcher)
        # Nothing listens.
        with Client(dead, retry=TINY, timeouts=QUICK) as unreachable:
            seen.said(unreachable)
            task = Task("echo", client=unreachable)
            seen.raised(lambda: task.finalized(timeout=WAIT), RequenceUnreachableError)
            seen.said(task)
            seen.raised(lambda: get_task("x", client=unreachable), RequenceUnreachableError)
        # Tokens that do not decode, one of them most of the real one.
        seen.raised(lambda: Task("echo", access_token=truncated), InvalidTokenError)
        seen.raised(lambda: Client(token[:5] + "!" + token[5:]), InvalidTokenError)
        # A second server started and stopped in the scenario: uvicorn's own lines.
        with LocalRequence(TEMPLATES) as other:
            seen.secret(other.access_token)
            with Client(other.access_token, retry=FAST, timeouts=QUICK) as client:
                seen.said(Task("echo", {"x": 1}, client=client).result(timeout=WAIT), other)
    finally:
        gate(key).set()
    return seen


def test_the_scenario_saw_every_outcome_and_logged_at_debug(seen: Seen) -> None:
    kinds = {type(err) for err in seen.exceptions}
    assert {
        TaskFailedError,
        TaskAbortedError,
        TaskError,
        ConfigurationError,
        TaskNotFoundError,
        AuthenticationError,
        RequenceUnreachableError,
        InvalidTokenError,
    } <= kinds
    names = {name for name, _ in seen.logs.records}
    for family in ("requence_task", "requence_task.local", "urllib3", "uvicorn"):
        assert any(n == family or n.startswith(family + ".") for n in names), family
    # The records are the DEBUG ones too, and they name requests.
    texts = [text for _, text in seen.logs.records]
    assert any(" DEBUG " in t and "/task/prepare/greet" in t for t in texts)
    assert len(seen.secrets) >= 8


def test_no_token_in_log_records(seen: Seen) -> None:
    assert not leaks([text for _, text in seen.logs.records], seen.secrets)


def test_no_token_in_exception_messages(seen: Seen) -> None:
    texts = [text for err in seen.exceptions for text in chain_texts(err)]
    assert not leaks(texts, seen.secrets)


def test_no_token_in_reprs(seen: Seen) -> None:
    assert len(seen.reprs) > 50
    assert not leaks(seen.reprs, seen.secrets)


def test_no_token_in_cli_output(
    rq: LocalRequence,
    records: _Records,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (*TOKEN_VARS, "REQUENCE_TASK_RETRY_BUDGET"):
        monkeypatch.delenv(name, raising=False)
    token = rq.access_token
    wrong = encode_access_token(f"wrong-{uuid.uuid4().hex}", rq.base_url)
    dead = encode_access_token(f"dead-{uuid.uuid4().hex}", f"http://127.0.0.1:{free_port()}")
    secrets = {token, bearer_of(token), wrong, bearer_of(wrong), dead, bearer_of(dead)}
    secrets.add(token[:-10])
    before = len(records.records)
    outputs: list[str] = []
    codes: list[int] = []

    def cli(*argv: str, env_token: str | None = token, **env: str) -> int:
        if env_token is None:
            monkeypatch.delenv("REQUENCE_TASK_ACCESS_TOKEN", raising=False)
        else:
            monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", env_token)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        outputs.extend([out, err])
        codes.append(code)
        return code

    key = uuid.uuid4().hex
    try:
        with Client(token, retry=FAST, timeouts=QUICK) as client:
            gated = Task("gated", {"gate": key}, client=client)
            gated_id = gated.task_id(timeout=WAIT)
            assert cli("run", "greet", "--input", '{"name": "Ann"}') == 0
            assert cli("--debug", "run", "greet", "--input", '{"name": "Bo"}', "--json") == 0
            assert cli("run", "fail") == 1
            assert cli("--debug", "run", "fail") == 1
            assert cli("run", "greet", "--input", '{"name": 5}') == 2
            assert cli("run", "echo", "--no-wait") == 0
            assert cli("get", gated_id) == 0
            assert cli("get", gated_id, "--json", "--access-token", token, env_token=None) == 0
            assert cli("protect", gated_id) == 0
            assert cli("abort", gated_id, "--reason", "from the CLI") == 0
            assert cli("--debug", "abort", gated_id) == 2
            assert cli("--debug", "get", str(uuid.uuid4())) == 2
            assert cli("watch", "--since", "all", "--limit", "3", "--json") == 0
            assert cli("run", "echo", env_token=wrong) == 4
            assert cli("--debug", "get", gated_id, env_token=wrong) == 4
            assert cli("run", "echo", env_token=dead, REQUENCE_TASK_RETRY_BUDGET="0.3") == 3
            assert cli("run", "echo", env_token=token[:-10]) == 2
            assert cli("--debug", "run", "echo", "--access-token", token[:-10], env_token=None) == 2
    finally:
        gate(key).set()
    assert any("Hello, Ann!" in text for text in outputs)  # the output was captured
    assert not leaks(outputs, secrets)
    assert not leaks([text for _, text in records.records[before:]], secrets)


@pytest.mark.parametrize(
    "bearer",
    ["s\u3033cret-bearer-for-a-mistype", "line\nbreak-secret-bearer"],
    ids=["a-character-latin-1-lacks", "a-line-break"],
)
def test_a_bearer_a_header_cannot_carry_fails_as_a_requence_error_without_showing_it(
    rq: LocalRequence, bearer: str
) -> None:
    # What a token with one mistyped (or corrupted) character decodes to: the
    # bearer holds a character an HTTP header cannot carry.
    token = encode_access_token(bearer, rq.base_url)
    errors: list[BaseException] = []
    try:
        with Client(token, retry=TINY, timeouts=QUICK) as client:
            for action in (
                lambda: Task("echo", client=client).finalized(timeout=WAIT),
                lambda: get_task("x", client=client),
            ):
                try:
                    action()
                except BaseException as err:
                    errors.append(err)
    except BaseException as err:  # refusing the token at once is fine too
        errors.append(err)
    assert errors
    for err in errors:
        assert isinstance(err, RequenceError), repr(err)
        assert not leaks(chain_texts(err), {bearer, token})


@pytest.mark.parametrize(
    "bearer",
    ["s\u3033cret-bearer-for-a-mistype", "line\nbreak-secret-bearer"],
    ids=["a-character-latin-1-lacks", "a-line-break"],
)
def test_the_cli_says_the_token_is_broken_without_showing_it_even_with_debug(
    rq: LocalRequence,
    bearer: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REQUENCE_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", encode_access_token(bearer, rq.base_url))
    monkeypatch.setenv("REQUENCE_TASK_RETRY_BUDGET", "0.3")
    for argv in (["get", "abc"], ["--debug", "get", "abc"]):
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert not leaks([out, err], {bearer})
        assert code == 2, err  # a token that cannot be used is bad usage, like an invalid one
        assert "access token" in err.splitlines()[-1]


# --- TLS ---------------------------------------------------------------------------------------


def https_token(port: int) -> str:
    return encode_access_token(f"tls-{uuid.uuid4().hex}", f"https://127.0.0.1:{port}")


def test_https_clients_verify_certificates_by_default() -> None:
    # True, or the CA bundle the environment names (read once, as requests would).
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    with Client(encode_access_token("b" * 12, "https://api.example/v1")) as client:
        assert client._transport.session.verify == (bundle or True)


def test_turning_verification_off_needs_verify_false_and_warns() -> None:
    token = encode_access_token("b" * 12, "https://api.example/v1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Client(token).close()
        Client(token, verify=True).close()
    assert not caught
    with pytest.warns(UserWarning, match=r"verify=False") as warned:
        Client(token, verify=False).close()
    assert len(warned) == 1
    assert "TLS certificate verification is off" in str(warned[0].message)
    assert warned[0].filename == __file__  # points at the caller's line


class _Https(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.accepted = 0
        super().__init__(("127.0.0.1", 0), _NotHere)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        self.accepted += 1
        sock.settimeout(5)
        try:
            return self.context.wrap_socket(sock, server_side=True), address
        except OSError:
            sock.close()
            raise


class _NotHere(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b"no such template here"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is missing")
    where = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem"),
            *("-out", "c.pem", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        cwd=where,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return where / "c.pem", where / "k.pem"


@pytest.fixture()
def https(certificate: tuple[Path, Path]) -> Iterator[_Https]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = _Https(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_self_signed_certificate_fails_fast_without_retries(https: _Https) -> None:
    started = time.monotonic()
    retry = RetryPolicy(budget=10, initial_backoff=0.05)  # a retry loop would take 10 s
    with (
        Client(https_token(https.server_address[1]), retry=retry, timeouts=QUICK) as client,
        pytest.raises(RequenceError) as caught,
    ):
        Task("echo", client=client).finalized(timeout=WAIT)
    assert time.monotonic() - started < 5
    assert type(caught.value) is RequenceError
    message = str(caught.value)
    assert "certificate could not be verified" in message
    assert "verify=" in message
    assert https.accepted == 1


def test_verify_with_the_certificate_connects(
    https: _Https, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    token = https_token(https.server_address[1])
    with (
        Client(token, verify=str(certificate[0]), retry=HEALTHY, timeouts=QUICK) as client,
        pytest.raises(TaskError) as caught,  # the handshake worked; then a 404
    ):
        Task("echo", client=client).finalized(timeout=WAIT)
    assert caught.value.status == 404
    assert caught.value.server_message == "no such template here"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_the_verify_argument_wins_over_a_ca_bundle_in_the_environment(
    https: _Https,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    # requests lets these variables override Session.verify (psf/requests#3829):
    # a CA bundle the user passed must still be the one used.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, certifi.where())
    token = https_token(https.server_address[1])
    with (
        Client(token, verify=str(certificate[0]), retry=HEALTHY, timeouts=QUICK) as client,
        pytest.raises(TaskError) as caught,
    ):
        Task("echo", client=client).finalized(timeout=WAIT)
    assert caught.value.status == 404


def test_verify_false_wins_over_a_ca_bundle_in_the_environment(
    https: _Https, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    token = https_token(https.server_address[1])
    with pytest.warns(UserWarning, match="verify=False"):
        client = Client(token, verify=False, retry=HEALTHY, timeouts=QUICK)
    with client, pytest.raises(TaskError) as caught:
        Task("echo", client=client).finalized(timeout=WAIT)
    assert caught.value.status == 404


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_bundle_in_the_environment_is_used_with_verify_true(
    https: _Https,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    # Read once, when the client is made (requests' per-request lookup is off).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(certificate[0]))
    with (
        Client(https_token(https.server_address[1]), retry=HEALTHY, timeouts=QUICK) as client,
        pytest.raises(TaskError) as caught,
    ):
        Task("echo", client=client).finalized(timeout=WAIT)
    assert caught.value.status == 404  # the handshake worked with the bundle


class _ConnectProxy(ThreadingHTTPServer):
    """An HTTPS proxy: answers CONNECT by piping bytes to the target."""

    daemon_threads = True

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        super().__init__(("127.0.0.1", 0), _Tunnel)


class _Tunnel(BaseHTTPRequestHandler):
    server: _ConnectProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.tunnels.append(self.path)
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=5)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()

        def pipe(source: socket.socket, target: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    target.sendall(data)
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pipe, args=(upstream, self.connection), daemon=True)
        back.start()
        pipe(self.connection, upstream)
        back.join(5)
        upstream.close()
        self.close_connection = True


def test_an_https_proxy_from_the_environment_is_used(
    https: _Https, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _ConnectProxy()
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        port = https.server_address[1]
        with (
            Client(
                https_token(port), verify=str(certificate[0]), retry=HEALTHY, timeouts=QUICK
            ) as client,
            pytest.raises(TaskError) as caught,
        ):
            Task("echo", client=client).finalized(timeout=WAIT)
        assert caught.value.status == 404
        assert proxy.tunnels == [f"127.0.0.1:{port}"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with (
            Client(
                https_token(port), verify=str(certificate[0]), retry=HEALTHY, timeouts=QUICK
            ) as client,
            pytest.raises(TaskError),
        ):
            Task("echo", client=client).finalized(timeout=WAIT)
        assert len(proxy.tunnels) == 1  # NO_PROXY: straight to the server
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


# --- the local server ---------------------------------------------------------------------------


def test_the_local_server_binds_loopback_by_default(rq: LocalRequence) -> None:
    assert LocalRequence().host == "127.0.0.1"
    assert rq.host == "127.0.0.1"
    assert rq._socket is not None
    assert rq._socket.getsockname()[0] == "127.0.0.1"
    assert rq.base_url == f"http://127.0.0.1:{rq.port}"
    assert _parser().parse_args(["local", "serve", "t.py"]).host == "127.0.0.1"
    # From another address of this machine, nothing answers on that port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # sends nothing: picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        return  # no other address to try
    with pytest.raises(OSError), socket.create_connection((address, rq.port), timeout=2):
        pass


API_ENDPOINTS = [
    ("POST", "/task/prepare/echo"),
    ("POST", "/task/finalize/{id}"),
    ("POST", "/task/watch/{id}"),
    ("POST", "/task/watch-all"),
    ("POST", "/task/abort/{id}"),
    ("POST", "/task/protect/{id}"),
    ("POST", "/task/ack/{id}"),
    ("GET", "/task/{id}"),
    ("GET", "/task/types/python"),
]


def _api(rq: LocalRequence, token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {bearer_of(token)}"
    return session


def _prepared(session: requests.Session, rq: LocalRequence) -> str:
    answer = session.post(rq.base_url + "/task/prepare/echo", timeout=5)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["taskId"])


def test_every_endpoint_refuses_requests_without_the_projects_token(rq: LocalRequence) -> None:
    # Brief: tests/local/test_api.py covers authentication in depth.
    with _api(rq, rq.access_token) as api:
        task_id = _prepared(api, rq)
        for method, path in API_ENDPOINTS:
            url = rq.base_url + path.format(id=task_id)
            for authorization in (
                None,
                "Bearer ",
                f"Bearer wrong-{uuid.uuid4().hex}",
                f"Basic {bearer_of(rq.access_token)}",
                bearer_of(rq.access_token),
            ):
                headers = {} if authorization is None else {"Authorization": authorization}
                answer = requests.request(
                    method, url, headers=headers, data=b'{"input": 1}', timeout=5
                )
                assert answer.status_code == 401, (method, path, authorization, answer.text)
        # None of them did anything.
        assert api.get(f"{rq.base_url}/task/{task_id}", timeout=5).json()["status"] == "IDLE"


def test_projects_are_kept_apart(rq: LocalRequence) -> None:
    a_token = rq.token_for(f"a-{uuid.uuid4().hex}")
    b_token = rq.token_for(f"b-{uuid.uuid4().hex}")
    with _api(rq, a_token) as a, _api(rq, b_token) as b:
        idle = _prepared(a, rq)
        with Client(a_token, retry=FAST, timeouts=QUICK) as a_client:
            ended = Task("echo", {"of": "a"}, client=a_client)
            ended.result(timeout=WAIT)
        for task_id in (idle, ended.task_id()):
            for method, path in API_ENDPOINTS:
                if "{id}" not in path:
                    continue
                url = rq.base_url + path.format(id=task_id)
                answer = b.request(method, url, data=b'{"input": 1}', timeout=5)
                assert answer.status_code == 404, (method, path, answer.text)
                assert task_id in answer.text
        with Client(b_token, retry=FAST, timeouts=QUICK) as b_client:
            own = Task("echo", {"of": "b"}, client=b_client)
            own.result(timeout=WAIT)
            with watch_tasks(None, client=b_client) as watcher:
                seen = []
                for update in watcher.updates(timeout=WAIT):
                    seen.append(update.task_id)
                    if update.is_terminal:
                        break
            assert set(seen) == {own.task_id()}
            with pytest.raises(TaskNotFoundError):
                get_task(ended.task_id(), client=b_client)
        # A's tasks are untouched, and A can still start the one it prepared.
        assert a.get(f"{rq.base_url}/task/{idle}", timeout=5).json()["status"] == "IDLE"
        assert a.get(f"{rq.base_url}/task/{ended.task_id()}", timeout=5).status_code == 200
        finalized = a.post(f"{rq.base_url}/task/finalize/{idle}", json={"input": 1}, timeout=5)
        assert finalized.status_code == 200, finalized.text


def test_the_task_page_is_the_one_route_without_a_token(rq: LocalRequence) -> None:
    # urls.show is for a browser: it needs no token, only the task's id, which
    # is a random UUID. (The HTML page shows the task's input and result.)
    with Client(rq.access_token, retry=FAST, timeouts=QUICK) as client:
        task = Task("echo", {"shown": "on the page"}, client=client)
        task.result(timeout=WAIT)
    assert uuid.UUID(task.task_id()).version == 4
    page = requests.get(f"{rq.base_url}/tasks/{task.task_id()}", timeout=5)
    assert page.status_code == 200
    assert "on the page" in page.text
    assert requests.get(f"{rq.base_url}/tasks/{uuid.uuid4()}", timeout=5).status_code == 404
