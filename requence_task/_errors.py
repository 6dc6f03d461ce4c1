"""The one tree of errors this package raises.

::

    RequenceError
    ├── ConfigurationError (ValueError)
    │   └── InvalidTokenError
    └── (more arrive with the client: task, time-out and transport errors)

Every message says what was wrong and what to do. None ever contains an
access token: not the encoded token, not the bearer inside it.
"""

from __future__ import annotations


class RequenceError(Exception):
    """Base class of every error raised by ``requence_task``."""


class ConfigurationError(RequenceError, ValueError):
    """A setting or argument is wrong; fix it and call again."""


class InvalidTokenError(ConfigurationError):
    """An access token could not be decoded.

    The message says which rule the token broke, never the token itself.
    """
