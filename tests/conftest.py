"""Suite-wide fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on uvloop.

Every async test also runs under an event-loop deadline (``ASYNC_TEST_TIMEOUT``), shorter
than pytest-timeout's: a hung test then fails with a TimeoutError whose traceback shows the
await it was stuck in, instead of relying on SIGALRM, which uvloop can swallow.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

ASYNC_TEST_TIMEOUT = 45.0
SESSION_ENV = "RUNWASI_PY_TEST_SESSION"


def _templates_of(marker: bytes) -> list[int]:
    """Live pod daemon templates whose environment carries ``marker`` (cwd ``/``: a daemon
    a template forked shares its exec-time environment but runs in its bundle)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            serving = any(e.startswith(b"RUNWASI_PY_TEMPLATE_SERVE=") for e in env)
            if marker in env and serving and os.readlink(f"/proc/{entry.name}/cwd") == "/":
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def _end_templates() -> Iterator[None]:
    """End the templates (docs/template.md) this session's starts launched.

    ``start`` launches one by default and it lingers for its idle time; every process
    started here inherits a session marker, so only this session's templates are ended
    (the machine is shared).
    """
    marker = uuid.uuid4().hex
    os.environ[SESSION_ENV] = marker
    yield
    for pid in _templates_of(f"{SESSION_ENV}={marker}".encode()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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
