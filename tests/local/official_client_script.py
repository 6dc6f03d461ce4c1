"""Run inside a virtual environment that has the official ``requence`` client.

Usage: python official_client_script.py ACCESS_TOKEN
Prints one JSON object with what the official client saw.
"""

import json
import sys
import threading
import time
from datetime import datetime

from requence.requence_file import RequenceFile
from requence.requence_stream import RequenceStream
from requence.task import Task, TaskWatcher, abort_task, get_task, protect_task

token = sys.argv[1]
out = {}

# A task to its result, with every update iterated.
task = Task("greet", input={"name": "World", "steps": 2}, access_token=token)
out["updates"] = [update["type"] for update in task.sync.updates]
result = task.sync.result
out["result"] = result["result"]
out["node_data"] = result["node_data"]
out["task_url"] = result["task_url"]
out["task_id"] = task.sync.id

# get_task on the finished task.
status, context = get_task(out["task_id"], access_token=token)
out["get_status"] = status
out["get_input"] = context["input"]

# A validation error surfaces as the creation error.
bad = Task("greet", input={"nom": "World"}, access_token=token)
try:
    _ = bad.sync.id
    out["validation_error"] = None
except Exception as error:  # the official client raises TaskException
    out["validation_error"] = f"{type(error).__name__}: {error}"

# A failing task's result raises with the reason.
failing = Task("fail", input={"name": "x"}, access_token=token)
try:
    _ = failing.sync.result
    out["failure"] = None
except Exception as error:
    out["failure"] = f"{type(error).__name__}: {error}"

# abort and protect by id, on a gated (long) task.
gated = Task("gated", input={"gate": "official-never-opened"}, access_token=token)
gated_id = gated.sync.id
protect_task(gated_id, access_token=token)
abort_task(gated_id, access_token=token, reason="official abort")
try:
    _ = gated.sync.result
    out["aborted"] = None
except Exception as error:
    out["aborted"] = f"{type(error).__name__}: {error}"

# TaskWatcher sees the updates of a new task, from "now". The official watcher
# (0.8.2) dies with a KeyError on the first terminal update it sees (it never
# stores its per-task entry before deleting it), so only the updates before
# the end are checked, read on a thread of our own with a deadline.
watcher = TaskWatcher(since=datetime.now(), access_token=token)
time.sleep(0.3)
watched = Task("echo", input={"n": 1}, access_token=token)
watched_id = watched.sync.id
seen = []


def consume():
    for update, incomplete in watcher.sync().updates:
        if update.get("task_id") == watched_id:
            seen.append([update["type"], incomplete])


threading.Thread(target=consume, daemon=True).start()
deadline = time.monotonic() + 10
while time.monotonic() < deadline and "nodeEnd" not in [t for t, _ in seen]:
    time.sleep(0.05)
watcher.stop()
out["watched"] = seen

# Files: a RequenceFile and a RequenceStream in the input (uploaded by the
# official client), a file and a stream in the result (read by it).
files_task = Task(
    "files-round-trip",
    input={
        "doc": RequenceFile(b"hello official", {"type": "text/plain"}),
        "chunks": RequenceStream(iter([b"str", b"eam"]), {"type": "text/plain"}),
    },
    access_token=token,
)
files_result = files_task.sync.result["result"]
out["files"] = {
    "upper_type": type(files_result["upper"]).__name__,
    "upper": files_result["upper"].text(),
    "upper_blob": files_result["upper"].blob().decode(),
    "doc_size": files_result["doc_size"],
    "doc_mime": files_result["doc_mime"],
    "stream_text": files_result["stream_text"],
    "lines_type": type(files_result["lines"]).__name__,
    "lines": b"".join(files_result["lines"].iterable()).decode(),
}

# A large input goes by claim check, and the large result comes back as one.
rows = [{"i": i, "pad": "x" * 100} for i in range(50_000)]  # about 6 MB of JSON
big = Task("big-echo", input={"rows": rows}, access_token=token)
big_result = big.sync.result["result"]
out["big"] = {
    "count": big_result["count"],
    "rows_equal": big_result["rows"] == rows,
    "task_id": big.sync.id,
}

# A template with a sub-task and an on-fail branch: the parent's result is not
# spoiled by the sub-task's end, and the on-fail branch's exit is the result.
order = Task("order", input={"total": 12}, access_token=token)
order_updates = list(order.sync.updates)
order_result = order.sync.result
out["order"] = {
    "result": order_result["result"],
    "invoice": order_result["node_data"].get("invoice"),
    "updates": [(u["type"], (u.get("node") or {}).get("alias")) for u in order_updates],
    "task_ids": sorted({u["taskId"] for u in order_updates}),
    "task_id": order.sync.id,
}
failing_order = Task("order", input={"total": 12, "mail_fails": True}, access_token=token)
failing_result = failing_order.sync.result
out["order_rejected"] = {
    "result": failing_result["result"],
    "errors": failing_result["node_error"],
}

print(json.dumps(out))
