"""Fixtures shared by the whole suite: a local Requence on 127.0.0.1, and a
plain ``requests`` client of its API (the project's own client comes later)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sseclient

from requence_task._token import decode_access_token
from requence_task.local import LocalRequence

from .local.templates_for_tests import TEMPLATES

pytest_plugins = ["pytester"]

# Every socket in the tests has a time-out: (connect, read) seconds.
TIMEOUT = (5, 30)


class Api:
    """The task API over HTTP with plain ``requests``, for one access token."""

    def __init__(self, access_token: str) -> None:
        parts = decode_access_token(access_token)
        self.base_url = parts.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {parts.bearer}"

    def close(self) -> None:
        self.session.close()

    def post(self, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.post(url, **kwargs)

    def get(self, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.get(url, **kwargs)

    def prepare(self, template: str) -> dict[str, Any]:
        response = self.post(f"/task/prepare/{template}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def finalize(self, prepared: dict[str, Any], **body: Any) -> requests.Response:
        body.setdefault("name", None)
        body.setdefault("input", None)
        body.setdefault("priority", 5)
        body.setdefault("requireAck", False)
        return self.post(prepared["finalizeUrl"], json=body)

    def start(self, template: str, input: Any = None, **body: Any) -> str:
        """Prepare and finalize; returns the task id."""
        prepared = self.prepare(template)
        response = self.finalize(prepared, input=input, **body)
        assert response.status_code == 200, response.text
        return prepared["taskId"]  # type: ignore[no-any-return]

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"/task/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def open_stream(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        response = self.post(
            path, json=body or {"since": None}, stream=True, headers={"Accept": "text/event-stream"}
        )
        return response

    def events(
        self, path: str, body: dict[str, Any] | None = None, *, limit: int | None = None
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """``(position, type, data)`` of a stream until it ends (or ``limit`` events)."""
        response = self.open_stream(path, body)
        assert response.status_code == 200, response.text
        found: list[tuple[int, str, dict[str, Any]]] = []
        try:
            for event in sseclient.SSEClient(response).events():
                found.append((int(event.id), event.event, json.loads(event.data)))
                if limit is not None and len(found) >= limit:
                    break
        finally:
            response.close()
        return found

    def watch(self, task_id: str, **body: Any) -> list[tuple[int, str, dict[str, Any]]]:
        body.setdefault("since", None)
        return self.events(f"/task/watch/{task_id}", body)

    def wait_status(self, task_id: str, *statuses: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.task(task_id)
            if info["status"] in statuses:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} stayed {info['status']}, wanted {statuses}")
            time.sleep(0.02)


@pytest.fixture(scope="session")
def server() -> Iterator[LocalRequence]:
    """One local Requence for the whole session, with the test templates."""
    with LocalRequence(TEMPLATES, concurrency=4) as rq:
        yield rq


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").faults.clear()


@pytest.fixture()
def api(server: LocalRequence) -> Iterator[Api]:
    client = Api(server.access_token)
    yield client
    client.close()
