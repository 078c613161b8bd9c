"""Entry point for ``python -m retrovec``; see :mod:`retrovec.cli`."""

import sys

from retrovec.cli import main

if __name__ == "__main__":
    sys.exit(main())
