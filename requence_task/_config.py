"""Connection policy value objects, and where the access token comes from."""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ._errors import ConfigurationError, InvalidTokenError, MissingTokenError
from ._token import TokenParts, decode_access_token

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOKEN_ENV_VARS = ("REQUENCE_TASK_ACCESS_TOKEN", "REQUENCE_ACCESS_TOKEN")
PYPROJECT_TABLES = (("tool", "requence"), ("requence",))
PYPROJECT_KEYS = ("task_access_token", "access_token")


def _positive(name: str, *, allow_none: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value is None and allow_none:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")

    return check


@attrs.frozen
class Timeouts:
    """Socket time-outs of a :class:`Client`, in seconds. Every socket has one.

    Attributes:
        connect: To open a connection.
        read: To wait for an answer to an ordinary request. Each request also
            has an overall deadline of ``connect + read`` seconds for the
            whole answer (its headers and body), so a server that trickles an
            answer byte by byte is cut off then, and retried like one that
            did not answer.
        stream_inactivity: A live update stream that sends nothing at all, not
            even a keep-alive comment, for this long is treated as dropped and
            resumed; so is one that sends bytes but no whole event for this
            long. Requence sends a keep-alive at least every 15 s.

    Example:
        >>> Timeouts(connect=2).connect
        2
    """

    connect: float = attrs.field(default=5.0, validator=_positive("connect"))
    read: float = attrs.field(default=30.0, validator=_positive("read"))
    stream_inactivity: float = attrs.field(default=45.0, validator=_positive("stream_inactivity"))


@attrs.frozen
class RetryPolicy:
    """How a :class:`Client` retries while Requence is unreachable.

    Unreachable means a refused connection, a DNS failure, a time-out, an
    answer cut off or not whole by its deadline, or a gateway status (502,
    503, 504). Retries back off exponentially, from ``initial_backoff``
    doubling up to ``max_backoff``, each delay scaled by a random factor in
    ``[1 - jitter, 1]``.

    For a request (prepare, finalize, get, abort, ...) the budget bounds the
    whole call: its attempts, their answers and the pauses between them end
    within ``budget`` seconds, then :class:`RequenceUnreachableError`. No
    attempt starts that could not get its answer in the time left (as long as
    the last one took): the call waits out the budget instead, so that, as
    far as the client can tell, no request it sent is still under way when
    the error comes. (Keep the budget
    at or above ``Timeouts.read`` so that a slow answer has the time the
    time-outs give it.) An update stream, which runs for as long as its
    task, reconnects for ``budget`` seconds after it last brought an event.

    Attributes:
        budget: The longest a call may take while Requence is unreachable
            (a stream: the longest it reconnects without progress).
        initial_backoff: The first delay, in seconds.
        max_backoff: The largest delay, in seconds.
        jitter: The fraction (0..1) of each delay that is random.
        random: Returns a float in ``[0, 1)``; replace it to make tests exact.

    Example:
        >>> policy = RetryPolicy(jitter=0)
        >>> [policy.delay(n) for n in range(6)]
        [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    """

    budget: float = attrs.field(default=30.0, validator=_positive("budget"))
    initial_backoff: float = attrs.field(default=0.5, validator=_positive("initial_backoff"))
    max_backoff: float = attrs.field(default=8.0, validator=_positive("max_backoff"))
    jitter: float = attrs.field(default=0.5)
    random: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)

    @jitter.validator
    def _check_jitter(self, attribute: Any, value: float) -> None:
        if not 0 <= value <= 1:
            raise ConfigurationError(f"jitter must be between 0 and 1, got {value!r}")

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (0 for the first retry)."""
        base = min(self.initial_backoff * 2 ** min(attempt, 30), self.max_backoff)
        return float(base * (1 - self.jitter * self.random()))


def resolve_access_token(explicit: str | None = None, *, cwd: Path | None = None) -> TokenParts:
    """Find and decode the access token.

    The first hit wins: the ``explicit`` argument; the environment variables
    ``REQUENCE_TASK_ACCESS_TOKEN`` then ``REQUENCE_ACCESS_TOKEN``; the
    ``pyproject.toml`` of the working directory, table ``[tool.requence]`` or
    ``[requence]``, key ``task_access_token`` then ``access_token``.

    Raises:
        MissingTokenError: None of the three places has one.
        InvalidTokenError: The token found does not decode.
    """
    if explicit is not None:
        if not isinstance(explicit, str):
            raise InvalidTokenError(
                f"access_token must be a string, not {type(explicit).__name__}."
            )
        if not explicit.strip():
            raise MissingTokenError(
                "access_token is empty; pass the access token string, or leave it out to "
                "use REQUENCE_TASK_ACCESS_TOKEN / REQUENCE_ACCESS_TOKEN or pyproject.toml."
            )
        return decode_access_token(explicit)
    for name in TOKEN_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return decode_access_token(value)
    found = _from_pyproject((cwd or Path.cwd()) / "pyproject.toml")
    if found:
        return decode_access_token(found)
    raise MissingTokenError(
        "No Requence access token found. Looked at: (1) the access_token argument, "
        "(2) the environment variables REQUENCE_TASK_ACCESS_TOKEN and REQUENCE_ACCESS_TOKEN, "
        "(3) pyproject.toml in the working directory, [tool.requence] or [requence], keys "
        "task_access_token or access_token. Set one of them to a personal or scoped access "
        "token (for a local server: requence-task local serve prints one)."
    )


def _from_pyproject(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigurationError(
            f"{path} could not be read for an access token: {err}; fix the file or pass "
            "access_token explicitly."
        ) from None
    for table_path in PYPROJECT_TABLES:
        table: Any = document
        for key in table_path:
            table = table.get(key) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        for key in PYPROJECT_KEYS:
            value = table.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None
