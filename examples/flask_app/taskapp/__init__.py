"""A small Flask app that starts Requence tasks and reports on them.

Run it (from ``examples/flask_app``) with ``flask --app taskapp run``, or under
gunicorn with ``gunicorn 'taskapp:create_app()'``. See README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import requence, views


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app, configured from defaults, then ``FLASK_*`` variables, then ``config``.

    The ``requence_task.Client`` is created here, once, from the
    ``REQUENCE_TASK_*`` settings (see ``taskapp/requence.py``); a wrong
    setting or a missing access token fails here, at start-up.

    Example:
        >>> app = create_app({"REQUENCE_TASK_FINALIZE_TIMEOUT": 5})  # doctest: +SKIP
        >>> app.test_client().post("/greetings", json={"name": "Ada"}).status_code
        202
    """
    app = Flask(__name__)
    app.config.from_mapping(requence.DEFAULTS)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # larger bodies get 413 before any view
    # FLASK_REQUENCE_TASK_FINALIZE_TIMEOUT=5 in the environment sets the setting to 5.
    app.config.from_prefixed_env()
    if config is not None:
        app.config.from_mapping(config)
    requence.init_app(app)
    app.register_blueprint(views.bp)
    return app
