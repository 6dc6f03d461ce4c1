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
import itertools
import json
import logging
import os
import threading
import time
import traceback
from collections import deque
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
from ._templates import (
    LOGIC_FALSE,
    LOGIC_TRUE,
    ON_FAIL,
    Edge,
    Node,
    NodeContext,
    Output,
    Template,
)

log = logging.getLogger("requence_task.local")

_T = TypeVar("_T")
_END = object()  # the end of a node's generator
_START = ""  # the job that starts a task (any other job runs one node, or ends the task)
_FINISH = "\0finish"  # the job that ends a task through an exit (it runs the result)

# A node's state in a run.
_WAITING, _QUEUED, _RUNNING, _DONE, _FAILED = "waiting", "queued", "running", "done", "failed"

INTERRUPTED_REASON = "interrupted: the local Requence stopped while the task was running"


class ApiError(Exception):
    """An answer other than success, with its status and a plain-text reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define(eq=False)
class _Run:
    """One running task: where each node of its graph stands."""

    task: TaskRow
    template: Template
    abort_event: threading.Event = attrs.field(factory=threading.Event)
    ended: bool = False
    ending: bool = False  # its end is being made (the result runs)
    input: Any = None  # as the nodes see it
    data: dict[str, Any] = attrs.field(factory=dict)  # the nodes' latest data
    errors: dict[str, str] = attrs.field(factory=dict)
    data_order: dict[str, int] = attrs.field(factory=dict)  # when each alias last sent data
    last_data: Any = None
    state: dict[str, str] = attrs.field(factory=dict)
    arrived: dict[str, set[Edge]] = attrs.field(factory=dict)
    busy: int = 0  # nodes queued or running (a sub-task node while its sub-task runs)
    ready: deque[str] = attrs.field(factory=deque)  # ready, waiting for a free place
    children: dict[str, str] = attrs.field(factory=dict)  # live sub-task id -> node alias


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
        self.templates = dict(templates)  # checked together by LocalRequence
        # Each template's nodes' "node" field of their updates, made once.
        self._nodes = {
            name: {
                node.alias: {"id": t.node_id(node.alias), "type": node.type, "alias": node.alias}
                for node in t.order
            }
            for name, t in self.templates.items()
        }
        self.concurrency = concurrency
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        # Jobs: (priority, phase, task's queue seq, step, task id, what): a task's start
        # (phase 1), or one of its nodes (step: the node's place in the template's
        # order, so one worker runs a task's nodes in that order) or its end (phase 0:
        # the tasks that run go first, the older first).
        self._queue: list[tuple[int, int, int, int, str, str]] = []
        # Workers waiting for a task, and workers awake outside a node's code (who
        # come back to the queue soon): a queued task wakes a worker only if
        # none of those is awake, so cheap tasks run on one thread, not hand the
        # GIL around, and a node that blocks still lets the next task start.
        self._idle = 0
        self._ready = 0
        self._runs: dict[str, _Run] = {}
        self._parents: dict[str, tuple[str, str]] = {}  # sub-task id -> (parent id, alias)
        self._ended: set[str] = set()
        self._live: dict[str, TaskRow] = {}  # the rows of tasks not ended, as stored
        self._seq = store.max_queue_seq()
        self._data_order = itertools.count()  # the order of nodes' data (next() is atomic)
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
            if task.parent_task_id is not None:  # its parent was interrupted: so is it
                self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": INTERRUPTED_REASON})
            elif task.template in self.templates:
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
                "rootTaskId": task.root_task_id,
                "timestamp": _iso(now),
                "updateId": _random_uuid(),
            }
            data.update(fields)
            event = self.store.append_event(task.id, task.project, type, alias, data, now)
            self.hub.publish(event)
            return True

    def _emit_terminal(
        self,
        task: TaskRow,
        type: str,
        final_status: str,
        fields: dict[str, Any],
        exit: str | None = None,
    ) -> bool:
        with self._lock:
            if task.id in self._ended:
                return False
            if type == TASK_END:
                fields = {**fields, "exit": exit}
            fields = {**fields, "requireAck": task.require_ack}
            if not self._emit(task, type, fields):
                return False
            self._ended.add(task.id)
            self._live.pop(task.id, None)
            run = self._runs.pop(task.id, None)
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
                exit=exit if type == TASK_END else None,
            )
            if run is not None:  # its sub-tasks cannot go on without it
                why = "aborted" if type == TASK_ABORTED else "ended"
                for child_id in list(run.children):
                    child = self._live.get(child_id)
                    if child is not None:
                        reason = f"its parent task {task.id} {why}"
                        self._emit_terminal(child, TASK_ABORTED, STOPPED, {"reason": reason})
            parent = self._parents.pop(task.id, None)
            if parent is not None:
                self._child_ended(parent, task, type, fields)
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
        try:
            self._check_input(template, input)
        except ApiError as err:
            self._rejected(task, err.message)
            raise
        input_json = _json_text(input, "the input")
        with self._lock:
            task = self.owned(task_id, project)
            self._check_state_for_finalize(task)
            self._seq += 1
            # ``input`` is parsed JSON (the request's), so it is what the store reads back.
            task = self._begin(task, name, input, input_json, priority, require_ack, self._seq)
        return task

    def _check_input(self, template: Template, input: Any) -> None:
        """422 for an input the template refuses: a claim check that cannot be
        read, or a schema violation (named by its field)."""
        checked = self._claim_checks_resolved(input)
        error = None if template.validator is None else _first_error(template.validator, checked)
        if error is not None:
            raise ApiError(422, error)

    def _begin(
        self,
        task: TaskRow,
        name: str | None,
        input: Any,
        input_json: str,
        priority: int,
        require_ack: bool,
        seq: int,
    ) -> TaskRow:
        """A checked task finalized: stored, its ``taskStart`` sent, queued (under the
        lock). ``input`` is what the store reads back from ``input_json``."""
        finalized_at = time.time()
        self.store.finalize_task(
            task.id,
            name=name,
            input_json=input_json,
            priority=priority,
            require_ack=require_ack,
            finalized_at=finalized_at,
            queue_seq=seq,
        )
        task = self._live[task.id] = attrs.evolve(
            task,
            name=name,
            input=input,
            priority=priority,
            require_ack=require_ack,
            status=PENDING,
            status_text=None,
            finalized_at=finalized_at,
            queue_seq=seq,
        )
        self._emit(task, TASK_START, {"input": input})
        self._enqueue(task.id, priority, seq)
        return task

    def _rejected(self, task: TaskRow, message: str) -> None:
        """Finalize refused the task's input: the task stays IDLE (a finalize with
        another input may follow), and its row says why."""
        with self._lock:
            live = self._live.get(task.id)
            if live is None or live.status != IDLE:
                return
            self.store.set_status_text(task.id, message)
            self._live[task.id] = attrs.evolve(live, status_text=message)

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
        """Queue a task's start."""
        with self._lock:
            heapq.heappush(self._queue, (priority, 1, seq, 0, task_id, _START))
            if not self._ready:
                self._wake_one()

    def _enqueue_step(self, run: _Run, what: str) -> None:
        """Queue a job of a running task: one of its nodes, or its end (under the lock)."""
        task = run.task
        step = run.template.step.get(what, len(run.template.order))
        heapq.heappush(
            self._queue, (task.priority or 0, 0, task.queue_seq or 0, step, task.id, what)
        )
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
        worker running it is not ready: a job waiting then wakes another one."""
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
        """How many tasks wait to start."""
        with self._lock:
            return sum(1 for job in self._queue if job[5] == _START)

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
                *_, task_id, what = heapq.heappop(self._queue)
                if what == _START:
                    task = self._live.get(task_id)
                    if task is None or task.status != PENDING or task_id in self._ended:
                        continue
                    self.store.set_status(task_id, RUNNING)
                    task = self._live[task_id] = attrs.evolve(task, status=RUNNING)
                    run = self._runs[task_id] = _Run(task, self.templates[task.template])
                else:
                    found = self._runs.get(task_id)
                    if found is None or found.ended:
                        continue
                    run, task = found, found.task
            try:
                if what == _START:
                    self._start(run)
                elif what.startswith(_FINISH):
                    self._finish(run, what[len(_FINISH) :] or None)
                else:
                    self._node(run, what)
            except BaseException:  # a bug of ours, not of a node: never kill the worker
                log.exception("task %s: the runner failed", task_id)
                self._emit_terminal(
                    task, TASK_ERROR, FAILED, {"reason": "internal error of the local server"}
                )

    # --- running a task's graph ----------------------------------------------------

    def _start(self, run: _Run) -> None:
        task = run.task
        try:
            run.input = self.hydrate(task.input, "input")
        except RequenceError as err:
            reason = f"the task's input cannot be read: {err}"
            self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})
            return
        template = run.template
        with self._lock:
            if run.ended:
                return
            for node in template.order:
                run.state[node.alias] = _WAITING
                run.arrived[node.alias] = set()
            for node in template.order:
                if not template.inputs(node.alias):
                    self._offer(run, node.alias)
            outcome = self._settled(run)
        self._settle(run, outcome)

    def _offer(self, run: _Run, alias: str) -> None:
        """A node whose inputs arrived: queued now, or once a place is free (under the lock)."""
        if run.busy < run.template.max_parallel:
            run.busy += 1
            run.state[alias] = _QUEUED
            self._enqueue_step(run, alias)
        else:
            run.ready.append(alias)

    def _completed(self, run: _Run, alias: str, outputs: set[str | None], *, failed: bool) -> None:
        """A node is over: ``outputs`` fire their edges (under the lock)."""
        template = run.template
        run.state[alias] = _FAILED if failed else _DONE
        run.busy -= 1
        for edge, target in template.successors[alias]:
            if edge.output not in outputs or run.state[target] != _WAITING:
                continue
            arrived = run.arrived[target]
            arrived.add(edge)
            node = template.by_alias[target]
            if node.type == "or" or len(arrived) == len(template.inputs(target)):
                self._offer(run, target)
        while run.ready and run.busy < template.max_parallel:
            alias = run.ready.popleft()
            run.busy += 1
            run.state[alias] = _QUEUED
            self._enqueue_step(run, alias)

    def _settled(self, run: _Run) -> tuple[str, str | None] | None:
        """Whether the task ends now (under the lock): ``("exit", name)`` through an
        exit (``name`` None: no exits, nothing left to run), ``("stuck", None)``
        when none of its exits can be reached any more, else ``None``."""
        if run.ended or run.ending:
            return None
        template = run.template
        if template.exits:
            for name, members in template.exits.items():
                if all(run.state[alias] == _DONE for alias in members):
                    run.ending = True
                    return ("exit", name)
        if run.busy or run.ready or template.continuous:
            return None
        run.ending = True
        return ("stuck", None) if template.exits else ("exit", None)

    def _settle(self, run: _Run, outcome: tuple[str, str | None] | None) -> None:
        """End the task as :meth:`_settled` said (on a worker: the result may block)."""
        if outcome is None:
            return
        kind, exit = outcome
        if kind == "stuck":
            names = ", ".join(repr(name) for name in run.template.exits or ())
            reason = f"the task can reach none of its exits ({names}): no node runs or can start"
            self._emit_terminal(run.task, TASK_ERROR, FAILED, {"reason": reason})
            return
        self._finish(run, exit)

    def _finish(self, run: _Run, exit: str | None) -> None:
        """The task's result, and its end through ``exit``."""
        task, template = run.task, run.template
        with self._lock:
            if run.ended:
                return
            run.ending = True
            members = template.exits.get(exit, ()) if template.exits and exit else ()
            if members:
                sent = [alias for alias in members if alias in run.data_order]
                last = max(sent, key=run.data_order.__getitem__) if sent else None
                default = run.data.get(last) if last is not None else None
            else:
                default = run.last_data
        ctx = self._context(run, None)
        ctx.exit = exit
        if run.abort_event.is_set():
            return
        try:
            result = self._user_code(template.result, ctx) if template.result else default
            result, _ = self._outbound(task, result, "result", "the template's result")
        except BaseException as err:
            if run.abort_event.is_set():
                return
            reason = f"the template's result failed: {_describe(err)}"
            self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})
            return
        if run.abort_event.is_set():
            return
        self._emit_terminal(task, TASK_END, SUCCESSFUL, {"result": result}, exit)

    def _context(self, run: _Run, alias: str | None) -> NodeContext:
        task = run.task
        return NodeContext(
            task_id=task.id,
            input=run.input,
            name=task.name,
            abort_event=run.abort_event,
            alias=alias,
            data=run.data,
            errors=run.errors,
        )

    def _data(self, run: _Run, alias: str, seen: Any) -> None:
        """A node sent data (under the lock or from its own worker)."""
        run.data[alias] = seen
        run.last_data = seen
        run.data_order[alias] = next(self._data_order)

    def _node(self, run: _Run, alias: str) -> None:
        """Run one node of the task's graph, on this worker."""
        task = run.task
        node = run.template.by_alias[alias]
        info = self._nodes[task.template][alias]
        with self._lock:
            if run.ended:
                return
            run.state[alias] = _RUNNING
        if not self._emit(task, NODE_START, {"node": info}, alias):
            return
        if node.type == "or":
            self._emit(task, NODE_END, {"node": info}, alias)
            self._node_done(run, alias, {None})
            return
        ctx = self._context(run, alias)

        def defer(kind: str, fields: dict[str, Any]) -> None:
            self._emit(task, NODE_DEFER, {"node": info, **fields}, alias)

        ctx._emit = defer
        try:
            if node.type == "reference":
                self._start_subtask(run, node, ctx)
                return
            if node.type == "logic":
                assert node.function is not None
                truth = bool(self._user_code(node.function, ctx))
                if run.abort_event.is_set():
                    return
                output = LOGIC_TRUE if truth else LOGIC_FALSE
                if not self._emit(
                    task, NODE_UPDATE, {"node": info, "data": truth, "output": output}, alias
                ):
                    return
                self._data(run, alias, truth)
                outputs: set[str | None] = {output} | ({None} if truth else set())
            else:
                produced = self._service(run, node, info, ctx)
                if produced is None:
                    return
                outputs = produced | {None}
        except BaseException as err:  # SystemExit in a node must not kill the worker
            if run.abort_event.is_set():
                return  # includes TaskAbortedSignal: the task already ended
            log.debug("task %s: node %s failed\n%s", task.id, alias, traceback.format_exc())
            self._node_failed(run, node, _describe(err))
            return
        finally:
            ctx._emit = None
        if run.abort_event.is_set():  # aborted, ended or the server stops: nothing more
            return
        if self._emit(task, NODE_END, {"node": info}, alias):
            self._node_done(run, alias, outputs)

    def _service(
        self, run: _Run, node: Node, info: dict[str, str], ctx: NodeContext
    ) -> set[str | None] | None:
        """Run a service node's function; its named outputs, ``None`` if the task ended."""
        assert node.function is not None
        task, alias = run.task, node.alias
        named: set[str | None] = set()
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
                    return None
                output = None
                if isinstance(item, Output):
                    output, item = item.name, item.data
                sent, item = self._outbound(task, item, f"nodes.{alias}.data", f"node {alias!r}")
                fields = {"node": info, "data": sent, "output": output}
                if not self._emit(task, NODE_UPDATE, fields, alias):
                    return None
                self._data(run, alias, item)
                if output is not None:
                    named.add(output)
        finally:
            if generator is not None:
                self._user_code(generator.close)
        return named

    def _node_done(self, run: _Run, alias: str, outputs: set[str | None]) -> None:
        with self._lock:
            if run.ended:
                return
            self._completed(run, alias, outputs, failed=False)
            outcome = self._settled(run)
        self._settle(run, outcome)

    def _node_failed(self, run: _Run, node: Node, message: str, *, inline: bool = True) -> None:
        """A node failed: its ``nodeError``, then its on-fail branch, or (optional) on as
        if it had finished, or the task's end. ``inline``: on a worker (the task's
        result may run here); else a job ends the task."""
        task, alias = run.task, node.alias
        info = self._nodes[task.template][alias]
        with self._lock:
            if not self._emit(task, NODE_ERROR, {"node": info, "error": message}, alias):
                return
            run.errors[alias] = message
            if node.on_fail is None and not node.optional:
                reason = f"node {alias!r} failed: {message}"
                self._emit_terminal(task, TASK_ERROR, FAILED, {"reason": reason})
                return
            outputs: set[str | None] = {ON_FAIL} if node.on_fail is not None else {None}
            self._completed(run, alias, outputs, failed=node.on_fail is not None)
            outcome = self._settled(run)
        if inline:
            self._settle(run, outcome)
        else:
            self._settle_later(run, outcome)

    def _settle_later(self, run: _Run, outcome: tuple[str, str | None] | None) -> None:
        """Like :meth:`_settle`, from a thread that may not run a template's code."""
        if outcome is None:
            return
        kind, exit = outcome
        if kind == "stuck":
            self._settle(run, outcome)
            return
        with self._lock:
            self._enqueue_step(run, _FINISH + (exit or ""))

    # --- sub-tasks -------------------------------------------------------------------

    def _start_subtask(self, run: _Run, node: Node, ctx: NodeContext) -> None:
        """Start the sub-task of a sub-task node; the node ends with it."""
        task = run.task
        assert node.template is not None
        template = self.templates[node.template]
        if node.input is None:
            wire = task.input  # the task's own, as stored (its references kept)
        else:
            value = self._user_code(node.input, ctx)
            wire, _ = self._outbound(task, value, "input", f"the sub-task input of {node.alias!r}")
        try:
            self._check_input(template, wire)
        except ApiError as err:
            raise ValueError(
                f"the sub-task of template {template.name!r} refused it: {err.message}"
            ) from None
        input_json = _json_text(wire, "the sub-task's input")
        row = self.store.insert_task(
            _random_uuid(),
            task.project,
            template.name,
            template.branch,
            time.time(),
            parent_task_id=task.id,
            parent_node=node.alias,
            root_task_id=task.root_task_id or task.id,
        )
        with self._lock:
            if run.ended:
                self.store.set_status(row.id, STOPPED)
                return
            run.children[row.id] = node.alias
            self._parents[row.id] = (task.id, node.alias)
            # Its parent's priority and place in the queue: before newer tasks.
            input = json.loads(input_json)
            self._begin(
                row, None, input, input_json, task.priority or 0, False, task.queue_seq or 0
            )

    def _child_ended(
        self, parent: tuple[str, str], child: TaskRow, type: str, fields: dict[str, Any]
    ) -> None:
        """A sub-task ended: its node ends with its result or fails (under the lock)."""
        parent_id, alias = parent
        run = self._runs.get(parent_id)
        if run is None or run.ended:
            return
        run.children.pop(child.id, None)
        task = run.task
        node = run.template.by_alias[alias]
        info = self._nodes[task.template][alias]
        if type != TASK_END:
            reason = fields.get("reason")
            what = "was aborted" if type == TASK_ABORTED else "failed"
            message = f"the sub-task {child.id} {what}" + (f": {reason}" if reason else "")
            self._node_failed(run, node, message, inline=False)
            return
        result, exit = fields.get("result"), fields.get("exit")
        try:
            seen = self.hydrate(result, f"nodes.{alias}.data")
        except RequenceError as err:
            self._node_failed(
                run, node, f"the sub-task's result cannot be read: {err}", inline=False
            )
            return
        if result is not None:
            data = {"node": info, "data": result, "output": exit}
            if not self._emit(task, NODE_UPDATE, data, alias):
                return
            self._data(run, alias, seen)
        if not self._emit(task, NODE_END, {"node": info}, alias):
            return
        self._completed(run, alias, {None} | ({exit} if exit else set()), failed=False)
        self._settle_later(run, self._settled(run))

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
