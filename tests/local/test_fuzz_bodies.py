"""Property tests over request bodies: garbage never makes the local server fail.

Every POST endpoint (prepare, finalize, watch, watch-all, abort, protect, ack)
gets arbitrary bytes, arbitrary JSON values, and JSON objects whose known keys
(``name``, ``input``, ``priority``, ``requireAck``, ``since``, ``lastPosition``,
``only``) hold arbitrary values. Whatever comes, the answer is one the
endpoint documents (never a 5xx), an error carries a plain-text reason, an
event stream is well-formed, no request hangs (every socket has a 5 s
time-out, streams are read for at most 16 KiB or 1 s and closed), and the
server goes on serving: a follow-up GET of a known task answers 200.

The rows of docs/errors.md pin the exact answers to chosen bad bodies; this
file looks for the ones nobody thought of.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from requence_task._protocol import UPDATE_TYPES
from requence_task._token import decode_access_token
from requence_task.local import LocalRequence

from .templates_for_tests import TEMPLATES, gate

EXAMPLES = 30  # per endpoint and kind of body: the file runs in well under a minute
MAX_PAYLOAD = 3000  # the fuzz server's finalize limit: larger bodies meet the 413 path
TIMEOUT = (5, 5)
STREAM_BYTES = 16 * 1024
STREAM_SECONDS = 1.0

ENDPOINTS = ("prepare", "finalize", "watch", "watch-all", "abort", "protect", "ack")
# What each endpoint may answer to any body (200 for streams and successes).
ALLOWED = {
    "prepare": {200},  # takes no body; it is ignored
    "finalize": {200, 400, 409, 413, 422},
    "watch": {200, 400, 413},
    "watch-all": {200, 400, 413},
    "abort": {200, 400, 409, 413},
    "protect": {200},  # takes no body; it is ignored
    "ack": {409},  # no task of the fuzz awaits delivery; the body is ignored
}
# Which task an endpoint is aimed at: one that ended, one that runs (a gated
# task left open for the module), or a fresh prepared one of a template.
TARGETS = ("ended", "running", "fresh-echo", "fresh-greet")


class Fuzz:
    """The fuzz server, its tasks, and one checked request."""

    def __init__(self, rq: LocalRequence, ended: str, running: str) -> None:
        self.rq = rq
        self.ended = ended
        self.running = running
        self.headers = {"Authorization": f"Bearer {decode_access_token(rq.access_token).bearer}"}
        self.requests = 0

    def _prepare(self, template: str) -> tuple[str, str]:
        answer = requests.post(
            f"{self.rq.base_url}/task/prepare/{template}", headers=self.headers, timeout=TIMEOUT
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return body["taskId"], body["finalizeUrl"]

    def url(self, endpoint: str, target: str) -> str:
        base = self.rq.base_url
        if endpoint == "prepare":
            return f"{base}/task/prepare/{'greet' if target == 'fresh-greet' else 'echo'}"
        if endpoint == "watch-all":
            return f"{base}/task/watch-all"
        if endpoint == "abort" and target == "running":
            target = "fresh-echo"  # keep the running task running for the others
        if target.startswith("fresh-"):
            task_id, finalize_url = self._prepare(target.removeprefix("fresh-"))
        else:
            task_id = self.ended if target == "ended" else self.running
            finalize_url = f"{base}/task/finalize/{task_id}"
        if endpoint == "finalize":
            return finalize_url
        return f"{base}/task/{endpoint}/{task_id}"

    def check(self, endpoint: str, target: str, body: bytes, content_type: str | None) -> None:
        url = self.url(endpoint, target)
        headers = dict(self.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        if endpoint.startswith("watch"):
            headers["Accept"] = "text/event-stream"
        started = time.monotonic()
        with requests.post(
            url, data=body, headers=headers, timeout=TIMEOUT, stream=True
        ) as response:
            status = response.status_code
            kind = response.headers.get("Content-Type", "")
            text = _read(response)
        self.requests += 1
        assert time.monotonic() - started < 5 + STREAM_SECONDS
        assert status < 500, (endpoint, status, text[:500])
        assert status in ALLOWED[endpoint], (endpoint, target, status, text[:500])
        if status >= 400:
            assert kind.startswith("text/plain"), kind
            assert text.strip(), "an error without a reason"
        if endpoint.startswith("watch") and status == 200:
            assert kind.startswith("text/event-stream"), kind
            _assert_event_stream(text)
        # The server goes on serving.
        after = requests.get(
            f"{self.rq.base_url}/task/{self.ended}", headers=self.headers, timeout=TIMEOUT
        )
        assert after.status_code == 200, after.text
        assert after.json()["status"] == "SUCCESSFUL"


def _read(response: requests.Response) -> str:
    """At most STREAM_BYTES of the answer within STREAM_SECONDS; a live stream is
    left once it went quiet (its first keep-alive comment)."""
    body = bytearray()
    deadline = time.monotonic() + STREAM_SECONDS
    for chunk in response.iter_content(chunk_size=None):
        body += chunk
        if (
            len(body) >= STREAM_BYTES
            or time.monotonic() > deadline
            or body.endswith(b": keep-alive\n\n")
        ):
            break
    return body.decode("utf-8", "replace")


def _assert_event_stream(text: str) -> None:
    frames = text.split("\n\n")
    for frame in frames[:-1]:  # the last one may be cut by the read limit
        for line in frame.split("\n"):
            assert line.startswith(("id: ", "event: ", "data: ", ":")), repr(line)
        if not frame.startswith(":"):
            lines = frame.split("\n")
            assert lines[0].startswith("id: ") and int(lines[0][4:]) > 0
            assert lines[1].removeprefix("event: ") in UPDATE_TYPES
            assert isinstance(json.loads(lines[2].removeprefix("data: ")), dict)


@pytest.fixture(scope="module")
def fuzz() -> Iterator[Fuzz]:
    key = uuid.uuid4().hex
    try:
        with LocalRequence(TEMPLATES, keepalive_interval=0.05, max_payload_size=MAX_PAYLOAD) as rq:
            token = decode_access_token(rq.access_token).bearer
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            with session:
                ended = _start(session, rq, "echo", {"fuzz": True})
                running = _start(session, rq, "gated", {"gate": key})
                deadline = time.monotonic() + 10
                while _status(session, rq, ended) != "SUCCESSFUL":
                    assert time.monotonic() < deadline, "the known task did not end"
                    time.sleep(0.01)
            fuzz = Fuzz(rq, ended, running)
            yield fuzz
            assert rq.running
    finally:
        gate(key).set()


def _start(session: requests.Session, rq: LocalRequence, template: str, input: Any) -> str:
    prepared = session.post(f"{rq.base_url}/task/prepare/{template}", timeout=TIMEOUT).json()
    answer = session.post(prepared["finalizeUrl"], json={"input": input}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return str(prepared["taskId"])


def _status(session: requests.Session, rq: LocalRequence, task_id: str) -> str:
    return str(session.get(f"{rq.base_url}/task/{task_id}", timeout=TIMEOUT).json()["status"])


# --- strategies -----------------------------------------------------------------------------

# Text with every code point, lone surrogates included (json.dumps escapes them).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
moments = (
    st.datetimes().map(datetime.isoformat)
    | st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat)
    | st.dates().map(date.isoformat)
    | st.just(datetime.now(timezone.utc).isoformat())
)
KNOWN = {
    "name": st.text(max_size=30) | json_values,
    "input": json_values,
    "priority": st.integers(-3, 13) | json_values,
    "requireAck": st.booleans() | json_values,
    "since": moments | any_text | json_values,
    "lastPosition": st.integers() | st.integers(0, 50) | json_values,
    "only": st.lists(st.sampled_from(UPDATE_TYPES) | any_text, max_size=4) | json_values,
}
known_objects = st.fixed_dictionaries({}, optional=KNOWN).flatmap(
    lambda fields: st.dictionaries(any_text, json_values, max_size=2).map(
        lambda extra: {**extra, **fields}
    )
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain; charset=utf-8",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
    ]
)
targets = st.sampled_from(TARGETS)


def _dumps(value: Any) -> bytes:
    # Non-finite floats become NaN/Infinity, which the server must refuse itself.
    return json.dumps(value, allow_nan=True).encode("utf-8")


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ_SETTINGS
@given(body=st.binary(max_size=4 * 1024), target=targets, content_type=content_types)
def test_arbitrary_bytes(
    fuzz: Fuzz, endpoint: str, body: bytes, target: str, content_type: str | None
) -> None:
    fuzz.check(endpoint, target, body, content_type)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ_SETTINGS
@given(value=json_values, target=targets, content_type=content_types)
def test_arbitrary_json_values(
    fuzz: Fuzz, endpoint: str, value: Any, target: str, content_type: str | None
) -> None:
    fuzz.check(endpoint, target, _dumps(value), content_type)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@FUZZ_SETTINGS
@given(body=known_objects, target=targets)
def test_objects_with_arbitrary_values_for_the_known_keys(
    fuzz: Fuzz, endpoint: str, body: dict[str, Any], target: str
) -> None:
    fuzz.check(endpoint, target, _dumps(body), "application/json")


def test_the_fuzz_reached_every_kind_of_answer(fuzz: Fuzz) -> None:
    # Bodies the strategies make easily, checked by hand: each kind of answer
    # the properties allow is reachable, so the properties are not vacuous.
    cases = [
        ("finalize", "fresh-echo", b'{"input": 1}', 200),
        ("finalize", "fresh-greet", b'{"input": {"name": 5}}', 422),
        ("finalize", "ended", b'{"input": 1}', 409),
        ("finalize", "fresh-echo", b"x" * (MAX_PAYLOAD + 1), 413),
        ("finalize", "fresh-echo", b"\x00", 400),
        ("watch", "ended", b'{"since": null}', 200),
        ("watch", "running", b'{"lastPosition": 0}', 200),
        ("watch-all", "ended", b'{"only": ["taskEnd"]}', 200),
        ("watch", "ended", b'{"lastPosition": -1}', 400),
        ("abort", "fresh-echo", b"a reason", 200),
        ("abort", "ended", b"", 409),
    ]
    for endpoint, target, body, status in cases:
        url = fuzz.url(endpoint, target)
        answer = requests.post(url, data=body, headers=fuzz.headers, timeout=TIMEOUT, stream=True)
        with answer:
            assert answer.status_code == status, (endpoint, target, body, answer.status_code)
        fuzz.check(endpoint, target, body, "application/json")
