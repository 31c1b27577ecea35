"""``python -m finwidth``: the same as the ``finwidth`` command (see :mod:`finwidth.cli`)."""

import sys

from finwidth.cli import main

if __name__ == "__main__":
    sys.exit(main())
