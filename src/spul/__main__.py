"""``python -m spul``: the same command line as ``spul``."""

import sys

from spul.interfaces.cli import main

if __name__ == "__main__":
    sys.exit(main())
