"""``run(main)``: run a coroutine on uvloop when it is installed, else on asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` to completion on a new event loop and return its result.

    uvloop is faster but optional; correctness never depends on it.

    Example:
        >>> async def main() -> int:
        ...     return 42
        >>> run(main())
        42
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main, debug=debug)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop, debug=debug) as runner:
        return runner.run(main)
