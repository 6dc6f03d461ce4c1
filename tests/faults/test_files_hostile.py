"""Files, streams and claim checks against a files service of the tests' own
(tests/faults/hostile.py): what goes up, what comes down, and every way it
can go wrong. The local server's own files service is tested in
tests/local/test_files_service.py, and the client against it in
tests/client/test_files.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from requence_task import (
    CallbackError,
    ClaimCheckError,
    ClientClosedError,
    ConfigurationError,
    RequenceCallback,
    RequenceFile,
    RequenceStream,
    Task,
    TaskError,
    TruncatedError,
    UploadError,
    get_task,
    watch_tasks,
)
from requence_task._files import frame as data_frame

from .hostile import BEARER, TASK_ID, Handler, Hostile, frame, node, update
from .test_hostile import WAIT, make_client, started

TAG = "__REQUENCE_type"


def file_ref(url: str, size: int, mime: str = "application/octet-stream") -> dict[str, Any]:
    return {TAG: "RequenceFile", "url": url, "mime": mime, "size": size}


def ended_with(result: Any) -> Any:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.stream(
            started(),
            frame(2, "taskEnd", update(result=result, exit=None, requireAck=False)),
        )

    return script


def no_file_request_had_the_bearer(hostile: Hostile) -> None:
    for _method, path, headers in hostile.requests:
        if path.startswith("/files/"):
            assert "Authorization" not in headers, path
            assert BEARER not in json.dumps(headers)


# --- outbound ------------------------------------------------------------------------------


def test_nested_files_empty_files_and_streams_are_uploaded_before_finalize() -> None:
    logo = RequenceFile(b"\x89PNG", mime="image/png")
    empty = RequenceFile(b"", mime="text/plain")
    rows = RequenceStream(iter([b"a,b\n", b"", b"1,2\n"]), mime="text/csv")
    nothing = RequenceStream(iter([]), mime="text/csv")
    with Hostile(files=True, limits={"maxFileSize": 1000}) as hostile:
        with make_client(hostile) as client:
            task = Task(
                "hostile",
                {
                    "pages": [{"scan": logo}, {"scan": logo}],
                    "empty": empty,
                    "rows": rows,
                    "none": nothing,
                    "n": 1,
                },
                client=client,
            )
            assert task.finalized(timeout=WAIT) == TASK_ID
        (body,) = hostile.finalized
        given = body["input"]
        assert given["n"] == 1
        first, second = given["pages"][0]["scan"], given["pages"][1]["scan"]
        assert first == second and first[TAG] == "RequenceFile" and first["size"] == 4
        assert given["empty"][TAG] == "RequenceFile" and given["empty"]["size"] == 0
        assert given["rows"][TAG] == "RequenceStream" and given["rows"]["mime"] == "text/csv"
        stored = {hostile.base_url + path: data for path, (_m, data) in hostile.stored.items()}
        assert stored[first["url"]] == b"\x89PNG"
        assert stored[given["empty"]["url"]] == b""
        assert stored[given["rows"]["url"]] == b"a,b\n1,2\n"
        assert stored[given["none"]["url"]] == b""
        uploads = [path for path, _h, _b in hostile.uploads]
        assert uploads.count("/files/upload") == 2  # the same file object twice: once
        for path, headers, _ in hostile.uploads:
            assert headers.get("file-size") == "1000", path
        no_file_request_had_the_bearer(hostile)
        # Every upload came before the finalize.
        order = [path for _m, path, _h in hostile.requests]
        assert max(i for i, p in enumerate(order) if p.startswith("/files/")) < order.index(
            f"/task/finalize/{TASK_ID}"
        )


def test_a_file_from_a_path_is_streamed_with_its_length(tmp_path: Any) -> None:
    where = tmp_path / "scan.pdf"
    where.write_bytes(b"%PDF" + bytes(300_000))
    with Hostile(files=True) as hostile, make_client(hostile) as client:
        scan = RequenceFile.from_path(where)
        assert (scan.mime, scan.size, scan.name) == ("application/pdf", 300_004, "scan.pdf")
        Task("hostile", {"scan": scan}, client=client).finalized(timeout=WAIT)
        ((_path, headers, data),) = hostile.uploads
        assert (
            headers["Content-Length"] == "300004" and headers["Content-Type"] == "application/pdf"
        )
        assert data == where.read_bytes()
        assert hostile.finalized[0]["input"]["scan"]["name"] == "scan.pdf"


def _refuse(status: int, text: str) -> Any:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.read_body()
        handler.send_bytes(status, text.encode(), "text/plain")

    return script


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (_refuse(413, "too large for us"), ["input.pages[1].scan", "413", "too large for us"]),
        (_refuse(400, "bad file"), ["input.pages[1].scan", "HTTP 400", "bad file"]),
        (_refuse(200, "not json"), ["input.pages[1].scan", "not JSON"]),
    ],
    ids=["413", "400", "not-json"],
)
def test_a_refused_upload_fails_creation_naming_the_path(script: Any, words: list[str]) -> None:
    with Hostile(files=True, upload=script) as hostile, make_client(hostile) as client:
        scan = RequenceFile(b"x" * 10)
        task = Task("hostile", {"pages": [{"n": 1}, {"scan": scan}]}, client=client)
        with pytest.raises(UploadError) as caught:
            task.finalized(timeout=WAIT)
        for word in words:
            assert word in str(caught.value)
        assert caught.value.path == "input.pages[1].scan"
        assert caught.value.task_id == TASK_ID
        assert isinstance(caught.value, TaskError)
        with pytest.raises(UploadError):
            task.result(timeout=WAIT)  # never hangs
        assert hostile.finalized == []


@pytest.mark.parametrize(
    "answer",
    [
        {"mime": "x/y", "size": 3},
        {"url": "", "mime": "x/y", "size": 3},
        {"url": "http://h/f", "size": 3},
        {"url": "http://h/f", "mime": "x/y", "size": "3"},
        {"url": "http://h/f", "mime": "x/y", "size": True},
        {"url": "http://h/f", "mime": "x/y", "size": 4},  # not what was sent
    ],
)
def test_a_malformed_upload_answer_fails_creation(answer: dict[str, Any]) -> None:
    def script(handler: Handler, body: dict[str, Any]) -> None:
        handler.read_body()
        handler.send_json(200, answer)

    with Hostile(files=True, upload=script) as hostile, make_client(hostile) as client:
        task = Task("hostile", {"doc": RequenceFile(b"abc")}, client=client)
        with pytest.raises(UploadError, match=r"input\.doc"):
            task.finalized(timeout=WAIT)
        assert hostile.finalized == []


def test_a_stream_that_raises_fails_creation_and_sends_no_finalize() -> None:
    def rows() -> Iterator[bytes]:
        yield b"a,b\n"
        raise OSError("the disk went away")

    with Hostile(files=True) as hostile, make_client(hostile) as client:
        task = Task("hostile", {"rows": RequenceStream(rows(), mime="text/csv")}, client=client)
        with pytest.raises(UploadError, match=r"input\.rows.*OSError.*the disk went away"):
            task.finalized(timeout=WAIT)
        assert hostile.finalized == []


def test_a_stream_of_text_fails_creation_saying_so() -> None:
    with Hostile(files=True) as hostile, make_client(hostile) as client:
        task = Task("hostile", {"rows": RequenceStream(iter(["text"]))}, client=client)
        with pytest.raises(UploadError, match=r"input\.rows.*not bytes"):
            task.finalized(timeout=WAIT)
        assert hostile.finalized == []


def test_a_file_over_the_limit_is_refused_before_any_upload() -> None:
    with Hostile(files=True, limits={"maxFileSize": 100}) as hostile:
        with make_client(hostile) as client:
            small, large = RequenceFile(b"x"), RequenceFile(b"x" * 101)
            task = Task("hostile", {"a": small, "b": [large]}, client=client)
            with pytest.raises(UploadError, match=r"input\.b\[0\] is 101 B.*limit of 100 B"):
                task.finalized(timeout=WAIT)
        assert hostile.uploads == [] and hostile.finalized == []


def test_without_a_files_service_a_file_fails_creation_clearly() -> None:
    with Hostile() as hostile, make_client(hostile) as client:
        task = Task("hostile", {"doc": RequenceFile(b"abc")}, client=client)
        with pytest.raises(UploadError, match=r"input\.doc.*no files service"):
            task.finalized(timeout=WAIT)
        assert hostile.finalized == []


def test_uploads_of_files_are_retried_while_requence_is_unreachable() -> None:
    failures = [503, 502]

    def flaky(handler: Handler, body: dict[str, Any]) -> None:
        if failures:
            handler.read_body()
            handler.send_bytes(failures.pop(0), b"gateway", "text/plain")
            return
        handler.files_route(handler.read_body())

    with Hostile(files=True, upload=flaky) as hostile, make_client(hostile) as client:
        Task("hostile", {"doc": RequenceFile(b"abc")}, client=client).finalized(timeout=WAIT)
        assert len(hostile.finalized) == 1 and failures == []


def test_a_stream_partly_sent_is_not_sent_again() -> None:
    def drop(handler: Handler, body: dict[str, Any]) -> None:
        if handler.path == "/files/stream":
            handler.files_route(handler.read_body())
            return
        handler.rfile.read(10)  # some of the body, then the connection dies
        handler.close_connection = True
        handler.connection.close()

    def rows() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 1000

    with Hostile(files=True, upload=drop) as hostile, make_client(hostile) as client:
        task = Task("hostile", {"rows": RequenceStream(rows())}, client=client)
        with pytest.raises((UploadError, TaskError), match=r"input\.rows"):
            task.finalized(timeout=WAIT)
        bodies = [path for _m, path, _h in hostile.requests if path.startswith("/files/f/")]
        assert len(bodies) == 1  # not retried
        assert hostile.finalized == []


def test_a_stream_twice_or_already_read_is_refused_at_once() -> None:
    with Hostile(files=True) as hostile, make_client(hostile) as client:
        rows = RequenceStream(iter([b"a"]))
        with pytest.raises(ConfigurationError, match="twice in the input"):
            Task("hostile", {"a": rows, "b": rows}, client=client)
        assert not rows.consumed  # a refused input takes nothing
        Task("hostile", {"a": rows}, client=client).finalized(timeout=WAIT)
        with pytest.raises(ConfigurationError, match="already read or sent"):
            Task("hostile", {"a": rows}, client=client)
        with pytest.raises(ConfigurationError, match="not JSON serializable"):
            Task("hostile", {"a": RequenceFile(b"x"), "b": object()}, client=client)
        assert len(hostile.finalized) == 1


def test_a_remote_file_is_passed_on_as_its_reference() -> None:
    with Hostile(files=True) as hostile:
        url = hostile.store(b"hello", "text/plain")
        hostile.scripts["watch"].append(ended_with({"doc": file_ref(url, 5, "text/plain")}))
        with make_client(hostile, shared_stream=False) as client:
            doc = Task("hostile", client=client).result(timeout=WAIT).result["doc"]
            assert isinstance(doc, RequenceFile) and doc.is_remote
            Task("hostile", {"again": doc}, client=client).finalized(timeout=WAIT)
        assert hostile.finalized[-1]["input"]["again"] == file_ref(url, 5, "text/plain")
        assert not any(path == "/files/upload" for path, _h, _b in hostile.uploads)


def test_an_oversized_input_is_offloaded_largest_first() -> None:
    limits = {"maxPayloadSize": 3000}
    with Hostile(files=True, limits=limits) as hostile, make_client(hostile) as client:
        value = {"big": "b" * 2500, "mid": "m" * 1200, "small": "s" * 100, "n": 1}
        Task("hostile", value, client=client).finalized(timeout=WAIT)
        given = hostile.finalized[0]["input"]
        assert given["big"][TAG] == "ClaimCheck" and given["big"]["size"] == 2502
        assert given["mid"] == "m" * 1200 and given["small"] == "s" * 100 and given["n"] == 1
        path = given["big"]["url"].removeprefix(hostile.base_url)
        assert json.loads(hostile.stored[path][1]) == "b" * 2500
        headers = hostile.uploads[0][1]
        assert headers["Content-Type"] == "application/json"
        assert "Authorization" not in headers


def test_an_oversized_input_that_is_not_an_object_is_offloaded_whole() -> None:
    with Hostile(files=True, limits={"maxPayloadSize": 1000}) as hostile:
        with make_client(hostile) as client:
            value = ["x" * 100] * 30
            Task("hostile", value, client=client).finalized(timeout=WAIT)
        given = hostile.finalized[0]["input"]
        assert given[TAG] == "ClaimCheck"
        path = given["url"].removeprefix(hostile.base_url)
        assert json.loads(hostile.stored[path][1]) == value


def test_an_oversized_input_with_a_file_offloads_the_references() -> None:
    with Hostile(files=True, limits={"maxPayloadSize": 2000}) as hostile:
        with make_client(hostile) as client:
            value = {"rows": [{"doc": RequenceFile(b"abc"), "text": "t" * 30} for _ in range(60)]}
            Task("hostile", value, client=client).finalized(timeout=WAIT)
        given = hostile.finalized[0]["input"]
        assert given["rows"][TAG] == "ClaimCheck"
        path = given["rows"]["url"].removeprefix(hostile.base_url)
        offloaded = json.loads(hostile.stored[path][1])
        assert offloaded[0]["doc"][TAG] == "RequenceFile"  # references, not bytes


# --- inbound -------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["own-stream", "shared-stream"])
def test_files_and_claim_checks_in_a_result_become_data(shared: bool) -> None:
    with Hostile(files=True) as hostile:
        doc_url = hostile.store(b"hello world", "text/plain")
        empty_url = hostile.store(b"")
        claim_url = hostile.store(
            json.dumps(
                {"rows": list(range(5)), "doc": file_ref(doc_url, 11, "text/plain")}
            ).encode()
        )
        result = {
            "doc": file_ref(doc_url, 11, "text/plain"),
            "empty": file_ref(empty_url, 0),
            "big": {TAG: "ClaimCheck", "url": claim_url, "size": 60},
            "call": {TAG: "RequenceCallback", "lifetime": "task"},
            "other": {TAG: "SomethingNew", "x": 1},
        }
        route = "watch_all" if shared else "watch"
        hostile.scripts[route.replace("_", "-")].append(ended_with(result))
        with make_client(hostile, shared_stream=shared) as client:
            got = Task("hostile", client=client).result(timeout=WAIT).result
            assert isinstance(got["doc"], RequenceFile)
            assert (got["doc"].mime, got["doc"].size, got["doc"].text()) == (
                "text/plain",
                11,
                "hello world",
            )
            assert got["empty"].read() == b""
            assert got["big"]["rows"] == [0, 1, 2, 3, 4]
            assert got["big"]["doc"].read() == b"hello world"
        with pytest.raises(ClientClosedError):
            got["doc"].read()  # reads stop with the client that made them
        assert isinstance(got["call"], RequenceCallback)
        with pytest.raises(CallbackError):
            got["call"]()
        assert got["other"] == {TAG: "SomethingNew", "x": 1}  # unknown: left as it is
        no_file_request_had_the_bearer(hostile)


def test_a_claim_check_that_cannot_be_fetched_fails_the_result_naming_the_field() -> None:
    result = {"rows": {TAG: "ClaimCheck", "url": "http://127.0.0.1:9/gone", "size": 10}}
    with Hostile(files=True, file_routes={"/files/f/gone": _refuse(404, "gone")}) as hostile:
        result["rows"]["url"] = hostile.base_url + "/files/f/gone"
        hostile.scripts["watch"].append(ended_with(result))
        hostile.scripts["watch"].append(ended_with(result))
        with make_client(hostile, shared_stream=False) as client:
            with pytest.raises(ClaimCheckError, match=r"result\.rows.*404") as caught:
                Task("hostile", client=client).result(timeout=WAIT)
            assert caught.value.path == "result.rows"
            assert "/files/f/gone" not in str(caught.value)
            seen = []
            with pytest.raises(ClaimCheckError):
                for item in Task("hostile", client=client).updates(timeout=WAIT):
                    seen.append(item.type)
            assert seen == ["taskStart"]  # raised at the update that held it


def test_a_node_data_claim_check_keeps_the_order_of_updates() -> None:
    def slow(handler: Handler, body: dict[str, Any]) -> None:
        time.sleep(0.5)
        handler.send_bytes(200, b'{"text": "long"}', "application/json")

    def script(handler: Handler, body: dict[str, Any]) -> None:
        claim = {TAG: "ClaimCheck", "url": handler.hostile.base_url + "/files/f/slow", "size": 16}
        handler.stream(
            started(),
            frame(2, "nodeUpdate", update(node=node("ocr"), data=claim, output=None)),
            frame(3, "nodeUpdate", update(node=node("ocr"), data={"text": "short"}, output=None)),
            frame(4, "taskEnd", update(result="done", exit=None, requireAck=False)),
        )

    routes = {"/files/f/slow": slow}
    with (
        Hostile(files=True, watch=[script], file_routes=routes) as hostile,
        make_client(hostile, shared_stream=False) as client,
    ):
        task = Task("hostile", client=client)
        updates = list(task.updates(timeout=WAIT))
        assert [u.position for u in updates] == [1, 2, 3, 4]
        assert updates[1].data == {"text": "long"}  # type: ignore[attr-defined]
        assert task.result(timeout=WAIT).get_node_data("ocr") == {"text": "short"}


def test_one_tasks_claim_check_does_not_delay_anothers_updates_on_a_watcher() -> None:
    release = threading.Event()

    def slow(handler: Handler, body: dict[str, Any]) -> None:
        release.wait(10)
        handler.send_bytes(200, b'"late"', "application/json")

    def script(handler: Handler, body: dict[str, Any]) -> None:
        claim = {TAG: "ClaimCheck", "url": handler.hostile.base_url + "/files/f/slow", "size": 6}
        handler.stream(
            frame(1, "taskStart", update("t-a", input=claim)),
            frame(2, "taskStart", update("t-b", input={"n": 2})),
            frame(3, "nodeStart", update("t-a", node=node("x"))),
            frame(4, "nodeStart", update("t-b", node=node("y"))),
        )
        time.sleep(5)

    routes = {"/files/f/slow": slow}
    with (
        Hostile(files=True, watch_all=[script], file_routes=routes) as hostile,
        make_client(hostile) as client,
        watch_tasks(None, client=client) as watcher,
    ):
        items = watcher.updates(timeout=WAIT)
        first, second = next(items), next(items)
        assert [(u.task_id, u.position) for u in (first, second)] == [("t-b", 2), ("t-b", 4)]
        release.set()
        third, fourth = next(items), next(items)
        assert [(u.task_id, u.position) for u in (third, fourth)] == [("t-a", 1), ("t-a", 3)]
        assert third.input == "late"  # type: ignore[attr-defined]


def test_a_watcher_reports_an_unreadable_claim_check_and_goes_on() -> None:
    errors: list[BaseException] = []

    def script(handler: Handler, body: dict[str, Any]) -> None:
        claim = {TAG: "ClaimCheck", "url": handler.hostile.base_url + "/files/f/gone", "size": 6}
        handler.stream(
            frame(1, "taskStart", update("t-a", input=claim)),
            frame(2, "taskStart", update("t-b", input={"n": 2})),
        )
        time.sleep(5)

    routes = {"/files/f/gone": _refuse(404, "gone")}
    with (
        Hostile(files=True, watch_all=[script], file_routes=routes) as hostile,
        make_client(hostile) as client,
        watch_tasks(None, client=client, on_error=errors.append) as watcher,
    ):
        seen: list[Any] = []
        with pytest.raises(ClaimCheckError, match=r"t-a.*input"):
            for item in watcher.updates(timeout=WAIT):
                seen.append(item.task_id)
        if "t-b" not in seen:  # the other task's update may come after the error
            seen.append(next(watcher.updates(timeout=WAIT)).task_id)
        assert seen == ["t-b"]
        assert watcher.running
    assert len(errors) == 1 and isinstance(errors[0], ClaimCheckError)


def test_get_task_fetches_claim_checks_and_raises_when_it_cannot() -> None:
    with Hostile(files=True) as hostile:
        url = hostile.store(b'{"rows": [1, 2]}', "application/json")
        hostile.task_body = {
            "status": "SUCCESSFUL",
            "input": {"doc": file_ref(hostile.store(b"abc"), 3)},
            "result": {TAG: "ClaimCheck", "url": url, "size": 16},
            "nodesData": [{"alias": "ocr", "data": {"text": {TAG: "ClaimCheck", "url": url}}}],
        }
        with make_client(hostile) as client:
            info = get_task(TASK_ID, client=client)
            assert info.context.result == {"rows": [1, 2]}
            assert info.context.input["doc"].read() == b"abc"
            assert info.context.node_data["ocr"] == {"text": {"rows": [1, 2]}}
            hostile.task_body["nodesData"][0]["data"]["text"]["url"] = url + "-gone"
            with pytest.raises(ClaimCheckError, match=r"nodes\.ocr\.data\.text") as caught:
                get_task(TASK_ID, client=client)
            assert url not in str(caught.value)


def test_a_framed_stream_reads_and_a_truncated_one_raises() -> None:
    def framed(*frames: bytes) -> Any:
        def script(handler: Handler, body: dict[str, Any]) -> None:
            assert handler.headers["x-requence-stream-protocol"] == "framed"
            handler.send_response(200)
            handler.send_header("Content-Type", "text/csv")
            handler.send_header("x-requence-stream-protocol", "framed")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for part in frames:
                handler.chunk(part)
            handler.end_stream()

        return script

    routes = {
        "/files/f/whole": framed(data_frame(0, b"a,b\n"), data_frame(0, b"1,2\n"), data_frame(1)),
        "/files/f/stopped": framed(data_frame(0, b"a,b\n"), data_frame(2, b"the exporter died")),
        "/files/f/cut": framed(data_frame(0, b"a,b\n")),
        "/files/f/raw": lambda handler, body: handler.send_bytes(200, b"raw bytes", "text/csv"),
    }
    with Hostile(files=True, file_routes=routes) as hostile:
        base = hostile.base_url

        def ref(name: str) -> dict[str, Any]:
            return {TAG: "RequenceStream", "url": f"{base}/files/f/{name}", "mime": "text/csv"}

        result = {name: ref(name) for name in ("whole", "stopped", "cut", "raw")}
        hostile.scripts["watch"].append(ended_with(result))
        with make_client(hostile, shared_stream=False) as client:
            got = Task("hostile", client=client).result(timeout=WAIT).result
            assert isinstance(got["whole"], RequenceStream)
            assert got["whole"].read() == b"a,b\n1,2\n"
            assert got["whole"].read() == b"a,b\n1,2\n"  # remote: read again
            with pytest.raises(TruncatedError, match="stopped early: the exporter died"):
                got["stopped"].read()
            with pytest.raises(TruncatedError, match="without its end frame"):
                got["cut"].read()
            assert got["raw"].read() == b"raw bytes"
            assert "files/f" not in repr(got["whole"]) and "127.0.0.1" in repr(got["whole"])


def test_a_file_shorter_than_its_size_raises() -> None:
    with Hostile(files=True) as hostile:
        url = hostile.store(b"abc")
        hostile.scripts["watch"].append(ended_with({"doc": file_ref(url, 10)}))
        with make_client(hostile, shared_stream=False) as client:
            doc = Task("hostile", client=client).result(timeout=WAIT).result["doc"]
            with pytest.raises(TruncatedError, match="after 3 of 10 bytes"):
                doc.read()


def test_closing_the_client_stops_a_download_under_way() -> None:
    def endless(handler: Handler, body: dict[str, Any]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        for _ in range(600):
            try:
                handler.wfile.write(b"x" * 1000)
                handler.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    with Hostile(files=True, file_routes={"/files/f/endless": endless}) as hostile:
        ref = file_ref(hostile.base_url + "/files/f/endless", 10**9)
        hostile.scripts["watch"].append(ended_with({"doc": ref}))
        client = make_client(hostile, shared_stream=False)
        doc = Task("hostile", client=client).result(timeout=WAIT).result["doc"]
        errors: list[BaseException] = []

        def read() -> None:
            try:
                for _ in doc.iter_bytes():
                    pass
            except BaseException as err:
                errors.append(err)

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        began = time.monotonic()
        client.close()
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - began < 3
        assert isinstance(errors[0], ClientClosedError)


def test_logs_reprs_and_errors_never_show_a_file_url(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with Hostile(files=True, file_routes={"/files/f/secret-gone": _refuse(404, "x")}) as hostile:
        url = hostile.store(b"hello")
        secret = url.rsplit("/", 1)[1]
        gone = hostile.base_url + "/files/f/secret-gone"
        hostile.scripts["watch"].append(
            ended_with({"doc": file_ref(url, 5), "gone": file_ref(gone, 5)})
        )
        with make_client(hostile, shared_stream=False) as client:
            task = Task("hostile", {"up": RequenceFile(b"abc")}, client=client)
            got = task.result(timeout=WAIT).result
            assert got["doc"].read() == b"hello"
            with pytest.raises(Exception) as caught:
                got["gone"].read()
            texts = [repr(got), repr(got["doc"]), str(caught.value), caplog.text]
            uploaded = hostile.finalized[0]["input"]["up"]["url"].rsplit("/", 1)[1]
            for text in texts:
                assert secret not in text and "secret-gone" not in text and uploaded not in text
            assert "/files/" not in caplog.text


def test_result_as_takes_file_fields() -> None:
    @attrs.define
    class Scan:
        doc: RequenceFile
        pages: int

    with Hostile(files=True) as hostile:
        url = hostile.store(b"%PDF")
        hostile.scripts["watch"].append(ended_with({"doc": file_ref(url, 4), "pages": 2}))
        with make_client(hostile, shared_stream=False) as client:
            scan = Task("hostile", client=client).result(timeout=WAIT).result_as(Scan)
            assert scan.pages == 2 and scan.doc.read() == b"%PDF"
