"""Suite-wide fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on uvloop.

Every async test also runs under an event-loop deadline (``ASYNC_TEST_TIMEOUT``), shorter
than pytest-timeout's: a hung test then fails with a TimeoutError whose traceback shows the
await it was stuck in, instead of relying on SIGALRM, which uvloop can swallow.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

ASYNC_TEST_TIMEOUT = 45.0


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Run async tests under the default loop and under uvloop."""
    return request.param  # type: ignore[no-any-return]


def _with_deadline(
    func: Callable[..., Coroutine[Any, Any, Any]], seconds: float
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(seconds):
            return await func(*args, **kwargs)

    return wrapper


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    """Wrap async test functions in a deadline (see the module docstring)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj) and pyfuncitem.get_closest_marker("anyio"):
        marker = pyfuncitem.get_closest_marker("timeout")
        limit = float(marker.args[0]) - 5 if marker and marker.args else ASYNC_TEST_TIMEOUT
        pyfuncitem.obj = _with_deadline(pyfuncitem.obj, limit)
