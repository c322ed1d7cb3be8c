"""``ttrpc.run``: uvloop when installed."""

from __future__ import annotations

import asyncio

import pytest

import ttrpc


def test_run_uses_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert ttrpc.run(main()).startswith(uvloop.__name__)


def test_run_returns_and_raises() -> None:
    async def ok() -> int:
        return 7

    async def bad() -> None:
        raise KeyError("x")

    assert ttrpc.run(ok()) == 7
    with pytest.raises(KeyError):
        ttrpc.run(bad())
