"""examples/django_app against a real local Requence, through Django's test client.

Django's settings are global to the process: this module configures them once,
from the example's own ``demo_site.settings`` (the token of the module's local
Requence in ``REQUENCE_TASK_ACCESS_TOKEN``, as a user's would be), and tests
that need another Requence change ``REQUENCE_TASK`` with ``override_settings``.

* ``POST /greetings/``: 202 with the task's id, its Requence URL and a
  ``Location`` to the status view, and the task really exists (read back over
  the HTTP API); 400 with Requence's validation message for input the
  template's schema refuses; 400 for a body that is not JSON; 405 for a GET.
* ``GET /tasks/<id>/``: a finished task's status and result; 404 for an id
  Requence does not know; 400 for one that cannot be an id.
* A slow Requence (2 s latency) gives 504 within the finalize time-out; one
  that refuses connections gives 503 once the retry budget is spent, or 504
  when the finalize time-out comes first. No request waits past its bound.
* The client is made once, lazily, from ``settings.REQUENCE_TASK``; wrong
  settings raise ``ImproperlyConfigured``; ``override_settings`` gets a new
  client; it works in a forked child (gunicorn's workers); ``manage.py check``
  passes without a token.
* The token appears in no answer, no log line, and not on Django's error page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import django
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client as DjangoClient
from django.test import override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

from requence_task import Client
from requence_task._cli import load_templates
from requence_task.local import LocalRequence
from requence_task.local._demo import DEMO_TEMPLATES

from ..conftest import Api
from .conftest import EXAMPLES, WAIT, LogSink, needs_fork, run_in_child, secrets_of

SITE = EXAMPLES / "django_app"


@pytest.fixture(scope="module")
def requence(demo_rq: LocalRequence) -> Iterator[ModuleType]:
    """Django set up from the example's settings; yields ``task_api.requence``."""
    if settings.configured:  # settings are global to the process, and set only once
        pytest.fail(
            f"Django was configured (from {getattr(settings, 'SETTINGS_MODULE', None)!r}) "
            "before this module; "
            "its tests need the example's own settings: run no other Django setup in this session"
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SITE))  # as manage.py's directory is
        patch.setenv("DJANGO_SETTINGS_MODULE", "demo_site.settings")
        patch.setenv("REQUENCE_TASK_ACCESS_TOKEN", demo_rq.access_token)
        patch.delenv("DJANGO_DEBUG", raising=False)
        django.setup()
        setup_test_environment()  # lets the test client's host "testserver" in
        from task_api import requence

        try:
            yield requence
        finally:
            requence.close_client()
            teardown_test_environment()


@pytest.fixture()
def web(requence: ModuleType) -> DjangoClient:
    return DjangoClient()


def start(web: DjangoClient, body: Any) -> Any:
    return web.post("/greetings/", body, content_type="application/json")


def own_settings(token: str, **options: Any) -> Any:
    """``override_settings`` for a Requence of the test's own."""
    return override_settings(REQUENCE_TASK={"ACCESS_TOKEN": token, **options})


# --- starting a task ----------------------------------------------------------------


def test_start_answers_202_with_the_task_and_it_exists(
    web: DjangoClient, demo_rq: LocalRequence, demo_api: Api
) -> None:
    response = start(web, {"name": "Ada"})
    assert response.status_code == 202, response.content
    body = response.json()
    task_id = body["task_id"]
    assert body["task_url"] == f"{demo_rq.base_url}/tasks/{task_id}"
    assert body["status_url"] == f"http://testserver/tasks/{task_id}/"
    assert response["Location"] == body["status_url"]
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
        (None, ["input schema", "None is not of type 'object'"]),
    ],
)
def test_input_the_template_refuses_is_a_400_with_its_message(
    web: DjangoClient, body: Any, words: list[str]
) -> None:
    response = web.post("/greetings/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "input_rejected"
    for word in words:
        assert word in answer["message"]


@pytest.mark.parametrize("data", [b"{name: Ada}", b"", b"\xff\xfe", b'{"name": "Ada"'])
def test_a_body_that_is_not_json_is_a_400(web: DjangoClient, data: bytes) -> None:
    response = web.post("/greetings/", data, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_json", "message": "The request body must be JSON."}


def test_starting_takes_only_post(web: DjangoClient) -> None:
    assert web.get("/greetings/").status_code == 405
    assert web.post(f"/tasks/{uuid.uuid4()}/").status_code == 405


# --- a task's status ------------------------------------------------------------------


def test_status_of_a_finished_task_shows_its_result(web: DjangoClient, demo_api: Api) -> None:
    started = start(web, {"name": "Grace"}).json()
    task_id = started["task_id"]
    demo_api.wait_status(task_id, "SUCCESSFUL", timeout=WAIT)
    response = web.get(urlsplit(started["status_url"]).path)
    assert response.status_code == 200
    assert response.json() == {
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


def test_status_of_an_unknown_task_is_a_404(web: DjangoClient) -> None:
    task_id = str(uuid.uuid4())
    response = web.get(f"/tasks/{task_id}/")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": f"There is no task {task_id}."}


@pytest.mark.parametrize("task_id", ["a%20b", "x" * 201, "...", "tab%09id"])
def test_status_of_a_malformed_id_is_a_400(web: DjangoClient, task_id: str) -> None:
    response = web.get(f"/tasks/{task_id}/")
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid_task_id"
    assert "is not a task id" in answer["message"]


# --- Requence slow or gone: bounded answers -----------------------------------------


def test_a_slow_requence_is_a_504_within_the_finalize_timeout(
    web: DjangoClient, slow_rq: LocalRequence
) -> None:
    with own_settings(slow_rq.access_token, FINALIZE_TIMEOUT=0.2):
        began = time.monotonic()
        response = start(web, {"name": "Ada"})
        took = time.monotonic() - began
    assert response.status_code == 504
    assert response.json() == {
        "error": "timeout",
        "message": "Requence did not answer within 0.2 s.",
    }
    assert took < slow_rq.faults.latency - 0.5, took  # it did not wait for Requence


def test_a_slow_requence_is_a_503_for_the_status_within_the_retry_budget(
    web: DjangoClient, slow_rq: LocalRequence
) -> None:
    with own_settings(slow_rq.access_token, READ_TIMEOUT=0.2, RETRY_BUDGET=0.3):
        began = time.monotonic()
        response = web.get(f"/tasks/{uuid.uuid4()}/")
        took = time.monotonic() - began
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert took < 1.9, took  # two 0.2 s reads and a pause, not the 2 s Requence takes


def test_a_requence_that_is_gone_is_a_503(web: DjangoClient, refused_token: str) -> None:
    with own_settings(refused_token, FINALIZE_TIMEOUT=10, RETRY_BUDGET=0.3):
        began = time.monotonic()
        started = start(web, {"name": "Ada"})
        status = web.get(f"/tasks/{uuid.uuid4()}/")
        took = time.monotonic() - began
    for response in (started, status):
        assert response.status_code == 503
        assert response.json() == {
            "error": "unavailable",
            "message": "Requence is not reachable; retry later.",
        }
        assert response["Retry-After"] == "5"
    assert took < 5, took


def test_a_requence_that_is_gone_is_a_503_when_the_finalize_timeout_comes_first(
    web: DjangoClient, refused_token: str
) -> None:
    # The time-out ends while the client still retries refused connections:
    # that is Requence being down (503), not a slow task (504).
    with own_settings(refused_token, FINALIZE_TIMEOUT=0.5, RETRY_BUDGET=30):
        began = time.monotonic()
        response = start(web, {"name": "Ada"})
        took = time.monotonic() - began
    assert response.status_code == 503, response.json()
    assert response.json() == {
        "error": "unavailable",
        "message": "Requence is not reachable; retry later.",
    }
    assert response["Retry-After"] == "5"
    assert took < 3, took  # the finalize time-out, not the 30 s retry budget


def test_a_requence_stopped_mid_use_is_a_503(web: DjangoClient) -> None:
    # A real local Requence, stopped: what a web view sees when Requence goes down.
    rq = LocalRequence(DEMO_TEMPLATES).start()
    try:
        with own_settings(rq.access_token, FINALIZE_TIMEOUT=1, RETRY_BUDGET=30):
            assert start(web, {"name": "Ada"}).status_code == 202
            rq.stop()
            began = time.monotonic()
            response = start(web, {"name": "Ada"})
            took = time.monotonic() - began
    finally:
        rq.stop()
    assert response.status_code == 503, response.json()
    assert response.json()["error"] == "unavailable"
    assert took < 4, took


def test_an_unknown_template_is_a_502_not_the_callers_fault(
    web: DjangoClient, log_sink: LogSink
) -> None:
    with LocalRequence([]) as bare, own_settings(bare.access_token):
        response = start(web, {"name": "Ada"})
    assert response.status_code == 502
    assert response.json() == {"error": "bad_gateway", "message": "Requence could not do this."}
    assert any("Unknown task template 'greeting'" in text for text in log_sink.texts)


def test_the_readme_setup_serves_the_views(web: DjangoClient) -> None:
    # What README.md runs: `requence-task local serve requence_templates.py`, then the site.
    templates = load_templates(str(SITE / "requence_templates.py"))
    with LocalRequence(templates) as rq, own_settings(rq.access_token):
        api = Api(rq.access_token)
        try:
            started = start(web, {"name": "Ada"})
            assert started.status_code == 202
            task_id = started.json()["task_id"]
            api.wait_status(task_id, "SUCCESSFUL", timeout=WAIT)
            status = web.get(f"/tasks/{task_id}/").json()
            assert status["result"] == {"greeting": "Hello, Ada!"}
            assert start(web, {"name": ""}).status_code == 400
        finally:
            api.close()


# --- configuration and process life ---------------------------------------------------


def test_one_client_is_made_lazily_from_the_settings(
    requence: ModuleType, web: DjangoClient, demo_rq: LocalRequence, slow_rq: LocalRequence
) -> None:
    requence.close_client()
    assert requence._client is None  # nothing made until a request needs it
    assert start(web, {"name": "One"}).status_code == 202
    client = requence.get_client()
    assert isinstance(client, Client)
    assert client.base_url == demo_rq.base_url
    assert (client.timeouts.connect, client.timeouts.read, client.retry.budget) == (2, 5, 5)
    assert start(web, {"name": "Two"}).status_code == 202
    assert requence.get_client() is client
    with own_settings(slow_rq.access_token, READ_TIMEOUT=1.5):
        other = requence.get_client()
        assert other is not client and client.closed
        assert (other.base_url, other.timeouts.read) == (slow_rq.base_url, 1.5)
    assert other.closed
    assert requence.get_client().base_url == demo_rq.base_url


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"FINALIZE_TIMEOUT": 0}, "REQUENCE_TASK['FINALIZE_TIMEOUT'] must be a positive number"),
        ({"READ_TIMEOUT": "5"}, "REQUENCE_TASK['READ_TIMEOUT'] must be a positive number"),
        ({"RETRY_BUDGET": float("inf")}, "REQUENCE_TASK['RETRY_BUDGET'] must be a positive"),
        ({"TIMEOUT": 5}, "unknown keys ['TIMEOUT']"),
    ],
)
def test_wrong_settings_are_improperly_configured(
    requence: ModuleType, web: DjangoClient, options: dict[str, Any], message: str
) -> None:
    with override_settings(REQUENCE_TASK=options):
        with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
            requence.get_client()
        with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
            start(web, {"name": "Ada"})  # the test client re-raises a view's error


def test_a_malformed_token_is_improperly_configured_without_showing_it(
    requence: ModuleType,
) -> None:
    token = "not-a-requence-token-" + uuid.uuid4().hex
    with own_settings(token), pytest.raises(ImproperlyConfigured) as caught:
        requence.get_client()
    assert "settings.REQUENCE_TASK" in str(caught.value)
    assert token not in str(caught.value)


def test_the_error_page_hides_the_token(requence: ModuleType, demo_rq: LocalRequence) -> None:
    from django.views.debug import SafeExceptionReporterFilter

    shown = SafeExceptionReporterFilter().get_safe_settings()["REQUENCE_TASK"]
    assert shown["ACCESS_TOKEN"] == SafeExceptionReporterFilter.cleansed_substitute
    assert demo_rq.access_token not in repr(SafeExceptionReporterFilter().get_safe_settings())


def test_the_token_is_in_no_answer_and_no_log_line(
    requence: ModuleType,
    web: DjangoClient,
    demo_rq: LocalRequence,
    slow_rq: LocalRequence,
    log_sink: LogSink,
) -> None:
    shown: list[str] = []
    for rq, timeout in ((demo_rq, 10.0), (slow_rq, 0.2)):
        with own_settings(
            rq.access_token, FINALIZE_TIMEOUT=timeout, READ_TIMEOUT=0.5, RETRY_BUDGET=0.5
        ):
            for response in (
                start(web, {"name": "Ada"}),  # 202, then 504 on the slow one
                start(web, {"name": ""}),
                web.get(f"/tasks/{uuid.uuid4()}/"),  # 404, then 503 on the slow one
                web.get("/tasks/a%20b/"),
            ):
                shown.append(f"{response.status_code} {response.headers} {response.content!r}")
            shown.append(repr(requence.get_client()))
    everything = "\n".join(shown + log_sink.texts)
    assert "504" in everything and "503" in everything and "202" in everything
    assert any("Requence was slow" in text for text in log_sink.texts)
    for rq in (demo_rq, slow_rq):
        for secret in secrets_of(rq.access_token):
            assert secret not in everything


@needs_fork
def test_a_forked_worker_serves_with_the_client_made_before_the_fork(
    requence: ModuleType, web: DjangoClient, demo_api: Api
) -> None:
    # As gunicorn --preload: the client exists in the parent, which used it.
    assert start(web, {"name": "Parent"}).status_code == 202
    client = requence.get_client()
    parent_session = client._transport.session

    def child() -> dict[str, Any]:
        response = start(DjangoClient(), {"name": f"Child {os.getpid()}"})
        return {
            "status": response.status_code,
            "body": response.json(),
            "pid": os.getpid(),
            "same_client": requence.get_client() is client,
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


def test_manage_py_check_passes_without_a_token(tmp_path: Any) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
        and not key.startswith("DJANGO_")
    }
    done = subprocess.run(
        [sys.executable, str(SITE / "manage.py"), "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
