"""The wire contract's constants, and every choice of ours about it.

Everything that ``docs/protocol.md`` marks as *our choice* lives here, so that
it is a one-line change if the real Requence service turns out to differ.
Both the client and the local server import these names; neither spells a
path, a status code or a mapping of its own.
"""

from __future__ import annotations

from typing import Final

# --- Access token -----------------------------------------------------------

TOKEN_SEPARATOR: Final = "\uf6ee"
TOKEN_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"
TOKEN_KIND_API: Final = "api"

# --- Priority ---------------------------------------------------------------
# Users speak 0 (low) .. 10 (high), default 5. On the wire 0 is the most urgent
# (our choice, from the official client's mapping of its older 0-4 scale).

PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 10
PRIORITY_DEFAULT: Final = 5


def priority_to_wire(priority: int) -> int:
    """Map a user priority (0 low .. 10 high) to the wire value (0 most urgent)."""
    return PRIORITY_MAX - priority


def priority_from_wire(wire: int) -> int:
    """Map a wire priority (0 most urgent) back to the user scale (10 high)."""
    return PRIORITY_MAX - wire


# --- Paths (relative to the base URL in the token) --------------------------


def prepare_path(template: str) -> str:
    return f"/task/prepare/{template}"


def finalize_path(task_id: str) -> str:
    # The server hands this out as ``finalizeUrl``; clients never build it.
    return f"/task/finalize/{task_id}"


def watch_path(task_id: str) -> str:
    # Handed out as ``urls.watch``; clients never build it.
    return f"/task/watch/{task_id}"


def show_path(task_id: str) -> str:
    # Handed out as ``urls.show`` (the task's page).
    return f"/tasks/{task_id}"


WATCH_ALL_PATH: Final = "/task/watch-all"
TYPES_PATH: Final = "/task/types/python"


def abort_path(task_id: str) -> str:
    return f"/task/abort/{task_id}"


def protect_path(task_id: str) -> str:
    return f"/task/protect/{task_id}"


def ack_path(task_id: str) -> str:
    return f"/task/ack/{task_id}"


def get_path(task_id: str) -> str:
    return f"/task/{task_id}"


# --- Route patterns of the local server, derived from the paths above ---------
# Starlette's ``{name}`` placeholders put through the same functions, so that a
# path the client builds and the route the server answers it on cannot drift.

PREPARE_ROUTE: Final = prepare_path("{template:path}")
FINALIZE_ROUTE: Final = finalize_path("{task_id}")
WATCH_ROUTE: Final = watch_path("{task_id}")
ABORT_ROUTE: Final = abort_path("{task_id}")
PROTECT_ROUTE: Final = protect_path("{task_id}")
ACK_ROUTE: Final = ack_path("{task_id}")
GET_ROUTE: Final = get_path("{task_id}")

# --- The local server's pages (for a browser; no token) ----------------------

INDEX_PATH: Final = "/"


def page_events_path(task_id: str) -> str:
    """The task's update stream for its page: the frames of the API's watch."""
    return f"{show_path(task_id)}/events"


def page_abort_path(task_id: str) -> str:
    return f"{show_path(task_id)}/abort"


def asset_path(name: str) -> str:
    return f"/assets/{name}"


SHOW_ROUTE: Final = show_path("{task_id}")
PAGE_EVENTS_ROUTE: Final = page_events_path("{task_id}")
PAGE_ABORT_ROUTE: Final = page_abort_path("{task_id}")
ASSET_ROUTE: Final = asset_path("{name}")

# Body key of watch-all's event filter (our choice).
WATCH_ALL_FILTER_KEY: Final = "only"

# --- Status codes -----------------------------------------------------------

STATUS_ABORTED_BEFORE_FINALIZE: Final = 410  # finalize of a task aborted before it landed
STATUS_CONFLICT: Final = 409  # abort of a finished task, ack not awaited, second finalize
STATUS_UNREACHABLE: Final = frozenset({502, 503, 504})  # never sent by the API itself

# --- Task statuses (``get``); clients accept any letter case ----------------

SUCCESSFUL: Final = "SUCCESSFUL"
FAILED: Final = "FAILED"
IDLE: Final = "IDLE"
PENDING: Final = "PENDING"
RUNNING: Final = "RUNNING"
STOPPED: Final = "STOPPED"
AWAITING_DELIVERY: Final = "AWAITING_DELIVERY"

# --- Update types -----------------------------------------------------------

TASK_START: Final = "taskStart"
NODE_START: Final = "nodeStart"
NODE_UPDATE: Final = "nodeUpdate"
NODE_ERROR: Final = "nodeError"
NODE_DEFER: Final = "nodeDefer"
NODE_END: Final = "nodeEnd"
TASK_END: Final = "taskEnd"
TASK_ERROR: Final = "taskError"
TASK_ABORTED: Final = "taskAborted"

UPDATE_TYPES: Final = (
    TASK_START,
    NODE_START,
    NODE_UPDATE,
    NODE_ERROR,
    NODE_DEFER,
    NODE_END,
    TASK_END,
    TASK_ERROR,
    TASK_ABORTED,
)
TERMINAL_UPDATE_TYPES: Final = frozenset({TASK_END, TASK_ERROR, TASK_ABORTED})

# --- Branches ----------------------------------------------------------------

LIVE_BRANCH: Final = "live"

# --- Files, streams and claim checks --------------------------------------------

REFERENCE_TAG: Final = "__REQUENCE_type"
TAG_FILE: Final = "RequenceFile"
TAG_STREAM: Final = "RequenceStream"
TAG_CLAIM_CHECK: Final = "ClaimCheck"
TAG_CALLBACK: Final = "RequenceCallback"

DEFAULT_MAX_PAYLOAD_SIZE: Final = 4 * 1024 * 1024  # when prepare gives no limits
DEFAULT_MAX_FILE_SIZE: Final = 100 * 1024 * 1024  # the local server's default
CLAIM_CHECK_MIN_SIZE: Final = 256  # no offloaded value is smaller
CLAIM_CHECK_MAX_DEPTH: Final = 8  # claim checks inside claim checks (our choice)

FILE_SIZE_HEADER: Final = "file-size"
STREAM_PROTOCOL_HEADER: Final = "x-requence-stream-protocol"
STREAM_PROTOCOL_FRAMED: Final = "framed"
FRAME_DATA: Final = 0
FRAME_END: Final = 1
FRAME_TRUNCATED: Final = 2
FRAME_HEADER_SIZE: Final = 5  # one type byte, a 4-byte big-endian length

STATUS_TOO_LARGE: Final = 413  # a file over its limit

# The local server's files service (capability URLs: no token, unguessable).
FILES_PREFIX: Final = "/files/"


def files_upload_path(task_id: str, key: str) -> str:
    return f"{FILES_PREFIX}upload/{task_id}/{key}"


def files_stream_path(task_id: str, key: str) -> str:
    return f"{FILES_PREFIX}stream/{task_id}/{key}"


def file_path(file_id: str) -> str:
    return f"{FILES_PREFIX}{file_id}"


FILES_UPLOAD_ROUTE: Final = files_upload_path("{task_id}", "{key}")
FILES_STREAM_ROUTE: Final = files_stream_path("{task_id}", "{key}")
FILE_ROUTE: Final = file_path("{file_id}")
