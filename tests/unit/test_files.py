"""Files, streams, framing and references, with no server: the pure parts."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task import (
    ApiError,
    CallbackError,
    ClaimCheckError,
    ConfigurationError,
    RequenceCallback,
    RequenceFile,
    RequenceStream,
    TruncatedError,
)
from requence_task._files import frame, human_size, remote_file, unframe
from requence_task._transfer import snapshot_input
from requence_task._wire import Hydrator, key_path

TAG = "__REQUENCE_type"


def no_opener(url: str, *, chunk_size: int, framed: bool) -> tuple[Iterator[bytes], bool]:
    raise AssertionError("no request is made here")


def serving(data: bytes, framed: bool = False) -> Any:
    def opener(url: str, *, chunk_size: int, framed_asked: bool = False, **_: Any) -> Any:
        return iter([data[i : i + 3] for i in range(0, len(data), 3)]), framed

    return lambda url, *, chunk_size, framed: opener(url, chunk_size=chunk_size)


# --- local files ---------------------------------------------------------------------------


def test_a_file_of_bytes_reads_every_way(tmp_path: Path) -> None:
    doc = RequenceFile(b'{"a": [1, 2]}', mime="application/json", name="doc.json")
    assert (doc.mime, doc.size, doc.name, doc.is_remote) == (
        "application/json",
        13,
        "doc.json",
        False,
    )
    assert doc.read() == b'{"a": [1, 2]}'
    assert doc.text() == '{"a": [1, 2]}'
    assert doc.json() == {"a": [1, 2]}
    assert list(doc.iter_bytes(5)) == [b'{"a":', b" [1, ", b"2]}"]
    assert doc.save(tmp_path) == tmp_path / "doc.json"
    assert (tmp_path / "doc.json").read_bytes() == doc.read()
    assert doc.save(tmp_path / "other.bin").read_bytes() == doc.read()
    assert not list(tmp_path.glob("*.part"))


def test_an_empty_file_is_a_file() -> None:
    empty = RequenceFile(b"")
    assert empty.size == 0 and empty.read() == b"" and list(empty.iter_bytes()) == []


def test_a_file_from_a_path_guesses_its_type_and_streams(tmp_path: Path) -> None:
    where = tmp_path / "table.csv"
    where.write_bytes(b"a,b\n" * 10_000)
    table = RequenceFile.from_path(where)
    assert (table.mime, table.size, table.name) == ("text/csv", 40_000, "table.csv")
    chunks = list(table.iter_bytes(16_384))
    assert [len(c) for c in chunks] == [16_384, 16_384, 7_232]
    assert RequenceFile.from_path(where, mime="text/plain", name="t").mime == "text/plain"
    unknown = tmp_path / "blob"
    unknown.write_bytes(b"x")
    assert RequenceFile.from_path(unknown).mime == "application/octet-stream"


def test_a_file_on_disk_that_changes_size_is_an_error(tmp_path: Path) -> None:
    where = tmp_path / "grows.txt"
    where.write_bytes(b"abc")
    grows = RequenceFile.from_path(where)
    where.write_bytes(b"abcdef")
    with pytest.raises(TruncatedError, match="changed size"):
        grows.read()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: RequenceFile("text"), "takes bytes, not str"),  # type: ignore[arg-type]
        (lambda p: RequenceFile(b"x", mime="png"), "MIME type"),
        (lambda p: RequenceFile(b"x", name=3), "name must be"),  # type: ignore[arg-type]
        (lambda p: RequenceFile.from_path(p / "missing.pdf"), "cannot read"),
        (lambda p: RequenceFile.from_path(p), "is not a file"),
        (lambda p: RequenceStream(b"bytes"), "use RequenceFile"),  # type: ignore[arg-type]
        (lambda p: RequenceStream(3), "iterable of bytes"),  # type: ignore[arg-type]
        (lambda p: RequenceFile(b"x").iter_bytes(0), "chunk_size"),
    ],
)
def test_bad_arguments_say_what_to_do(tmp_path: Path, make: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        make(tmp_path)


# --- local streams -------------------------------------------------------------------------


def test_a_local_stream_is_read_once() -> None:
    rows = RequenceStream(iter([b"a,", b"", b"b"]), mime="text/csv", name="rows.csv")
    assert not rows.consumed
    assert rows.read() == b"a,b"
    assert rows.consumed
    with pytest.raises(ConfigurationError, match="already read"):
        rows.read()


def test_a_stream_of_a_file_object(tmp_path: Path) -> None:
    assert RequenceStream(io.BytesIO(b"x" * 100_000)).read() == b"x" * 100_000
    saved = RequenceStream(io.BytesIO(b"abc"), name="s.bin").save(tmp_path)
    assert saved == tmp_path / "s.bin" and saved.read_bytes() == b"abc"
    with pytest.raises(ConfigurationError, match="binary mode"):
        RequenceStream(io.StringIO("text")).read()  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not bytes"):
        RequenceStream(iter(["text"])).read()  # type: ignore[list-item]


def test_a_failed_save_leaves_no_half_file(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield b"abc"
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        RequenceStream(broken()).save(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


# --- remote objects and their views ---------------------------------------------------------


def test_a_remote_file_checks_its_size_and_shows_no_url() -> None:
    url = "https://files.example:8443/f/secret-capability"
    doc = remote_file(url, mime="text/plain", size=5, opener=serving(b"hello"))
    assert doc.is_remote and doc.read() == b"hello"
    assert "secret-capability" not in repr(doc) and "files.example:8443" in repr(doc)
    short = remote_file(url, mime="text/plain", size=9, opener=serving(b"hello"))
    with pytest.raises(TruncatedError, match="after 5 of 9 bytes"):
        short.read()
    long = remote_file(url, mime="text/plain", size=2, opener=serving(b"hello"))
    with pytest.raises(TruncatedError, match="more bytes"):
        long.read()
    bundle = doc._repr_mimebundle_()
    assert "secret-capability" not in json.dumps(bundle)


def test_an_image_shows_as_the_image_up_to_a_size() -> None:
    png = RequenceFile(b"\x89PNG\r\n", mime="image/png", name="a.png")
    bundle = png._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]) == b"\x89PNG\r\n"
    big = RequenceFile(bytes(6 * 1024 * 1024), mime="image/png")
    assert "image/png" not in big._repr_mimebundle_()
    text = RequenceFile(b"hi", mime="text/plain", name="<b>.txt")
    html = text._repr_mimebundle_()["text/html"]
    assert "&lt;b&gt;.txt" in html and "text/plain" in html and "2 B" in html


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1, 999, 1500, 2_500_000, None)] == [
        "0 B",
        "1 byte",
        "999 B",
        "1.5 kB",
        "2.5 MB",
        "unknown size",
    ]


def test_a_callback_cannot_be_called() -> None:
    callback = RequenceCallback({TAG: "RequenceCallback", "lifetime": "task"})
    assert callback.lifetime == "task"
    with pytest.raises(CallbackError, match="cannot call"):
        callback()


# --- framing -------------------------------------------------------------------------------


def test_frames_round_trip_cut_anywhere() -> None:
    body = frame(0, b"hello ") + frame(0, b"") + frame(0, b"world") + frame(1)
    for cut in (1, 2, 5, 7, len(body)):
        chunks = [body[i : i + cut] for i in range(0, len(body), cut)]
        assert b"".join(unframe(chunks, "s")) == b"hello world"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (frame(0, b"a") + frame(2, b"disk full"), "stopped early: disk full"),
        (frame(0, b"a"), "without its end frame"),
        (frame(0, b"a") + frame(0, b"bc")[:4], "without its end frame"),
        (frame(1) + frame(0, b"x"), "after the stream's end"),
        (frame(7, b"?"), "unknown frame type 7"),
    ],
)
def test_a_framed_body_that_does_not_end_well_raises(body: bytes, words: str) -> None:
    with pytest.raises(TruncatedError, match=words):
        b"".join(unframe([body], "the stream"))


# --- references ----------------------------------------------------------------------------


def test_paths_are_spelled_as_in_errors() -> None:
    assert key_path(key_path(key_path("input", "pages"), 0), "scan") == "input.pages[0].scan"
    assert key_path("input", "two words") == 'input["two words"]'


def test_hydration_leaves_unknown_tags_and_bounds_claim_checks() -> None:
    hydrate = Hydrator(no_opener)
    value = {"a": [{TAG: "Future", "x": 1}], "b": {TAG: "RequenceCallback", "lifetime": 1}}
    got: Any = hydrate(value, "result")
    assert got["a"] == [{TAG: "Future", "x": 1}]
    assert isinstance(got["b"], RequenceCallback)
    with pytest.raises(ApiError, match=r"result\.doc: a RequenceFile reference"):
        hydrate({"doc": {TAG: "RequenceFile", "url": "u", "mime": "x/y"}}, "result")
    with pytest.raises(ClaimCheckError, match="cannot be fetched here"):
        hydrate({"big": {TAG: "ClaimCheck", "url": "u", "size": 1}}, "result")
    loop = {TAG: "ClaimCheck", "url": "u", "size": 1}
    endless = Hydrator(no_opener, lambda url, path: loop)
    with pytest.raises(ClaimCheckError, match="nested more than 8"):
        endless({"x": loop}, "result")


def test_an_input_is_kept_as_it_was_when_the_task_was_made() -> None:
    value: dict[str, Any] = {"n": [1, 2], "doc": RequenceFile(b"x")}
    pending = snapshot_input(value)
    value["n"].append(3)
    assert pending.shape["n"] == [1, 2]  # type: ignore[index]
    assert [path for _item, path in pending.items] == ["input.doc"]
    assert snapshot_input({"n": 1}).text == '{"n":1}'
