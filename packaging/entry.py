"""Entry script of the single binary (packaging/edgetds.spec): the console script's `main`."""

from __future__ import annotations

import sys

from edgetds.cli import main

if __name__ == "__main__":
    sys.exit(main())
