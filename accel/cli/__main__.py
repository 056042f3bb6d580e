"""``python -m accel.cli``: the ``accel`` command."""

import sys

from accel.cli import main

sys.exit(main())
