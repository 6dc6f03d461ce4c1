"""``Outcome``: the handle's own futures, a few slots each; and the real
``concurrent.futures.Future`` made from one for ``Task.future``."""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
import tracemalloc

import pytest

from requence_task._outcome import Outcome, mirrored


def test_a_value_and_the_callbacks_before_and_after() -> None:
    outcome: Outcome[int] = Outcome()
    seen: list[tuple[str, int]] = []
    outcome.add_done_callback(lambda o: seen.append(("before", o.result())))
    assert not outcome.done() and not outcome.cancelled()
    outcome.set_result(5)
    outcome.add_done_callback(lambda o: seen.append(("after", o.result())))
    assert outcome.done() and outcome.result() == 5 and outcome.exception() is None
    assert seen == [("before", 5), ("after", 5)]
    with pytest.raises(concurrent.futures.InvalidStateError):
        outcome.set_result(6)
    with pytest.raises(concurrent.futures.InvalidStateError):
        outcome.set_exception(RuntimeError("late"))
    assert outcome.result() == 5


def test_an_error_is_raised_by_result_and_given_by_exception() -> None:
    outcome: Outcome[int] = Outcome()
    error = RuntimeError("no")
    outcome.set_exception(error)
    assert outcome.exception() is error
    with pytest.raises(RuntimeError, match="no"):
        outcome.result()


def test_a_wait_times_out_then_a_thread_settles_it() -> None:
    outcome: Outcome[str] = Outcome()
    with pytest.raises(concurrent.futures.TimeoutError):
        outcome.result(timeout=0.05)
    got: list[str] = []
    waiters = [threading.Thread(target=lambda: got.append(outcome.result(10))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.05)
    outcome.set_result("x")
    for waiter in waiters:
        waiter.join(10)
    assert got == ["x", "x", "x"]
    assert outcome._event is None  # the wait's event is not kept once settled


def test_a_callback_that_raises_is_logged_and_the_others_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome: Outcome[int] = Outcome()
    seen: list[int] = []
    outcome.add_done_callback(lambda o: 1 / 0)
    outcome.add_done_callback(lambda o: seen.append(o.result()))
    outcome.set_result(1)
    assert seen == [1]
    assert "a done callback raised" in caplog.text


def test_the_mirrored_future_follows_and_its_cancel_changes_nothing() -> None:
    outcome: Outcome[int] = Outcome()
    future = mirrored(outcome)
    assert isinstance(future, concurrent.futures.Future) and not future.done()
    outcome.set_result(3)
    assert future.result(timeout=1) == 3
    other: Outcome[int] = Outcome()
    cancelled = mirrored(other)
    assert cancelled.cancel()
    other.set_exception(ValueError("v"))  # no InvalidStateError from the cancelled copy
    with pytest.raises(ValueError):
        other.result()
    done, _ = concurrent.futures.wait([future], timeout=1)
    assert done == {future}


def test_an_outcome_is_a_tenth_of_a_future() -> None:
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        outcomes: list[Outcome[int]] = [Outcome() for _ in range(1000)]
        for outcome in outcomes:
            outcome.set_result(1)
        size = (tracemalloc.get_traced_memory()[0] - before) / len(outcomes)
        futures = [concurrent.futures.Future() for _ in range(1000)]
        future_size = (tracemalloc.get_traced_memory()[0] - before) / len(futures) - size
    finally:
        tracemalloc.stop()
    assert size * 5 < future_size, (size, future_size)
