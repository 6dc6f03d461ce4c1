"""What the environment may change about the client's requests, and what it may not.

Our requests carry exactly the headers we set: a ``.netrc`` entry for the API
host never replaces the bearer (requests would swap it for Basic auth). The
usual proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
``NO_PROXY``) are honoured, read once when the client is made; the CA bundle
variables are tested with the TLS cases in tests/test_security.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from requence_task import Task, TaskError, get_task
from requence_task._token import decode_access_token, encode_access_token
from requence_task.local import LocalRequence

from .conftest import make_client

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
WAIT = 10


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("NETRC", raising=False)


# --- .netrc ----------------------------------------------------------------------------------


@pytest.fixture()
def netrc_for_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``.netrc`` with an entry for 127.0.0.1, as ``NETRC`` and as ``~/.netrc``."""
    path = tmp_path / ".netrc"
    path.write_text("machine 127.0.0.1 login someone password not-the-bearer\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    return path


def test_a_netrc_entry_for_the_api_host_does_not_replace_the_bearer(
    server: LocalRequence, netrc_for_loopback: Path
) -> None:
    # (Plain requests would send Basic auth from the file here.)
    plain = requests.Session()
    plain.headers["Authorization"] = f"Bearer {decode_access_token(server.access_token).bearer}"
    answer = plain.post(f"{server.base_url}/task/prepare/echo", timeout=10)
    plain.close()
    assert answer.status_code == 401  # the environment's .netrc really matches
    with make_client(server.access_token) as client:
        task = Task("echo", input={"a": 1}, client=client)
        task.finalized(timeout=WAIT)
        assert task.result(timeout=WAIT).result == {"input": {"a": 1}}
        assert get_task(task.task_id(), client=client).status == "SUCCESSFUL"


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Record)
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, target, headers
        self.target: str | None = None  # where to forward to, if anywhere

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Record(BaseHTTPRequestHandler):
    """Records each request (its target and headers); as a proxy, forwards it."""

    protocol_version = "HTTP/1.1"
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        if self.path.startswith("http://"):  # a proxy's request: forward it
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
            }
            with requests.Session() as direct:
                direct.trust_env = False  # (the test set HTTP_PROXY: to us)
                forwarded = direct.request(
                    self.command, self.path, headers=headers, data=body, timeout=10
                )
            payload, status = forwarded.content, forwarded.status_code
            kind = forwarded.headers.get("Content-Type", "application/json")
        else:
            payload, status, kind = json.dumps({"message": "not a proxy"}).encode(), 404, "json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer


@pytest.fixture()
def recorder() -> Iterator[_Recorder]:
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_exactly_our_headers_are_sent(
    recorder: _Recorder, netrc_for_loopback: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = encode_access_token("our-bearer", recorder.url)
    with make_client(token) as client, pytest.raises(TaskError):
        Task("echo", client=client).finalized(timeout=WAIT)
    [(method, target, headers)] = recorder.seen
    assert (method, target) == ("POST", "/task/prepare/echo")
    assert headers["Authorization"] == "Bearer our-bearer"
    assert set(headers) <= {
        "Host",
        "User-Agent",
        "Accept-Encoding",
        "Accept",
        "Connection",
        "Authorization",
        "Content-Length",
    }, headers


# --- proxies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_is_used(
    server: LocalRequence, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, recorder.url)
    with make_client(server.access_token) as client:
        Task("echo", input={"a": 1}, client=client).finalized(timeout=WAIT)
    targets = [target for _, target, _ in recorder.seen]
    assert targets[0] == f"{server.base_url}/task/prepare/echo"
    assert any(target.startswith(f"{server.base_url}/task/finalize/") for target in targets)
    # The bearer goes to the API through the proxy, never as proxy credentials.
    assert all("Proxy-Authorization" not in headers for _, _, headers in recorder.seen)


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*"])
def test_no_proxy_bypasses_the_proxy(
    server: LocalRequence, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    with make_client(server.access_token) as client:
        Task("echo", client=client).finalized(timeout=WAIT)
    assert recorder.seen == []


def test_proxies_are_read_when_the_client_is_made(
    server: LocalRequence, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_client(server.access_token) as client:
        monkeypatch.setenv("HTTP_PROXY", recorder.url)  # too late for this client
        Task("echo", client=client).finalized(timeout=WAIT)
    assert recorder.seen == []
    with make_client(server.access_token) as client:  # a new client reads it
        Task("echo", client=client).finalized(timeout=WAIT)
    assert recorder.seen
