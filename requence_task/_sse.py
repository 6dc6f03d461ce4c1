"""Server-sent events, from bytes: a pure decoder, with no sockets and no requests.

:func:`decode` turns the chunks of an SSE body, cut anywhere, into
:class:`RawEvent` s: whole frames only (what follows the last blank line of a
cut body is dropped, so a resume asks for it again), each frame parsed by
sseclient-py except those of exactly the protocol's own shape, which are read
directly (several times cheaper, the same result). Frames that are not UTF-8,
ids that are not integers and data that is not a JSON object are skipped with
a warning; the position of a skipped event is reported, so that a resume goes
past it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import sseclient

from ._errors import ApiError
from ._protocol import REFERENCE_TAG, TAG_CLAIM_CHECK

log = logging.getLogger("requence_task")

MAX_EVENT_BYTES = 32 * 2**20  # far above any payload limit; bounds an endless line
_REFERENCE = f'"{REFERENCE_TAG}"'
_CLAIM_CHECK = f'"{TAG_CLAIM_CHECK}"'
_ID_LINE = re.compile(rb"^id: ?([0-9]+)$", re.MULTILINE)


@attrs.define
class RawEvent:
    """One SSE event: its position (the ``id:``), type and JSON object.

    Not frozen (nothing changes one once made; ``attrs.evolve`` makes another):
    a frozen class's ``__init__`` costs twice as much, on every event.
    """

    position: int | None
    type: str
    data: dict[str, Any]
    # The data as it came (JSON text): what a monitor keeps of an update.
    text: str = attrs.field(default="", eq=False, repr=False)
    # Whether the data may hold references (files, streams, claim checks), and
    # claim checks in particular (which need a fetch): a look at its text.
    refs: bool = False
    claims: bool = False


def decode(
    chunks: Iterable[bytes],
    *,
    what: str,
    skipped: Callable[[int], object],
    on_frame: Callable[[], object] | None = None,
) -> Iterator[RawEvent]:
    """The events of an SSE body given as chunks cut anywhere.

    Args:
        chunks: The body, as it arrives.
        what: Names the stream in warnings.
        skipped: Called with the position of each event skipped (not UTF-8,
            data not a JSON object) that had one.
        on_frame: Called each time a whole frame (or several) has arrived.

    Raises:
        ApiError: An event is larger than :data:`MAX_EVENT_BYTES`.
    """

    def skip_frame(frame: bytes) -> None:
        match = _ID_LINE.search(frame)
        log.warning("%s: skipped an event that is not UTF-8 text", what)
        if match is not None:
            skipped(int(match.group(1)))

    for event_id, event_type, text in events(frames(chunks, skip_frame, on_frame)):
        parsed = _parse(event_id, event_type, text, what, skipped)
        if parsed is not None:
            yield parsed


def _parse(
    event_id: str | None, event_type: str, text: str, what: str, skipped: Callable[[int], object]
) -> RawEvent | None:
    position: int | None = None
    if event_id:
        try:
            position = int(event_id)
        except (TypeError, ValueError):
            log.warning("%s: skipped an event whose id is not an integer", what)
            return None
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("%s: skipped a %r event whose data is not JSON", what, event_type)
        if position is not None:
            skipped(position)
        return None
    if not isinstance(data, dict):
        log.warning("%s: skipped a %r event whose data is not a JSON object", what, event_type)
        if position is not None:
            skipped(position)
        return None
    refs = _REFERENCE in text
    return RawEvent(
        position,
        sys.intern(event_type),  # a few names, kept once
        data,
        text,
        refs,
        refs and _CLAIM_CHECK in text,
    )


def events(frames: Iterable[bytes]) -> Iterator[tuple[str | None, str, str]]:
    """The events of whole frames, as ``(id, event, data)`` texts.

    A frame of exactly the shape the protocol sends (``id: N``, ``event: T``,
    one ``data:`` line) is read directly, which is several times cheaper;
    every other frame (comments, several data lines, other fields, other
    spacing) is parsed by sseclient-py, so the results are the same.
    """
    for frame in frames:
        if frame.startswith(b"id: "):
            parts = frame.split(b"\n", 3)
            if (
                len(parts) == 4
                and parts[3] == b"\n"
                and parts[0][4:].isdigit()
                and parts[1].startswith(b"event: ")
                and parts[2].startswith(b"data: ")
            ):
                event = parts[1][7:].decode()
                data = parts[2][6:].decode()
                if event and event.strip() == event and data.strip() == data:
                    yield parts[0][4:].decode(), event, data
                    continue
        for parsed in sseclient.SSEClient(iter([frame])).events():
            yield parsed.id, str(parsed.event), parsed.data


def frames(
    chunks: Iterable[bytes],
    skip: Callable[[bytes], object],
    on_frame: Callable[[], object] | None = None,
) -> Iterator[bytes]:
    """Whole SSE frames (each ending in a blank line) from arbitrary chunks.

    Line ends are normalised to ``\\n``. What follows the last blank line when
    the body ends is an unfinished event of a cut stream: it is dropped, never
    parsed, so a resume asks for it again. A frame that is not UTF-8 is given
    to ``skip`` instead of being yielded. Each chunk is normalised and scanned
    once, so an endless line costs time in proportion to its length.
    ``on_frame`` is called whenever a chunk completed at least one frame.
    """
    pending = bytearray()  # normalised bytes after the last complete frame
    held_cr = False  # a CR at a chunk's end may be the first half of a CRLF
    for chunk in chunks:
        if not chunk:
            continue
        if held_cr:
            chunk, held_cr = b"\r" + chunk, False
        if chunk.endswith(b"\r"):
            chunk, held_cr = chunk[:-1], True
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if len(pending) + len(text) > MAX_EVENT_BYTES:
            raise ApiError(
                f"An event on the stream is larger than {MAX_EVENT_BYTES // 2**20} MiB (or never "
                "ends); the stream is not a Requence update stream."
            )
        scan_from = max(len(pending) - 1, 0)  # a blank line may straddle the chunks
        pending += text
        end = pending.rfind(b"\n\n", scan_from)
        if end < 0:
            continue
        complete = bytes(pending[: end + 2])
        del pending[: end + 2]
        if on_frame is not None:
            on_frame()
        yield from _checked(complete, skip)
    # At the end a held CR is a line end after all.
    complete, _unfinished = _split_complete(bytes(pending) + (b"\n" if held_cr else b""))
    yield from _checked(complete, skip)


def _split_complete(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with normalised line ends, cut after its last blank line."""
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    end = text.rfind(b"\n\n")
    if end < 0:
        return b"", text
    return text[: end + 2], text[end + 2 :]


def _checked(complete: bytes, skip: Callable[[bytes], object]) -> Iterator[bytes]:
    for frame in complete.split(b"\n\n"):
        if not frame:
            continue
        frame += b"\n\n"
        try:
            frame.decode("utf-8")
        except UnicodeDecodeError:
            skip(frame)
            continue
        yield frame
