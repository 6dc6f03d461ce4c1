"""The harness: ``python -m benchmarks [--quick] [--json OUT] [--markdown FILE]``.

Runs every scenario of issue 6 in a fresh process (``benchmarks.scenario``;
``benchmarks.official`` for the official ``requence`` client, on its own
Python 3.12+ virtual environment), several times, and prints one table of
medians: the figures, the ratio to the floor (one keep-alive
``requests.Session`` doing the same calls), to ``sseclient-py`` and to the
official client, and each target with its status. Writes every figure as JSON
(``--json OUT``, default ``benchmarks/last-run.json``) and, with
``--markdown FILE``, the table as Markdown.

It never fails on a missed target (the table says it); it exits 1 only when a
scenario crashed, 2 on bad arguments, 130 on Ctrl-C. Every subprocess runs in
a process group of its own with a time-out, and is killed on any failure or
interrupt.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
OFFICIAL_VENV = HERE / ".official-venv"
OFFICIAL_REQUIREMENT = "requence==0.8.2"
MARK_START = "<!-- benchmarks:table:start -->"
MARK_END = "<!-- benchmarks:table:end -->"

# Targets of issue 6, where issue 14 has none stricter.
CPU_VS_FLOOR = 1.3  # results
INFLIGHT_THREADS = 64
INFLIGHT_RSS_MB = 250.0
INFLIGHT_SOCKETS = 32  # the client's connection pool (24 by default) and a few streams
LATENCY_WALL_VS_OFFICIAL = 1.2
LATENCY_THREADS_VS_OFFICIAL = 0.25
THROUGHPUT_PER_S = 500.0  # shown beside issue 14's ratio, not its status
# Targets of issue 13 (files).
FILES_VS_PLAIN = 0.8
FILES_RSS_GROWTH_MB = 32.0
# Targets of issue 14 (stricter than issue 6's, or new).
CREATE_CPU_VS_FLOOR = 1.15
STREAM_VS_SSECLIENT = 1.0
THROUGHPUT_VS_PEER = 0.5
MEMORY_RSS_MB = 100.0
MEMORY_THREADS = 16
MEMORY_KB_PER_HANDLE = 6.0
MEMORY_KB_PER_UPDATE = 0.5


class Sizes:
    """How big each scenario is, for the full or the quick form."""

    def __init__(self, args: argparse.Namespace) -> None:
        quick = args.quick
        self.n = args.n or (100 if quick else 500)
        self.in_flight = args.in_flight or (100 if quick else 1000)
        self.stream = args.stream_updates or (10_000 if quick else 100_000)
        self.stream_rounds = 1 if quick else 3
        self.files_mb = 50 if quick else 200
        self.throughput_seconds = 3.0 if quick else 10.0
        self.memory_in_flight = args.memory_in_flight or (1000 if quick else 10_000)
        self.memory_handles = 500 if quick else 2000
        self.memory_updates = 10_000 if quick else 100_000
        self.reps = args.reps or (1 if quick else 3)
        self.timeout = 300.0 if quick else 900.0


class Job:
    """One scenario of the plan: how to run it and how many times."""

    def __init__(
        self,
        key: str,
        argv: Callable[[Sizes], list[str]],
        *,
        official: bool = False,
        reps: Callable[[Sizes], int] = lambda s: s.reps,
        what: str,
    ) -> None:
        self.key = key
        self.argv = argv
        self.official = official
        self.reps = reps
        self.what = what


def _ours(name: str, *extra: str, n: str = "n") -> Callable[[Sizes], list[str]]:
    return lambda s: [name, "--n", str(getattr(s, n)), *extra]


PLAN = [
    Job("create", _ours("create"), what="N tasks, every finalized()"),
    Job("floor-create", _ours("floor-create"), what="the floor of create"),
    Job("official-create", _ours("create"), official=True, what="official client: create"),
    Job(
        "create-loaded",
        _ours("create", "--hogs", str(os.cpu_count() or 2)),
        what="create while a busy loop runs on every core",
    ),
    Job(
        "floor-create-loaded",
        _ours("floor-create", "--hogs", str(os.cpu_count() or 2)),
        what="the floor of create-loaded",
    ),
    Job("results", _ours("results"), what="N tasks, every result()"),
    Job("floor-results", _ours("floor-results"), what="the floor of results"),
    Job("official-results", _ours("results"), official=True, what="official client: results"),
    Job("in-flight", _ours("in-flight", n="in_flight"), what="tasks held 2 s, all awaited"),
    Job(
        "floor-in-flight",
        _ours("floor-in-flight", n="in_flight"),
        what="the floor of in-flight",
    ),
    Job("latency", _ours("latency"), what="create with 20 ms per request"),
    Job("official-latency", _ours("latency"), official=True, what="official client: latency"),
    Job(
        "stream",
        lambda s: ["stream", "--n", str(s.stream), "--rounds", str(s.stream_rounds)],
        reps=lambda s: 1,
        what="node updates of one ended task: ours vs sseclient-py",
    ),
    Job(
        "files",
        lambda s: ["files", "--n", str(s.files_mb), "--rounds", str(s.stream_rounds)],
        reps=lambda s: 1,
        what="upload and download of one file: ours vs plain requests",
    ),
    Job(
        "memory",
        lambda s: [
            "memory",
            "--n",
            str(s.memory_in_flight),
            "--handles",
            str(s.memory_handles),
            "--updates",
            str(s.memory_updates),
        ],
        what="tasks in flight at once; KB per finished handle and per retained update",
    ),
    Job(
        "throughput",
        lambda s: ["throughput", "--seconds", str(s.throughput_seconds)],
        what="creations/s the server sustains",
    ),
    Job(
        "throughput-peer",
        lambda s: ["throughput-peer", "--seconds", str(s.throughput_seconds)],
        what="creations/s of the peer (Starlette + uvicorn + SQLite)",
    ),
]
KEYS = [job.key for job in PLAN]


# --- processes ---------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQUENCE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Loopback never goes through a proxy, whatever the shell has set.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """End a child and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of an ended leader
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue


def run_process(command: Sequence[str], *, timeout: float, log: Path) -> tuple[int, str]:
    """Run ``command`` in a new process group; stderr to ``log``. Returns (status, stdout)."""
    with open(log, "wb") as err, tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env=_env(),
            start_new_session=True,
        )
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise TimeoutError(
                f"{' '.join(command[:4])} ... still ran after {timeout:.0f} s"
            ) from None
        finally:
            _kill_group(proc)  # a killed leader leaves no server behind
        out.seek(0)
        return status, out.read().decode(errors="replace")


def _stderr_summary(log: Path, limit: int = 3) -> dict[str, Any]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    top = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return {"lines": len(lines), "most_frequent": [{"line": k, "count": c} for k, c in top]}


# --- the official client's interpreter ----------------------------------------


def _is_312(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def find_python312() -> str | None:
    """A Python 3.12+: $REQUENCE_OFFICIAL_PYTHON, pyenv's, or one on PATH."""
    candidates = [os.environ.get("REQUENCE_OFFICIAL_PYTHON")]
    if shutil.which("pyenv"):
        for version in ("3.12", "3.13"):
            try:
                done = subprocess.run(
                    ["pyenv", "which", f"python{version}"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env={**os.environ, "PYENV_VERSION": _pyenv_version(version)},
                )
                candidates.append(done.stdout.strip() if done.returncode == 0 else None)
            except (OSError, subprocess.TimeoutExpired):
                pass
    candidates += [shutil.which(f"python3.{minor}") for minor in range(12, 16)]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(root, "versions", "3.1[2-9]*", "bin", "python3")))
    for candidate in candidates:
        if candidate and _is_312(candidate):
            return candidate
    return None


def _pyenv_version(prefix: str) -> str:
    """The newest pyenv-installed version starting with ``prefix`` (or the prefix)."""
    try:
        done = subprocess.run(
            ["pyenv", "versions", "--bare"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return prefix
    found = [v for v in done.stdout.split() if v.startswith(prefix + ".")]
    return found[-1] if found else prefix


def official_python(mode: str, quick: bool, venv: Path) -> tuple[str | None, str]:
    """The official client's interpreter, or ``None`` and why it is skipped."""
    python = venv / "bin" / "python"
    if mode == "skip":
        return None, "skipped (--official skip)"
    if python.exists() and _imports_requence(str(python)):
        return str(python), f"{OFFICIAL_REQUIREMENT} in {_shown(venv)}"
    if quick and mode != "install":
        return None, (
            f"skipped in --quick: no virtual environment at {venv} "
            "(run the full form once, or pass --official install)"
        )
    base = find_python312()
    if base is None:
        return None, (
            "skipped: no Python 3.12+ on this machine (the official client needs one; "
            "set REQUENCE_OFFICIAL_PYTHON)"
        )
    print(f"  making {venv} with {base} and {OFFICIAL_REQUIREMENT} ...", file=sys.stderr)
    partial = venv.with_name(venv.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log = Path(tempfile.gettempdir()) / "benchmarks-official-install.log"
    try:
        for command in (
            [base, "-m", "venv", str(partial)],
            [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", OFFICIAL_REQUIREMENT],
        ):
            status, _ = run_process(command, timeout=600, log=log)
            if status != 0:
                tail = log.read_text(errors="replace")[-1500:]
                return None, f"skipped: {' '.join(command[:4])} failed ({status}):\n{tail}"
        shutil.rmtree(venv, ignore_errors=True)
        partial.rename(venv)
    except TimeoutError as err:
        return None, f"skipped: installing the official client timed out ({err})"
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return str(python), f"{OFFICIAL_REQUIREMENT} in {_shown(venv)} (just made)"


def _shown(path: Path) -> str:
    """A path as the reader would type it: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _imports_requence(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import requence.task"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# --- figures -----------------------------------------------------------------


def calibrate() -> float:
    """Microseconds for ``sum(range(1000))``: how fast this machine runs Python now.

    The median of 20 samples over about a second: on this machine a core
    flips between about 16 and 27 us from one tenth of a second to the next,
    so a best-of-few would hide what the scenarios get.
    """
    samples = timeit.repeat("sum(range(1000))", number=2000, repeat=20)
    return statistics.median(samples) / 2000 * 1e6


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure over the repetitions."""
    middle: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            middle[key] = statistics.median(run[key] for run in runs if key in run)
        elif not isinstance(value, (list, dict)):
            middle[key] = value
    return middle


def _status_upper(parts: list[tuple[str, float, float, str]]) -> str:
    """Status of ``value <= limit`` parts: (label, value, limit, unit)."""
    missed = [
        f"{label} {value:,.{2 if unit in ('x', ' KB') else 0}f}{unit} > {limit:,g}{unit} "
        f"(by {value / limit - 1:.0%})"
        for label, value, limit, unit in parts
        if value > limit
    ]
    return "met" if not missed else "missed: " + "; ".join(missed)


def _status_lower(label: str, value: float, limit: float, unit: str, digits: int) -> str:
    """Status of ``value >= limit``."""
    if value >= limit:
        return "met"
    return (
        f"missed: {label} {value:,.{digits}f}{unit} < {limit:,g}{unit} (by {1 - value / limit:.0%})"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


COLUMNS = [
    ("scenario", "scenario"),
    ("client", "client"),
    ("cpu", "client CPU"),
    ("wall", "wall s"),
    ("threads", "threads"),
    ("rss", "RSS MB"),
    ("sockets", "sockets"),
    ("load", "load"),
    ("rate", "rate"),
    ("vs_base", "vs floor / sseclient-py"),
    ("vs_official", "vs official"),
    ("target", "target"),
    ("status", "status"),
]


def build_rows(results: dict[str, dict[str, Any]], official_note: str) -> list[dict[str, str]]:
    """The table: one row per scenario, with ratios and each target's status."""

    def med(key: str) -> dict[str, Any] | None:
        entry = results.get(key)
        return entry["median"] if entry and "median" in entry else None

    rows: list[dict[str, str]] = []

    def add(key: str, client: str, **cells: str) -> None:
        entry = results.get(key)
        if entry is None:
            return  # not asked for (--only)
        row = {column: "-" for column, _ in COLUMNS} | {"scenario": key, "client": client}
        row.update(vs_base="", vs_official="", target="", status="")
        m = entry.get("median")
        if m is not None:
            if "client_cpu_ms_per_task" in m:
                row["cpu"] = _fmt(m["client_cpu_ms_per_task"]) + " ms/task"
            row.update(
                wall=_fmt(m.get("wall_s")),
                threads=_fmt(m.get("peak_threads"), ".0f"),
                rss=_fmt(m.get("peak_rss_mb"), ".0f"),
            )
            if "peak_sockets" in m:
                row["sockets"] = _fmt(m["peak_sockets"], ".0f")
            if "load_before" in m:
                row["load"] = f"{m['load_before']:.1f}\u2192{m['load_after']:.1f}"
            row.update(cells)
        elif "error" in entry:
            row["status"] = f"crashed: {entry['error']}"
        elif "skipped" in entry:
            row["status"] = "skipped (see the official client's note)"
        rows.append(row)

    # create / results: CPU per task vs the floor; vs the official client.
    for name in ("create", "create-loaded", "results"):
        m, floor, off = med(name), med(f"floor-{name}"), med(f"official-{name}")
        cpu_ratio = _ratio(
            m and m["client_cpu_ms_per_task"], floor and floor["client_cpu_ms_per_task"]
        )
        limit = CREATE_CPU_VS_FLOOR if name.startswith("create") else CPU_VS_FLOOR
        cells: dict[str, str] = {"target": f"CPU <= {limit}x floor"}
        if cpu_ratio is not None:
            cells["vs_base"] = f"CPU {cpu_ratio:.2f}x floor"
            cells["status"] = _status_upper([("CPU", cpu_ratio, limit, "x")])
        if m and off:
            cells["vs_official"] = (
                f"CPU {_ratio(m['client_cpu_ms_per_task'], off['client_cpu_ms_per_task']):.2f}x, "
                f"wall {_ratio(m['wall_s'], off['wall_s']):.2f}x"
            )
        add(name, "requence_task", **cells)
        add(f"floor-{name}", "floor (requests.Session)")
        add(f"official-{name}", "official requence")

    # in flight: absolute bounds.
    m, floor = med("in-flight"), med("floor-in-flight")
    cells = {
        "target": f"threads <= {INFLIGHT_THREADS}, RSS <= {INFLIGHT_RSS_MB:.0f} MB, "
        f"sockets <= {INFLIGHT_SOCKETS}"
    }
    if m:
        cells["status"] = _status_upper(
            [
                ("threads", m["peak_threads"], INFLIGHT_THREADS, ""),
                ("RSS", m["peak_rss_mb"], INFLIGHT_RSS_MB, " MB"),
                ("sockets", m.get("peak_sockets", 0), INFLIGHT_SOCKETS, ""),
            ]
        )
        if floor:
            cells["vs_base"] = (
                f"CPU {_ratio(m['client_cpu_ms_per_task'], floor['client_cpu_ms_per_task']):.2f}x, "
                f"wall {_ratio(m['wall_s'], floor['wall_s']):.2f}x floor"
            )
    add("in-flight", "requence_task", **cells)
    add("floor-in-flight", "floor (requests.Session)")

    # latency: vs the official client.
    m, off = med("latency"), med("official-latency")
    cells = {
        "target": f"wall <= {LATENCY_WALL_VS_OFFICIAL}x, threads <= "
        f"{LATENCY_THREADS_VS_OFFICIAL}x official"
    }
    if m and off:
        wall_ratio = _ratio(m["wall_s"], off["wall_s"]) or 0.0
        thread_ratio = _ratio(m["peak_threads"], off["peak_threads"]) or 0.0
        cells["vs_official"] = f"wall {wall_ratio:.2f}x, threads {thread_ratio:.2f}x"
        cells["status"] = _status_upper(
            [
                ("wall", wall_ratio, LATENCY_WALL_VS_OFFICIAL, "x"),
                ("threads", thread_ratio, LATENCY_THREADS_VS_OFFICIAL, "x"),
            ]
        )
    elif m:
        cells["status"] = "n/a: " + official_note.split(":")[0]
    add("latency", "requence_task", **cells)
    add("official-latency", "official requence")

    # stream: ours vs sseclient-py over the same bytes.
    m = med("stream")
    cells = {"target": f">= {STREAM_VS_SSECLIENT}x sseclient-py"}
    if m:
        ratio = _ratio(m["updates_per_s"], m["baseline_updates_per_s"]) or 0.0
        cells.update(
            cpu=f"{m['client_cpu_us_per_update']:.1f} us/update",
            rate=f"{m['updates_per_s']:,.0f} updates/s",
            vs_base=f"{ratio:.2f}x sseclient-py",
            status=_status_lower("rate", ratio, STREAM_VS_SSECLIENT, "x", 2),
        )
    add("stream", "requence_task", **cells)
    if m:
        row = {column: "-" for column, _ in COLUMNS}
        row.update(
            scenario="stream-sseclient",
            client="sseclient-py alone",
            cpu=f"{m['baseline_cpu_us_per_update']:.1f} us/update",
            wall=_fmt(m["baseline_wall_s"]),
            rate=f"{m['baseline_updates_per_s']:,.0f} updates/s",
            vs_base="",
            vs_official="",
            target="",
            status="",
        )
        rows.append(row)

    # files: throughput vs plain requests doing the same calls, and memory.
    m = med("files")
    cells = {
        "target": f">= {FILES_VS_PLAIN}x plain requests, RSS growth <= {FILES_RSS_GROWTH_MB:.0f} MB"
    }
    if m:
        up = _ratio(m["ours_upload_mb_per_s"], m["plain_upload_mb_per_s"]) or 0.0
        down = _ratio(m["ours_download_mb_per_s"], m["plain_download_mb_per_s"]) or 0.0
        missed = [
            status
            for status in (
                _status_lower("upload", up, FILES_VS_PLAIN, "x", 2),
                _status_lower("download", down, FILES_VS_PLAIN, "x", 2),
                _status_upper(
                    [("RSS growth", m["ours_rss_growth_mb"], FILES_RSS_GROWTH_MB, " MB")]
                ),
            )
            if status != "met"
        ]
        cells.update(
            rss=f"+{m['ours_rss_growth_mb']:.0f}",
            rate=f"up {m['ours_upload_mb_per_s']:,.0f} / down "
            f"{m['ours_download_mb_per_s']:,.0f} MB/s ({m['size_mb']:.0f} MB)",
            vs_base=f"up {up:.2f}x, down {down:.2f}x plain requests",
            status="met" if not missed else "; ".join(missed),
        )
    add("files", "requence_task", **cells)

    # throughput: the server, vs the peer measured in the same run.
    m, peer = med("throughput"), med("throughput-peer")
    cells = {
        "target": f">= {THROUGHPUT_VS_PEER}x peer (issue 6: {THROUGHPUT_PER_S:.0f}/s)",
    }
    if m:
        cells.update(
            cpu=f"server {m['server_cpu_ms_per_creation']:.2f} ms/creation",
            threads="-",
            rss="-",
            rate=f"{m['creations_per_s']:,.0f} creations/s",
        )
        ratio = _ratio(m["creations_per_s"], peer and peer["creations_per_s"])
        if ratio is not None:
            cells["vs_base"] = f"{ratio:.2f}x peer"
            cells["status"] = _status_lower("rate", ratio, THROUGHPUT_VS_PEER, "x", 2)
        else:
            cells["status"] = "n/a: no throughput-peer in this run"
        if m["creations_per_s"] >= THROUGHPUT_PER_S:
            cells["status"] += f"; {THROUGHPUT_PER_S:.0f}/s met"
    add("throughput", "load: keep-alive http.client", **cells)
    peer_cells: dict[str, str] = {}
    if peer:
        peer_cells.update(
            cpu=f"server {peer['server_cpu_ms_per_creation']:.2f} ms/creation",
            threads="-",
            rss="-",
            rate=f"{peer['creations_per_s']:,.0f} creations/s",
        )
    add("throughput-peer", "peer: Starlette + uvicorn + SQLite", **peer_cells)

    # memory: absolute bounds of issue 14.
    m = med("memory")
    cells = {
        "target": f"RSS <= {MEMORY_RSS_MB:.0f} MB, threads <= {MEMORY_THREADS}, "
        f"<= {MEMORY_KB_PER_HANDLE:g} KB/handle, <= {MEMORY_KB_PER_UPDATE:g} KB/update"
    }
    if m:
        cells["target"] = f"{m['n']:,.0f} in flight: " + cells["target"]
        cells.update(
            cpu=f"{m['client_cpu_ms_per_task']:.2f} ms/task",
            rate=f"{m['kb_per_handle']:.2f} KB/handle, {m['kb_per_update']:.3f} KB/update",
            status=_status_upper(
                [
                    ("RSS", m["peak_rss_mb"], MEMORY_RSS_MB, " MB"),
                    ("threads", m["peak_threads"], MEMORY_THREADS, ""),
                    ("per handle", m["kb_per_handle"], MEMORY_KB_PER_HANDLE, " KB"),
                    ("per update", m["kb_per_update"], MEMORY_KB_PER_UPDATE, " KB"),
                ]
            ),
        )
    add("memory", "requence_task", **cells)
    return rows


def text_table(rows: list[dict[str, str]]) -> str:
    widths = {key: max(len(title), *(len(r[key]) for r in rows)) for key, title in COLUMNS}
    head = "  ".join(title.ljust(widths[key]) for key, title in COLUMNS).rstrip()
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append("  ".join(row[key].ljust(widths[key]) for key, _ in COLUMNS).rstrip())
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, str]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(row[key] or " " for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import requests

        requests_version = requests.__version__
    except ImportError:
        requests_version = "?"
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "requests": requests_version,
    }


def write_markdown(path: Path, report: dict[str, Any], rows: list[dict[str, str]]) -> None:
    """The table as Markdown; into an existing file between the markers, if it has them."""
    m = report["machine"]
    official = report["official"]
    for key in ("official-create", "official-results", "official-latency"):
        version = report["scenarios"].get(key, {}).get("median", {}).get("python")
        if version:
            official = f"{official}, on Python {version}"
            break
    sizes = report["sizes"]
    memory = ""
    if "memory" in report["scenarios"] and "memory_in_flight" in sizes:
        memory = (
            f"; memory {sizes['memory_in_flight']:,} in flight, "
            f"{sizes['memory_handles']:,} handles, {sizes['memory_updates']:,} updates"
        )
    fragment = "\n".join(
        [
            MARK_START,
            "",
            f"Command: `{report['command']}`, {report['date']}, took "
            f"{report['elapsed_s']:.0f} s. N={report['sizes']['n']} tasks "
            f"(in-flight {report['sizes']['in_flight']:,}, stream "
            f"{report['sizes']['stream']:,} node updates{memory}), medians of "
            f"{report['sizes']['reps']} runs, each in a fresh process (stream: one process, "
            f"the median of {report['sizes']['stream_rounds']} alternating rounds).",
            "",
            f"Machine: {m['cpus']} cores ({m['cpu_model'] or 'unknown model'}), "
            f"{m['platform']}; our client on Python {m['python']} with requests "
            f"{m['requests']}; official client: {official}. "
            f"`sum(range(1000))` took {report['calibration_us'][0]:.1f} us at the start "
            f"and {report['calibration_us'][1]:.1f} us at the end (a measure of the "
            f"machine's speed and of its load); load average "
            f"{report['loadavg'][0]:.1f} at the start, {report['loadavg'][1]:.1f} at the end.",
            "",
            markdown_table(rows),
            "",
            MARK_END,
        ]
    )
    if path.exists():
        text = path.read_text()
        if MARK_START in text and MARK_END in text:
            before, rest = text.split(MARK_START, 1)
            _, after = rest.split(MARK_END, 1)
            path.write_text(before + fragment + after)
            return
    path.write_text(fragment + "\n")


def run_job(
    job: Job, rep: int, sizes: Sizes, official_py: str | None, logs: Path
) -> dict[str, Any]:
    """One repetition of one scenario: its figures, or ``{"error": ...}``."""
    reps = job.reps(sizes)
    print(f"  {job.key} {rep + 1}/{reps} ({job.what}) ...", file=sys.stderr, flush=True)
    scenario_argv = [*job.argv(sizes), "--timeout", str(sizes.timeout)]
    if job.official:
        command = [official_py or "", "-m", "benchmarks.official", *scenario_argv]
        command += ["--server-python", sys.executable]
    else:
        command = [sys.executable, "-m", "benchmarks.scenario", *scenario_argv]
    log = logs / f"{job.key}-{rep + 1}.log"
    load_before = os.getloadavg()[0]
    try:
        status, out = run_process(command, timeout=sizes.timeout + 60, log=log)
        if status != 0:
            raise RuntimeError(f"exit status {status}")
        figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        figures["load_before"], figures["load_after"] = load_before, os.getloadavg()[0]
    except (RuntimeError, TimeoutError, ValueError, IndexError) as err:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        print(f"  {job.key} crashed: {err}\n{tail}", file=sys.stderr)
        return {"error": str(err), "stderr_tail": tail}
    figures["stderr"] = _stderr_summary(log)
    if figures["stderr"]["lines"]:
        top = figures["stderr"]["most_frequent"][0]
        print(
            f"    (stderr: {figures['stderr']['lines']} lines, most often "
            f"{top['count']}x {top['line'][:100]!r})",
            file=sys.stderr,
        )
    return figures


# --- main --------------------------------------------------------------------


def rerender(path: Path, markdown: str | None) -> int:
    """The table of an earlier run, from its JSON, without running anything."""
    report = json.loads(path.read_text())
    rows = build_rows(report["scenarios"], report["official"])
    print(text_table(rows))
    if markdown:
        write_markdown(Path(markdown), report, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about one minute: small N, 1 repetition, official client only if its venv exists",
    )
    parser.add_argument(
        "--json",
        default=str(HERE / "last-run.json"),
        metavar="OUT",
        help="where to write every figure (default benchmarks/last-run.json)",
    )
    parser.add_argument(
        "--markdown",
        metavar="FILE",
        help="write the table as Markdown; into FILE between its table markers if it has them",
    )
    parser.add_argument("--only", help=f"comma-separated scenarios, of: {', '.join(KEYS)}")
    parser.add_argument("--n", type=int, help="tasks per scenario (500; 100 with --quick)")
    parser.add_argument("--in-flight", type=int, help="tasks of in-flight (1000; 100 with --quick)")
    parser.add_argument(
        "--stream-updates", type=int, help="node updates of stream (100000; 10000 with --quick)"
    )
    parser.add_argument(
        "--memory-in-flight",
        type=int,
        help="tasks in flight at once in memory (10000; 1000 with --quick)",
    )
    parser.add_argument("--reps", type=int, help="repetitions (3; 1 with --quick)")
    parser.add_argument(
        "--official",
        choices=["auto", "install", "skip"],
        default="auto",
        help="the official client: auto = make its venv in the full form, use it in --quick "
        "only if it exists; install = make it in either; skip",
    )
    parser.add_argument(
        "--official-venv",
        default=str(OFFICIAL_VENV),
        metavar="DIR",
        help="where the official client's virtual environment is (made once)",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="run nothing: print the table of an earlier run's JSON (and --markdown it)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        return rerender(Path(args.from_json), args.markdown)
    only = set(KEYS) if not args.only else {k.strip() for k in args.only.split(",")}
    unknown = only - set(KEYS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; use {', '.join(KEYS)}")
    sizes = Sizes(args)

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds, so every scenario process is ended

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C interrupts even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    calibration = [calibrate()]
    loadavg = [os.getloadavg()[0]]

    jobs = [job for job in PLAN if job.key in only]
    official_py: str | None = None
    official_note = "not needed"
    if any(job.official for job in jobs):
        official_py, official_note = official_python(
            args.official, args.quick, Path(args.official_venv)
        )
        print(f"official client: {official_note}", file=sys.stderr)

    results: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job.official and official_py is None:
            results[job.key] = {"skipped": official_note}
        else:
            runs[job.key] = []
    logs = Path(tempfile.mkdtemp(prefix="benchmarks-logs-"))
    try:
        # Repetitions interleaved (every scenario once, then again), so that a
        # scenario and its baselines see the same moments of a shared machine.
        for rep in range(max(job.reps(sizes) for job in jobs)):
            for job in jobs:
                if job.key not in runs or job.key in results or rep >= job.reps(sizes):
                    continue
                figures_or_error = run_job(job, rep, sizes, official_py, logs)
                if "error" in figures_or_error:
                    results[job.key] = figures_or_error
                else:
                    runs[job.key].append(figures_or_error)
    except (KeyboardInterrupt, SystemExit) as err:
        status = err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else 130
        print("interrupted; every scenario process was ended", file=sys.stderr)
        return status
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    for key, done in runs.items():
        if key not in results:
            results[key] = {"runs": done, "median": medians(done)}
    crashed = any("error" in entry for entry in results.values())

    calibration.append(calibrate())
    loadavg.append(os.getloadavg()[0])
    rows = build_rows(results, official_note)
    table = text_table(rows)
    elapsed = time.perf_counter() - started
    command = " ".join(
        ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]
    )
    report: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "sizes": vars(sizes),
        "machine": machine(),
        "calibration_us": calibration,
        "loadavg": loadavg,
        "official": official_note,
        "elapsed_s": elapsed,
        "scenarios": results,
        "rows": rows,
        "table": table,
    }
    print(
        f"N={sizes.n} (in-flight {sizes.in_flight}, stream {sizes.stream:,} updates, "
        f"memory {sizes.memory_in_flight:,} in flight), "
        f"{sizes.reps} repetition(s), medians. Client CPU = user+sys of the client process "
        f"over the measured part. sum(range(1000)): {calibration[0]:.1f} / "
        f"{calibration[1]:.1f} us; load average {loadavg[0]:.1f} / {loadavg[1]:.1f}."
    )
    print(f"Official client: {official_note}")
    print(table)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        write_markdown(Path(args.markdown), report, rows)
    print(f"(took {elapsed:.0f} s; figures in {args.json})")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
