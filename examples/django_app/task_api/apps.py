"""The app's configuration: hooks the Requence client's life to the process."""

from __future__ import annotations

import atexit

from django.apps import AppConfig
from django.core.signals import setting_changed


class TaskApiConfig(AppConfig):
    name = "task_api"
    verbose_name = "Requence tasks"

    def ready(self) -> None:
        from . import requence

        # Django has no shutdown signal: close the client's connections at exit.
        atexit.register(requence.close_client)
        # override_settings(REQUENCE_TASK=...) in tests gets a client of its own.
        setting_changed.connect(requence.reset_on_setting_change, dispatch_uid="requence_task")
