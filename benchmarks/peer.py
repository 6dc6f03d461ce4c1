"""The peer of the local server for ``throughput-peer``, in a process of its own.

``python -m benchmarks.peer`` serves a minimal Starlette app on uvicorn (the
same uvicorn settings as the local server: HTTP parser and event loop
``auto``, no log config, no access log, keep-alive 30 s) with two routes,
prepare and finalize, answering the same JSON shapes as the local server
(``requence_task/local/_app.py``), and one SQLite insert per request (WAL,
``synchronous=NORMAL``, autocommit). It runs no task. It speaks the same
stdin protocol as ``benchmarks.server`` (a hello line, then ``cpu``), so the
throughput load client works against it unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from requence_task._protocol import (
    FINALIZE_ROUTE,
    PREPARE_ROUTE,
    finalize_path,
    show_path,
    watch_path,
)

BEARER = "peer-" + uuid.uuid4().hex


def build_app(base_url: str, db: sqlite3.Connection) -> Starlette:
    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {BEARER}"

    async def prepare(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("unauthorized", 401)
        task_id = uuid.uuid4().hex
        db.execute(
            "INSERT INTO tasks (id, template, status, created) VALUES (?, ?, 'PREPARED', ?)",
            (task_id, request.path_params["template"], time.time()),
        )
        return JSONResponse(
            {
                "taskId": task_id,
                "finalizeUrl": base_url + finalize_path(task_id),
                "branch": "main",
                "fileUrls": {
                    "uploadUrl": f"{base_url}/files/{task_id}/upload",
                    "streamUrl": f"{base_url}/files/{task_id}/stream",
                },
                "limits": {"maxPayloadSize": 1 << 20, "maxFileSize": 1 << 30},
            }
        )

    async def finalize(request: Request) -> Response:
        if not authorized(request):
            return PlainTextResponse("unauthorized", 401)
        task_id = request.path_params["task_id"]
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            return PlainTextResponse("the body must be a JSON object", 400)
        db.execute(
            "INSERT INTO events (task_id, kind, body) VALUES (?, 'finalize', ?)",
            (task_id, json.dumps(body.get("input"))),
        )
        return JSONResponse(
            {
                "taskId": task_id,
                "urls": {
                    "watch": base_url + watch_path(task_id),
                    "show": base_url + show_path(task_id),
                },
            }
        )

    return Starlette(
        routes=[
            Route(PREPARE_ROUTE, prepare, methods=["POST"]),
            Route(FINALIZE_ROUTE, finalize, methods=["POST"]),
        ]
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _answer(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer")
    parser.add_argument("--concurrency", type=int, default=4, help="ignored (runs no task)")
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args(argv)
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()

    folder = tempfile.mkdtemp(prefix="bench-peer-")
    try:
        return _serve(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # its database, -wal and -shm files


def _serve(folder: str) -> int:
    db = sqlite3.connect(
        os.path.join(folder, "peer.db"), isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, template TEXT, status TEXT, created REAL)")
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, task_id TEXT, kind TEXT, body TEXT)")

    # The listening socket as the local server makes it (requence_task/local/_server.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(
        build_app(base_url, db),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="peer-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            print("benchmarks.peer: uvicorn did not start", file=sys.stderr)
            return 1
        time.sleep(0.005)
    _answer({"access_token": "", "base_url": base_url, "bearer": BEARER})
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "cpu":
            _answer({"server_cpu_s": _cpu()})
        elif words:
            _answer({"error": f"unknown command {line.strip()!r}"})
    _answer({"server_cpu_s": _cpu()})
    server.should_exit = True
    thread.join(timeout=5)
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
