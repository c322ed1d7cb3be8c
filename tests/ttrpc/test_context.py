"""``CallContext``: names, deadline arithmetic, end-of-call signalling."""

from __future__ import annotations

import time

import pytest

from ttrpc import CallContext, Metadata

pytestmark = pytest.mark.anyio


def test_full_method_and_defaults() -> None:
    ctx = CallContext("test.v1.service", "Foo")
    assert ctx.full_method == "/test.v1.service/Foo"
    assert ctx.metadata == Metadata()
    assert ctx.deadline is None
    assert ctx.time_remaining() is None
    assert ctx.peer is None
    assert "/test.v1.service/Foo" in repr(ctx)


def test_time_remaining() -> None:
    ctx = CallContext("s", "m", deadline=time.monotonic() + 100)
    remaining = ctx.time_remaining()
    assert remaining is not None
    assert 90 < remaining <= 100


async def test_wait_done() -> None:
    ctx = CallContext("s", "m")
    assert not ctx.cancelled()
    ctx._finish()
    assert ctx.cancelled()
    await ctx.wait_done()  # returns at once when already ended
