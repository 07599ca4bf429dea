"""``python -m personsearch_runtime`` is the same as the ``personsearch`` command."""

import sys

from personsearch_runtime.cli import main

sys.exit(main())
