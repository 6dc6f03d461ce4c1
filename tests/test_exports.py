"""The public surface: what ``requence_task`` and ``requence_task.local`` export,
under which module name, and that every public thing says what it does."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import pytest

import requence_task
import requence_task.local

PUBLIC_API = [
    "ALL_COMPLETED",
    "ApiError",
    "AuthenticationError",
    "BranchWarning",
    "CallbackError",
    "ClaimCheckError",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "FileReadError",
    "InvalidTokenError",
    "MissingTokenError",
    "NodeDeferUpdate",
    "NodeEndUpdate",
    "NodeErrorUpdate",
    "NodeInfo",
    "NodeStartUpdate",
    "NodeUpdateUpdate",
    "RequenceCallback",
    "RequenceError",
    "RequenceFile",
    "RequenceStream",
    "RequenceUnreachableError",
    "ResultTypeError",
    "RetryPolicy",
    "Task",
    "TaskAbortedError",
    "TaskAbortedUpdate",
    "TaskContext",
    "TaskEndUpdate",
    "TaskError",
    "TaskErrorUpdate",
    "TaskFailedError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskResult",
    "TaskStartUpdate",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskWatcher",
    "Timeouts",
    "TruncatedError",
    "UnknownUpdate",
    "Update",
    "UploadError",
    "__version__",
    "abort_task",
    "ack_task",
    "as_completed",
    "get_task",
    "protect_task",
    "recreate_task",
    "wait",
    "watch_tasks",
]
LOCAL_API = [
    "DEFAULT_PROJECT",
    "Faults",
    "LocalRequence",
    "NodeContext",
    "Output",
    "TaskAbortedSignal",
    "Template",
    "TemplateError",
    "first_of",
    "logic",
    "service",
    "subtask",
]

MODULES = [requence_task, requence_task.local]


def exported(module: ModuleType) -> list[tuple[str, Any]]:
    return [(name, getattr(module, name)) for name in module.__all__]


def test_public_names_are_pinned() -> None:
    assert sorted(requence_task.__all__) == PUBLIC_API
    assert sorted(requence_task.local.__all__) == LOCAL_API


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_unique_and_importable(module: ModuleType) -> None:
    names = list(module.__all__)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_exported_classes_name_the_public_module(module: ModuleType) -> None:
    wrong = [
        (name, obj.__module__)
        for name, obj in exported(module)
        if isinstance(obj, type) and obj.__module__ != module.__name__
    ]
    assert wrong == []
    assert [name for name, obj in exported(module) if isinstance(obj, type)]


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Methods and properties a class defines itself (not inherited, not private)."""
    members = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            members.append((attr, value))
    return members


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_callable_and_class_has_a_docstring(module: ModuleType) -> None:
    assert (module.__doc__ or "").strip()
    missing = []
    for name, obj in exported(module):
        if (isinstance(obj, type) or callable(obj)) and not (obj.__doc__ or "").strip():
            missing.append(name)
        if isinstance(obj, type):
            for attr, member in _public_members(obj):
                if not (member.__doc__ or "").strip():
                    missing.append(f"{name}.{attr}")
    assert missing == []


def test_version_is_a_string() -> None:
    assert isinstance(requence_task.__version__, str)
    assert requence_task.__version__.strip()
