from __future__ import annotations

from django.urls import path

from . import views

app_name = "task_api"

urlpatterns = [
    path("greetings/", views.start_greeting, name="start-greeting"),
    path("tasks/<str:task_id>/", views.task_status, name="task-status"),
]
