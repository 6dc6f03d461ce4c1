"""The SSE update streams of the local server, over real HTTP.

Covers ``POST /task/watch/{id}`` and ``POST /task/watch-all``: event order and
fields, the raw frame format, resuming with ``lastPosition``, ``since`` in its
accepted forms, bad bodies, isolation between projects, injected faults
(cut streams, failures, latency), keep-alive comments, the hub's overflow
fallback, many concurrent watchers, and unsubscribing disconnected watchers.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from requence_task._token import decode_access_token
from requence_task.local import LocalRequence

from ..conftest import Api
from .templates_for_tests import TEMPLATES, gate

Ev = tuple[int, str, dict[str, Any]]

GREET_TYPES = [
    "taskStart",
    "nodeStart",
    "nodeUpdate",
    "nodeEnd",
    "nodeStart",
    "nodeUpdate",
    "nodeUpdate",
    "nodeUpdate",
    "nodeEnd",
    "taskEnd",
]
GATED_TYPES = ["taskStart", "nodeStart", "nodeUpdate", "nodeEnd", "taskEnd"]
COMMON_KEYS = ("taskId", "task_id", "rootTaskId", "timestamp", "updateId")
FRAME = re.compile(r"id: (\d+)\nevent: (\w+)\ndata: (\{[^\n]*\})\n\n")
KEEPALIVE = b": keep-alive\n\n"


# --- a raw SSE reader ---------------------------------------------------------


class StreamTimeout(AssertionError):
    """No byte arrived within the read time-out: the stream is open but silent."""


class Stream:
    """Reads an SSE response block by block, keeping every raw byte."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.raw = bytearray()
        self.keepalives = 0
        self.ended = False
        self._buf = b""
        self._chunks = response.iter_content(chunk_size=None)

    def close(self) -> None:
        self.response.close()

    def next_block(self) -> bytes | None:
        """The next ``...\\n\\n`` block, or ``None`` once the body ended."""
        while True:
            cut = self._buf.find(b"\n\n")
            if cut >= 0:
                block, self._buf = self._buf[: cut + 2], self._buf[cut + 2 :]
                return block
            if self.ended:
                assert self._buf == b"", f"the stream ended inside a frame: {self._buf!r}"
                return None
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.ended = True
                continue
            except requests.exceptions.ConnectionError as err:
                if "timed out" in str(err).lower():
                    raise StreamTimeout("nothing arrived within the read time-out") from err
                raise
            self.raw += chunk
            self._buf += chunk

    def next_event(self) -> Ev | None:
        """The next event (keep-alive comments are counted and skipped)."""
        while True:
            block = self.next_block()
            if block is None:
                return None
            if block == KEEPALIVE:
                self.keepalives += 1
                continue
            match = FRAME.fullmatch(block.decode("utf-8"))
            assert match is not None, f"not an SSE frame: {block!r}"
            return int(match[1]), match[2], json.loads(match[3])

    def take(self, count: int) -> list[Ev]:
        found: list[Ev] = []
        while len(found) < count:
            event = self.next_event()
            assert event is not None, f"stream ended after {len(found)} of {count} events"
            found.append(event)
        return found

    def rest(self, within: float = 10.0) -> list[Ev]:
        """Every event until the stream ends; fails on a stream still open after
        ``within`` seconds (silent, or sending only keep-alives)."""
        deadline = time.monotonic() + within
        found: list[Ev] = []
        while True:
            try:
                block = self.next_block()
            except StreamTimeout as err:
                raise AssertionError(
                    f"the stream did not end; received {[e[1] for e in found]}"
                ) from err
            if block is None:
                return found
            if block == KEEPALIVE:
                self.keepalives += 1
            else:
                self._buf = block + self._buf
                event = self.next_event()
                assert event is not None
                found.append(event)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the stream did not end within {within} s; received {[e[1] for e in found]}"
                )

    def expect_silence(self) -> None:
        """Nothing arrives (the read times out) and the stream does not end."""
        try:
            event = self.next_event()
        except StreamTimeout:
            return
        if event is None:
            raise AssertionError("the stream ended, expected it to stay open")
        raise AssertionError(f"expected no event, got {event[1]} at {event[0]}")


def open_raw(
    api: Api,
    path: str,
    body: Any = None,
    *,
    read_timeout: float = 5.0,
    data: bytes | None = None,
    session: requests.Session | None = None,
) -> Stream:
    url = path if "://" in path else api.base_url + path
    kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
    response = (session or api.session).post(
        url,
        stream=True,
        headers={"Accept": "text/event-stream"},
        timeout=(5, read_timeout),
        **kwargs,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return Stream(response)


def watch_raw(api: Api, task_id: str, body: Any = None, **kwargs: Any) -> Stream:
    return open_raw(
        api, f"/task/watch/{task_id}", {"since": None} if body is None else body, **kwargs
    )


def all_events(api: Api, task_id: str, body: Any = None) -> list[Ev]:
    stream = watch_raw(api, task_id, body)
    try:
        return stream.rest()
    finally:
        stream.close()


def keys(events: list[Ev]) -> list[tuple[int, str, str]]:
    """What identifies each event: position, type, updateId."""
    return [(pos, typ, data["updateId"]) for pos, typ, data in events]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def iso_utc_z(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None).isoformat() + "Z"


# --- fixtures -----------------------------------------------------------------


@pytest.fixture()
def gate_key() -> Iterator[Callable[[], str]]:
    """Makes unique gate keys; every gate made is opened at teardown."""
    made: list[str] = []

    def make() -> str:
        key = f"streams-{uuid.uuid4().hex}"
        made.append(key)
        return key

    yield make
    for key in made:
        gate(key).set()


@pytest.fixture()
def project_api(server: LocalRequence) -> Iterator[Callable[[], Api]]:
    """Clients of fresh, empty projects (so watch-all sees only this test's tasks)."""
    clients: list[Api] = []

    def make() -> Api:
        client = Api(server.token_for(f"streams-{uuid.uuid4().hex}"))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture()
def india_time() -> Iterator[None]:
    """Local time zone UTC+05:30 for this process (server and test alike)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def split_gated(api: Api, key: str) -> tuple[str, float, list[Ev]]:
    """A finished gated task, a moment between its nodeStart and nodeUpdate, and
    its events (taskStart and nodeStart before the moment, the rest after)."""
    task_id = api.start("gated", {"gate": key})
    stream = watch_raw(api, task_id)
    try:
        first = stream.take(2)
        assert [t for _, t, _ in first] == ["taskStart", "nodeStart"]
        time.sleep(0.05)
        middle = time.time()
        time.sleep(0.05)
        gate(key).set()
        events = first + stream.rest()
    finally:
        stream.close()
    assert [t for _, t, _ in events] == GATED_TYPES
    return task_id, middle, events


# --- one task's stream ------------------------------------------------------------


def test_greet_stream_has_the_full_sequence_with_every_field(api: Api) -> None:
    task_id = api.start("greet", {"name": "A", "steps": 3})
    events = api.watch(task_id)  # parsed with sseclient

    assert [t for _, t, _ in events] == GREET_TYPES
    positions = [p for p, _, _ in events]
    assert all(a < b for a, b in itertools.pairwise(positions)), positions
    update_ids = set()
    for _, _, data in events:
        for key in COMMON_KEYS:
            assert key in data, (key, data)
        assert data["taskId"] == task_id
        assert data["task_id"] == task_id
        assert data["rootTaskId"] is None
        stamp = datetime.fromisoformat(data["timestamp"])
        assert stamp.utcoffset() == timedelta(0), data["timestamp"]
        assert abs(stamp.timestamp() - time.time()) < 60
        assert str(uuid.UUID(data["updateId"])) == data["updateId"]
        update_ids.add(data["updateId"])
    assert len(update_ids) == len(events)

    assert events[0][2]["input"] == {"name": "A", "steps": 3}
    node_events = events[1:-1]
    for _, _, data in node_events:
        assert set(data["node"]) == {"id", "type", "alias"}
        assert data["node"]["type"] == "service"
        assert isinstance(data["node"]["id"], str) and data["node"]["id"]
    aliases = [d["node"]["alias"] for _, _, d in node_events]
    assert aliases == ["greeter"] * 3 + ["counter"] * 5
    greeter_ids = {d["node"]["id"] for _, _, d in node_events[:3]}
    counter_ids = {d["node"]["id"] for _, _, d in node_events[3:]}
    assert len(greeter_ids) == 1 and len(counter_ids) == 1 and greeter_ids != counter_ids
    assert events[2][2]["data"] == {"message": "Hello, A!"}
    assert events[2][2]["output"] is None
    assert [d["data"] for _, _, d in events[5:8]] == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert all(d["output"] is None for _, _, d in events[5:8])
    end = events[-1][2]
    assert end["result"] == {"message": "Hello, A!"}
    assert end["exit"] is None
    assert end["requireAck"] is False


def test_live_stream_ends_right_after_the_terminal_update(
    api: Api, gate_key: Callable[[], str]
) -> None:
    key = gate_key()
    task_id = api.start("gated", {"gate": key})
    stream = watch_raw(api, task_id, read_timeout=5)
    try:
        assert [t for _, t, _ in stream.take(2)] == ["taskStart", "nodeStart"]
        assert api.task(task_id)["status"] == "RUNNING"
        gate(key).set()
        rest = stream.rest()
        assert [t for _, t, _ in rest] == ["nodeUpdate", "nodeEnd", "taskEnd"]
        assert rest[-1][2]["result"] == {"opened": key}
        assert stream.ended
        assert bytes(stream.raw).endswith(b"\n\n")
    finally:
        stream.close()


def test_watching_a_finished_task_replays_everything_and_ends(api: Api) -> None:
    task_id = api.start("greet", {"name": "A", "steps": 3})
    api.wait_status(task_id, "SUCCESSFUL")
    first = all_events(api, task_id)
    second = all_events(api, task_id)
    assert [t for _, t, _ in first] == GREET_TYPES
    assert keys(first) == keys(second)
    assert first == second


def test_watching_an_idle_task_waits_for_its_finalize(
    api: Api, gate_key: Callable[[], str]
) -> None:
    key = gate_key()
    prepared = api.prepare("gated")
    stream = watch_raw(api, prepared["taskId"])
    try:
        response = api.finalize(prepared, input={"gate": key})
        assert response.status_code == 200, response.text
        assert [t for _, t, _ in stream.take(2)] == ["taskStart", "nodeStart"]
        gate(key).set()
        assert [t for _, t, _ in stream.rest()] == ["nodeUpdate", "nodeEnd", "taskEnd"]
    finally:
        stream.close()


def test_raw_frames_are_exactly_id_event_data_blank_line(api: Api) -> None:
    task_id = api.start("greet", {"name": "A", "steps": 3})
    api.wait_status(task_id, "SUCCESSFUL")
    response = api.post(
        f"/task/watch/{task_id}",
        json={"since": None},
        stream=True,
        headers={"Accept": "text/event-stream"},
    )
    try:
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0].strip() == "text/event-stream"
        assert response.headers.get("transfer-encoding") == "chunked"
        body = response.content.decode("utf-8")
    finally:
        response.close()

    frames = body.split("\n\n")
    assert frames[-1] == "", "the body must end with a blank line"
    frames = frames[:-1]
    parsed = []
    for text in frames:
        lines = text.split("\n")
        assert len(lines) == 3, text
        assert re.fullmatch(r"id: [1-9]\d*", lines[0]), lines[0]
        assert re.fullmatch(r"event: [A-Za-z]+", lines[1]), lines[1]
        assert lines[2].startswith("data: {") and lines[2].endswith("}"), lines[2]
        position, type_ = int(lines[0][4:]), lines[1][7:]
        data = json.loads(lines[2][6:])
        assert text + "\n\n" == f"id: {position}\nevent: {type_}\ndata: {lines[2][6:]}\n\n"
        parsed.append((position, type_, data))
    assert [t for _, t, _ in parsed] == GREET_TYPES
    # The same bytes, parsed by sseclient, give the same events.
    assert api.watch(task_id) == parsed


def test_watch_without_a_body_or_with_an_empty_object_replays_everything(api: Api) -> None:
    task_id = api.start("greet", {"name": "B", "steps": 1})
    api.wait_status(task_id, "SUCCESSFUL")
    full = all_events(api, task_id)
    assert len(full) == 8
    for stream in (
        watch_raw(api, task_id, data=b""),
        watch_raw(api, task_id, {}),
        watch_raw(api, task_id, {"since": None, "lastPosition": None}),
    ):
        try:
            assert keys(stream.rest()) == keys(full)
        finally:
            stream.close()


# --- resuming with lastPosition ------------------------------------------------------


def test_resume_from_every_position_gives_exactly_the_rest(api: Api) -> None:
    task_id = api.start("greet", {"name": "A", "steps": 3})
    api.wait_status(task_id, "SUCCESSFUL")
    full = all_events(api, task_id)
    assert len(full) == 10
    assert keys(all_events(api, task_id, {"lastPosition": 0})) == keys(full)
    assert keys(all_events(api, task_id, {"lastPosition": full[0][0] - 1})) == keys(full)
    for index, (position, _, _) in enumerate(full):
        rest = all_events(api, task_id, {"lastPosition": position})
        assert keys(rest) == keys(full[index + 1 :]), index
        # lastPosition wins over since.
        rest = all_events(api, task_id, {"lastPosition": position, "since": "2000-01-01"})
        assert keys(rest) == keys(full[index + 1 :]), index


def test_resume_at_or_after_the_terminal_position_is_an_empty_stream_that_ends(
    api: Api,
) -> None:
    task_id = api.start("echo", {"x": 1})
    api.wait_status(task_id, "SUCCESSFUL")
    full = all_events(api, task_id)
    terminal = full[-1][0]
    assert full[-1][1] == "taskEnd"
    for last in (terminal, terminal + 1, terminal + 10_000):
        stream = watch_raw(api, task_id, {"lastPosition": last}, read_timeout=3)
        try:
            assert stream.rest() == []
            assert bytes(stream.raw) == b""
        finally:
            stream.close()


def test_resume_a_live_gated_task_midway(api: Api, gate_key: Callable[[], str]) -> None:
    key = gate_key()
    task_id = api.start("gated", {"gate": key})
    first = watch_raw(api, task_id)
    try:
        seen = first.take(2)
    finally:
        first.close()
    assert [t for _, t, _ in seen] == ["taskStart", "nodeStart"]
    assert api.task(task_id)["status"] == "RUNNING"

    after_start = watch_raw(api, task_id, {"lastPosition": seen[0][0]})
    after_node = watch_raw(api, task_id, {"lastPosition": seen[1][0]})
    try:
        # Before the gate opens, only the replayed nodeStart is there to send.
        assert keys(after_start.take(1)) == keys(seen[1:])
        gate(key).set()
        rest_a = after_start.rest()
        rest_b = after_node.rest()
    finally:
        after_start.close()
        after_node.close()
    assert [t for _, t, _ in rest_b] == ["nodeUpdate", "nodeEnd", "taskEnd"]
    assert keys(rest_a) == keys(rest_b)
    assert keys(seen + rest_b) == keys(all_events(api, task_id))


# --- since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(iso_utc_z, id="Z-suffix"),
        pytest.param(lambda t: iso_utc_z(t)[:-1] + "z", id="z-lowercase"),
        pytest.param(lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat(), id="utc"),
        pytest.param(
            lambda t: datetime.fromtimestamp(t, timezone(timedelta(hours=-8))).isoformat(),
            id="zoned-minus-8",
        ),
        pytest.param(
            lambda t: datetime.fromtimestamp(
                t, timezone(timedelta(hours=9, minutes=30))
            ).isoformat(),
            id="zoned-plus-9-30",
        ),
    ],
)
def test_since_a_zoned_time_skips_what_came_before(
    api: Api, gate_key: Callable[[], str], render: Callable[[float], str]
) -> None:
    task_id, middle, events = split_gated(api, gate_key())
    since = render(middle)
    assert keys(all_events(api, task_id, {"since": since})) == keys(events[2:]), since
    before = render(middle - 3600)
    assert keys(all_events(api, task_id, {"since": before})) == keys(events)


def test_since_a_naive_time_is_local_time(
    india_time: None, api: Api, gate_key: Callable[[], str]
) -> None:
    task_id, middle, events = split_gated(api, gate_key())
    naive = datetime.fromtimestamp(middle).isoformat()  # what the official client sends
    assert datetime.fromisoformat(naive).tzinfo is None
    assert keys(all_events(api, task_id, {"since": naive})) == keys(events[2:]), naive
    # Read as UTC it would lie 5.5 hours later than every event.
    as_utc = datetime.fromtimestamp(middle, timezone.utc).replace(tzinfo=None).isoformat()
    assert keys(all_events(api, task_id, {"since": as_utc})) == keys(events)


def test_since_a_date_means_local_midnight(api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    full = all_events(api, task_id)
    assert len(full) == 5
    today = date.today()
    for day in (today, today - timedelta(days=1), date(2000, 1, 1)):
        assert keys(all_events(api, task_id, {"since": day.isoformat()})) == keys(full), day
    tomorrow = today + timedelta(days=1)
    assert all_events(api, task_id, {"since": tomorrow.isoformat()}) == []


def test_since_null_replays_everything(api: Api) -> None:
    task_id = api.start("greet", {"name": "C"})
    api.wait_status(task_id, "SUCCESSFUL")
    assert [t for _, t, _ in all_events(api, task_id, {"since": None})] == GREET_TYPES


def test_since_in_the_future_on_a_finished_task_is_empty_and_ends(api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    stream = watch_raw(api, task_id, {"since": future}, read_timeout=3)
    try:
        assert stream.rest() == []
    finally:
        stream.close()


def test_since_slightly_ahead_skips_older_live_events_and_sends_newer_ones(
    api: Api, gate_key: Callable[[], str]
) -> None:
    key = gate_key()
    task_id = api.start("gated", {"gate": key})
    probe = watch_raw(api, task_id)
    try:
        assert [t for _, t, _ in probe.take(2)] == ["taskStart", "nodeStart"]
    finally:
        probe.close()
    since = time.time() + 0.3
    stream = watch_raw(api, task_id, {"since": iso_utc_z(since)})
    try:
        # taskStart and nodeStart are older than since; wait until since has passed.
        time.sleep(max(0.0, since - time.time()) + 0.1)
        gate(key).set()
        rest = stream.rest()
    finally:
        stream.close()
    assert [t for _, t, _ in rest] == ["nodeUpdate", "nodeEnd", "taskEnd"]
    full = all_events(api, task_id)
    assert keys(rest) == keys(full[2:])


def test_since_in_the_future_on_a_live_task_still_ends_when_the_task_ends(
    gate_key: Callable[[], str],
) -> None:
    """A client whose clock runs ahead: every event is older than its since. The
    stream has nothing to send, but it must not outlive the task (as it does not
    for a finished task, see above)."""
    with LocalRequence(TEMPLATES, keepalive_interval=0.2) as rq:
        api = Api(rq.access_token)
        try:
            key = gate_key()
            task_id = api.start("gated", {"gate": key})
            future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            stream = watch_raw(api, task_id, {"since": future}, read_timeout=3)
            try:
                assert stream.next_block() == KEEPALIVE  # the stream is live now
                gate(key).set()
                api.wait_status(task_id, "SUCCESSFUL")
                assert stream.rest(within=3) == []
            finally:
                stream.close()
        finally:
            api.close()


def test_since_year_one_is_not_a_server_error(india_time: None, api: Api) -> None:
    """'0001-01-01' is a valid ISO date; east of UTC its local midnight lies
    before datetime.min in UTC. Accept it (everything) or reject it, never 500."""
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    for since in ("0001-01-01", "0001-01-01T00:00:00"):
        response = api.post(f"/task/watch/{task_id}", json={"since": since}, stream=True)
        try:
            assert response.status_code in (200, 400), (since, response.status_code)
            if response.status_code == 200:
                assert len(response.content.split(b"\n\n")) == 6
            else:
                assert "'since'" in response.text
        finally:
            response.close()


# --- bad bodies, unknown tasks ---------------------------------------------------------------

BAD_SINCE = [123, 1.5, True, [], {}, "", "yesterday", "2024-13-01", "2024-02-30T10:00:00", "now"]
BAD_LAST = [-1, -100, "5", True, False, 1.5, [], {"p": 1}]


@pytest.mark.parametrize("since", BAD_SINCE, ids=repr)
def test_bad_since_is_400_naming_the_field(api: Api, since: Any) -> None:
    task_id = api.start("echo", 1)
    for path in (f"/task/watch/{task_id}", "/task/watch-all"):
        response = api.post(path, json={"since": since})
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/plain")
        assert "'since'" in response.text


@pytest.mark.parametrize("last", BAD_LAST, ids=repr)
def test_bad_last_position_is_400_naming_the_field(api: Api, last: Any) -> None:
    task_id = api.start("echo", 1)
    for path in (f"/task/watch/{task_id}", "/task/watch-all"):
        response = api.post(path, json={"since": None, "lastPosition": last})
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert "'lastPosition'" in response.text


@pytest.mark.parametrize("last", [2**63, 2**64 + 5])
def test_huge_last_position_is_not_a_broken_stream(api: Api, last: int) -> None:
    """A lastPosition beyond SQLite's integer range: reject it (400) or answer an
    empty stream; never a 200 whose body breaks off."""
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    response = api.post(
        f"/task/watch/{task_id}", json={"lastPosition": last}, stream=True, timeout=(5, 3)
    )
    try:
        assert response.status_code in (200, 400), response.status_code
        if response.status_code == 200:
            assert response.content == b""  # raises ChunkedEncodingError if broken
        else:
            assert "'lastPosition'" in response.text
    finally:
        response.close()


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"{"])
def test_malformed_watch_body_is_400(api: Api, body: bytes) -> None:
    task_id = api.start("echo", 1)
    for path in (f"/task/watch/{task_id}", "/task/watch-all"):
        response = api.post(path, data=body)
        assert response.status_code == 400, (path, response.status_code)
        assert response.text


def test_watch_of_an_unknown_task_is_404(api: Api) -> None:
    unknown = str(uuid.uuid4())
    response = api.post(f"/task/watch/{unknown}", json={"since": None})
    assert response.status_code == 404
    assert unknown in response.text


def test_watch_of_another_projects_task_is_404(api: Api, project_api: Callable[[], Api]) -> None:
    other = project_api()
    task_id = other.start("echo", 1)
    response = api.post(f"/task/watch/{task_id}", json={"since": None})
    assert response.status_code == 404
    assert task_id in response.text
    assert [t for _, t, _ in all_events(other, task_id)][-1] == "taskEnd"


def test_watch_without_a_bearer_is_401(api: Api) -> None:
    task_id = api.start("echo", 1)
    response = requests.post(
        f"{api.base_url}/task/watch/{task_id}", json={"since": None}, timeout=5
    )
    assert response.status_code == 401
    response = requests.post(f"{api.base_url}/task/watch-all", json={}, timeout=5)
    assert response.status_code == 401


# --- watch-all --------------------------------------------------------------------------------


def test_watch_all_interleaves_several_tasks_in_position_order(
    project_api: Callable[[], Api], gate_key: Callable[[], str]
) -> None:
    papi = project_api()
    live = open_raw(papi, "/task/watch-all", {"since": None}, read_timeout=5)
    try:
        key_a, key_b = gate_key(), gate_key()
        a = papi.start("gated", {"gate": key_a})
        b = papi.start("gated", {"gate": key_b})
        stream_a, stream_b = watch_raw(papi, a), watch_raw(papi, b)
        try:
            stream_a.take(2)
            stream_b.take(2)  # both tasks are running now
            gate(key_a).set()
            assert stream_a.rest()[-1][1] == "taskEnd"
            gate(key_b).set()
            assert stream_b.rest()[-1][1] == "taskEnd"
        finally:
            stream_a.close()
            stream_b.close()
        expected = sorted(all_events(papi, a) + all_events(papi, b), key=lambda e: e[0])
        assert len(expected) == 10
        got_live = live.take(10)
    finally:
        live.close()
    assert keys(got_live) == keys(expected)
    owners = [d["taskId"] for _, _, d in got_live]
    # B started before A ended, and ended after it: the two are interleaved.
    assert owners[0] == a and owners[-1] == b
    assert owners.index(b) < len(owners) - 1 - owners[::-1].index(a)
    assert owners.count(a) == owners.count(b) == 5
    assert all(d["task_id"] == d["taskId"] for _, _, d in got_live)

    replay = open_raw(papi, "/task/watch-all", {"since": None}, read_timeout=1)
    try:
        assert keys(replay.take(10)) == keys(expected)
        replay.expect_silence()  # never ends by itself
        assert not replay.ended
    finally:
        replay.close()


def test_watch_all_only_filters_by_type(project_api: Callable[[], Api]) -> None:
    papi = project_api()
    live = open_raw(papi, "/task/watch-all", {"since": None, "only": ["taskEnd"]}, read_timeout=0.5)
    try:
        g1 = papi.start("greet", {"name": "one"})
        f = papi.start("fail", {"name": "two"})
        g2 = papi.start("greet", {"name": "three"})
        for task_id in (g1, f, g2):
            all_events(papi, task_id)  # waits for its end
        got = live.take(2)
        assert [t for _, t, _ in got] == ["taskEnd", "taskEnd"]
        assert {d["taskId"] for _, _, d in got} == {g1, g2}
        live.expect_silence()
    finally:
        live.close()

    everything = sorted(
        all_events(papi, g1) + all_events(papi, f) + all_events(papi, g2), key=lambda e: e[0]
    )
    cases: list[tuple[Any, list[Ev]]] = [
        (["taskEnd"], [e for e in everything if e[1] == "taskEnd"]),
        (["taskEnd", "taskError"], [e for e in everything if e[1] in ("taskEnd", "taskError")]),
        (["nodeStart"], [e for e in everything if e[1] == "nodeStart"]),
        (None, everything),
    ]
    assert len(cases[1][1]) == 3 and len(cases[2][1]) == 6
    for only, expected in cases:
        stream = open_raw(papi, "/task/watch-all", {"since": None, "only": only}, read_timeout=0.5)
        try:
            assert keys(stream.take(len(expected))) == keys(expected), only
            stream.expect_silence()
        finally:
            stream.close()
    stream = open_raw(papi, "/task/watch-all", {"since": None, "only": []}, read_timeout=0.5)
    try:
        stream.expect_silence()
    finally:
        stream.close()


@pytest.mark.parametrize("only", ["taskEnd", [1], ["taskEnd", None], {"taskEnd": True}, True, 3])
def test_watch_all_bad_only_is_400(api: Api, only: Any) -> None:
    response = api.post("/task/watch-all", json={"since": None, "only": only})
    assert response.status_code == 400, response.text
    assert "'only'" in response.text


def test_watch_all_since_skips_older_events(project_api: Callable[[], Api]) -> None:
    papi = project_api()
    first = papi.start("echo", 1)
    first_events = all_events(papi, first)
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    second = papi.start("echo", 2)
    second_events = all_events(papi, second)
    for since in (iso_utc_z(middle), datetime.fromtimestamp(middle).isoformat()):
        stream = open_raw(papi, "/task/watch-all", {"since": since}, read_timeout=0.5)
        try:
            assert keys(stream.take(5)) == keys(second_events), since
            stream.expect_silence()
        finally:
            stream.close()
    stream = open_raw(papi, "/task/watch-all", {"since": None}, read_timeout=0.5)
    try:
        assert keys(stream.take(10)) == keys(first_events + second_events)
        stream.expect_silence()
    finally:
        stream.close()


def test_watch_all_resumes_from_last_position(project_api: Callable[[], Api]) -> None:
    papi = project_api()
    tasks = [papi.start("greet", {"name": "x", "steps": 1}), papi.start("echo", 5)]
    expected = sorted(all_events(papi, tasks[0]) + all_events(papi, tasks[1]), key=lambda e: e[0])
    assert len(expected) == 13
    for index, (position, _, _) in enumerate(expected):
        stream = open_raw(papi, "/task/watch-all", {"lastPosition": position}, read_timeout=5)
        try:
            assert keys(stream.take(len(expected) - index - 1)) == keys(expected[index + 1 :])
        finally:
            stream.close()
    stream = open_raw(papi, "/task/watch-all", {"lastPosition": 0}, read_timeout=5)
    try:
        assert keys(stream.take(len(expected))) == keys(expected)
    finally:
        stream.close()
    # Nothing after the last one, and a resumed live stream gets what comes next.
    stream = open_raw(papi, "/task/watch-all", {"lastPosition": expected[-1][0]}, read_timeout=0.5)
    try:
        stream.expect_silence()
    finally:
        stream.close()
    stream = open_raw(papi, "/task/watch-all", {"lastPosition": expected[-1][0]}, read_timeout=5)
    try:
        third = papi.start("echo", 6)
        got = stream.take(5)
        assert keys(got) == keys(all_events(papi, third))
    finally:
        stream.close()


def test_watch_all_is_isolated_between_projects(project_api: Callable[[], Api]) -> None:
    mine, theirs = project_api(), project_api()
    live = open_raw(mine, "/task/watch-all", {"since": None}, read_timeout=0.5)
    try:
        their_task = theirs.start("greet", {"name": "them"})
        all_events(theirs, their_task)
        my_task = mine.start("echo", "me")
        my_events = all_events(mine, my_task)
        assert keys(live.take(5)) == keys(my_events)
        live.expect_silence()
    finally:
        live.close()
    assert their_task.encode() not in bytes(live.raw)
    replay = open_raw(theirs, "/task/watch-all", {"since": None}, read_timeout=0.5)
    try:
        got = replay.take(10)
        assert {d["taskId"] for _, _, d in got} == {their_task}
        replay.expect_silence()
    finally:
        replay.close()
    assert my_task.encode() not in bytes(replay.raw)


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_cut_streams_reassemble_with_last_position(
    server: LocalRequence, api: Api, cut: int
) -> None:
    server.faults.cut_streams_after = cut
    task_id = api.start("many", {"n": 20})
    assembled: list[Ev] = []
    connections = 0
    body: dict[str, Any] = {"since": None}
    while not assembled or assembled[-1][1] != "taskEnd":
        connections += 1
        assert connections <= 30, "too many reconnects"
        got = all_events(api, task_id, body)
        ended_on_terminal = bool(got) and got[-1][1] == "taskEnd"
        assert len(got) == cut or (ended_on_terminal and len(got) <= cut), (cut, len(got))
        assembled += got
        body = {"lastPosition": assembled[-1][0]}
    server.faults.cut_streams_after = None
    full = all_events(api, task_id)
    assert len(full) == 24
    assert keys(assembled) == keys(full)
    assert connections == -(-24 // cut)
    assert [d["data"]["i"] for _, t, d in assembled if t == "nodeUpdate"] == list(range(20))


def test_cut_streams_also_cut_watch_all(
    server: LocalRequence, project_api: Callable[[], Api]
) -> None:
    papi = project_api()
    all_events(papi, papi.start("greet", {"name": "cut"}))
    server.faults.cut_streams_after = 3
    first = open_raw(papi, "/task/watch-all", {"since": None}, read_timeout=3)
    try:
        got = first.rest()  # ends cleanly after 3 events
    finally:
        first.close()
    assert [t for _, t, _ in got] == GREET_TYPES[:3]
    second = open_raw(papi, "/task/watch-all", {"lastPosition": got[-1][0]}, read_timeout=3)
    try:
        more = second.rest()
    finally:
        second.close()
    assert [t for _, t, _ in more] == GREET_TYPES[3:6]


def test_fail_next_on_watch_fails_that_many_watch_requests(server: LocalRequence, api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    server.faults.fail_next(2, endpoint="watch")
    assert server.faults.pending_failures == 2
    assert api.get(f"/task/{task_id}").status_code == 200  # other endpoints untouched
    response = api.post("/task/watch-all", json={"since": None}, stream=True, timeout=(5, 1))
    assert response.status_code == 200
    response.close()
    for _ in range(2):
        response = api.post(f"/task/watch/{task_id}", json={"since": None})
        assert response.status_code == 503
        assert "text/event-stream" not in response.headers.get("content-type", "")
    assert server.faults.pending_failures == 0
    assert [t for _, t, _ in all_events(api, task_id)] == GATED_TYPES


def test_fail_next_with_another_status_on_watch_all(server: LocalRequence, api: Api) -> None:
    server.faults.fail_next(1, status=504, endpoint="watch-all")
    assert api.post("/task/watch-all", json={"since": None}).status_code == 504
    stream = open_raw(api, "/task/watch-all", {"since": None}, read_timeout=3)
    try:
        assert stream.next_event() is not None
    finally:
        stream.close()


def test_fail_next_without_endpoint_fails_any_request(server: LocalRequence, api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    server.faults.fail_next(1)
    assert api.get(f"/task/{task_id}").status_code == 503
    assert len(all_events(api, task_id)) == 5
    server.faults.fail_next(3)
    assert api.post(f"/task/watch/{task_id}", json={"since": None}).status_code == 503
    assert api.post("/task/watch-all", json={"since": None}).status_code == 503
    assert api.post("/task/prepare/echo").status_code == 503
    assert server.faults.pending_failures == 0
    assert api.post("/task/prepare/echo").status_code == 200
    assert len(all_events(api, task_id)) == 5


def test_latency_delays_each_request(server: LocalRequence, api: Api) -> None:
    task_id = api.start("echo", 1)
    api.wait_status(task_id, "SUCCESSFUL")
    server.faults.latency = 0.2
    started = time.monotonic()
    stream = watch_raw(api, task_id)
    try:
        assert time.monotonic() - started >= 0.2
        assert len(stream.rest()) == 5
    finally:
        stream.close()
    started = time.monotonic()
    assert api.get(f"/task/{task_id}").status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert api.post("/task/watch-all", json={"only": 5}).status_code == 400
    assert time.monotonic() - started >= 0.2


# --- keep-alive, overflow, many watchers, disconnects -------------------------------------------


def test_keepalive_comments_while_idle_then_the_events(gate_key: Callable[[], str]) -> None:
    with LocalRequence(TEMPLATES, keepalive_interval=0.2) as rq:
        api = Api(rq.access_token)
        try:
            key = gate_key()
            task_id = api.start("gated", {"gate": key})
            stream = watch_raw(api, task_id, read_timeout=3)
            everyone = open_raw(api, "/task/watch-all", {"since": None}, read_timeout=3)
            try:
                assert [t for _, t, _ in stream.take(2)] == ["taskStart", "nodeStart"]
                assert [t for _, t, _ in everyone.take(2)] == ["taskStart", "nodeStart"]
                deadline = time.monotonic() + 0.75
                while time.monotonic() < deadline:
                    assert stream.next_block() == KEEPALIVE
                    assert everyone.next_block() == KEEPALIVE
                gate(key).set()
                assert [t for _, t, _ in stream.rest()] == ["nodeUpdate", "nodeEnd", "taskEnd"]
                got = everyone.take(3)
                assert [t for _, t, _ in got] == ["nodeUpdate", "nodeEnd", "taskEnd"]
            finally:
                stream.close()
                everyone.close()
            raw = bytes(stream.raw)
            assert raw.count(KEEPALIVE) >= 3
            assert KEEPALIVE * 3 in raw and raw.index(KEEPALIVE) > raw.index(b"nodeStart")
            assert raw.count(b"\nevent: ") == 5
        finally:
            api.close()


class _SmallReceiveBuffer(HTTPAdapter):
    """A client socket with a tiny receive buffer, so the server's sends stall."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [
            *HTTPConnection.default_socket_options,
            (socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),
        ]
        super().init_poolmanager(*args, **kwargs)


def test_slow_reader_of_a_huge_task_gets_every_update_once_in_order() -> None:
    n = 30_000
    with LocalRequence(TEMPLATES) as rq:
        api = Api(rq.access_token)
        api.session.mount("http://", _SmallReceiveBuffer())
        try:
            task_id = api.start("many", {"n": n})
            stream = watch_raw(api, task_id, read_timeout=10)
            try:
                # Read nothing until the hub's bounded queue for this stream overflows.
                overflowed = False
                deadline = time.monotonic() + 7
                while not overflowed and time.monotonic() < deadline:
                    subs = list(rq.hub._by_task.get(task_id, ()))
                    overflowed = any(sub.overflowed for sub in subs)
                    time.sleep(0.01)
                assert overflowed, "the slow stream never overflowed its queue"
                positions: list[int] = []
                values: list[int] = []
                types: list[str] = []
                while (event := stream.next_event()) is not None:
                    position, type_, data = event
                    positions.append(position)
                    types.append(type_)
                    if type_ == "nodeUpdate":
                        values.append(data["data"]["i"])
            finally:
                stream.close()
        finally:
            api.close()
    assert types[:2] == ["taskStart", "nodeStart"]
    assert types[-2:] == ["nodeEnd", "taskEnd"]
    assert len(types) == n + 4
    assert values == list(range(n))
    assert all(a < b for a, b in itertools.pairwise(positions))


def test_500_concurrent_watchers(gate_key: Callable[[], str]) -> None:
    count = 500
    key = gate_key()
    with LocalRequence(TEMPLATES, concurrency=4) as rq:
        token = rq.access_token
        bearer = decode_access_token(token).bearer
        api = Api(token)
        sessions: list[requests.Session] = []
        streams: list[Stream] = []
        lock = threading.Lock()
        try:
            with ThreadPoolExecutor(max_workers=100) as pool:
                task_ids = list(pool.map(lambda _: api.start("gated", {"gate": key}), range(count)))

                def open_one(task_id: str) -> Ev:
                    session = requests.Session()
                    session.headers["Authorization"] = f"Bearer {bearer}"
                    with lock:
                        sessions.append(session)
                    stream = watch_raw(api, task_id, session=session, read_timeout=15)
                    with lock:
                        streams.append(stream)
                    event = stream.next_event()
                    assert event is not None
                    return event

                firsts = list(pool.map(open_one, task_ids))
                assert [t for _, t, _ in firsts] == ["taskStart"] * count
                assert [d["taskId"] for _, _, d in firsts] == task_ids
                wait_until(lambda: rq.hub.subscriber_count == count, what="500 subscribers")
                gate(key).set()
                rests = list(pool.map(lambda s: s.rest(), streams))
            assert len(rests) == count
            for rest in rests:
                assert [t for _, t, _ in rest] == GATED_TYPES[1:]
                assert rest[-1][2]["result"] == {"opened": key}
            wait_until(lambda: rq.hub.subscriber_count == 0, what="no subscribers left")
        finally:
            for stream in streams:
                stream.close()
            for session in sessions:
                session.close()
            api.close()


def test_disconnected_watchers_are_unsubscribed(
    server: LocalRequence, api: Api, gate_key: Callable[[], str]
) -> None:
    key = gate_key()
    task_id = api.start("gated", {"gate": key})
    before = server.hub.subscriber_count
    stream = watch_raw(api, task_id)
    everyone = open_raw(api, "/task/watch-all", {"since": None})
    try:
        assert stream.next_event() is not None
        assert everyone.next_event() is not None
        wait_until(lambda: server.hub.subscriber_count == before + 2, what="two subscribers")
    finally:
        stream.close()
        everyone.close()
    started = time.monotonic()
    wait_until(lambda: server.hub.subscriber_count == before, timeout=5, what="unsubscribe")
    assert time.monotonic() - started < 5
    gate(key).set()
    assert all_events(api, task_id)[-1][1] == "taskEnd"
