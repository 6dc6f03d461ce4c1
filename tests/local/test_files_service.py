"""The local server's files service, over real HTTP: uploads, streams (live,
framed, truncated), claim checks, files in and out of nodes, cleanup, restart,
and the task page's list of files."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from requence_task._errors import TruncatedError
from requence_task._files import frame, unframe
from requence_task._protocol import (
    FRAME_DATA,
    FRAME_END,
    FRAME_TRUNCATED,
    REFERENCE_TAG,
    STREAM_PROTOCOL_FRAMED,
    STREAM_PROTOCOL_HEADER,
    TAG_CLAIM_CHECK,
    TAG_FILE,
    TAG_STREAM,
)
from requence_task.local import (
    LocalRequence,
    NodeContext,
    RequenceFile,
    RequenceStream,
    Template,
    service,
)

from ..conftest import TIMEOUT, Api

MAX_FILE = 64 * 1024
MAX_PAYLOAD = 10_000
FRAMED = {STREAM_PROTOCOL_HEADER: STREAM_PROTOCOL_FRAMED}

# --- templates of this file ------------------------------------------------------

LIVE_GATE = threading.Event()


def file_echo(ctx: NodeContext) -> dict[str, Any]:
    doc = ctx.input["doc"]
    assert isinstance(doc, RequenceFile), type(doc)
    text = doc.read()
    return {
        "upper": RequenceFile(text.upper(), mime=doc.mime, name="upper.txt"),
        "lines": RequenceStream(iter([b"one\n", b"two\n"]), mime="text/plain"),
        "same": doc,
    }


def after_echo(ctx: NodeContext) -> dict[str, Any]:
    earlier = ctx.node_data("echo")
    return {"seen": earlier["upper"].read().decode(), "lines": earlier["lines"].read().decode()}


def live(ctx: NodeContext) -> Any:
    def chunks() -> Iterator[bytes]:
        yield b"first;"
        LIVE_GATE.wait(5)
        yield b"second"

    yield {"s": RequenceStream(chunks(), mime="text/plain")}


def broken(ctx: NodeContext) -> Any:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("the pipe burst")

    return {"s": RequenceStream(chunks(), mime="application/octet-stream")}


def big(ctx: NodeContext) -> dict[str, Any]:
    return {"blob": "x" * (2 * MAX_PAYLOAD)}


def count_rows(ctx: NodeContext) -> dict[str, Any]:
    return {"rows": len(ctx.input["rows"]), "first": ctx.input["rows"][0]}


def read_stream_input(ctx: NodeContext) -> dict[str, Any]:
    stream = ctx.input["s"]
    assert isinstance(stream, RequenceStream)
    return {"text": stream.read().decode()}


TEMPLATES = [
    Template(
        "echo-file", nodes=[service("echo", file_echo), service("after", after_echo, after="echo")]
    ),
    Template("echo-only", nodes=[service("echo", file_echo)]),
    Template("live", nodes=[service("live", live)]),
    Template("broken", nodes=[service("broken", broken)]),
    Template("big", nodes=[service("big", big)]),
    Template(
        "rows",
        input_schema={
            "type": "object",
            "required": ["rows"],
            "properties": {"rows": {"type": "array", "minItems": 3}},
        },
        nodes=[service("count", count_rows)],
    ),
    Template("stream-in", nodes=[service("read", read_stream_input)]),
    Template("noop", nodes=[]),
]


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    with LocalRequence(TEMPLATES, max_file_size=MAX_FILE, max_payload_size=MAX_PAYLOAD) as server:
        yield server


@pytest.fixture()
def api(rq: LocalRequence) -> Iterator[Api]:
    client = Api(rq.access_token)
    yield client
    client.close()


def upload(url: str, data: Any, mime: str | None = "text/plain", **kw: Any) -> requests.Response:
    headers = {} if mime is None else {"Content-Type": mime}
    return requests.post(url, data=data, headers=headers, timeout=TIMEOUT, **kw)


def ref_of(answer: dict[str, Any], tag: str = TAG_FILE) -> dict[str, Any]:
    return {REFERENCE_TAG: tag, **answer}


def file_id(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


def stored(rq: LocalRequence) -> set[str]:
    return {p.name for p in rq.engine.files.folder.iterdir()}


def read_frames(body: bytes) -> list[tuple[int, bytes]]:
    found = []
    while body:
        kind, length = body[0], int.from_bytes(body[1:5], "big")
        found.append((kind, body[5 : 5 + length]))
        body = body[5 + length :]
    return found


# --- prepare and upload ------------------------------------------------------------


def test_prepare_answers_file_urls_and_limits(rq: LocalRequence, api: Api) -> None:
    prepared = api.prepare("noop")
    urls = prepared["fileUrls"]
    assert set(urls) == {"uploadUrl", "streamUrl"}
    for url in urls.values():
        assert url.startswith(rq.base_url + "/files/")
        assert prepared["taskId"] in url
    assert urls["uploadUrl"] != urls["streamUrl"]
    assert prepared["limits"] == {"maxPayloadSize": MAX_PAYLOAD, "maxFileSize": MAX_FILE}
    # Another task has other URLs; the key is not guessable from the id.
    other = api.prepare("noop")["fileUrls"]
    assert other["uploadUrl"].rsplit("/", 1)[1] != urls["uploadUrl"].rsplit("/", 1)[1]


def test_default_limits_are_4_mib_payload_and_100_mib_files() -> None:
    server = LocalRequence()
    assert server.max_payload_size == 4 * 1024 * 1024
    assert server.max_file_size == 100 * 1024 * 1024


def test_upload_round_trip_without_authorization(api: Api) -> None:
    prepared = api.prepare("noop")
    answer = upload(prepared["fileUrls"]["uploadUrl"], b"hello bytes", "text/csv")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"url", "mime", "size"}
    assert body["mime"] == "text/csv" and body["size"] == 11
    got = requests.get(body["url"], timeout=TIMEOUT)  # no Authorization header
    assert got.status_code == 200
    assert got.content == b"hello bytes"
    assert got.headers["content-type"] == "text/csv"
    assert got.headers["content-length"] == "11"
    # The id is a long random capability, not a counter.
    assert len(file_id(body["url"])) >= 32


def test_empty_upload_is_a_file_and_default_type(api: Api) -> None:
    prepared = api.prepare("noop")
    body = upload(prepared["fileUrls"]["uploadUrl"], b"", None).json()
    assert body["size"] == 0
    assert body["mime"] == "application/octet-stream"
    got = requests.get(body["url"], timeout=TIMEOUT)
    assert got.status_code == 200 and got.content == b""
    assert got.headers["content-length"] == "0"


def test_upload_over_max_file_size_is_413_and_nothing_kept(rq: LocalRequence, api: Api) -> None:
    prepared = api.prepare("noop")
    before = stored(rq)
    declared = upload(prepared["fileUrls"]["uploadUrl"], b"x" * (MAX_FILE + 1))
    assert declared.status_code == 413
    assert str(MAX_FILE) in declared.text

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_FILE // 1000 + 5):
            yield b"y" * 1000

    chunked = upload(prepared["fileUrls"]["uploadUrl"], chunks())
    assert chunked.status_code == 413
    assert str(MAX_FILE) in chunked.text
    assert stored(rq) == before
    # Exactly the limit is fine.
    assert upload(prepared["fileUrls"]["uploadUrl"], b"z" * MAX_FILE).status_code == 200


def test_unknown_ids_and_bad_keys_are_404(rq: LocalRequence, api: Api) -> None:
    assert requests.get(rq.base_url + "/files/nope", timeout=TIMEOUT).status_code == 404
    assert requests.post(rq.base_url + "/files/nope", timeout=TIMEOUT).status_code == 404
    prepared = api.prepare("noop")
    url = prepared["fileUrls"]["uploadUrl"]
    forged = url[: url.rindex("/") + 1] + "A" * 32
    assert upload(forged, b"x").status_code == 404
    other = prepared["fileUrls"]["streamUrl"].replace(prepared["taskId"], "0" * 36)
    assert requests.post(other, timeout=TIMEOUT).status_code == 404


# --- streams -----------------------------------------------------------------------


def test_stream_live_framed_while_written_then_raw(api: Api) -> None:
    prepared = api.prepare("noop")
    registered = requests.post(
        prepared["fileUrls"]["streamUrl"], headers={"Content-Type": "text/plain"}, timeout=TIMEOUT
    )
    assert registered.status_code == 200, registered.text
    info = registered.json()
    assert set(info) == {"url", "mime"} and info["mime"] == "text/plain"
    url = info["url"]

    seen_first = threading.Event()
    go_on = threading.Event()
    read: list[bytes] = []
    errors: list[BaseException] = []

    def writer_body() -> Iterator[bytes]:
        yield b"alpha;"
        go_on.wait(5)
        yield b"beta"

    def reader() -> None:
        try:
            with requests.get(url, headers=FRAMED, stream=True, timeout=TIMEOUT) as answer:
                assert answer.headers[STREAM_PROTOCOL_HEADER] == STREAM_PROTOCOL_FRAMED
                for data in unframe(answer.iter_content(None), "test"):
                    read.append(data)
                    seen_first.set()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    writer = threading.Thread(
        target=lambda: read.append(b"<" + str(upload(url, writer_body()).status_code).encode())
    )
    writer.start()
    assert seen_first.wait(5), "the reader saw nothing while the stream was written"
    assert read[0] == b"alpha;"
    go_on.set()
    writer.join(5)
    thread.join(5)
    assert not errors, errors
    assert b"".join(x for x in read if not x.startswith(b"<")) == b"alpha;beta"
    assert b"<200" in read
    raw = requests.get(url, timeout=TIMEOUT)
    assert raw.content == b"alpha;beta"
    assert STREAM_PROTOCOL_HEADER not in raw.headers
    # A second body is refused.
    assert upload(url, b"again").status_code == 409


def test_framed_body_of_a_finished_stream_ends_with_the_end_frame(api: Api) -> None:
    prepared = api.prepare("noop")
    url = requests.post(prepared["fileUrls"]["streamUrl"], timeout=TIMEOUT).json()["url"]
    assert upload(url, b"").status_code == 200
    body = requests.get(url, headers=FRAMED, timeout=TIMEOUT).content
    assert read_frames(body) == [(FRAME_END, b"")]
    assert body == frame(FRAME_END)


def _half_post(rq: LocalRequence, url: str, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", rq.port), timeout=5)
    head = (
        f"POST {urlsplit(url).path} HTTP/1.1\r\nHost: 127.0.0.1:{rq.port}\r\n"
        "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode() + f"{len(data):x}\r\n".encode() + data + b"\r\n")
    return sock


def test_writer_dying_truncates_the_stream(rq: LocalRequence, api: Api) -> None:
    prepared = api.prepare("noop")
    url = requests.post(prepared["fileUrls"]["streamUrl"], timeout=TIMEOUT).json()["url"]
    sock = _half_post(rq, url, b"half of it")
    frames: list[tuple[int, bytes]] = []

    def reader() -> None:
        with requests.get(url, headers=FRAMED, stream=True, timeout=TIMEOUT) as answer:
            frames.extend(read_frames(answer.raw.read()))

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.2)
    sock.close()  # the writer's connection dies mid-body
    thread.join(5)
    assert frames[0] == (FRAME_DATA, b"half of it")
    assert frames[-1][0] == FRAME_TRUNCATED
    assert b"connection closed" in frames[-1][1]
    # Read again afterwards: the same; and a raw reader sees an incomplete body.
    again = read_frames(requests.get(url, headers=FRAMED, timeout=TIMEOUT).content)
    assert again == frames
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=TIMEOUT).content  # noqa: B018
    assert upload(url, b"late").status_code == 409


def test_stream_over_max_file_size_is_413_and_truncated(api: Api) -> None:
    prepared = api.prepare("noop")
    url = requests.post(prepared["fileUrls"]["streamUrl"], timeout=TIMEOUT).json()["url"]

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_FILE // 1000 + 5):
            yield b"s" * 1000

    answer = upload(url, chunks())
    assert answer.status_code == 413 and str(MAX_FILE) in answer.text
    last = read_frames(requests.get(url, headers=FRAMED, timeout=TIMEOUT).content)[-1]
    assert last[0] == FRAME_TRUNCATED and str(MAX_FILE).encode() in last[1]


# --- claim checks at finalize -------------------------------------------------------


def test_claim_check_input_is_resolved_before_the_schema(api: Api) -> None:
    prepared = api.prepare("rows")
    rows = [{"n": i} for i in range(5)]
    raw = json.dumps(rows, separators=(",", ":")).encode()
    answer = upload(prepared["fileUrls"]["uploadUrl"], raw, "application/json").json()
    check = {REFERENCE_TAG: TAG_CLAIM_CHECK, "url": answer["url"], "size": answer["size"]}
    response = api.finalize(prepared, input={"rows": check})
    assert response.status_code == 200, response.text
    info = api.wait_status(prepared["taskId"], "SUCCESSFUL")
    assert info["input"] == {"rows": check}  # stored as received
    assert info["result"] == {"rows": 5, "first": {"n": 0}}


def test_whole_input_as_a_claim_check(api: Api) -> None:
    prepared = api.prepare("rows")
    raw = json.dumps({"rows": [1, 2, 3]}).encode()
    answer = upload(prepared["fileUrls"]["uploadUrl"], raw, "application/json").json()
    check = {REFERENCE_TAG: TAG_CLAIM_CHECK, **answer}
    assert api.finalize(prepared, input=check).status_code == 200
    assert api.wait_status(prepared["taskId"], "SUCCESSFUL")["result"]["rows"] == 3


def test_claim_check_schema_failure_and_bad_claim_checks_are_422(
    rq: LocalRequence, api: Api
) -> None:
    prepared = api.prepare("rows")
    answer = upload(prepared["fileUrls"]["uploadUrl"], b"[1]", "application/json").json()
    short = {REFERENCE_TAG: TAG_CLAIM_CHECK, **answer}
    response = api.finalize(prepared, input={"rows": short})
    assert response.status_code == 422 and "schema" in response.text
    for bad in (
        {REFERENCE_TAG: TAG_CLAIM_CHECK, "url": rq.base_url + "/files/missing", "size": 3},
        {REFERENCE_TAG: TAG_CLAIM_CHECK, "url": "http://example.invalid/x", "size": 3},
        {REFERENCE_TAG: TAG_CLAIM_CHECK, "size": 3},
    ):
        prepared = api.prepare("rows")
        response = api.finalize(prepared, input={"rows": bad})
        assert response.status_code == 422, bad
        assert "claim check" in response.text.lower() or "ClaimCheck" in response.text
    prepared = api.prepare("rows")
    not_json = upload(prepared["fileUrls"]["uploadUrl"], b"{nope", "application/json").json()
    response = api.finalize(prepared, input={"rows": {REFERENCE_TAG: TAG_CLAIM_CHECK, **not_json}})
    assert response.status_code == 422 and "not JSON" in response.text


# --- files in and out of nodes --------------------------------------------------------


def test_node_gets_a_file_and_returns_a_file_a_stream_and_the_file(api: Api) -> None:
    prepared = api.prepare("echo-file")
    answer = upload(prepared["fileUrls"]["uploadUrl"], b"shout", "text/plain").json()
    doc = ref_of(answer)
    assert api.finalize(prepared, input={"doc": doc}).status_code == 200
    info = api.wait_status(prepared["taskId"], "SUCCESSFUL", "FAILED")
    assert info["status"] == "SUCCESSFUL", info
    echo = info["nodesData"][0]["data"]
    upper, lines, same = echo["upper"], echo["lines"], echo["same"]
    assert upper[REFERENCE_TAG] == TAG_FILE and upper["size"] == 5 and upper["name"] == "upper.txt"
    assert requests.get(upper["url"], timeout=TIMEOUT).content == b"SHOUT"
    assert lines[REFERENCE_TAG] == TAG_STREAM and lines["mime"] == "text/plain"
    framed = requests.get(lines["url"], headers=FRAMED, timeout=TIMEOUT).content
    assert b"".join(unframe([framed], "lines")) == b"one\ntwo\n"
    assert same == doc  # a received file passes on by its URL
    # A later node sees the earlier node's files as objects.
    assert info["result"] == {"seen": "SHOUT", "lines": "one\ntwo\n"}
    events = api.watch(prepared["taskId"])
    start = next(data for _, kind, data in events if kind == "taskStart")
    assert start["input"] == {"doc": doc}


def test_node_reads_a_stream_input(api: Api) -> None:
    prepared = api.prepare("stream-in")
    info = requests.post(prepared["fileUrls"]["streamUrl"], timeout=TIMEOUT).json()
    assert upload(info["url"], iter([b"str", b"eam"])).status_code == 200
    assert api.finalize(prepared, input={"s": ref_of(info, TAG_STREAM)}).status_code == 200
    assert api.wait_status(prepared["taskId"], "SUCCESSFUL")["result"] == {"text": "stream"}


def test_a_yielded_stream_is_announced_before_it_is_written(api: Api) -> None:
    LIVE_GATE.clear()
    task_id = api.start("live")
    deadline = time.monotonic() + 5
    data = None
    while data is None and time.monotonic() < deadline:
        nodes = api.task(task_id)["nodesData"]
        data = nodes[0]["data"] if nodes else None
        time.sleep(0.02)
    assert data is not None, "no nodeUpdate while the stream was still being written"
    url = data["s"]["url"]
    with requests.get(url, headers=FRAMED, stream=True, timeout=TIMEOUT) as answer:
        chunks = unframe(answer.iter_content(None), "live")
        assert next(chunks) == b"first;"
        LIVE_GATE.set()
        assert b"".join(chunks) == b"second"
    assert api.wait_status(task_id, "SUCCESSFUL")["result"]["s"]["url"] == url


def test_a_node_stream_that_raises_ends_truncated_with_its_message(api: Api) -> None:
    task_id = api.start("broken")
    info = api.wait_status(task_id, "SUCCESSFUL")
    url = info["result"]["s"]["url"]
    deadline = time.monotonic() + 5
    while True:
        frames = read_frames(requests.get(url, headers=FRAMED, timeout=TIMEOUT).content)
        if (frames and frames[-1][0] == FRAME_TRUNCATED) or time.monotonic() > deadline:
            break
    assert frames[0] == (FRAME_DATA, b"partial")
    assert frames[-1] == (FRAME_TRUNCATED, b"the pipe burst")
    with pytest.raises(TruncatedError, match="the pipe burst"):
        list(unframe([b"".join(frame(k, p) for k, p in frames)], "broken"))


def test_large_node_data_arrives_as_a_claim_check(api: Api) -> None:
    task_id = api.start("big")
    info = api.wait_status(task_id, "SUCCESSFUL")
    for value in (info["result"], info["nodesData"][0]["data"]):
        assert set(value) == {REFERENCE_TAG, "url", "size"}
        assert value[REFERENCE_TAG] == TAG_CLAIM_CHECK
        got = requests.get(value["url"], timeout=TIMEOUT)
        assert got.headers["content-type"] == "application/json"
        assert len(got.content) == value["size"]
        assert got.json() == {"blob": "x" * (2 * MAX_PAYLOAD)}
    update = next(d for _, kind, d in api.watch(task_id) if kind == "nodeUpdate")
    assert update["data"][REFERENCE_TAG] == TAG_CLAIM_CHECK


def test_task_page_lists_files(rq: LocalRequence, api: Api) -> None:
    prepared = api.prepare("echo-only")
    answer = upload(prepared["fileUrls"]["uploadUrl"], b"page", "text/plain").json()
    assert api.finalize(prepared, input={"doc": ref_of(answer)}).status_code == 200
    api.wait_status(prepared["taskId"], "SUCCESSFUL")
    page = requests.get(rq.base_url + f"/tasks/{prepared['taskId']}", timeout=TIMEOUT).text
    assert 'id="files"' in page
    assert "input.doc" in page and "result.upper" in page and "result.lines" in page
    assert "nodes.echo.upper" in page
    assert "4 B" in page and "size unknown" in page
    assert answer["url"] in page and "download" in page


# --- the bytes' life: cleanup and restart ------------------------------------------------


def test_cleanup_deletes_the_bytes() -> None:
    with LocalRequence(TEMPLATES, retention=0, cleanup_interval=3600) as server:
        api = Api(server.access_token)
        prepared = api.prepare("echo-only")
        answer = upload(prepared["fileUrls"]["uploadUrl"], b"gone", "text/plain").json()
        assert api.finalize(prepared, input={"doc": ref_of(answer)}).status_code == 200
        api.wait_status(prepared["taskId"], "SUCCESSFUL")
        folder = server.engine.files.folder
        assert len(list(folder.iterdir())) == 3  # the input, the node's file, its stream
        assert prepared["taskId"] in server.cleanup()
        assert list(folder.iterdir()) == []
        assert requests.get(answer["url"], timeout=TIMEOUT).status_code == 404
        api.close()
    assert not folder.exists()  # an in-memory store's folder goes with the server


def test_bytes_survive_a_restart_and_open_streams_end_truncated(tmp_path: Path) -> None:
    db = str(tmp_path / "local.db")
    LIVE_GATE.clear()
    with LocalRequence(TEMPLATES, db=db) as first:
        port = first.port
        api = Api(first.access_token)
        prepared = api.prepare("noop")
        answer = upload(prepared["fileUrls"]["uploadUrl"], b"kept", "text/plain").json()
        # A node's stream still being written when the server stops.
        live_task = api.start("live")
        deadline = time.monotonic() + 5
        while not api.task(live_task)["nodesData"] and time.monotonic() < deadline:
            time.sleep(0.02)
        stream = api.task(live_task)["nodesData"][0]["data"]["s"]
        with requests.get(stream["url"], headers=FRAMED, stream=True, timeout=TIMEOUT) as r:
            assert next(unframe(r.iter_content(None), "live")) == b"first;"
        api.close()
    LIVE_GATE.set()
    assert (tmp_path / "local.db.files").is_dir()
    with LocalRequence(TEMPLATES, db=db, port=port) as second:
        got = requests.get(answer["url"], timeout=TIMEOUT)
        assert got.content == b"kept" and got.headers["content-type"] == "text/plain"
        frames = read_frames(requests.get(stream["url"], headers=FRAMED, timeout=TIMEOUT).content)
        assert frames[0] == (FRAME_DATA, b"first;")
        assert frames[-1][0] == FRAME_TRUNCATED and b"stopped" in frames[-1][1]
        # The task's upload URL still works after the restart.
        again = upload(prepared["fileUrls"]["uploadUrl"], b"more")
        assert again.status_code == 200, again.text
        assert second.port == port


# --- one large upload ------------------------------------------------------------------


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_large_upload_streams_with_bounded_memory() -> None:
    size = 150 * 1024 * 1024
    with LocalRequence(TEMPLATES, max_file_size=200 * 1024 * 1024) as server:
        api = Api(server.access_token)
        prepared = api.prepare("noop")
        block = b"\x5a" * (1024 * 1024)

        def chunks() -> Iterator[bytes]:
            for _ in range(size // len(block)):
                yield block

        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], _rss())

        base = _rss()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            answer = upload(prepared["fileUrls"]["uploadUrl"], chunks(), "application/x-big")
        finally:
            done.set()
            sampler.join()
        assert answer.status_code == 200, answer.text
        assert answer.json()["size"] == size
        if base:
            grown = peak[0] - base
            print(f"server+client RSS grew by {grown / 1e6:.1f} MB")
            assert grown < 32 * 1024 * 1024, grown / 1e6
        path = server.engine.files.path(file_id(answer.json()["url"]))
        assert path.stat().st_size == size
        api.close()


def test_a_stream_left_open_by_a_crash_is_truncated_at_the_next_start(tmp_path: Path) -> None:
    import sqlite3

    db = str(tmp_path / "crash.db")
    with LocalRequence(TEMPLATES, db=db) as first:
        port = first.port
        api = Api(first.access_token)
        prepared = api.prepare("noop")
        url = requests.post(prepared["fileUrls"]["streamUrl"], timeout=TIMEOUT).json()["url"]
        api.close()
    # As if the process had died while the stream was written.
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE files SET state = 'open' WHERE id = ?", (file_id(url),))
    with LocalRequence(TEMPLATES, db=db, port=port):
        last = read_frames(requests.get(url, headers=FRAMED, timeout=TIMEOUT).content)[-1]
        assert last[0] == FRAME_TRUNCATED and b"restarted" in last[1]


def test_the_log_never_shows_a_files_path(
    rq: LocalRequence, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    prepared = api.prepare("noop")
    with caplog.at_level("DEBUG", logger="requence_task.local"):
        answer = upload(prepared["fileUrls"]["uploadUrl"], b"secret", "text/plain").json()
        requests.get(answer["url"], timeout=TIMEOUT)
        requests.get(rq.base_url + "/files/unknown-id", timeout=TIMEOUT)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "/files/…" in text
    assert file_id(answer["url"]) not in text
    assert prepared["fileUrls"]["uploadUrl"].rsplit("/", 1)[1] not in text
    assert "unknown-id" not in text
