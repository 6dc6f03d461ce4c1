"""Fault injection for tests, switchable while the server runs. Off by default."""

from __future__ import annotations

import threading

ENDPOINTS = (
    "prepare",
    "finalize",
    "watch",
    "watch-all",
    "abort",
    "protect",
    "ack",
    "get",
    "types",
)


class Faults:
    """Knobs that make the local server misbehave on purpose.

    Example:
        >>> faults = Faults()
        >>> faults.fail_next(2, endpoint="prepare")
        >>> faults.take_failure("get") is None, faults.take_failure("prepare")
        (True, 503)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[tuple[str | None, int]] = []
        self.latency: float = 0.0
        """Seconds added before every request is handled."""
        self.cut_streams_after: int | None = None
        """End every SSE stream (cleanly) after this many events; ``None`` = never.
        Applies to streams opened after it is set."""

    def fail_next(self, count: int, *, status: int = 503, endpoint: str | None = None) -> None:
        """Answer the next ``count`` requests (to ``endpoint``, or any) with ``status``."""
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; use one of {', '.join(ENDPOINTS)}")
        if count < 0:
            raise ValueError("count must be zero or more")
        with self._lock:
            self._failures.extend([(endpoint, status)] * count)

    def take_failure(self, endpoint: str) -> int | None:
        """The status to fail this request with, if a failure is due (used by the server)."""
        with self._lock:
            for index, (wanted, status) in enumerate(self._failures):
                if wanted is None or wanted == endpoint:
                    del self._failures[index]
                    return status
        return None

    @property
    def pending_failures(self) -> int:
        """How many injected failures are still due."""
        with self._lock:
            return len(self._failures)

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._failures.clear()
        self.latency = 0.0
        self.cut_streams_after = None
