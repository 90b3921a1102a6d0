from __future__ import annotations

from edgetds.cli import main

raise SystemExit(main())
