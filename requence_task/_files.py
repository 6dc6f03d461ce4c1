"""Files, streams and callbacks: the objects that stand for references.

A :class:`RequenceFile` holds bytes (in memory, in a file on disk, or at a
capability URL of Requence's files service); a :class:`RequenceStream` is a
byte stream of unknown length; a :class:`RequenceCallback` is a service's
function that a task client can only look at. The wire layer (``_wire``)
turns references into these objects and back; this module knows nothing of
HTTP: a remote object reads through the *opener* it was made with.

The framing of streams (one type byte, a 4-byte big-endian length, the
payload) lives here too, for the client and the local server alike.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import struct
from collections.abc import Iterable, Iterator
from html import escape
from pathlib import Path
from typing import IO, Any, Final, Protocol
from urllib.parse import urlsplit

from ._errors import CallbackError, ConfigurationError, TruncatedError
from ._protocol import FRAME_DATA, FRAME_END, FRAME_HEADER_SIZE, FRAME_TRUNCATED

DEFAULT_MIME: Final = "application/octet-stream"
CHUNK_SIZE: Final = 64 * 1024
# The largest image a notebook shows inline; larger ones show as a file's line.
_IMAGE_LIMIT = 5 * 1024 * 1024
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"})


class Opener(Protocol):
    """How a remote object reads: ``(url, chunk_size, framed)`` to the body's
    chunks and whether the answer is framed. Made by the client that hydrated it."""

    def __call__(
        self, url: str, *, chunk_size: int, framed: bool
    ) -> tuple[Iterator[bytes], bool]: ...


def host_of(url: str) -> str:
    """What may be shown of a capability URL: its host (and port), never its path."""
    try:
        parts = urlsplit(url)
        return parts.netloc.rpartition("@")[2] or "?"
    except ValueError:
        return "?"


def human_size(size: int | None) -> str:
    """``1.5 MB``-style text of a byte count (``unknown size`` for ``None``)."""
    if size is None:
        return "unknown size"
    if size < 1000:
        return f"{size} B" if size != 1 else "1 byte"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _check_mime(mime: object) -> str:
    if not isinstance(mime, str) or "/" not in mime or any(c in mime for c in "\r\n"):
        raise ConfigurationError(
            f"mime must be a MIME type such as 'image/png' or 'text/csv', not {mime!r}"
        )
    return mime


def _check_name(name: object) -> str | None:
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"name must be a string or None, not {type(name).__name__}")
    return name


def _check_chunk_size(chunk_size: object) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be a positive int, not {chunk_size!r}")
    return chunk_size


def _save_target(path: str | os.PathLike[str], name: str | None, fallback: str) -> Path:
    target = Path(path)
    if target.is_dir():
        target = target / Path(name or fallback).name
    return target


def _write(target: Path, chunks: Iterable[bytes]) -> Path:
    """Write chunks to a file next to ``target``, then move it there (no half file is left)."""
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


class RequenceFile:
    """A file in a task's input, node data or result.

    Made from bytes or a path to send one with a task; a file that came from
    Requence reads its bytes from the files service lazily, when asked, and as
    often as asked. Local and remote files read alike.

    >>> logo = RequenceFile(b"GIF89a...", mime="image/gif", name="logo.gif")
    >>> logo.size, logo.mime
    (9, 'image/gif')
    >>> logo.read()[:6]
    b'GIF89a'

    Args:
        data: The file's bytes.
        mime: Its MIME type (``application/octet-stream`` by default).
        name: A file name, used by :meth:`save` into a folder and in views.
    """

    __slots__ = ("_data", "_mime", "_name", "_opener", "_path", "_size", "_url")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        mime: str = DEFAULT_MIME,
        name: str | None = None,
    ) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigurationError(
                f"RequenceFile takes bytes, not {type(data).__name__}; for a file on disk use "
                "RequenceFile.from_path(path), for text encode it first (text.encode())"
            )
        self._data: bytes | None = bytes(data)
        self._path: Path | None = None
        self._url: str | None = None
        self._opener: Opener | None = None
        self._mime = _check_mime(mime)
        self._size: int = len(self._data)
        self._name = _check_name(name)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        mime: str | None = None,
        name: str | None = None,
    ) -> RequenceFile:
        """A file on disk, read in chunks when it is sent (never whole into memory).

        The type is guessed from the file name unless ``mime`` is given; the
        name defaults to the file's name.

        Raises:
            ConfigurationError: The path is not a readable file.
        """
        where = Path(path)
        try:
            stat = where.stat()
        except OSError as err:
            raise ConfigurationError(
                f"RequenceFile.from_path: cannot read {str(where)!r}: {err.strerror or err}"
            ) from None
        if not where.is_file():
            raise ConfigurationError(f"RequenceFile.from_path: {str(where)!r} is not a file")
        guessed = mime if mime is not None else mimetypes.guess_type(where.name)[0]
        made = cls.__new__(cls)
        made._data = None
        made._path = where
        made._url = None
        made._opener = None
        made._mime = _check_mime(guessed or DEFAULT_MIME)
        made._size = stat.st_size
        made._name = _check_name(name if name is not None else where.name)
        return made

    @property
    def mime(self) -> str:
        """The file's MIME type."""
        return self._mime

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    @property
    def name(self) -> str | None:
        """The file's name, if it has one."""
        return self._name

    @property
    def is_remote(self) -> bool:
        """Whether the bytes are at Requence's files service (not in this process)."""
        return self._url is not None

    def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The file's bytes in chunks of at most ``chunk_size``; a remote file streams.

        Raises:
            FileReadError: A remote read failed.
            TruncatedError: Fewer or more bytes came than the file's size.
        """
        chunk_size = _check_chunk_size(chunk_size)
        return self._chunks(chunk_size)

    def _chunks(self, chunk_size: int) -> Iterator[bytes]:
        if self._data is not None:
            view = memoryview(self._data)
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])
            return
        seen = 0
        if self._path is not None:
            with self._path.open("rb") as source:
                while chunk := source.read(chunk_size):
                    seen += len(chunk)
                    if seen > self._size:
                        break
                    yield chunk
            if seen != self._size:
                raise TruncatedError(
                    f"{self!r}: the file on disk changed size while it was read "
                    f"({seen} bytes, expected {self._size})"
                )
            return
        assert self._url is not None and self._opener is not None
        chunks, _ = self._opener(self._url, chunk_size=chunk_size, framed=False)
        try:
            for chunk in chunks:
                seen += len(chunk)
                if seen > self._size:
                    raise TruncatedError(f"{self!r}: more bytes came than the file's size")
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if seen != self._size:
            raise TruncatedError(f"{self!r}: the download ended after {seen} of {self._size} bytes")

    def read(self) -> bytes:
        """The whole file as bytes (for a large file prefer :meth:`iter_bytes` or :meth:`save`)."""
        if self._data is not None:
            return self._data
        return b"".join(self._chunks(CHUNK_SIZE))

    def text(self, encoding: str = "utf-8") -> str:
        """The file decoded as text."""
        return self.read().decode(encoding)

    def json(self) -> Any:
        """The file parsed as JSON."""
        return json.loads(self.read())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the file to ``path`` (into it, under the file's name, if it is a
        folder), streaming; returns where it was written."""
        target = _save_target(path, self._name, "file")
        return _write(target, self._chunks(CHUNK_SIZE))

    def __repr__(self) -> str:
        where = f", host={host_of(self._url)!r}" if self._url is not None else ""
        name = f", name={self._name!r}" if self._name is not None else ""
        return f"RequenceFile(mime={self._mime!r}, size={self._size}{name}{where})"

    def _repr_html_(self) -> str:
        return file_html(self)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, Any]:
        """A notebook's view: an image (up to 5 MB) as the image, else the file's line."""
        bundle: dict[str, Any] = {"text/plain": repr(self), "text/html": file_html(self)}
        if self._mime in _IMAGE_TYPES and self._size <= _IMAGE_LIMIT:
            try:
                data = self.read()
            except Exception:  # a view never raises: the file's line stays
                return bundle
            if self._mime == "image/svg+xml":
                bundle[self._mime] = data.decode("utf-8", "replace")
            else:
                bundle[self._mime] = base64.b64encode(data).decode("ascii")
            del bundle["text/html"]
        return bundle


class RequenceStream:
    """A byte stream of unknown length in a task's input, node data or result.

    Made from any iterable of bytes (a generator) or a binary file object to
    send with a task; it is read once, as it is sent. A stream that came from
    Requence reads from the files service each time it is read, while its
    producer may still be writing it.

    >>> rows = RequenceStream(iter([b"a,b\\n", b"1,2\\n"]), mime="text/csv")
    >>> rows.read()
    b'a,b\\n1,2\\n'

    Args:
        source: An iterable of ``bytes`` or a binary file object (``open(p, "rb")``).
        mime: Its MIME type (``application/octet-stream`` by default).
        name: A file name, used by :meth:`save` into a folder and in views.
    """

    __slots__ = ("_consumed", "_mime", "_name", "_opener", "_source", "_url")

    def __init__(
        self,
        source: Iterable[bytes] | IO[bytes],
        *,
        mime: str = DEFAULT_MIME,
        name: str | None = None,
    ) -> None:
        if isinstance(source, (bytes, bytearray, memoryview, str)):
            raise ConfigurationError(
                "RequenceStream takes an iterable of bytes or a binary file object, not "
                f"{type(source).__name__}; for bytes you have whole, use RequenceFile(data)"
            )
        if not (hasattr(source, "read") or hasattr(source, "__iter__")):
            raise ConfigurationError(
                "RequenceStream takes an iterable of bytes or a binary file object, not "
                f"{type(source).__name__}"
            )
        self._source: Iterable[bytes] | IO[bytes] | None = source
        self._url: str | None = None
        self._opener: Opener | None = None
        self._mime = _check_mime(mime)
        self._name = _check_name(name)
        self._consumed = False

    @property
    def mime(self) -> str:
        """The stream's MIME type."""
        return self._mime

    @property
    def name(self) -> str | None:
        """The stream's name, if it has one."""
        return self._name

    @property
    def is_remote(self) -> bool:
        """Whether the stream is at Requence's files service (not in this process)."""
        return self._url is not None

    @property
    def consumed(self) -> bool:
        """Whether this local stream was already read (or sent); a remote one never is."""
        return self._consumed

    def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The stream's bytes as they come; a remote stream may be read again.

        Raises:
            ConfigurationError: This local stream was already read.
            TruncatedError: The producer stopped before the stream's end.
            FileReadError: A remote read failed.
        """
        chunk_size = _check_chunk_size(chunk_size)
        if self._url is None:
            self._take()
        return self._chunks(chunk_size)

    def _take(self) -> None:
        if self._consumed:
            raise ConfigurationError(
                f"{self!r} was already read: a local stream can be read (or sent) once; "
                "make a new RequenceStream for each use"
            )
        self._consumed = True

    def _chunks(self, chunk_size: int) -> Iterator[bytes]:
        if self._url is None:
            yield from _local_chunks(self._source, chunk_size, self)
            self._source = None
            return
        assert self._opener is not None
        chunks, framed = self._opener(self._url, chunk_size=chunk_size, framed=True)
        try:
            yield from (unframe(chunks, repr(self)) if framed else chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def read(self) -> bytes:
        """The whole stream as bytes."""
        return b"".join(self.iter_bytes())

    def text(self, encoding: str = "utf-8") -> str:
        """The whole stream decoded as text."""
        return self.read().decode(encoding)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the stream to ``path`` (into it, under the stream's name, if it is
        a folder) as it comes; returns where it was written."""
        target = _save_target(path, self._name, "stream")
        return _write(target, self.iter_bytes())

    def __repr__(self) -> str:
        where = f", host={host_of(self._url)!r}" if self._url is not None else ""
        name = f", name={self._name!r}" if self._name is not None else ""
        return f"RequenceStream(mime={self._mime!r}{name}{where})"

    def _repr_html_(self) -> str:
        return file_html(self)


def _local_chunks(
    source: Iterable[bytes] | IO[bytes] | None, chunk_size: int, stream: RequenceStream
) -> Iterator[bytes]:
    """A local stream's bytes: a file object read in chunks, or the iterable's items
    (each checked to be bytes)."""
    if source is None:
        return
    read = getattr(source, "read", None)
    if read is not None:
        while chunk := read(chunk_size):
            if not isinstance(chunk, (bytes, bytearray)):
                raise ConfigurationError(
                    f"{stream!r}: its file object gave {type(chunk).__name__}, not bytes; "
                    "open it in binary mode ('rb')"
                )
            yield bytes(chunk)
        return
    for chunk in source:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise ConfigurationError(
                f"{stream!r}: its iterable gave {type(chunk).__name__}, not bytes; "
                "encode text first"
            )
        if chunk:
            yield bytes(chunk)


class RequenceCallback:
    """A function of a service that a task's data refers to. A task client can
    only look at it: calling it raises :class:`CallbackError`.

    Attributes:
        lifetime: How long the service keeps it, as Requence said (or ``None``).
        raw: The reference as it came (without any URL-like secret dropped: it is
            the service's own data).
    """

    __slots__ = ("lifetime", "raw")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.lifetime: object = raw.get("lifetime")

    def __call__(self, *args: object, **kwargs: object) -> Any:
        raise CallbackError(
            "a RequenceCallback belongs to a service of the task; a task client cannot call "
            "it (only services that the task runs can)"
        )

    def __repr__(self) -> str:
        return f"RequenceCallback(lifetime={self.lifetime!r})"


# --- For the wire layer and the transfers: makers and accessors -------------------


def remote_file(
    url: str, *, mime: str, size: int, opener: Opener, name: str | None = None
) -> RequenceFile:
    """A file at the files service, read through ``opener``."""
    made = RequenceFile.__new__(RequenceFile)
    made._data = None
    made._path = None
    made._url = url
    made._opener = opener
    made._mime = mime
    made._size = size
    made._name = name
    return made


def remote_stream(
    url: str, *, mime: str, opener: Opener, name: str | None = None
) -> RequenceStream:
    """A stream at the files service, read through ``opener``."""
    made = RequenceStream.__new__(RequenceStream)
    made._source = None
    made._url = url
    made._opener = opener
    made._mime = mime
    made._name = name
    made._consumed = False
    return made


def remote_url(item: RequenceFile | RequenceStream) -> str | None:
    """The capability URL of a remote object (``None`` for a local one). Never show it."""
    return item._url


def file_data(item: RequenceFile) -> bytes | None:
    """The bytes of a file made from bytes (``None`` otherwise)."""
    return item._data


def file_path(item: RequenceFile) -> Path | None:
    """The path of a file made from a path (``None`` otherwise)."""
    return item._path


def claim_stream(item: RequenceStream) -> None:
    """Mark a local stream as taken by a task's input (raises if it was read or taken)."""
    item._take()


def stream_chunks(item: RequenceStream, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The bytes of a local stream already claimed (:func:`claim_stream`), for sending."""
    return item._chunks(chunk_size)


# --- Framing -----------------------------------------------------------------------

_HEADER = struct.Struct(">BI")


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One frame: the type byte, the payload's length (4 bytes, big-endian), the payload."""
    return _HEADER.pack(kind, len(payload)) + payload


def unframe(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """The data of a framed body, chunk by chunk as the frames complete.

    Raises:
        TruncatedError: A truncation frame came (its reason is in the message),
            or the body ended without the end frame.
    """
    buffer = bytearray()
    ended = False
    for chunk in chunks:
        if ended:
            if chunk:
                raise TruncatedError(f"{what}: bytes came after the stream's end frame")
            continue
        buffer += chunk
        while len(buffer) >= FRAME_HEADER_SIZE:
            kind, length = _HEADER.unpack_from(buffer)
            if len(buffer) < FRAME_HEADER_SIZE + length:
                break
            payload = bytes(buffer[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + length])
            del buffer[: FRAME_HEADER_SIZE + length]
            if kind == FRAME_DATA:
                if payload:
                    yield payload
            elif kind == FRAME_END:
                ended = True
                if buffer:
                    raise TruncatedError(f"{what}: bytes came after the stream's end frame")
                break
            elif kind == FRAME_TRUNCATED:
                reason = payload.decode("utf-8", "replace") or "no reason given"
                raise TruncatedError(f"{what}: its producer stopped early: {reason}")
            else:
                raise TruncatedError(f"{what}: an unknown frame type {kind} came")
    if not ended:
        raise TruncatedError(f"{what}: the stream ended without its end frame (truncated)")


# --- Views -------------------------------------------------------------------------


def file_html(item: RequenceFile | RequenceStream) -> str:
    """A file's or stream's line for a notebook: name, type, size (never its URL)."""
    kind = "file" if isinstance(item, RequenceFile) else "stream"
    size = human_size(item.size) if isinstance(item, RequenceFile) else "size unknown"
    name = f"<b>{escape(item.name)}</b> · " if item.name else ""
    return f"<span>{name}{kind} · <code>{escape(item.mime)}</code> · {size}</span>"
