"""The task life cycle: prepare, finalize, schedule, run, abort, ack, cleanup.

All state changes of a task, and the events that announce them, happen under
one lock, so a task emits ``taskStart`` first and exactly one terminal update
last, whatever races between runners, abort and shutdown. The rows of the
tasks that have not ended are kept in memory too (``_live``, changed under
that lock with the store), so the API's checks and the runners read no
database for them.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

import attrs

from .._errors import ClaimCheckError, RequenceError
from .._files import (
    RequenceCallback,
    RequenceFile,
    RequenceStream,
    claim_stream,
    file_data,
    remote_url,
    stream_chunks,
)
from .._protocol import (
    AWAITING_DELIVERY,
    FAILED,
    IDLE,
    NODE_DEFER,
    NODE_END,
    NODE_ERROR,
    NODE_START,
    NODE_UPDATE,
    PENDING,
    REFERENCE_TAG,
    RUNNING,
    STATUS_ABORTED_BEFORE_FINALIZE,
    STATUS_CONFLICT,
    STOPPED,
    SUCCESSFUL,
    TAG_CLAIM_CHECK,
    TASK_ABORTED,
    TASK_END,
    TASK_ERROR,
    TASK_START,
)
from .._wire import (
    Hydrator,
    claim_check_reference,
    dehydrate,
    file_reference,
    has_objects,
    stream_reference,
)
from ._blobs import FileStore, StreamWriter, TooLarge
from ._hub import Hub
from ._store import ENDED_STATUSES, Store, TaskRow, compact_json
from ._templates import NodeContext, Output, Template

log = logging.getLogger("requence_task.local")

_T = TypeVar("_T")
_END = object()  # the end of a node's generator

INTERRUPTED_REASON = "interrupted: the local Requence stopped while the task was running"


class ApiError(Exception):
    """An answer other than success, with its status and a plain-text reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define
class _Run:
    abort_event: threading.Event = attrs.field(factory=threading.Event)
    ended: bool = False


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="microseconds")


def _random_uuid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` makes it, only faster."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _json_text(value: Any, what: str) -> str:
    try:
        return compact_json(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not JSON-serialisable: {err}") from err


class Engine:
    """Runs the tasks of a set of templates on ``concurrency`` worker threads."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        templates: Mapping[str, Template],
        *,
        concurrency: int,
        files: FileStore,
        max_payload_size: int,
    ) -> None:
        self.store = store
        self.files = files
        self.max_payload_size = max_payload_size
        self.hydrate = Hydrator(files.opener, files.claim_check)
        self.hub = hub
        self.templates = dict(templates)
        # Each template's nodes with their updates' "node" field, made once.
        self._nodes = {
            name: [
                (node, {"id": t.node_id(node.alias), "type": node.type, "alias": node.alias})
                for node in t.order
            ]
            for name, t in self.templates.items()
        }
        self.concurrency = concurrency
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._queue: list[tuple[int, int, str]] = []
        # Workers waiting for a task, and workers awake outside a node's code (who
        # come back to the queue soon): a queued task wakes a worker only if
        # none of those is awake, so cheap tasks run on one thread, not hand the
        # GIL around, and a node that blocks still lets the next task start.
        self._idle = 0
        self._ready = 0
        self._runs: dict[str, _Run] = {}
        self._ended: set[str] = set()
        self._live: dict[str, TaskRow] = {}  # the rows of tasks not ended, as stored
        self._seq = store.max_queue_seq()
        self._stopping = False
        self._workers: list[threading.Thread] = []

    # --- life cycle ---------------------------------------------------------

    def start(self) -> None:
        self._recover()
        self._stopping = False
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._work, name=f"requence-local-worker-{index}", daemon=True
            )
            thread.start()
            self._workers.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers. Tasks still running stay RUNNING in the store and
        end as interrupted on the next start on the same database."""
        with self._lock:
            self._stopping = True
            for run in self._runs.values():
                run.abort_event.set()
            self._ready += self._idle
            self._idle = 0
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "worker %s did not stop within %.1f s: a node ignores ctx.aborted",
                    thread.name,
                    timeout,
                )
        self._workers.clear()

    def _recover(self) -> None:
        """Settle what a previous process left behind on the same database."""
        for task in self.store.tasks_with_status([RUNNING]):
            self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": INTERRUPTED_REASON})
        for task in self.store.tasks_with_status([PENDING]):
            if task.template in self.templates:
                with self._lock:
                    self._live[task.id] = task
                self._enqueue(task.id, task.priority or 0, task.queue_seq or 0)
            else:
                reason = f"the template {task.template!r} is no longer defined on this server"
                self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})

    # --- events -------------------------------------------------------------

    def _emit(
        self, task: TaskRow, type: str, fields: dict[str, Any], alias: str | None = None
    ) -> bool:
        """Store and publish one update of ``task``; nothing after its terminal one."""
        with self._lock:
            if task.id in self._ended:
                return False
            now = time.time()
            data: dict[str, Any] = {
                "taskId": task.id,
                "task_id": task.id,
                "rootTaskId": None,
                "timestamp": _iso(now),
                "updateId": _random_uuid(),
            }
            data.update(fields)
            event = self.store.append_event(task.id, task.project, type, alias, data, now)
            self.hub.publish(event)
            return True

    def _emit_terminal(
        self, task: TaskRow, type: str, final_status: str, fields: dict[str, Any]
    ) -> bool:
        with self._lock:
            if task.id in self._ended:
                return False
            fields = {**fields, "requireAck": task.require_ack}
            if not self._emit(task, type, fields):
                return False
            self._ended.add(task.id)
            self._live.pop(task.id, None)
            run = self._runs.get(task.id)
            if run is not None:
                run.ended = True
                run.abort_event.set()
            result = fields.get("result") if type == TASK_END else None
            status_text = fields.get("reason") if type != TASK_END else None
            self.store.end_task(
                task.id,
                status=AWAITING_DELIVERY if task.require_ack else final_status,
                final_status=final_status,
                status_text=status_text,
                result_json=None if result is None else _json_text(result, "the result"),
                ended_at=time.time(),
            )
            return True

    # --- API operations (called from the HTTP handlers) ----------------------

    def owned(self, task_id: str, project: str) -> TaskRow:
        """The task's row (of a live task, from memory); 404 if not in ``project``."""
        task = self._live.get(task_id) or self.store.task(task_id)
        if task is None or task.project != project:
            raise ApiError(404, f"No task with id {task_id!r} exists in this project.")
        return task

    def prepare(self, project: str, template_name: str) -> TaskRow:
        template = self.templates.get(template_name)
        if template is None:
            known = ", ".join(repr(n) for n in sorted(self.templates)) or "none"
            raise ApiError(
                404, f"Unknown task template {template_name!r}. Templates on this server: {known}."
            )
        task_id = _random_uuid()
        task = self.store.insert_task(task_id, project, template.name, template.branch, time.time())
        with self._lock:
            self._live[task_id] = task
        return task

    def finalize(
        self,
        task_id: str,
        project: str,
        *,
        name: str | None,
        input: Any,
        priority: int,
        require_ack: bool,
    ) -> TaskRow:
        task = self.owned(task_id, project)
        template = self.templates.get(task.template)
        if template is None:
            raise ApiError(422, f"The template {task.template!r} is no longer defined.")
        self._check_state_for_finalize(task)
        checked = self._claim_checks_resolved(input)
        if template.validator is not None:
            error = _first_error(template.validator, checked)
            if error is not None:
                raise ApiError(422, error)
        input_json = _json_text(input, "the input")
        with self._lock:
            task = self.owned(task_id, project)
            self._check_state_for_finalize(task)
            self._seq += 1
            finalized_at = time.time()
            self.store.finalize_task(
                task_id,
                name=name,
                input_json=input_json,
                priority=priority,
                require_ack=require_ack,
                finalized_at=finalized_at,
                queue_seq=self._seq,
            )
            # ``input`` is parsed JSON (the request's), so it is what the store reads back.
            task = self._live[task_id] = attrs.evolve(
                task,
                name=name,
                input=input,
                priority=priority,
                require_ack=require_ack,
                status=PENDING,
                finalized_at=finalized_at,
                queue_seq=self._seq,
            )
            self._emit(task, TASK_START, {"input": input})
            self._enqueue(task_id, priority, self._seq)
        return task

    def _claim_checks_resolved(self, input: Any) -> Any:
        """The input with its claim checks fetched (the input itself, or its
        top-level values), for the schema; 422 for one that cannot be read."""

        def resolve(value: Any, path: str) -> Any:
            if not (isinstance(value, dict) and value.get(REFERENCE_TAG) == TAG_CLAIM_CHECK):
                return value
            url = value.get("url")
            if not isinstance(url, str) or not url:
                raise ApiError(422, f"{path}: a ClaimCheck reference without a usable url.")
            try:
                return self.files.claim_check(url, path)
            except ClaimCheckError as err:
                raise ApiError(422, f"The input's claim check cannot be resolved: {err}") from None

        input = resolve(input, "input")
        if isinstance(input, dict):
            return {key: resolve(value, f"input.{key}") for key, value in input.items()}
        return input

    def _check_state_for_finalize(self, task: TaskRow) -> None:
        if task.status == IDLE:
            return
        if task.status == STOPPED and task.finalized_at is None:
            raise ApiError(
                STATUS_ABORTED_BEFORE_FINALIZE,
                f"Task {task.id} was aborted before it was finalized; it will not run.",
            )
        raise ApiError(STATUS_CONFLICT, f"Task {task.id} was already finalized.")

    def abort(self, task_id: str, project: str, reason: str | None) -> None:
        with self._lock:
            task = self.owned(task_id, project)
            if task.status in ENDED_STATUSES or task.id in self._ended:
                raise ApiError(
                    STATUS_CONFLICT,
                    f"Task {task_id} has already ended ({task.status}); there is nothing to abort.",
                )
            run = self._runs.get(task_id)
            if run is not None:
                run.abort_event.set()
            self._emit_terminal(task, TASK_ABORTED, STOPPED, {"reason": reason})

    def protect(self, task_id: str, project: str) -> None:
        self.owned(task_id, project)
        with self._lock:
            self.store.protect(task_id)
            live = self._live.get(task_id)
            if live is not None:
                self._live[task_id] = attrs.evolve(live, protected=True)

    def ack(self, task_id: str, project: str) -> None:
        with self._lock:
            task = self.owned(task_id, project)
            if task.status != AWAITING_DELIVERY:
                raise ApiError(
                    STATUS_CONFLICT,
                    f"Task {task_id} is not awaiting delivery (its status is {task.status}); "
                    "only a task finalized with requireAck that has ended can be acked.",
                )
            self.store.set_status(task_id, task.final_status or SUCCESSFUL)

    def get(
        self, task_id: str, project: str
    ) -> tuple[TaskRow, list[tuple[str, Any]], list[tuple[str, str]]]:
        task = self.store.task(task_id)  # all of it, as stored: the live row may be older
        if task is None or task.project != project:
            raise ApiError(404, f"No task with id {task_id!r} exists in this project.")
        data, errors = self.store.node_outputs(task_id)
        return task, data, errors

    def cleanup(self, *, retention: float, prepare_ttl: float) -> list[str]:
        now = time.time()
        with self._lock:
            deleted = self.store.delete_expired(
                ended_before=now - retention, prepared_before=now - prepare_ttl
            )
            self._ended.difference_update(deleted)
            for task_id in deleted:
                self._live.pop(task_id, None)
        self.files.delete_tasks(deleted)
        return deleted

    # --- scheduling ---------------------------------------------------------

    def _enqueue(self, task_id: str, priority: int, seq: int) -> None:
        with self._lock:
            heapq.heappush(self._queue, (priority, seq, task_id))
            if not self._ready:
                self._wake_one()

    def _wake_one(self) -> None:
        """Wake a waiting worker, if there is one (under the lock)."""
        if self._idle:
            self._idle -= 1
            self._ready += 1
            self._wakeup.notify()

    def _user_code(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)``: a node's or a template's code, which may block. A
        worker running it is not ready: a task waiting then wakes another one."""
        with self._lock:
            self._ready -= 1
            if not self._ready and self._queue:
                self._wake_one()
        try:
            return function(*args)
        finally:
            with self._lock:
                self._ready += 1

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _work(self) -> None:
        with self._lock:
            self._ready += 1
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._ready -= 1
                    self._idle += 1
                    self._wakeup.wait()  # who wakes us counts us ready again
                if self._stopping:
                    self._ready -= 1
                    return
                _, _, task_id = heapq.heappop(self._queue)
                task = self._live.get(task_id)
                if task is None or task.status != PENDING or task_id in self._ended:
                    continue
                self.store.set_status(task_id, RUNNING)
                task = self._live[task_id] = attrs.evolve(task, status=RUNNING)
                run = self._runs[task_id] = _Run()
            try:
                self._run(task, run)
            except BaseException:  # a bug of ours, not of a node: never kill the worker
                log.exception("task %s: the runner failed", task_id)
                self._emit_terminal(
                    task, TASK_ERROR, FAILED, {"reason": "internal error of the local server"}
                )
            finally:
                with self._lock:
                    self._runs.pop(task_id, None)

    def _run(self, task: TaskRow, run: _Run) -> None:
        template = self.templates[task.template]
        try:
            input = self.hydrate(task.input, "input")
        except RequenceError as err:
            reason = f"the task's input cannot be read: {err}"
            self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})
            return
        ctx = NodeContext(task_id=task.id, input=input, name=task.name, abort_event=run.abort_event)
        last_data: Any = None
        for node, info in self._nodes[task.template]:
            if run.abort_event.is_set():
                return
            alias = node.alias
            ctx.alias = node.alias

            def defer(
                kind: str, fields: dict[str, Any], info: dict[str, str] = info, alias: str = alias
            ) -> None:
                self._emit(task, NODE_DEFER, {"node": info, **fields}, alias)

            ctx._emit = defer
            self._emit(task, NODE_START, {"node": info}, node.alias)
            try:
                value = self._user_code(node.function, ctx)
                generator = value if inspect.isgenerator(value) else None
                items: Iterable[Any] = (
                    iter(partial(self._user_code, next, generator, _END), _END)
                    if generator is not None
                    else ([] if value is None else [value])
                )
                try:
                    for item in items:
                        if run.abort_event.is_set():
                            return
                        output = None
                        if isinstance(item, Output):
                            output, item = item.name, item.data
                        sent, item = self._outbound(
                            task, item, f"nodes.{node.alias}.data", f"node {node.alias!r}"
                        )
                        if not self._emit(
                            task,
                            NODE_UPDATE,
                            {"node": info, "data": sent, "output": output},
                            node.alias,
                        ):
                            return
                        ctx._data[node.alias] = item
                        last_data = item
                finally:
                    if generator is not None:
                        self._user_code(generator.close)
            except BaseException as err:  # SystemExit in a node must not kill the worker
                if run.abort_event.is_set():
                    return  # includes TaskAbortedSignal: the task already ended
                message = _describe(err)
                log.debug(
                    "task %s: node %s failed\n%s", task.id, node.alias, traceback.format_exc()
                )
                self._emit(task, NODE_ERROR, {"node": info, "error": message}, node.alias)
                ctx._errors[node.alias] = message
                if not node.optional:
                    self._emit_terminal(
                        task,
                        TASK_ERROR,
                        FAILED,
                        {"reason": f"node {node.alias!r} failed: {message}"},
                    )
                    return
                continue
            finally:
                ctx._emit = None
            self._emit(task, NODE_END, {"node": info}, node.alias)
        ctx.alias = None
        if run.abort_event.is_set():
            return
        try:
            result = (
                self._user_code(template.result, ctx) if template.result is not None else last_data
            )
            result, _ = self._outbound(task, result, "result", "the template's result")
        except BaseException as err:
            if run.abort_event.is_set():
                return
            reason = f"the template's result failed: {_describe(err)}"
            self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})
            return
        self._emit_terminal(task, TASK_END, SUCCESSFUL, {"result": result, "exit": None})

    # --- files in what nodes send ---------------------------------------------

    def _outbound(self, task: TaskRow, value: Any, path: str, what: str) -> tuple[Any, Any]:
        """``(what goes on the wire, what later nodes see)`` of a node's data or a
        result: files and streams stored and replaced by references, the whole
        sent as a claim check when its compact JSON is over ``max_payload_size``."""
        if has_objects(value):  # reading a node's files may block: it counts as its code
            value = self._user_code(
                dehydrate, value, lambda item, where: self._reference(task, item), path
            )
        text = _json_text(value, f"{what} produced data that")
        seen = self.hydrate(value, path) if '"' + REFERENCE_TAG + '"' in text else value
        raw = text.encode("utf-8")
        if len(raw) <= self.max_payload_size:
            return value, seen
        row = self.files.put(task.id, [raw], "application/json")
        return claim_check_reference(self.files.url(row.id), len(raw)), seen

    def _reference(self, task: TaskRow, item: object) -> object:
        """The reference of one file, stream or callback that a node sends."""
        if isinstance(item, RequenceCallback):
            return item.raw
        assert isinstance(item, (RequenceFile, RequenceStream))
        url = remote_url(item)
        if isinstance(item, RequenceFile):
            if url is not None:
                return file_reference(url, item.mime, item.size, item.name)
            data = file_data(item)
            try:
                row = self.files.put(
                    task.id, [data] if data is not None else item.iter_bytes(), item.mime, item.name
                )
            except TooLarge as err:
                raise ValueError(str(err)) from None
            assert row.size is not None
            return file_reference(self.files.url(row.id), row.mime, row.size, row.name)
        if url is not None:
            return stream_reference(url, item.mime, item.name)
        claim_stream(item)
        row = self.files.register_stream(task.id, item.mime, item.name)
        writer = self.files.begin_stream(row.id)
        if writer is None:
            raise RuntimeError("the local Requence is stopping; the stream cannot be written")
        threading.Thread(
            target=_pump,
            args=(writer, stream_chunks(item)),
            name=f"requence-local-stream-{task.id[:8]}",
            daemon=True,
        ).start()
        return stream_reference(self.files.url(row.id), row.mime, row.name)


def _pump(writer: StreamWriter, chunks: Any) -> None:
    """Copy a node's local stream into its live stream; an error truncates it."""
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException as err:
        writer.truncate(_describe(err))
        return
    writer.finish()


def _describe(err: BaseException) -> str:
    """A node's exception as a message: its text, or its class where that says more."""
    text = str(err)
    if isinstance(err, Exception) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _first_error(validator: Any, instance: Any) -> str | None:
    """The most relevant schema violation, as a sentence naming the field."""
    import jsonschema.exceptions

    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    path = "".join(
        f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
        for i, part in enumerate(error.absolute_path)
    )
    where = f"at '{path}'" if path else "at the top level"
    return f"The input failed the template's input schema {where}: {error.message}"
