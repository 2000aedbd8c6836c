"""``python -m reconciler`` is the ``swarmkeeper`` command."""

import sys

from reconciler.cli import main

sys.exit(main())
