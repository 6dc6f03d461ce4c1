"""The local server's HTTP API, end to end over real HTTP on 127.0.0.1.

Covers prepare, finalize, get, types, the task page, authentication, project
isolation, wrong methods and paths, garbage bodies (never a 500), and the
scheduler (priority order, FIFO within a priority, concurrency).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
import sseclient

from requence_task._token import decode_access_token
from requence_task.local import LocalRequence, Template, service

from ..conftest import TIMEOUT, Api
from .templates_for_tests import TEMPLATES, gate

STREAM_TIMEOUT = (5, 5)

PREPARE_KEYS = {"taskId", "finalizeUrl", "branch", "limits"}
GET_KEYS = {
    "status",
    "statusText",
    "exit",  # the local server's additions: the exit a task ended through,
    "rootTaskId",  # and the root task of a sub-task
    "taskTemplate",
    "name",
    "branch",
    "input",
    "result",
    "nodesData",
    "nodesError",
}

# --- templates of this file ---------------------------------------------------

NESTED_SCHEMA = {
    "type": "object",
    "required": ["address"],
    "properties": {
        "address": {
            "type": "object",
            "required": ["zip"],
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}

ODD_NAMES = [
    "odd name",
    "ünï-côdé ✓",
    "a+b",
    "per%cent",
    "q?x#y",
    "semi;colon",
    "dots.and:colons",
    "quote'n\"dquote",
    "<b>tag&amp;",
]

EXTRA_TEMPLATES = [
    Template(
        "nested",
        input_schema=NESTED_SCHEMA,
        nodes=[service("echo", lambda ctx: {"input": ctx.input})],
    ),
    *[Template(name, nodes=[service("n", lambda ctx: {"ran": True})]) for name in ODD_NAMES],
]


# --- helpers ------------------------------------------------------------------


def bearer_of(access_token: str) -> str:
    return decode_access_token(access_token).bearer


def raw(method: str, url: str, **kwargs: Any) -> requests.Response:
    """A request without the Api session (so without its Authorization header)."""
    kwargs.setdefault("timeout", TIMEOUT)
    return requests.request(method, url, **kwargs)


def assert_plain_error(response: requests.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    for needle in needles:
        assert needle in response.text, (needle, response.text)
    return response.text


def finalize_raw(api: Api, prepared: dict[str, Any], body: dict[str, Any]) -> requests.Response:
    """Finalize with exactly ``body`` (no defaults filled in)."""
    return api.post(prepared["finalizeUrl"], json=body)


@pytest.fixture(scope="module")
def extra() -> Iterator[tuple[LocalRequence, Api]]:
    """A server with this file's templates besides the shared ones."""
    with LocalRequence([*TEMPLATES, *EXTRA_TEMPLATES]) as rq:
        client = Api(rq.access_token)
        yield rq, client
        client.close()


@pytest.fixture()
def other_api(server: LocalRequence) -> Iterator[Api]:
    client = Api(server.token_for("other"))
    yield client
    client.close()


# --- prepare ------------------------------------------------------------------


def test_prepare_answers_id_absolute_finalize_url_branch_and_limits(
    server: LocalRequence, api: Api
) -> None:
    response = api.post("/task/prepare/echo")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert PREPARE_KEYS <= set(body) <= PREPARE_KEYS | {"fileUrls"}
    task_id = body["taskId"]
    assert str(uuid.UUID(task_id)) == task_id
    url = urlsplit(body["finalizeUrl"])
    assert url.scheme == "http"
    assert url.netloc == f"127.0.0.1:{server.port}"
    assert body["finalizeUrl"].startswith(server.base_url + "/")
    assert task_id in url.path
    assert body["branch"] == "live"
    assert body["limits"] == {
        "maxPayloadSize": server.max_payload_size,
        "maxFileSize": server.max_file_size,
    }
    assert body["limits"]["maxPayloadSize"] == 4 * 1024 * 1024
    assert body["limits"]["maxFileSize"] == 100 * 1024 * 1024
    # The task exists now, idle, and a second prepare gives another task.
    info = api.task(task_id)
    assert info["status"] == "IDLE"
    assert info["taskTemplate"] == "echo"
    assert api.prepare("echo")["taskId"] != task_id


def test_prepare_reports_development_branch(api: Api) -> None:
    prepared = api.prepare("dev-branch")
    assert prepared["branch"] == "feature-x"
    assert api.task(prepared["taskId"])["branch"] == "feature-x"
    assert api.prepare("greet")["branch"] == "live"


def test_prepare_unknown_template_is_404_naming_it_and_the_known_ones(api: Api) -> None:
    response = api.post("/task/prepare/no-such-template")
    text = assert_plain_error(response, 404, "'no-such-template'", "'echo'", "'greet'")
    assert "template" in text.lower()


@pytest.mark.parametrize("name", ODD_NAMES)
def test_prepare_and_run_template_with_odd_characters_in_its_name(
    extra: tuple[LocalRequence, Api], name: str
) -> None:
    _, api = extra
    response = api.post("/task/prepare/" + quote(name, safe=""))
    assert response.status_code == 200, response.text
    prepared = response.json()
    finalized = api.finalize(prepared, input={"x": 1})
    assert finalized.status_code == 200, finalized.text
    info = api.wait_status(prepared["taskId"], "SUCCESSFUL", "FAILED")
    assert info["status"] == "SUCCESSFUL"
    assert info["taskTemplate"] == name
    assert info["result"] == {"ran": True}


@pytest.mark.parametrize("name", ["nö such?", "odd  name", "a b/c", "x" * 300])
def test_prepare_unknown_odd_template_name_is_404_naming_it(
    extra: tuple[LocalRequence, Api], name: str
) -> None:
    _, api = extra
    response = api.post("/task/prepare/" + quote(name, safe=""))
    assert_plain_error(response, 404, repr(name))


# --- finalize -----------------------------------------------------------------


def test_finalize_answers_id_and_absolute_urls_that_work(server: LocalRequence, api: Api) -> None:
    prepared = api.prepare("greet")
    response = api.finalize(prepared, input={"name": "Ada"}, name="first")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"taskId", "urls"}
    assert body["taskId"] == prepared["taskId"]
    assert set(body["urls"]) == {"watch", "show"}
    for url in body["urls"].values():
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("http", f"127.0.0.1:{server.port}")
        assert prepared["taskId"] in parts.path
    events = api.events(body["urls"]["watch"], {"since": None})
    types = [type_ for _, type_, _ in events]
    assert types[0] == "taskStart"
    assert types[-1] == "taskEnd"
    assert events[-1][2]["result"] == {"message": "Hello, Ada!"}
    page = raw("GET", body["urls"]["show"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "greet" in page.text


@pytest.mark.parametrize(
    ("input", "needles"),
    [
        ({}, ["'name' is a required property"]),
        ({"age": 3}, ["'name' is a required property"]),
        ({"name": "Ada", "age": "x"}, ["'age'", "'x' is not of type 'integer'"]),
        ({"name": 5}, ["'name'", "5 is not of type 'string'"]),
        ("just a string", ["'just a string' is not of type 'object'"]),
        (None, ["None is not of type 'object'"]),
    ],
)
def test_finalize_schema_failure_is_422_naming_the_field(
    api: Api, input: Any, needles: list[str]
) -> None:
    prepared = api.prepare("greet")
    response = api.finalize(prepared, input=input)
    assert_plain_error(response, 422, *needles)
    assert api.task(prepared["taskId"])["status"] == "IDLE"


@pytest.mark.parametrize(
    ("input", "needles"),
    [
        ({"address": {"zip": "abc"}}, ["'address.zip'", "'abc' does not match"]),
        ({"address": {"zip": 12345}}, ["'address.zip'", "12345 is not of type 'string'"]),
        ({"address": {}}, ["'address'", "'zip' is a required property"]),
        ({"address": {"zip": "12345"}, "tags": ["a", 3]}, ["'tags[1]'", "3 is not of type"]),
        ({}, ["'address' is a required property"]),
    ],
)
def test_finalize_schema_failure_names_nested_field(
    extra: tuple[LocalRequence, Api], input: Any, needles: list[str]
) -> None:
    _, api = extra
    prepared = api.prepare("nested")
    response = api.finalize(prepared, input=input)
    assert_plain_error(response, 422, *needles)


def test_finalize_without_input_for_template_with_schema_is_422(api: Api) -> None:
    prepared = api.prepare("greet")
    response = finalize_raw(api, prepared, {"name": None, "priority": 5, "requireAck": False})
    assert_plain_error(response, 422, "schema", "object")
    assert api.task(prepared["taskId"])["status"] == "IDLE"


@pytest.mark.parametrize(
    "value",
    [None, 0, -1.5, "text", "", True, [], [1, "two", None], {}, {"deep": {"er": [1, {"x": None}]}}],
)
def test_finalize_template_without_schema_accepts_any_json_input(api: Api, value: Any) -> None:
    task_id = api.start("echo", value)
    info = api.wait_status(task_id, "SUCCESSFUL", "FAILED")
    assert info["status"] == "SUCCESSFUL"
    assert info["input"] == value
    assert info["result"] == {"input": value}


def test_finalize_without_input_key_for_template_without_schema_means_null(api: Api) -> None:
    prepared = api.prepare("echo")
    response = finalize_raw(api, prepared, {"name": "no input"})
    assert response.status_code == 200, response.text
    info = api.wait_status(prepared["taskId"], "SUCCESSFUL")
    assert info["input"] is None
    assert info["name"] == "no input"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", 1),
        ("name", ["a"]),
        ("name", {"a": 1}),
        ("name", True),
        ("priority", "5"),
        ("priority", 5.5),
        ("priority", 5.0),
        ("priority", True),
        ("priority", [5]),
        ("priority", -1),
        ("priority", 11),
        ("priority", 10**30),
        ("requireAck", "yes"),
        ("requireAck", 1),
        ("requireAck", 0),
        ("requireAck", {}),
    ],
)
def test_finalize_field_type_errors_are_400_naming_the_key(api: Api, key: str, value: Any) -> None:
    prepared = api.prepare("echo")
    body: dict[str, Any] = {"name": None, "input": 1, "priority": 5, "requireAck": False}
    body[key] = value
    response = finalize_raw(api, prepared, body)
    assert_plain_error(response, 400, f"'{key}'")
    assert api.task(prepared["taskId"])["status"] == "IDLE"


@pytest.mark.parametrize("wire", [0, 10])
def test_finalize_accepts_priority_bounds(api: Api, wire: int) -> None:
    task_id = api.start("echo", wire, priority=wire)
    assert api.wait_status(task_id, "SUCCESSFUL")["input"] == wire


def test_finalize_priority_out_of_range_message_gives_range(api: Api) -> None:
    prepared = api.prepare("echo")
    response = finalize_raw(api, prepared, {"input": None, "priority": 11})
    assert_plain_error(response, 400, "'priority'", "0", "10")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "JSON"),
        (b"{'single': 'quotes'}", "JSON"),
        (b'[{"input": 1}]', "object"),
        (b"[]", "object"),
        (b'"a string"', "object"),
        (b"42", "object"),
        (b"null", "object"),
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\xff\xfe\xfd", "JSON"),
    ],
)
def test_finalize_malformed_body_is_400(api: Api, body: bytes, needle: str) -> None:
    prepared = api.prepare("echo")
    response = api.post(
        prepared["finalizeUrl"], data=body, headers={"Content-Type": "application/json"}
    )
    assert_plain_error(response, 400, needle)
    assert api.task(prepared["taskId"])["status"] == "IDLE"


def _body_of_size(size: int) -> bytes:
    base = {"name": None, "input": "", "priority": 5, "requireAck": False}
    padding = size - len(json.dumps(base).encode())
    assert padding >= 0
    base["input"] = "x" * padding
    data = json.dumps(base).encode()
    assert len(data) == size
    return data


def test_finalize_body_over_max_payload_size_is_413() -> None:
    with LocalRequence(TEMPLATES, max_payload_size=1000) as rq:
        api = Api(rq.access_token)
        try:
            prepared = api.prepare("echo")
            assert prepared["limits"]["maxPayloadSize"] == 1000
            headers = {"Content-Type": "application/json"}
            # Over the limit, with a Content-Length.
            response = api.post(prepared["finalizeUrl"], data=_body_of_size(1001), headers=headers)
            assert_plain_error(response, 413, "1000")
            # Over the limit, chunked (no Content-Length): counted while reading.
            chunks = iter([_body_of_size(3000)[i : i + 500] for i in range(0, 3000, 500)])
            response = api.post(prepared["finalizeUrl"], data=chunks, headers=headers)
            assert_plain_error(response, 413, "1000")
            assert api.task(prepared["taskId"])["status"] == "IDLE"
            # Exactly at the limit is fine.
            response = api.post(prepared["finalizeUrl"], data=_body_of_size(1000), headers=headers)
            assert response.status_code == 200, response.text
            info = api.wait_status(prepared["taskId"], "SUCCESSFUL")
            assert len(info["input"]) > 900
        finally:
            api.close()


def test_second_finalize_is_409(api: Api) -> None:
    prepared = api.prepare("echo")
    assert api.finalize(prepared, input=1).status_code == 200
    response = api.finalize(prepared, input=2)
    assert_plain_error(response, 409, "already finalized")
    api.wait_status(prepared["taskId"], "SUCCESSFUL")
    response = api.finalize(prepared, input=3)
    assert_plain_error(response, 409)
    info = api.task(prepared["taskId"])
    assert info["input"] == 1
    # Exactly one taskStart: the second finalize emitted nothing.
    assert [t for _, t, _ in api.watch(prepared["taskId"])].count("taskStart") == 1


def test_finalize_after_abort_before_finalize_is_410(api: Api) -> None:
    prepared = api.prepare("echo")
    assert api.post(f"/task/abort/{prepared['taskId']}", data=b"changed my mind").status_code == 200
    response = api.finalize(prepared, input=1)
    assert_plain_error(response, 410)
    assert api.task(prepared["taskId"])["status"] == "STOPPED"


def test_finalize_unknown_task_is_404(server: LocalRequence, api: Api) -> None:
    unknown = str(uuid.uuid4())
    response = api.post(
        f"/task/finalize/{unknown}",
        json={"name": None, "input": None, "priority": 5, "requireAck": False},
    )
    assert_plain_error(response, 404, unknown)


# --- get ----------------------------------------------------------------------


def test_get_successful_task_every_field(api: Api) -> None:
    task_id = api.start("greet", {"name": "Ada", "steps": 3}, name="the name", priority=2)
    info = api.wait_status(task_id, "SUCCESSFUL", "FAILED")
    assert set(info) == GET_KEYS
    assert info == {
        "status": "SUCCESSFUL",
        "statusText": None,
        "taskTemplate": "greet",
        "name": "the name",
        "branch": "live",
        "input": {"name": "Ada", "steps": 3},
        "result": {"message": "Hello, Ada!"},
        # The latest data of each alias: the counter sent steps 1, 2, 3.
        "nodesData": [
            {"alias": "greeter", "data": {"message": "Hello, Ada!"}},
            {"alias": "counter", "data": {"step": 3}},
        ],
        "nodesError": [],
        "exit": None,
        "rootTaskId": None,
    }


def test_get_prepared_and_pending_tasks(api: Api) -> None:
    prepared = api.prepare("dev-branch")
    info = api.task(prepared["taskId"])
    assert set(info) == GET_KEYS
    assert info["status"] == "IDLE"
    assert info["taskTemplate"] == "dev-branch"
    assert info["branch"] == "feature-x"
    assert info["input"] is None
    assert info["result"] is None
    assert info["nodesData"] == []
    assert info["nodesError"] == []


def test_get_optional_failure_lists_node_error_and_succeeds(api: Api) -> None:
    task_id = api.start("optional-fail", None)
    info = api.wait_status(task_id, "SUCCESSFUL", "FAILED")
    assert info["status"] == "SUCCESSFUL"
    assert info["statusText"] is None
    assert info["nodesError"] == [{"alias": "boom", "error": "the boiler exploded"}]
    assert info["nodesData"] == [{"alias": "after", "data": {"saw_error": "the boiler exploded"}}]
    assert info["result"] == {"saw_error": "the boiler exploded"}


def test_get_failed_task_has_status_text_and_node_error(api: Api) -> None:
    task_id = api.start("fail", {"name": "Bo"}, name="doomed")
    info = api.wait_status(task_id, "FAILED", "SUCCESSFUL")
    assert info == {
        "status": "FAILED",
        "statusText": "node 'boom' failed: the boiler exploded",
        "taskTemplate": "fail",
        "name": "doomed",
        "branch": "live",
        "input": {"name": "Bo"},
        "result": None,
        "nodesData": [{"alias": "first", "data": {"message": "Hello, Bo!"}}],
        "nodesError": [{"alias": "boom", "error": "the boiler exploded"}],
        "exit": None,
        "rootTaskId": None,
    }


def test_get_aborted_task_has_reason_as_status_text(api: Api) -> None:
    key = str(uuid.uuid4())
    try:
        task_id = api.start("gated", {"gate": key})
        api.wait_status(task_id, "RUNNING")
        assert api.post(f"/task/abort/{task_id}", data="enough waiting").status_code == 200
        info = api.task(task_id)
        assert info["status"] == "STOPPED"
        assert info["statusText"] == "enough waiting"
        assert info["result"] is None
    finally:
        gate(key).set()


def test_get_unknown_task_is_404(api: Api) -> None:
    unknown = str(uuid.uuid4())
    assert_plain_error(api.get(f"/task/{unknown}"), 404, unknown)


# --- types and the task page --------------------------------------------------


def test_types_is_json_object_of_file_texts_mentioning_every_template(
    server: LocalRequence, api: Api
) -> None:
    response = api.get("/task/types/python")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    files = response.json()
    assert isinstance(files, dict)
    assert files
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    text = "\n".join(files.values())
    for name in server.templates:
        assert name in text, name


def test_task_page_is_html_without_auth(api: Api) -> None:
    task_id = api.start("greet", {"name": "<script>alert(1)</script>"}, name="<i>page</i>")
    api.wait_status(task_id, "SUCCESSFUL")
    response = raw("GET", api.base_url + f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "greet" in response.text
    assert task_id in response.text
    assert "SUCCESSFUL" in response.text
    # User data is escaped, never markup of the page.
    assert "<script>alert(1)</script>" not in response.text
    assert "<i>page</i>" not in response.text
    assert "&lt;i&gt;page&lt;/i&gt;" in response.text


def test_task_page_unknown_is_404(api: Api) -> None:
    response = raw("GET", api.base_url + f"/tasks/{uuid.uuid4()}")
    assert response.status_code == 404


# --- authentication -------------------------------------------------------------


def _endpoints(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request kwargs) of every authenticated endpoint."""
    ended = api.start("echo", 1)
    api.wait_status(ended, "SUCCESSFUL")
    idle = api.prepare("echo")["taskId"]
    return [
        ("POST", "/task/prepare/echo", {}),
        ("POST", f"/task/finalize/{idle}", {"json": {"input": 1}}),
        ("POST", f"/task/watch/{ended}", {"json": {"since": None}}),
        ("POST", "/task/watch-all", {"json": {"since": None}}),
        ("POST", f"/task/abort/{idle}", {"data": b"reason"}),
        ("POST", f"/task/protect/{ended}", {}),
        ("POST", f"/task/ack/{ended}", {}),
        ("GET", f"/task/{ended}", {}),
        ("GET", "/task/types/python", {}),
    ]


ENDPOINT_NAMES = ["prepare", "finalize", "watch", "watch-all", "abort", "protect", "ack", "get"]


@pytest.mark.parametrize("index", range(9), ids=[*ENDPOINT_NAMES, "types"])
def test_every_endpoint_needs_a_known_bearer(
    server: LocalRequence, api: Api, other_api: Api, index: int
) -> None:
    method, path, kwargs = _endpoints(api)[index]
    real = bearer_of(server.access_token)
    other = bearer_of(server.token_for("other"))
    fake = "not-a-bearer-" + uuid.uuid4().hex
    variants: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": f"Basic {real}"},
        {"Authorization": f"Token {real}"},
        {"Authorization": real},
        {"Authorization": server.access_token},
        {"Authorization": f"Bearer {fake}"},
        {"Authorization": f"Bearer {real}x"},
        {"Authorization": f"Bearer {server.access_token}"},
    ]
    for headers in variants:
        response = raw(method, server.base_url + path, headers=headers, **kwargs)
        assert response.status_code == 401, (headers, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.strip()
        for secret in (real, other, fake, server.access_token):
            assert secret not in response.text, headers
    # The same request with the real bearer is not refused.
    response = raw(
        method,
        server.base_url + path,
        headers={"Authorization": f"Bearer {real}"},
        stream=True,
        **kwargs,
    )
    try:
        assert response.status_code not in (401, 403), response.status_code
    finally:
        response.close()


# --- projects -----------------------------------------------------------------


def test_other_project_sees_none_of_the_default_projects_tasks(api: Api, other_api: Api) -> None:
    key = str(uuid.uuid4())
    try:
        running = api.start("gated", {"gate": key})
        api.wait_status(running, "RUNNING")
        awaiting = api.start("echo", 1, requireAck=True)
        api.wait_status(awaiting, "AWAITING_DELIVERY")
        idle = api.prepare("echo")
        for task_id in (running, awaiting, idle["taskId"]):
            assert_plain_error(other_api.get(f"/task/{task_id}"), 404, task_id)
            assert_plain_error(other_api.post(f"/task/abort/{task_id}", data=b"x"), 404)
            assert_plain_error(other_api.post(f"/task/protect/{task_id}"), 404)
            assert_plain_error(other_api.post(f"/task/ack/{task_id}"), 404)
            response = other_api.open_stream(f"/task/watch/{task_id}")
            try:
                assert_plain_error(response, 404)
            finally:
                response.close()
        assert_plain_error(other_api.finalize(idle, input=1), 404)
        # Nothing of that touched the default project's tasks.
        assert api.task(running)["status"] == "RUNNING"
        assert api.task(awaiting)["status"] == "AWAITING_DELIVERY"
        assert api.task(idle["taskId"])["status"] == "IDLE"
    finally:
        gate(key).set()
    api.wait_status(running, "SUCCESSFUL")
    assert api.post(f"/task/ack/{awaiting}").status_code == 200
    assert api.task(awaiting)["status"] == "SUCCESSFUL"


def test_other_projects_task_is_visible_to_its_own_token_only(api: Api, other_api: Api) -> None:
    mine = api.start("echo", "default's")
    theirs = other_api.start("echo", "other's")
    info = other_api.wait_status(theirs, "SUCCESSFUL")
    assert info["input"] == "other's"
    assert [t for _, t, _ in other_api.watch(theirs)][-1] == "taskEnd"
    assert_plain_error(api.get(f"/task/{theirs}"), 404)
    api.wait_status(mine, "SUCCESSFUL")
    # The other project's watch-all carries its own task, never the default's.
    response = other_api.post(
        "/task/watch-all", json={"since": None}, stream=True, timeout=STREAM_TIMEOUT
    )
    try:
        assert response.status_code == 200
        seen: set[str] = set()
        for event in sseclient.SSEClient(response).events():
            data = json.loads(event.data)
            seen.add(data["taskId"])
            if data["taskId"] == theirs and event.event == "taskEnd":
                break
    finally:
        response.close()
    assert theirs in seen
    assert mine not in seen


# --- methods and paths ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/task/prepare/echo", "POST"),
        ("PUT", "/task/prepare/echo", "POST"),
        ("GET", "/task/finalize/{id}", "POST"),
        ("GET", "/task/watch/{id}", "POST"),
        ("GET", "/task/abort/{id}", "POST"),
        ("GET", "/task/protect/{id}", "POST"),
        ("GET", "/task/ack/{id}", "POST"),
        ("DELETE", "/task/ack/{id}", "POST"),
        ("POST", "/task/{id}", "GET"),
        ("DELETE", "/task/{id}", "GET"),
        ("POST", "/task/types/python", "GET"),
        ("POST", "/tasks/{id}", "GET"),
    ],
)
def test_wrong_method_is_405(api: Api, method: str, path: str, allowed: str) -> None:
    task_id = api.start("echo", 1)
    response = api.session.request(method, api.base_url + path.format(id=task_id), timeout=TIMEOUT)
    assert response.status_code == 405, (response.status_code, response.text)
    assert allowed in response.headers.get("allow", "")
    # The task was not touched by it.
    assert api.wait_status(task_id, "SUCCESSFUL")["input"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/task"),
        ("GET", "/tasks"),
        ("GET", "/task/a/b/c"),
        ("POST", "/task/watch/a/b"),
        ("GET", "/v1/task/types/python"),
        ("POST", "/api/task/prepare/echo"),
    ],
)
def test_unknown_path_is_404(api: Api, method: str, path: str) -> None:
    response = api.session.request(method, api.base_url + path, timeout=TIMEOUT)
    assert response.status_code == 404, (response.status_code, response.text)


@pytest.mark.parametrize("odd", ["%00", "%FF", "x" * 5000, "..", "a%2Fb", "'; DROP TABLE tasks;--"])
def test_odd_task_ids_are_404_everywhere(api: Api, odd: str) -> None:
    for method, path in [
        ("GET", "/task/{}"),
        ("GET", "/tasks/{}"),
        ("POST", "/task/finalize/{}"),
        ("POST", "/task/watch/{}"),
        ("POST", "/task/abort/{}"),
        ("POST", "/task/protect/{}"),
        ("POST", "/task/ack/{}"),
    ]:
        if odd == ".." and method == "GET":
            continue  # the URL normalises to "/", the list page (tests/browser)
        url = api.base_url + path.format(odd)
        response = api.session.request(method, url, json={}, timeout=TIMEOUT)
        assert response.status_code == 404, (method, path, response.status_code, response.text)
    # The store is intact.
    assert api.wait_status(api.start("echo", 1), "SUCCESSFUL")["result"] == {"input": 1}


# --- garbage never makes a 500 ----------------------------------------------------


def _garbage() -> list[bytes]:
    rng = random.Random(20240601)
    bodies = [
        b"",
        b"   ",
        b"null",
        b'"a string"',
        b"123",
        b"1e999",
        b"-1e999",
        b"9" * 5000,
        b"NaN",
        b"Infinity",
        b"[]",
        b"[1, 2, 3]",
        b"{",
        b"}",
        b"{'single': 'quotes'}",
        b"\xff\xfe\xfd\x00",
        b'{"name": "\xff\xfe"}',
        b"\x00" * 100,
        b"[" * 20_000,
        b'{"a":' * 20_000,
        b'{"input": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"input": NaN}',
        b'{"input": Infinity}',
        b'{"input": 1e999}',
        b'{"input": {"name": NaN}}',
        b'{"input": "\\ud800"}',
        b'{"name": "\\udfff"}',
        b'{"input": ' + b"9" * 5000 + b"}",
        b'{"priority": 1e999}',
        b'{"priority": 99999999999999999999999999999}',
        b'{"priority": -99999999999999999999999999999}',
        b'{"requireAck": "yes"}',
        b'{"name": {"nested": []}}',
        b'{"since": "0001-01-01"}',
        b'{"since": "0001-01-01T00:00:00"}',
        b'{"since": "9999-12-31"}',
        b'{"since": "9999-12-31T23:59:59-14:00"}',
        b'{"since": "not a date"}',
        b'{"since": "\\ud800"}',
        b'{"since": 12}',
        b'{"since": []}',
        b'{"lastPosition": 100000000000000000000000000000}',
        b'{"lastPosition": 9223372036854775808}',
        b'{"lastPosition": -5}',
        b'{"lastPosition": 1.5}',
        b'{"lastPosition": true}',
        b'{"lastPosition": "3"}',
        b'{"only": "taskEnd"}',
        b'{"only": [1, 2]}',
        b'{"only": []}',
        b'{"only": ["\\ud800"]}',
        b'{"only": null, "since": null}',
    ]
    bodies += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(8)]
    return bodies


GARBAGE = _garbage()


def _check_no_500(response: requests.Response, stream_ends: bool) -> str | None:
    """None if fine, else what went wrong. Reads a 200 stream a little."""
    try:
        if response.status_code >= 500:
            return f"status {response.status_code}: {response.text[:120]!r}"
        if response.status_code == 200 and "text/event-stream" in response.headers.get(
            "content-type", ""
        ):
            if stream_ends:
                for _ in response.iter_content(chunk_size=None):
                    pass
            else:
                next(response.iter_content(chunk_size=None))
        return None
    except requests.RequestException as err:
        return f"status {response.status_code}, then the body broke: {type(err).__name__}"
    finally:
        response.close()


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[tuple[LocalRequence, Api]]:
    with LocalRequence(TEMPLATES, keepalive_interval=0.1) as rq:
        client = Api(rq.access_token)
        yield rq, client
        client.close()


@pytest.mark.parametrize(
    "endpoint",
    [
        "prepare",
        "finalize-echo",
        "finalize-greet",
        "watch",
        "watch-all",
        "abort-idle",
        "abort-ended",
        "protect",
        "ack",
    ],
)
def test_garbage_bodies_never_make_a_500(
    fuzz_server: tuple[LocalRequence, Api], endpoint: str
) -> None:
    _, api = fuzz_server
    ended = api.start("echo", 1)
    api.wait_status(ended, "SUCCESSFUL")
    failures: list[str] = []
    for body in GARBAGE:
        if endpoint == "prepare":
            path = "/task/prepare/echo"
        elif endpoint.startswith("finalize-"):
            path = api.prepare(endpoint.removeprefix("finalize-"))["finalizeUrl"]
        elif endpoint == "abort-idle":
            path = f"/task/abort/{api.prepare('echo')['taskId']}"
        elif endpoint == "abort-ended":
            path = f"/task/abort/{ended}"
        elif endpoint == "watch-all":
            path = "/task/watch-all"
        else:
            path = f"/task/{endpoint}/{ended}"
        try:
            response = api.post(
                path,
                data=body,
                headers={"Content-Type": "application/json"},
                stream=True,
                timeout=STREAM_TIMEOUT,
            )
        except requests.RequestException as err:
            failures.append(f"{body[:40]!r}: no answer: {type(err).__name__}")
            continue
        problem = _check_no_500(response, stream_ends=endpoint == "watch")
        if problem is not None:
            failures.append(f"{body[:40]!r}: {problem}")
    # The server still works afterwards.
    assert api.wait_status(api.start("echo", 2), "SUCCESSFUL")["result"] == {"input": 2}
    assert not failures, f"{endpoint}: {len(failures)} bad answers:\n" + "\n".join(failures)


# --- scheduling ---------------------------------------------------------------


def test_pending_tasks_run_most_urgent_first_and_fifo_within_a_priority() -> None:
    key = str(uuid.uuid4())
    plan = [("a", 5), ("b", 0), ("c", 10), ("d", 5), ("e", 0), ("f", 3), ("g", 10), ("h", 5)]
    with LocalRequence(TEMPLATES, concurrency=1) as rq:
        api = Api(rq.access_token)
        try:
            blocker = api.start("gated", {"gate": key})
            api.wait_status(blocker, "RUNNING")
            label_of = {blocker: "blocker"}
            for label, wire in plan:
                label_of[api.start("echo", label, priority=wire)] = label
            for task_id in label_of:
                if task_id != blocker:
                    assert api.task(task_id)["status"] == "PENDING"
            gate(key).set()
            events = api.events(
                "/task/watch-all",
                {"since": None, "only": ["nodeStart"]},
                limit=len(label_of),
            )
            order = [label_of[data["taskId"]] for _, _, data in events]
            for task_id in label_of:
                api.wait_status(task_id, "SUCCESSFUL")
        finally:
            gate(key).set()
            api.close()
    assert order == ["blocker", "b", "e", "f", "a", "d", "h", "c", "g"]


def test_concurrency_limits_running_tasks() -> None:
    keys = [str(uuid.uuid4()) for _ in range(3)]
    with LocalRequence(TEMPLATES, concurrency=2) as rq:
        api = Api(rq.access_token)
        try:
            ids = [api.start("gated", {"gate": k}) for k in keys]
            api.wait_status(ids[0], "RUNNING")
            api.wait_status(ids[1], "RUNNING")
            time.sleep(0.3)
            assert [api.task(i)["status"] for i in ids] == ["RUNNING", "RUNNING", "PENDING"]
            gate(keys[0]).set()
            api.wait_status(ids[0], "SUCCESSFUL")
            api.wait_status(ids[2], "RUNNING")
            assert api.task(ids[1])["status"] == "RUNNING"
            gate(keys[1]).set()
            gate(keys[2]).set()
            for task_id, key in zip(ids, keys, strict=True):
                assert api.wait_status(task_id, "SUCCESSFUL", "FAILED")["result"] == {"opened": key}
        finally:
            for key in keys:
                gate(key).set()
            api.close()
