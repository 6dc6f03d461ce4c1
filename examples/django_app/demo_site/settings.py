"""Settings of the example project: only what its two views need.

Secrets come from the environment, never from this file: ``DJANGO_SECRET_KEY``
and ``REQUENCE_TASK_ACCESS_TOKEN`` (``requence-task local serve`` prints one
for a local server).
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-key-for-the-example-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = ["task_api"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "demo_site.urls"
WSGI_APPLICATION = "demo_site.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}  # the views keep no state of their own
USE_TZ = True

REQUENCE_TASK = {
    # The name holds "TOKEN", so Django's error pages show it as stars.
    "ACCESS_TOKEN": os.environ.get("REQUENCE_TASK_ACCESS_TOKEN"),
    "FINALIZE_TIMEOUT": float(os.environ.get("REQUENCE_TASK_FINALIZE_TIMEOUT", "10")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"task_api": {"handlers": ["console"], "level": "INFO"}},
}
