"""The command line's exit codes, and the errors that choose them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTHENTICATION = 4
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


class Failure(Exception):
    """Something went wrong that is not the user's fault: one line, exit code 1."""


def exit_code(err: BaseException) -> int:
    """The exit code for an error of the library."""
    from .. import (
        AuthenticationError,
        ConfigurationError,
        RequenceUnreachableError,
        TaskAbortedError,
        TaskError,
        TaskFailedError,
        TaskNotFoundError,
        UploadError,
    )

    if isinstance(err, AuthenticationError):
        return EXIT_AUTHENTICATION
    if isinstance(err, RequenceUnreachableError):
        return EXIT_UNREACHABLE
    if isinstance(err, (ConfigurationError, TaskNotFoundError, UsageError)):
        return EXIT_USAGE
    if isinstance(err, (TaskFailedError, TaskAbortedError)):
        return EXIT_FAILED
    if isinstance(err, UploadError) and (err.status is None or 400 <= err.status < 500):
        return EXIT_USAGE  # the input could not be sent as it is (too large, say)
    if isinstance(err, TaskError) and err.status is not None and 400 <= err.status < 500:
        return EXIT_USAGE  # input rejected, or nothing to abort (409)
    return EXIT_FAILED
