"""Start and monitor tasks on the Requence workflow platform.

The client arrives in a later release; today the package holds the shared
token codec and errors, and :mod:`requence_task.local`, a local Requence
server for development and tests.
"""

from __future__ import annotations

import logging

from ._errors import ConfigurationError, InvalidTokenError, RequenceError
from ._version import __version__

__all__ = [
    "ConfigurationError",
    "InvalidTokenError",
    "RequenceError",
    "__version__",
]

for _name in ("ConfigurationError", "InvalidTokenError", "RequenceError"):
    globals()[_name].__module__ = "requence_task"

logging.getLogger("requence_task").addHandler(logging.NullHandler())
