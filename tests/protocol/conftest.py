"""protocol/ tests: make ``import protocol`` find the package, not this directory.

pytest puts tests/ on sys.path (rootdir conftest), where ``protocol`` (this directory, no
``__init__.py``) would be picked up as a namespace package ahead of the editable install's finder.
Putting the repository root first makes the real package win.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
