"""``python -m requence_task``: the same as the ``requence-task`` command."""

import sys

from ._cli import main

sys.exit(main())
