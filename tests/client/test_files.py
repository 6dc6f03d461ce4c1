"""Files, streams and claim checks, the client against the local Requence over HTTP:
what goes in comes out, large files stream with bounded memory, and claim
checks travel both ways."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requence_task import (
    Client,
    RequenceFile,
    RequenceStream,
    Task,
    UploadError,
    get_task,
    recreate_task,
    watch_tasks,
)
from requence_task.local import LocalRequence, NodeContext, Template, service

WAIT = 60


def _echo_files(ctx: NodeContext) -> dict[str, Any]:
    doc = ctx.input["doc"]  # a RequenceFile or a RequenceStream
    data = doc.read()
    return {
        "size": len(data),
        "mime": doc.mime,
        "digest": hashlib.sha256(data).hexdigest(),
        "back": RequenceFile(data, mime=doc.mime, name="back.bin"),
        "same": doc,  # passed on as it is
    }


def _lines(ctx: NodeContext) -> dict[str, Any]:
    count = int(ctx.input["lines"])

    def produce() -> Iterator[bytes]:
        for n in range(count):
            yield f"{n}\n".encode()

    return {"rows": RequenceStream(produce(), mime="text/csv")}


def _big_output(ctx: NodeContext) -> dict[str, Any]:
    return {"blob": "y" * int(ctx.input["size"])}


def _input_size(ctx: NodeContext) -> dict[str, Any]:
    return {"length": len(ctx.input["blob"]), "n": ctx.input["n"]}


TEMPLATES = [
    Template("echo-file", nodes=[service("echo", _echo_files)]),
    Template("lines", nodes=[service("lines", _lines)]),
    Template(
        "big-output",
        nodes=[service("big", _big_output)],
        result=lambda ctx: ctx.node_data("big"),
    ),
    Template(
        "input-size",
        nodes=[service("size", _input_size)],
        result=lambda ctx: ctx.node_data("size"),
    ),
]


@pytest.fixture(scope="module")
def rq() -> Iterator[LocalRequence]:
    with LocalRequence(TEMPLATES, max_payload_size=100_000) as server:
        yield server


@pytest.fixture
def client(rq: LocalRequence) -> Iterator[Client]:
    with Client(rq.access_token) as the_client:
        yield the_client


@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256)) * 1000], ids=["0", "1", "256k"])
def test_a_file_goes_in_and_comes_back(client: Client, data: bytes) -> None:
    task = Task("echo-file", {"doc": RequenceFile(data, mime="image/png")}, client=client)
    echoed = task.result(timeout=WAIT).get_node_data("echo")
    assert (echoed["size"], echoed["mime"]) == (len(data), "image/png")
    assert echoed["digest"] == hashlib.sha256(data).hexdigest()
    assert isinstance(echoed["back"], RequenceFile) and echoed["back"].read() == data
    assert echoed["same"].read() == data and echoed["back"].name == "back.bin"


def test_a_stream_result_reads_as_it_comes(client: Client) -> None:
    rows = Task("lines", {"lines": 20_000}, client=client).result(timeout=WAIT)
    stream = rows.get_node_data("lines")["rows"]
    assert isinstance(stream, RequenceStream) and stream.mime == "text/csv"
    text = stream.text()
    assert text.splitlines() == [str(n) for n in range(20_000)]
    assert stream.text() == text  # again


def test_an_empty_stream_goes_in(client: Client) -> None:
    empty = RequenceStream(iter([]), mime="text/plain")
    echoed = Task("echo-file", {"doc": empty}, client=client).result(timeout=WAIT)
    data = echoed.get_node_data("echo")
    assert (data["size"], data["mime"]) == (0, "text/plain")
    assert isinstance(data["same"], RequenceStream) and data["same"].read() == b""


def test_claim_checks_both_ways(client: Client, rq: LocalRequence) -> None:
    # In: a 300 KB input over the 100 KB payload limit is offloaded and resolved.
    task = Task("input-size", {"blob": "z" * 300_000, "n": 7}, client=client)
    assert task.result(timeout=WAIT).result == {"length": 300_000, "n": 7}
    # Out: a 200 KB node output travels by claim check and arrives as data.
    big = Task("big-output", {"size": 200_000}, client=client).result(timeout=WAIT)
    assert big.result == {"blob": "y" * 200_000}
    assert big.get_node_data("big") == {"blob": "y" * 200_000}
    info = get_task(big.task_id, client=client)
    assert info.context.result == {"blob": "y" * 200_000}


def test_get_task_watch_tasks_and_recreate_see_files(client: Client) -> None:
    with watch_tasks(None, client=client) as watcher:
        task = Task("echo-file", {"doc": RequenceFile(b"abc", mime="text/plain")}, client=client)
        task.result(timeout=WAIT)
        for update in watcher.updates(timeout=WAIT):
            if update.task_id == task.task_id() and update.type == "taskStart":
                assert update.input["doc"].read() == b"abc"  # type: ignore[attr-defined]
                break
    info = get_task(task.task_id(), client=client)
    assert isinstance(info.context.input["doc"], RequenceFile)
    assert info.context.node_data["echo"]["back"].read() == b"abc"
    again = recreate_task(task.task_id(), client=client)
    assert again.result(timeout=WAIT).get_node_data("echo")["size"] == 3


def test_a_file_over_the_servers_limit_is_refused_before_upload() -> None:
    with LocalRequence(TEMPLATES, max_file_size=1000) as small, Client(small.access_token) as c:
        task = Task("echo-file", {"doc": RequenceFile(b"x" * 1001)}, client=c)
        with pytest.raises(UploadError, match=r"input\.doc is 1\.0 kB \(1001 bytes\)"):
            task.finalized(timeout=WAIT)
        rows = RequenceStream(iter([b"x" * 600, b"x" * 600]))
        task = Task("echo-file", {"doc": rows}, client=c)
        with pytest.raises(UploadError, match=r"input\.doc is larger than Requence accepts"):
            task.finalized(timeout=WAIT)


_LARGE = """
import os, resource, sys
from requence_task import Client, RequenceFile, Task
from requence_task.local import LocalRequence, Template, service

SIZE = int(sys.argv[1])
path = sys.argv[2]
with open(path, "wb") as out:
    block = os.urandom(1 << 20)
    for _ in range(SIZE >> 20):
        out.write(block)
templates = [Template("keep", nodes=[service("keep", lambda ctx: {"doc": ctx.input["doc"]})])]
with LocalRequence(templates, max_file_size=SIZE + 1) as rq, Client(rq.access_token) as client:
    def rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    base = rss()
    doc = RequenceFile.from_path(path)
    result = Task("keep", {"doc": doc}, client=client).result(timeout=600)
    back = result.get_node_data("keep")["doc"]
    seen = 0
    for chunk in back.iter_bytes(1 << 20):
        seen += len(chunk)
    saved = back.save(path + ".back")
    print(seen, saved.stat().st_size, rss() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_file_over_100_mb_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 120 MB file goes up, is kept by a node, comes back by iter_bytes() and save():
    the process (client and local server in one) grows by far less than the file."""
    size = 120 << 20
    script = tmp_path / "large.py"
    script.write_text(textwrap.dedent(_LARGE))
    run = subprocess.run(
        [sys.executable, str(script), str(size), str(tmp_path / "big.bin")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert run.returncode == 0, run.stderr
    seen, saved, growth = (int(word) for word in run.stdout.split())
    assert seen == saved == size
    assert growth < 64 << 20, f"peak RSS grew by {growth >> 20} MB for a {size >> 20} MB file"
