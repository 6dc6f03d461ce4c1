"""Moving files, streams and large values: the input's way out, the data's way in.

Outbound (a task's input): :func:`snapshot_input` checks the input when the
task is made (``Task(...)``, before any request) and keeps a copy of its JSON
with a placeholder for each local file or stream; :class:`Outbound`, in the
task's creation job after prepare, checks the files' sizes, uploads them in
order, puts the references in their places, and offloads an input too large
for the payload limit by claim check. Nothing is submitted to the creation
pool (a small pool would deadlock).

Inbound (updates, ``get_task``): :class:`Inbound` turns references into
objects and fetches claim checks; :class:`Ordered` does that for one task's
updates off the thread of the stream they came on, keeping their order, so
that one task's large claim check never holds up another task's updates.
"""

from __future__ import annotations

import collections
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ._api import RequenceApi
from ._errors import (
    ClientClosedError,
    ConfigurationError,
    RequenceError,
    RequenceUnreachableError,
    UploadError,
)
from ._files import (
    RequenceCallback,
    RequenceFile,
    RequenceStream,
    claim_stream,
    file_data,
    file_path,
    human_size,
    remote_url,
    stream_chunks,
)
from ._models import Prepared
from ._protocol import (
    CLAIM_CHECK_MIN_SIZE,
    NODE_UPDATE,
    TASK_END,
    TASK_START,
    TERMINAL_UPDATE_TYPES,
)
from ._sse import RawEvent
from ._validate import check_input
from ._wire import (
    Hydrator,
    claim_check_reference,
    compact_json,
    file_reference,
    key_path,
    stream_reference,
)

# A placeholder's key: no JSON a user sends has it.
_PLACEHOLDER = f"requence_task.pending.{uuid.uuid4().hex}"
_JSON = "application/json"


def _passed_on(item: object) -> object:
    """A remote file or stream (from an earlier task) as its reference; a callback as
    the reference it came as."""
    if isinstance(item, RequenceFile):
        url = remote_url(item)
        assert url is not None
        return file_reference(url, item.mime, item.size, item.name)
    if isinstance(item, RequenceStream):
        url = remote_url(item)
        assert url is not None
        return stream_reference(url, item.mime, item.name)
    assert isinstance(item, RequenceCallback)
    return item.raw


def accept_objects(item: object) -> object:
    """``json.dumps``' ``default`` for checking an input that may hold files and
    streams (``Task.map``'s check): they pass, anything else does not."""
    if isinstance(item, (RequenceFile, RequenceStream, RequenceCallback)):
        return None
    raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")


@attrs.frozen
class PendingInput:
    """A task's input as it was when the task was made.

    Attributes:
        text: The input's JSON (compact), when it holds no local file or stream.
        shape: Otherwise its JSON with a placeholder for each of them.
        items: Those files and streams, each once, with the path of its first place.
    """

    text: str | None
    shape: object = None
    items: tuple[tuple[RequenceFile | RequenceStream, str], ...] = ()


def snapshot_input(value: object) -> PendingInput:
    """Check a task's input and keep it (see :class:`PendingInput`).

    Raises:
        ConfigurationError: It is not JSON with files and streams, or a local
            stream is in it twice or was already read (or taken by another task).
    """
    found: list[RequenceFile | RequenceStream] = []
    index: dict[int, int] = {}

    def default(item: object) -> object:
        if isinstance(item, (RequenceFile, RequenceStream)) and not item.is_remote:
            known = index.get(id(item))
            if known is not None:
                if isinstance(item, RequenceStream):
                    raise ConfigurationError(
                        f"the same {item!r} is twice in the input; a stream can be read "
                        "once: pass a RequenceStream for each place (or a RequenceFile, "
                        "which may be in several)"
                    )
                return {_PLACEHOLDER: known}
            if isinstance(item, RequenceStream) and item.consumed:
                raise ConfigurationError(
                    f"{item!r} in the input was already read or sent with another task; "
                    "a stream can be read once: make a new RequenceStream"
                )
            index[id(item)] = len(found)
            found.append(item)
            return {_PLACEHOLDER: index[id(item)]}
        if isinstance(item, (RequenceFile, RequenceStream, RequenceCallback)):
            return _passed_on(item)
        raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")

    text = check_input(value, default=default)
    if not found:
        return PendingInput(text)
    shape = json.loads(text)
    paths: dict[int, str] = {}
    _find_placeholders(shape, "input", paths)
    for item in found:
        if isinstance(item, RequenceStream):
            claim_stream(item)  # only now: an input that fails its check takes nothing
    return PendingInput(None, shape, tuple((item, paths[n]) for n, item in enumerate(found)))


def _find_placeholders(value: object, path: str, paths: dict[int, str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1 and _PLACEHOLDER in value:
            paths.setdefault(value[_PLACEHOLDER], path)
            return
        for key, item in value.items():
            _find_placeholders(item, key_path(path, key), paths)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_placeholders(item, key_path(path, i), paths)


def _filled(value: object, references: list[dict[str, Any]]) -> object:
    if isinstance(value, dict):
        if len(value) == 1 and _PLACEHOLDER in value:
            return references[value[_PLACEHOLDER]]
        return {key: _filled(item, references) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, references) for item in value]
    return value


class _Sending:
    """A local stream's chunks as they are sent; whether any was, and what it raised."""

    __slots__ = ("chunks", "error", "sent")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.sent = False
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                self.sent = True
                yield chunk
        except Exception as err:
            self.error = err
            raise


class Outbound:
    """The uploads of one task's input, in its creation job (after prepare).

    Args:
        api: The client's API.
        prepared: Prepare's answer (the files service's URLs and the limits).
        template: The task's template, for errors.
        body: Makes the finalize body from the input's JSON text.
    """

    def __init__(
        self,
        api: RequenceApi,
        prepared: Prepared,
        *,
        template: str | None,
        body: Callable[[str], bytes],
    ) -> None:
        self._api = api
        self._prepared = prepared
        self._template = template
        self._body = body

    def _error(self, message: str, path: str) -> UploadError:
        return UploadError(
            message, path=path, template=self._template, task_id=self._prepared.task_id
        )

    def finalize_body(self, pending: PendingInput) -> bytes:
        """The finalize body: files uploaded, an oversized input offloaded.

        Raises:
            UploadError: A file is over the size limit, the server has no files
                service, an upload failed or its answer is malformed.
        """
        if pending.text is not None:
            body = self._body(pending.text)
            if len(body) <= self._prepared.max_payload_size or self._prepared.upload_url is None:
                return body  # (too large without a files service: the server says so)
            return self._offload(json.loads(pending.text))
        self._check(pending)
        references = [self._upload(item, path) for item, path in pending.items]
        value = _filled(pending.shape, references)
        body = self._body(compact_json(value))
        if len(body) <= self._prepared.max_payload_size:
            return body
        return self._offload(value)

    def _check(self, pending: PendingInput) -> None:
        """Everything that can be checked before the first upload."""
        prepared = self._prepared
        for item, path in pending.items:
            if prepared.upload_url is None or (
                isinstance(item, RequenceStream) and prepared.stream_url is None
            ):
                raise self._error(
                    f"{path} is a {type(item).__name__}, but this Requence gave no files "
                    "service for the task (no fileUrls in prepare's answer); the task was "
                    "not started",
                    path,
                )
            limit = prepared.max_file_size
            if isinstance(item, RequenceFile) and limit is not None and item.size > limit:
                raise self._error(
                    f"{path} is {human_size(item.size)} ({item.size} bytes), larger than "
                    f"this Requence's limit of {human_size(limit)} ({limit} bytes) per file; "
                    "nothing was uploaded and the task was not started",
                    path,
                )

    def _upload(self, item: RequenceFile | RequenceStream, path: str) -> dict[str, Any]:
        prepared = self._prepared
        assert prepared.upload_url is not None
        try:
            if isinstance(item, RequenceFile):
                url, mime, size = self._api.upload(
                    prepared.upload_url,
                    _file_body(item),
                    mime=item.mime,
                    kind="file",
                    path=path,
                    max_file_size=prepared.max_file_size,
                )
                assert mime is not None and size is not None
                if size != item.size:
                    raise self._error(
                        f"The upload of {path} ({item.size} bytes) was answered with a size "
                        f"of {size} bytes; the file did not arrive whole. The task was not "
                        "started.",
                        path,
                    )
                return file_reference(url, mime, size, item.name)
            assert prepared.stream_url is not None
            url, mime, _ = self._api.upload(
                prepared.stream_url,
                lambda: None,
                mime=item.mime,
                kind="stream",
                path=path,
                max_file_size=prepared.max_file_size,
            )
            sending = _Sending(stream_chunks(item))
            try:
                self._api.upload(
                    url,
                    lambda: sending,
                    mime=item.mime,
                    kind="stream body",
                    path=path,
                    max_file_size=prepared.max_file_size,
                    resend=lambda: not sending.sent,
                )
            except Exception:
                if sending.error is None:
                    raise
                raise self._error(
                    f"{path}: the stream raised {type(sending.error).__name__} while it was "
                    f"sent ({sending.error}); the task was not started",
                    path,
                ) from sending.error
            return stream_reference(url, mime or item.mime, item.name)
        except UploadError as err:
            err.template, err.task_id = self._template, prepared.task_id
            raise
        except (RequenceUnreachableError, ClientClosedError):
            raise  # what really happened: said as for any other request
        except RequenceError as err:  # a file on disk that changed, say
            raise self._error(
                f"The upload of {path} failed: {err}; the task was not started", path
            ) from None

    def _offload(self, value: object) -> bytes:
        """Claim checks: the largest top-level values first, until the body fits."""
        limit = self._prepared.max_payload_size
        if isinstance(value, dict):
            texts = {key: compact_json(item) for key, item in value.items()}
            sizes = {key: len(text.encode("utf-8")) for key, text in texts.items()}
            kept = dict(value)
            for key in sorted(sizes, key=lambda k: sizes[k], reverse=True):
                if sizes[key] < CLAIM_CHECK_MIN_SIZE:
                    break
                kept[key] = self._claim_check(texts[key], key_path("input", key))
                body = self._body(compact_json(kept))
                if len(body) <= limit:
                    return body
        # Not an object, or still too large: the whole input goes by claim check.
        return self._body(compact_json(self._claim_check(compact_json(value), "input")))

    def _claim_check(self, text: str, path: str) -> dict[str, Any]:
        assert self._prepared.upload_url is not None
        data = text.encode("utf-8")
        limit = self._prepared.max_file_size
        if limit is not None and len(data) > limit:
            raise self._error(
                f"{path} is too large to send: the input is over this Requence's payload "
                f"limit, and {path} is {human_size(len(data))} ({len(data)} bytes) as JSON, "
                f"over its limit of {human_size(limit)} ({limit} bytes) per file as well; "
                "the task was not started. Send it in a file, or in smaller parts.",
                path,
            )
        url, _, size = self._api.upload(
            self._prepared.upload_url,
            lambda: data,
            mime=_JSON,
            kind="claim check",
            path=path,
            max_file_size=self._prepared.max_file_size,
        )
        return claim_check_reference(url, len(data) if size is None else size)


def _file_body(item: RequenceFile) -> Callable[[], Any]:
    """Each attempt's body: the bytes, or the file on disk opened again (streamed)."""
    data = file_data(item)
    if data is not None:
        return lambda: data
    path = file_path(item)
    if path is not None:
        return lambda: _FileBody(item)
    raise AssertionError("a local file has bytes or a path")  # pragma: no cover


class _FileBody:
    """A file on disk as an upload's body: read in chunks (never whole), with its
    length known, and checked to have the size it had when the task was made."""

    def __init__(self, item: RequenceFile) -> None:
        self._item = item
        self.len = item.size  # requests reads it for Content-Length

    def __iter__(self) -> Iterator[bytes]:
        return self._item.iter_bytes(256 * 1024)


# --- inbound ------------------------------------------------------------------------


class Inbound:
    """References in received data turned into objects, claim checks fetched.

    Args:
        api: The client's API (the objects read through it).
    """

    def __init__(self, api: RequenceApi) -> None:
        self._api = api
        self._local = Hydrator(api.opener)  # for data without claim checks: no request

    def hydrator(self, task_id: str | None) -> Hydrator:
        """A hydrator that fetches claim checks (a request each) for ``task_id``."""
        api = self._api
        return Hydrator(api.opener, lambda url, path: api.fetch_claim_check(url, path, task_id))

    def event(self, raw: RawEvent, task_id: str | None) -> RawEvent:
        """``raw`` with the references of its input, data or result turned into
        objects (claim checks fetched: a request each).

        Raises:
            ClaimCheckError: A claim check could not be fetched.
            ApiError: A reference is malformed.
        """
        if not raw.refs:
            return raw
        hydrate = self.hydrator(task_id) if raw.claims else self._local
        data = dict(raw.data)
        if raw.type == TASK_START and "input" in data:
            data["input"] = hydrate(data["input"], "input")
        elif raw.type == NODE_UPDATE and "data" in data:
            node = data.get("node")
            alias = node.get("alias") if isinstance(node, dict) else None
            where = key_path(key_path("nodes", str(alias)), "data")
            data["data"] = hydrate(data["data"], where)
        elif raw.type == TASK_END and "result" in data:
            data["result"] = hydrate(data["result"], "result")
        else:
            return raw
        return attrs.evolve(raw, data=data)

    def body(self, body: dict[str, Any], task_id: str) -> dict[str, Any]:
        """The answer of ``GET /task/{id}`` with its references turned into objects."""
        hydrate = self.hydrator(task_id)
        found = dict(body)
        for key in ("input", "result"):
            if key in found:
                found[key] = hydrate(found[key], key)
        nodes = found.get("nodesData")
        if isinstance(nodes, list):
            found["nodesData"] = [
                {**item, "data": hydrate(item.get("data"), _node_path(item))}
                if isinstance(item, dict)
                else item
                for item in nodes
            ]
        return found


def _node_path(item: dict[str, Any]) -> str:
    return key_path(key_path("nodes", str(item.get("alias"))), "data")


def is_terminal(raw: RawEvent) -> bool:
    return raw.type in TERMINAL_UPDATE_TYPES


class Ordered:
    """One task's updates, hydrated off the stream's thread, delivered in order.

    An update with a claim check (a request) is fetched on a thread of this
    task's own; updates of the same task that come meanwhile wait behind it,
    so their order holds, while other tasks' updates go on.

    Args:
        inbound: How references become objects.
        deliver: Called with each update once hydrated (on either thread).
        failed: Called with the error when an update cannot be read; with
            ``go_on=False`` (a task's own result) only once, and no update of
            the task is delivered after it.
        skip: Asked, with the update and the error, before ``failed``: when it
            answers true the update is left out and the others go on (a
            sub-task's update on its root's stream must not fail the root).
    """

    def __init__(
        self,
        inbound: Inbound,
        task_id: Callable[[], str | None],
        deliver: Callable[[RawEvent], object],
        failed: Callable[[BaseException], object],
        *,
        go_on: bool = False,
        skip: Callable[[RawEvent, BaseException], bool] | None = None,
    ) -> None:
        self._go_on = go_on
        self._skip = skip
        self._inbound = inbound
        self._task_id = task_id
        self._deliver = deliver
        self._failed = failed
        self._lock = threading.Lock()
        self._queue: collections.deque[RawEvent] = collections.deque()
        self._busy = False
        self._broken = False

    def push(self, raw: RawEvent) -> None:
        """Take one update of the task (from the stream's thread)."""
        with self._lock:
            if self._broken:
                return
            if self._busy or raw.claims:
                self._queue.append(raw)
                if not self._busy:
                    self._busy = True
                    threading.Thread(
                        target=self._drain, name="requence-task-claim-check", daemon=True
                    ).start()
                return
        self._one(raw)

    def _one(self, raw: RawEvent) -> bool:
        try:
            ready = self._inbound.event(raw, self._task_id())
        except RequenceError as err:
            if self._skip is not None and self._skip(raw, err):
                return True
            if self._go_on:
                self._failed(err)
                return True
            with self._lock:
                self._broken = True
                self._queue.clear()
            self._failed(err)
            return False
        self._deliver(ready)
        return True

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._busy = False
                    return
                raw = self._queue.popleft()
            if not self._one(raw):
                with self._lock:
                    self._busy = False
                return

    def cancel(self) -> None:
        """Deliver nothing more (the monitor was reset or finished)."""
        with self._lock:
            self._queue.clear()
            self._broken = True
