"""examples/flask_app against a real local Requence, through Flask's test client.

* ``POST /greetings``: 202 with the task's id, its Requence URL and a
  ``Location`` to the status view, and the task really exists (read back over
  the HTTP API); 400 with Requence's validation message for input the
  template's schema refuses; 400 for a body that is not JSON.
* ``GET /tasks/<id>``: a finished task's status and result; 404 for an id
  Requence does not know; 400 for one that cannot be an id.
* A slow Requence (2 s latency) gives 504 within the finalize time-out; one
  that refuses connections gives 503 once the retry budget is spent, or 504
  when the finalize time-out comes first. No request waits past its bound.
* The client is made once by ``create_app`` from ``app.config`` (wrong
  settings fail there), and works in a forked child (gunicorn's workers).
* The token appears in no answer and no log line.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from requence_task import Client, ConfigurationError, MissingTokenError
from requence_task._cli import load_templates
from requence_task.local import LocalRequence
from requence_task.local._demo import DEMO_TEMPLATES

from ..conftest import Api
from .conftest import EXAMPLES, WAIT, LogSink, needs_fork, run_in_child, secrets_of


@pytest.fixture(scope="module")
def create_app(demo_rq: LocalRequence) -> Iterator[Any]:
    """The example's ``create_app``, imported as ``flask --app taskapp`` would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES / "flask_app"))
        import taskapp

        yield taskapp.create_app


def make_app(create_app: Any, token: str, **config: Any) -> Flask:
    app: Flask = create_app({"REQUENCE_TASK_ACCESS_TOKEN": token, "TESTING": True, **config})
    return app


@pytest.fixture()
def app(create_app: Any, demo_rq: LocalRequence) -> Iterator[Flask]:
    app = make_app(create_app, demo_rq.access_token)
    yield app
    app.extensions["requence_task"].close()


@pytest.fixture()
def web(app: Flask) -> FlaskClient:
    return app.test_client()


def start(web: FlaskClient, body: Any = None, **kwargs: Any) -> Any:
    if body is not None:
        kwargs["json"] = body
    return web.post("/greetings", **kwargs)


# --- starting a task ----------------------------------------------------------------


def test_start_answers_202_with_the_task_and_it_exists(
    web: FlaskClient, demo_rq: LocalRequence, demo_api: Api
) -> None:
    response = start(web, {"name": "Ada"})
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    task_id = body["task_id"]
    assert body["task_url"] == f"{demo_rq.base_url}/tasks/{task_id}"
    assert body["status_url"] == f"http://localhost/tasks/{task_id}"
    assert response.headers["Location"] == body["status_url"]
    stored = demo_api.task(task_id)
    assert stored["taskTemplate"] == "greeting"
    assert stored["input"] == {"name": "Ada"}
    assert stored["status"] in ("PENDING", "RUNNING", "SUCCESSFUL")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": ""}, ["input schema", "at 'name'"]),
        ({"nom": "Ada"}, ["input schema", "'name' is a required property"]),
        (["Ada"], ["input schema", "not of type 'object'"]),
    ],
)
def test_input_the_template_refuses_is_a_400_with_its_message(
    web: FlaskClient, body: Any, words: list[str]
) -> None:
    response = start(web, body)
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "input_rejected"
    for word in words:
        assert word in answer["message"]


@pytest.mark.parametrize("data", [b"{name: Ada}", b"", b"\xff\xfe", b'{"name": "Ada"'])
def test_a_body_that_is_not_json_is_a_400(web: FlaskClient, data: bytes) -> None:
    response = web.post("/greetings", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "invalid_json",
        "message": "The request body must be JSON.",
    }


def test_any_content_type_is_read_as_json(web: FlaskClient) -> None:
    # curl -d sends application/x-www-form-urlencoded unless told otherwise.
    response = web.post("/greetings", data=b'{"name": "Curl"}', content_type="text/plain")
    assert response.status_code == 202, response.get_data(as_text=True)


def test_a_body_over_the_limit_is_a_413(web: FlaskClient) -> None:
    response = start(web, {"name": "x" * (1024 * 1024)})
    assert response.status_code == 413


# --- a task's status ------------------------------------------------------------------


def test_status_of_a_finished_task_shows_its_result(web: FlaskClient, demo_api: Api) -> None:
    started = start(web, {"name": "Grace"}).get_json()
    task_id = started["task_id"]
    demo_api.wait_status(task_id, "SUCCESSFUL", timeout=WAIT)
    response = web.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.get_json() == {
        "task_id": task_id,
        "status": "SUCCESSFUL",
        "ended": True,
        "template": "greeting",
        "name": None,
        "status_text": None,
        "input": {"name": "Grace"},
        "result": {"greeting": "Hello, Grace!", "shout": "HELLO, GRACE!"},
        "node_errors": {},
    }


def test_status_of_an_unknown_task_is_a_404(web: FlaskClient) -> None:
    task_id = str(uuid.uuid4())
    response = web.get(f"/tasks/{task_id}")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": f"There is no task {task_id}."}


@pytest.mark.parametrize("task_id", ["a%20b", "x" * 201, "...", "tab%09id"])
def test_status_of_a_malformed_id_is_a_400(web: FlaskClient, task_id: str) -> None:
    response = web.get(f"/tasks/{task_id}")
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "invalid_task_id"
    assert "is not a task id" in answer["message"]


# --- Requence slow or gone: bounded answers -----------------------------------------


def test_a_slow_requence_is_a_504_within_the_finalize_timeout(
    create_app: Any, slow_rq: LocalRequence
) -> None:
    app = make_app(create_app, slow_rq.access_token, REQUENCE_TASK_FINALIZE_TIMEOUT=0.2)
    try:
        began = time.monotonic()
        response = start(app.test_client(), {"name": "Ada"})
        took = time.monotonic() - began
    finally:
        app.extensions["requence_task"].close()
    assert response.status_code == 504
    assert response.get_json() == {
        "error": "timeout",
        "message": "Requence did not answer within 0.2 s.",
    }
    assert took < slow_rq.faults.latency - 0.5, took  # it did not wait for Requence


def test_a_slow_requence_is_a_503_for_the_status_within_the_retry_budget(
    create_app: Any, slow_rq: LocalRequence
) -> None:
    app = make_app(
        create_app,
        slow_rq.access_token,
        REQUENCE_TASK_READ_TIMEOUT=0.2,
        REQUENCE_TASK_RETRY_BUDGET=0.3,
    )
    try:
        began = time.monotonic()
        response = app.test_client().get(f"/tasks/{uuid.uuid4()}")
        took = time.monotonic() - began
    finally:
        app.extensions["requence_task"].close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert took < 1.9, took  # two 0.2 s reads and a pause, not the 2 s Requence takes


def test_a_requence_that_is_gone_is_a_503(create_app: Any, refused_token: str) -> None:
    app = make_app(
        create_app,
        refused_token,
        REQUENCE_TASK_FINALIZE_TIMEOUT=10,
        REQUENCE_TASK_RETRY_BUDGET=0.3,
    )
    web = app.test_client()
    try:
        began = time.monotonic()
        started = start(web, {"name": "Ada"})
        status = web.get(f"/tasks/{uuid.uuid4()}")
        took = time.monotonic() - began
    finally:
        app.extensions["requence_task"].close()
    for response in (started, status):
        assert response.status_code == 503
        assert response.get_json() == {
            "error": "unavailable",
            "message": "Requence is not reachable; retry later.",
        }
        assert response.headers["Retry-After"] == "5"
    assert took < 5, took


def test_a_requence_that_is_gone_is_a_503_when_the_finalize_timeout_comes_first(
    create_app: Any, refused_token: str
) -> None:
    # The time-out ends while the client still retries refused connections:
    # that is Requence being down (503), not a slow task (504).
    app = make_app(
        create_app,
        refused_token,
        REQUENCE_TASK_FINALIZE_TIMEOUT=0.5,
        REQUENCE_TASK_RETRY_BUDGET=30,
    )
    try:
        began = time.monotonic()
        response = start(app.test_client(), {"name": "Ada"})
        took = time.monotonic() - began
    finally:
        app.extensions["requence_task"].close()
    assert response.status_code == 503, response.get_json()
    assert response.get_json() == {
        "error": "unavailable",
        "message": "Requence is not reachable; retry later.",
    }
    assert response.headers["Retry-After"] == "5"
    assert took < 3, took  # the finalize time-out, not the 30 s retry budget


def test_a_requence_stopped_mid_use_is_a_503(create_app: Any) -> None:
    # A real local Requence, stopped: what a web view sees when Requence goes down.
    with LocalRequence(DEMO_TEMPLATES) as rq:
        app = make_app(
            create_app,
            rq.access_token,
            REQUENCE_TASK_FINALIZE_TIMEOUT=1,
            REQUENCE_TASK_RETRY_BUDGET=30,
        )
        web = app.test_client()
        assert start(web, {"name": "Ada"}).status_code == 202
    try:
        began = time.monotonic()
        response = start(web, {"name": "Ada"})
        took = time.monotonic() - began
    finally:
        app.extensions["requence_task"].close()
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == "unavailable"
    assert took < 4, took


def test_an_unknown_template_is_a_502_not_the_callers_fault(
    create_app: Any, log_sink: LogSink
) -> None:
    with LocalRequence([]) as bare:  # a Requence without the template "greeting"
        app = make_app(create_app, bare.access_token)
        try:
            response = start(app.test_client(), {"name": "Ada"})
        finally:
            app.extensions["requence_task"].close()
    assert response.status_code == 502
    assert response.get_json() == {
        "error": "bad_gateway",
        "message": "Requence could not start the task.",
    }
    assert any("Unknown task template 'greeting'" in text for text in log_sink.texts)


def test_the_readme_setup_serves_the_views(create_app: Any) -> None:
    # What README.md runs: `requence-task local serve requence_templates.py`, then the app.
    templates = load_templates(str(EXAMPLES / "flask_app" / "requence_templates.py"))
    with LocalRequence(templates) as rq:
        app = make_app(create_app, rq.access_token)
        api = Api(rq.access_token)
        try:
            web = app.test_client()
            started = start(web, {"name": "Ada"})
            assert started.status_code == 202
            task_id = started.get_json()["task_id"]
            api.wait_status(task_id, "SUCCESSFUL", timeout=WAIT)
            status = web.get(f"/tasks/{task_id}").get_json()
            assert status["result"] == {"greeting": "Hello, Ada!"}
            assert start(web, {"name": ""}).status_code == 400
        finally:
            api.close()
            app.extensions["requence_task"].close()


# --- configuration and process life ---------------------------------------------------


def test_create_app_makes_one_client_from_the_config(
    app: Flask, demo_rq: LocalRequence, web: FlaskClient
) -> None:
    client = app.extensions["requence_task"]
    assert isinstance(client, Client)
    assert client.base_url == demo_rq.base_url
    assert client.timeouts.connect == 2.0
    assert client.timeouts.read == 5.0
    assert client.retry.budget == 5.0
    assert start(web, {"name": "One"}).status_code == 202
    assert start(web, {"name": "Two"}).status_code == 202
    assert app.extensions["requence_task"] is client


def test_flask_prefixed_environment_variables_set_the_options(
    create_app: Any, demo_rq: LocalRequence, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_REQUENCE_TASK_FINALIZE_TIMEOUT", "2.5")
    monkeypatch.setenv("FLASK_REQUENCE_TASK_RETRY_BUDGET", "7")
    monkeypatch.setenv("REQUENCE_TASK_ACCESS_TOKEN", demo_rq.access_token)
    app = create_app()
    try:
        assert app.config["REQUENCE_TASK_FINALIZE_TIMEOUT"] == 2.5
        assert app.extensions["requence_task"].retry.budget == 7
        # No token in the config: the client took the environment's.
        assert app.config["REQUENCE_TASK_ACCESS_TOKEN"] is None
        assert app.extensions["requence_task"].base_url == demo_rq.base_url
    finally:
        app.extensions["requence_task"].close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REQUENCE_TASK_FINALIZE_TIMEOUT", 0),
        ("REQUENCE_TASK_FINALIZE_TIMEOUT", "10"),
        ("REQUENCE_TASK_READ_TIMEOUT", -1),
        ("REQUENCE_TASK_RETRY_BUDGET", float("nan")),
        ("REQUENCE_TASK_CONNECT_TIMEOUT", True),
    ],
)
def test_a_wrong_setting_fails_at_start_up(
    create_app: Any, demo_rq: LocalRequence, key: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=f"{key} must be a positive number of seconds"):
        make_app(create_app, demo_rq.access_token, **{key: value})


def test_no_token_fails_at_start_up_saying_where_it_looked(
    create_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml with a token here
    with pytest.raises(MissingTokenError, match="REQUENCE_TASK_ACCESS_TOKEN"):
        create_app({})


def test_a_malformed_token_fails_without_showing_it(create_app: Any) -> None:
    token = "not-a-requence-token-" + uuid.uuid4().hex
    with pytest.raises(ConfigurationError) as caught:
        create_app({"REQUENCE_TASK_ACCESS_TOKEN": token})
    assert token not in str(caught.value)


def test_the_token_is_in_no_answer_and_no_log_line(
    create_app: Any, demo_rq: LocalRequence, slow_rq: LocalRequence, log_sink: LogSink
) -> None:
    shown: list[str] = []
    for rq, timeout in ((demo_rq, 10.0), (slow_rq, 0.2)):
        app = make_app(
            create_app,
            rq.access_token,
            REQUENCE_TASK_FINALIZE_TIMEOUT=timeout,
            REQUENCE_TASK_READ_TIMEOUT=0.5,
            REQUENCE_TASK_RETRY_BUDGET=0.5,
        )
        web = app.test_client()
        try:
            for response in (
                start(web, {"name": "Ada"}),  # 202, then 504 on the slow one
                start(web, {"name": ""}),
                web.get(f"/tasks/{uuid.uuid4()}"),  # 404, then 503 on the slow one
                web.get("/tasks/a%20b"),
            ):
                shown.append(f"{response.status} {response.headers} {response.get_data()!r}")
            shown.append(repr(app.extensions["requence_task"]))
        finally:
            app.extensions["requence_task"].close()
    everything = "\n".join(shown + log_sink.texts)
    assert "504" in everything and "503" in everything and "202" in everything
    assert any("Requence was slow" in text for text in log_sink.texts)
    for rq in (demo_rq, slow_rq):
        for secret in secrets_of(rq.access_token):
            assert secret not in everything


@needs_fork
def test_a_forked_worker_serves_with_the_client_made_before_the_fork(
    app: Flask, web: FlaskClient, demo_api: Api
) -> None:
    # As gunicorn --preload: the app and its client exist in the parent, which used it.
    assert start(web, {"name": "Parent"}).status_code == 202
    client = app.extensions["requence_task"]
    parent_session = client._transport.session

    def child() -> dict[str, Any]:
        response = start(app.test_client(), {"name": f"Child {os.getpid()}"})
        return {
            "status": response.status_code,
            "body": response.get_json(),
            "pid": os.getpid(),
            "same_client": app.extensions["requence_task"] is client,
            "same_session": client._transport.session is parent_session,
        }

    report = run_in_child(child)
    assert report["status"] == 202, report
    assert report["same_client"] is True
    assert report["same_session"] is False  # a fresh connection pool in the child
    stored = demo_api.task(report["body"]["task_id"])
    assert stored["input"] == {"name": f"Child {report['pid']}"}
    # The parent goes on with its own connections.
    assert start(web, {"name": "Parent again"}).status_code == 202
    assert client._transport.session is parent_session
