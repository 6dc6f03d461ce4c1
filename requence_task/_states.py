"""The words for a task's and a node's state: the one vocabulary every view shows.

``repr(task)``, the notebook views, the progress bars and the command line's
status line all say these words; :mod:`requence_task._fold` decides which
applies (what each means is documented there). They live apart from the fold
so that the HTML renderer, which sits below the models, can colour them
without knowing updates.
"""

from __future__ import annotations

from typing import Final

# --- a task's state -------------------------------------------------------------------

CREATING: Final = "creating"
NOT_CREATED: Final = "could not be created"
CREATED: Final = "created"
STARTED: Final = "started"
RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
ABORTED: Final = "aborted"
REJECTED: Final = "rejected"
ERROR: Final = "error"

TASK_ENDED: Final = frozenset({NOT_CREATED, SUCCEEDED, FAILED, ABORTED, REJECTED, ERROR})
"""Task states after which nothing changes any more."""

# --- a node's state -------------------------------------------------------------------

NODE_RUNNING: Final = "running"
NODE_DEFERRED: Final = "deferred"
NODE_ENDED: Final = "ended"
NODE_FAILED: Final = "failed"
NODE_ABORTED: Final = "aborted"
NODE_STOPPED: Final = "stopped"

NODE_ACTIVE: Final = frozenset({NODE_RUNNING, NODE_DEFERRED})
"""Node states of a node that has not finished (the others are final)."""
