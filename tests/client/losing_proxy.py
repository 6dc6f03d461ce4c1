"""A small HTTP proxy for client tests: it forwards to a local server and hangs
up without an answer on chosen requests, after the server acted on them."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests


class LosingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to a server, and hangs up without
    an answer on the first requests matching ``drop`` (after forwarding them).
    URLs of the server in JSON answers are rewritten to the proxy's."""

    def __init__(self, target: str, drop: dict[tuple[str, str], int]) -> None:
        self.target = target
        self.drop = dict(drop)
        self.dropped: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                upstream = requests.request(
                    self.command,
                    proxy.target + self.path,
                    data=body,
                    headers=headers,
                    stream=True,
                    timeout=(5, 30),
                )
                self.close_connection = True
                if proxy.take_drop(self.command, self.path):
                    upstream.close()
                    return  # the server acted; its answer is lost
                kind = upstream.headers.get("Content-Type", "text/plain")
                try:
                    self.send_response(upstream.status_code)
                    self.send_header("Content-Type", kind)
                    self.send_header("Connection", "close")
                    if kind.startswith("text/event-stream"):
                        self.end_headers()
                        for chunk in upstream.iter_content(chunk_size=None):
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        return
                    content = upstream.content.replace(
                        proxy.target.encode(), proxy.base_url.encode()
                    )
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass
                finally:
                    upstream.close()

            do_GET = forward
            do_POST = forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def take_drop(self, method: str, path: str) -> bool:
        with self.lock:
            for (m, prefix), left in self.drop.items():
                if m == method and path.startswith(prefix) and left > 0:
                    self.drop[(m, prefix)] = left - 1
                    self.dropped.append(f"{method} {path}")
                    return True
        return False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LosingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
