"""The access token codec (see ``docs/protocol.md``, "Access token").

A token is the parts ``api``, the bearer token and the API base URL, joined by
U+F6EE, written as 16 bits a character, cut into 6-bit groups mapped onto a
65-character alphabet, and closed by one digit: the padding bits added.

Nothing here ever puts a token, or the bearer inside one, into a message.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

from ._errors import InvalidTokenError
from ._protocol import TOKEN_ALPHABET, TOKEN_KIND_API, TOKEN_SEPARATOR

_INDEX = {char: index for index, char in enumerate(TOKEN_ALPHABET)}
_BITS_PER_CHAR = 16
_BITS_PER_SYMBOL = 6


@attrs.frozen
class TokenParts:
    """A decoded access token. The bearer never shows in ``repr``."""

    bearer: str = attrs.field(repr=False)
    base_url: str
    kind: str = TOKEN_KIND_API


def _pack(text: str) -> str:
    bits = []
    for char in text:
        code = ord(char)
        if code > 0xFFFF:
            raise ValueError("a token part holds a character outside the Basic Multilingual Plane")
        bits.append(f"{code:016b}")
    bit_string = "".join(bits)
    padding = -len(bit_string) % _BITS_PER_SYMBOL
    bit_string += "0" * padding
    symbols = (
        TOKEN_ALPHABET[int(bit_string[i : i + _BITS_PER_SYMBOL], 2)]
        for i in range(0, len(bit_string), _BITS_PER_SYMBOL)
    )
    return "".join(symbols) + str(padding)


def encode_access_token(bearer: str, base_url: str, *, kind: str = TOKEN_KIND_API) -> str:
    """Encode the three parts of an access token into one opaque string.

    Args:
        bearer: The bearer token sent as ``Authorization: Bearer ...``.
        base_url: The API base URL, for example ``http://127.0.0.1:8765``.
        kind: The first part; ``api`` for task tokens.

    Raises:
        ValueError: A part contains the separator or a character the codec
            cannot carry.
    """
    for part in (kind, bearer, base_url):
        if TOKEN_SEPARATOR in part:
            raise ValueError("a token part may not contain the separator character U+F6EE")
    return _pack(TOKEN_SEPARATOR.join((kind, bearer, base_url)))


def _unpack(token: str) -> str:
    if len(token) < 2:
        raise InvalidTokenError(
            "The access token is too short to be a Requence token; copy it again in full."
        )
    padding_digit, body = token[-1], token[:-1]
    if padding_digit not in "012345":
        raise InvalidTokenError(
            "The access token does not end in its padding digit (0-5): it looks truncated "
            "or altered; copy it again in full."
        )
    bits = []
    for position, char in enumerate(body):
        value = _INDEX.get(char)
        if value is None:
            raise InvalidTokenError(
                f"The access token has a character outside the token alphabet at position "
                f"{position + 1}; copy it again without added spaces, quotes or line breaks."
            )
        bits.append(f"{value:06b}")
    bit_string = "".join(bits)
    padding = int(padding_digit)
    if padding:
        bit_string = bit_string[:-padding]
    if len(bit_string) % _BITS_PER_CHAR:
        raise InvalidTokenError(
            "The access token's length does not decode to whole characters: it looks "
            "truncated; copy it again in full."
        )
    return "".join(
        chr(int(bit_string[i : i + _BITS_PER_CHAR], 2))
        for i in range(0, len(bit_string), _BITS_PER_CHAR)
    )


def decode_access_token(token: str) -> TokenParts:
    """Decode an access token into its bearer and base URL.

    Raises:
        InvalidTokenError: The token is malformed; the message says how,
            without repeating the token.
    """
    if not isinstance(token, str):
        raise InvalidTokenError(f"The access token must be a string, not {type(token).__name__}.")
    token = token.strip()
    parts = _unpack(token).split(TOKEN_SEPARATOR)
    if len(parts) < 3:
        raise InvalidTokenError(
            "The access token does not hold its three parts (kind, bearer, base URL); "
            "it is not a Requence task token."
        )
    kind, bearer, base_url = parts[0], parts[1], parts[2]
    if kind != TOKEN_KIND_API:
        raise InvalidTokenError(
            "The access token is not an API token (its first part is not 'api'); "
            "use a personal or scoped access token for tasks, not a service token."
        )
    if not bearer:
        raise InvalidTokenError("The access token holds an empty bearer token.")
    if not all("!" <= char <= "~" for char in bearer):
        raise InvalidTokenError(
            "The access token's bearer holds characters that cannot travel in an HTTP header "
            "(spaces, line breaks or non-ASCII): the token looks mistyped; copy it again in full."
        )
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidTokenError(
            "The access token's base URL is not an http(s) URL with a host; "
            "the token was made wrongly."
        )
    return TokenParts(bearer=bearer, base_url=base_url.rstrip("/"), kind=kind)
