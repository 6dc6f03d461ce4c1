"""Start and monitor tasks on the Requence workflow platform.

Synchronous first: ``Task(...)`` returns at once, creation runs on background
threads, and the handle gives future-style accessors that each take a
time-out. A local Requence for development and tests is in
:mod:`requence_task.local`.

Example:
    >>> from requence_task import Task
    >>> task = Task("my-template", input={"name": "World"})  # doctest: +SKIP
    >>> for update in task:  # doctest: +SKIP
    ...     print(update.type)
    >>> task.result(timeout=60).result  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from ._by_id import abort_task, ack_task, get_task, protect_task, recreate_task
from ._client import BranchWarning, Client
from ._config import RetryPolicy, Timeouts
from ._errors import (
    ApiError,
    AuthenticationError,
    CallbackError,
    ClaimCheckError,
    ClientClosedError,
    ConfigurationError,
    FileReadError,
    InvalidTokenError,
    MissingTokenError,
    RequenceError,
    RequenceUnreachableError,
    ResultTypeError,
    TaskAbortedError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TaskTimeoutError,
    TruncatedError,
    UploadError,
)
from ._fanout import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, as_completed, wait
from ._files import RequenceCallback, RequenceFile, RequenceStream
from ._models import (
    NodeDeferUpdate,
    NodeEndUpdate,
    NodeErrorUpdate,
    NodeInfo,
    NodeStartUpdate,
    NodeUpdateUpdate,
    TaskAbortedUpdate,
    TaskContext,
    TaskEndUpdate,
    TaskErrorUpdate,
    TaskInfo,
    TaskResult,
    TaskStartUpdate,
    TaskStatus,
    UnknownUpdate,
    Update,
)
from ._task import Task
from ._version import __version__
from ._watch import TaskWatcher, watch_tasks

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ApiError",
    "AuthenticationError",
    "BranchWarning",
    "CallbackError",
    "ClaimCheckError",
    "Client",
    "ClientClosedError",
    "ConfigurationError",
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

# Reprs and docs say requence_task.X, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj

logging.getLogger("requence_task").addHandler(logging.NullHandler())
