"""The access token codec: the published encoding, and clear errors without the token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from requence_task import ConfigurationError, InvalidTokenError, RequenceError
from requence_task._protocol import TOKEN_ALPHABET, TOKEN_SEPARATOR
from requence_task._token import decode_access_token, encode_access_token


def reference_encode(*parts: str) -> str:
    """The encoding of docs/protocol.md, step by step, written independently."""
    text = TOKEN_SEPARATOR.join(parts)
    bits = "".join(format(ord(c), "016b") for c in text)
    pad = (6 - len(bits) % 6) % 6
    bits += "0" * pad
    return "".join(TOKEN_ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6)) + str(
        pad
    )


def test_known_token_decodes() -> None:
    # "api" alone is 48 bits: 8 symbols, no padding.
    assert reference_encode("api") == "AGEAcABp0"
    token = encode_access_token("secret", "http://127.0.0.1:8765")
    assert token == reference_encode("api", "secret", "http://127.0.0.1:8765")
    parts = decode_access_token(token)
    assert parts.bearer == "secret"
    assert parts.base_url == "http://127.0.0.1:8765"
    assert parts.kind == "api"


def test_trailing_slash_and_whitespace_are_forgiven() -> None:
    token = encode_access_token("b", "https://api.example/v1/")
    assert decode_access_token(f"  {token}\n").base_url == "https://api.example/v1"


bmp_text = st.text(
    alphabet=st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)).filter(
        lambda c: c != TOKEN_SEPARATOR
    ),
    min_size=1,
    max_size=40,
)


header_safe = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@given(bmp_text)
def test_bearers_that_cannot_travel_in_a_header_are_refused(bearer: str) -> None:
    token = encode_access_token(bearer, "https://h")
    if all("!" <= c <= "~" for c in bearer):
        assert decode_access_token(token).bearer == bearer
    else:
        with pytest.raises(InvalidTokenError, match="cannot travel in an HTTP header"):
            decode_access_token(token)


@given(bearer=header_safe, host=st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True))
def test_round_trip(bearer: str, host: str) -> None:
    base = f"https://{host}:443/v1"
    token = encode_access_token(bearer, base)
    assert token == reference_encode("api", bearer, base)
    assert set(token[:-1]) <= set(TOKEN_ALPHABET)
    parts = decode_access_token(token)
    assert (parts.bearer, parts.base_url) == (bearer, base)
    assert "bearer" not in repr(parts)


@given(st.text(max_size=60))
def test_decoding_anything_raises_only_invalid_token_error(text: str) -> None:
    try:
        decode_access_token(text)
    except InvalidTokenError as err:
        assert text.strip() == "" or text.strip() not in str(err) or len(text.strip()) < 4


GOOD = encode_access_token("s3cr3t-bearer", "http://127.0.0.1:8765")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("", "too short"),
        ("A", "too short"),
        (GOOD[:-1], "truncated"),
        (GOOD[:-1] + "9", "padding digit"),
        (GOOD[:10] + "!" + GOOD[11:], "outside the token alphabet at position 11"),
        (GOOD[:-3] + GOOD[-1], "whole characters"),
        (reference_encode("service", "b", "http://h"), "not an API token"),
        (reference_encode("api", "b"), "three parts"),
        (reference_encode("api", "", "http://h"), "empty bearer"),
        (reference_encode("api", "b", "127.0.0.1:8765"), "http(s) URL"),
        (reference_encode("api", "b", "ftp://h"), "http(s) URL"),
    ],
)
def test_bad_tokens_say_what_is_wrong(token: str, says: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        decode_access_token(token)
    message = str(caught.value)
    assert says in message
    assert "s3cr3t-bearer" not in message
    if len(token) > 8:
        assert token not in message


def test_errors_are_in_one_tree_and_catchable_as_value_error() -> None:
    assert issubclass(InvalidTokenError, ConfigurationError)
    assert issubclass(InvalidTokenError, RequenceError)
    assert issubclass(InvalidTokenError, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(InvalidTokenError, match="must be a string, not int"):
        decode_access_token(42)  # type: ignore[arg-type]


def test_encoding_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="separator"):
        encode_access_token("a" + TOKEN_SEPARATOR, "http://h")
    with pytest.raises(ValueError, match="Basic Multilingual Plane"):
        encode_access_token("\U0001f600", "http://h")
