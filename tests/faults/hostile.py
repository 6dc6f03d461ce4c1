"""A small Requence of the tests' own that misbehaves as each test scripts it.

Prepare, finalize and get answer properly unless a test replaces them; each
connection to a watch route (``/task/watch/{id}`` or ``/task/watch-all``)
runs the next script of that route (404 once its scripts are used up).
Prepare answers the task id ``TASK_ID``, or the next of ``ids`` while any is
left; other tasks' own streams and get answers are scripted by ``watch_of``
and ``bodies_of``, by task id (a sub-task's, say). A
script gets the request handler and the JSON body of the request, and writes
whatever it likes: proper SSE frames, repeated or stale ones, malformed
updates, headers or bodies trickled a byte at a time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from requence_task._token import encode_access_token

TASK_ID = "t-hostile"
BEARER = "hostile-bearer"

Script = Callable[["Handler", dict[str, Any]], None]


def frame(position: int | None, event: str, data: Any) -> bytes:
    """One SSE frame of the protocol's shape."""
    lines = [] if position is None else [f"id: {position}"]
    lines.append(f"event: {event}")
    lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}")
    return ("\n".join(lines) + "\n\n").encode()


def update(task_id: str = TASK_ID, **fields: Any) -> dict[str, Any]:
    """An update's data, as on the watch-all stream (both spellings of the id)."""
    return {
        "taskId": task_id,
        "task_id": task_id,
        "rootTaskId": None,
        "timestamp": "2024-05-01T12:00:00+00:00",
        "updateId": str(uuid.uuid4()),
        **fields,
    }


def node(alias: str) -> dict[str, Any]:
    return {"id": f"n-{alias}", "type": "service", "alias": alias}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hostile: Hostile

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-answer is what these tests do


class Hostile:
    """The server. Use as a context manager; ``stop()`` refuses connections from then on."""

    def __init__(
        self,
        *,
        watch: list[Script] | None = None,
        watch_all: list[Script] | None = None,
        prepare: Script | None = None,
        finalize: Script | None = None,
        files: bool = False,
        limits: dict[str, Any] | None = None,
        upload: Script | None = None,
        file_routes: dict[str, Script] | None = None,
        task_body: dict[str, Any] | None = None,
        ids: list[str] | None = None,
        watch_of: dict[str, list[Script]] | None = None,
        bodies_of: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.scripts: dict[str, list[Script]] = {
            "watch": list(watch or []),
            "watch-all": list(watch_all or []),
        }
        self.prepare = prepare
        self.finalize = finalize
        # The files service: prepare gives fileUrls (and ``limits``), uploads are
        # kept in ``stored`` (path -> (content type, bytes)) and served by GET,
        # unless ``upload`` answers them; ``file_routes`` script GETs of paths.
        self.files = files
        self.limits = limits
        self.upload = upload
        self.file_routes = dict(file_routes or {})
        self.task_body = task_body
        self.ids = list(ids or [])  # what prepare answers, in turn (then TASK_ID)
        self.watch_of = {key: list(value) for key, value in (watch_of or {}).items()}
        self.bodies_of = dict(bodies_of or {})
        self.stored: dict[str, tuple[str, bytes]] = {}
        self.uploads: list[tuple[str, dict[str, str], bytes]] = []  # path, headers, body
        self.finalized: list[dict[str, Any]] = []
        self.bodies: dict[str, list[dict[str, Any]]] = {"watch": [], "watch-all": []}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.hostile = self
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.stopped = threading.Event()

    @property
    def access_token(self) -> str:
        return encode_access_token(BEARER, self.base_url)

    def __enter__(self) -> Hostile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting: from now on connections to the port are refused."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()

    def store(self, data: bytes, mime: str = "application/octet-stream") -> str:
        """Keep bytes as a file of the files service; its URL."""
        path = f"/files/f/{uuid.uuid4().hex}"
        with self.lock:
            self.stored[path] = (mime, data)
        return self.base_url + path

    def next_script(self, route: str, body: dict[str, Any]) -> Script | None:
        with self.lock:
            self.bodies[route].append(body)
            scripts = self.scripts[route]
            return scripts.pop(0) if scripts else None

    def next_script_of(self, task_id: str, body: dict[str, Any]) -> Script | None:
        """The next script of another task's own stream (``watch_of``)."""
        with self.lock:
            self.bodies.setdefault(f"watch/{task_id}", []).append(body)
            scripts = self.watch_of.get(task_id) or []
            return scripts.pop(0) if scripts else None

    def next_id(self) -> str:
        with self.lock:
            return self.ids.pop(0) if self.ids else TASK_ID


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def hostile(self) -> Hostile:
        return self.server.hostile

    # --- writing -----------------------------------------------------------------

    def send_json(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def stream(self, *frames: bytes) -> None:
        """A whole stream: these frames, then a clean end."""
        self.start_stream()
        for part in frames:
            self.chunk(part)
        self.end_stream()

    def trickle(self, data: bytes, every: float, *, limit: float = 60.0) -> bool:
        """Write ``data`` one byte every ``every`` seconds (at most ``limit`` s);
        False once the client has gone."""
        ends = time.monotonic() + limit
        for byte in data:
            if time.monotonic() > ends or self.hostile.stopped.is_set():
                return False
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return False
            time.sleep(every)
        return True

    def trickle_headers(self, every: float = 0.5, *, limit: float = 60.0) -> None:
        """A status line, then one more header line every ``every`` s, never ending."""
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            self.wfile.flush()
            ends = time.monotonic() + limit
            n = 0
            while time.monotonic() < ends and not self.hostile.stopped.is_set():
                time.sleep(every)
                n += 1
                self.wfile.write(f"X-Slow-{n}: {n}\r\n".encode())
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def trickle_body(self, every: float = 0.2, *, limit: float = 60.0) -> None:
        """Headers at once, then a JSON body a byte at a time."""
        payload = json.dumps({"taskId": TASK_ID, "padding": "x" * 400}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.flush()
        self.trickle(payload, every, limit=limit)
        self.close_connection = True

    def send_bytes(self, status: int, data: bytes, mime: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def read_body(self) -> bytes:
        """The request's body, by Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # --- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:
        hostile = self.hostile
        hostile.requests.append(("GET", self.path, dict(self.headers)))
        script = hostile.file_routes.get(self.path)
        if script is not None:
            script(self, {})
        elif self.path in hostile.stored:
            mime, data = hostile.stored[self.path]
            self.send_bytes(200, data, mime)
        elif self.path == f"/task/{TASK_ID}":
            self.send_json(
                200,
                hostile.task_body
                or {"id": TASK_ID, "status": "RUNNING", "taskTemplate": "hostile"},
            )
        elif self.path.startswith("/task/") and self.path[len("/task/") :] in hostile.bodies_of:
            self.send_json(200, hostile.bodies_of[self.path[len("/task/") :]])
        else:
            self.send_json(404, {"message": f"no route {self.path}"})

    def do_POST(self) -> None:
        hostile = self.hostile
        hostile.requests.append(("POST", self.path, dict(self.headers)))
        if self.path.startswith("/files/") and hostile.upload is not None:
            hostile.upload(self, {})  # (it reads the body, or not)
            return
        raw = self.read_body()
        base = self.hostile.base_url
        if self.path.startswith("/files/"):
            self.files_route(raw)
        elif self.path.startswith("/task/prepare/"):
            if self.hostile.prepare is not None:
                self.hostile.prepare(self, {})
                return
            task_id = hostile.next_id()
            answer: dict[str, Any] = {
                "taskId": task_id,
                "finalizeUrl": f"{base}/task/finalize/{task_id}",
                "branch": "live",
            }
            if hostile.files:
                answer["fileUrls"] = {
                    "uploadUrl": f"{base}/files/upload",
                    "streamUrl": f"{base}/files/stream",
                }
            if hostile.limits is not None:
                answer["limits"] = hostile.limits
            self.send_json(200, answer)
        elif self.path.startswith("/task/finalize/"):
            task_id = self.path[len("/task/finalize/") :]
            hostile.finalized.append(json.loads(raw or b"{}"))
            if self.hostile.finalize is not None:
                self.hostile.finalize(self, json.loads(raw or b"{}"))
                return
            self.send_json(
                200,
                {
                    "taskId": task_id,
                    "urls": {
                        "watch": f"{base}/task/watch/{task_id}",
                        "show": f"{base}/tasks/{task_id}",
                    },
                },
            )
        elif self.path.startswith("/task/watch/") and self.path != f"/task/watch/{TASK_ID}":
            body = json.loads(raw or b"{}")
            script = hostile.next_script_of(self.path[len("/task/watch/") :], body)
            if script is None:
                self.send_json(404, {"message": "the script is used up"})
            else:
                script(self, body)
        elif self.path in (f"/task/watch/{TASK_ID}", "/task/watch-all"):
            route = "watch" if self.path.startswith("/task/watch/") else "watch-all"
            body = json.loads(raw or b"{}")
            script = self.hostile.next_script(route, body)
            if script is None:
                self.send_json(404, {"message": "the script is used up"})
            else:
                script(self, body)
        elif self.path.startswith("/task/ack/"):
            self.send_json(200, {})
        else:
            self.send_json(404, {"message": f"no route {self.path}"})

    def files_route(self, raw: bytes) -> None:
        """Uploads, stream registrations and stream bodies, kept in ``stored``."""
        hostile = self.hostile
        mime = self.headers.get("Content-Type") or "application/octet-stream"
        hostile.uploads.append((self.path, dict(self.headers), raw))
        if self.path == "/files/upload":
            url = hostile.store(raw, mime)
            self.send_json(200, {"url": url, "mime": mime, "size": len(raw)})
        elif self.path == "/files/stream":
            url = hostile.store(b"", mime)
            self.send_json(200, {"url": url, "mime": mime})
        else:
            path = self.path
            with hostile.lock:
                if path not in hostile.stored:
                    self.send_json(404, {"message": "no such stream"})
                    return
                hostile.stored[path] = (hostile.stored[path][0], raw)
            self.send_json(200, {})
