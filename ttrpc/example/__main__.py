"""``python -m ttrpc.example serve SOCKET`` / ``call SOCKET METHOD JSON`` (see ``_cli``)."""

from __future__ import annotations

from ttrpc.example._cli import main

raise SystemExit(main())
