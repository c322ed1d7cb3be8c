"""The default memory ceiling reaches the sandbox for containers whose spec sets no limit."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from runwasi_py import Config, RuntimeContext
from runwasi_py._bundle.memory_limit import ENV_DEFAULT_MEMORY_LIMIT
from runwasi_py.testing import make_bundle, serve_shim
from tests.runwasi_py.sandboxes import ScriptSandbox, ScriptShim

pytestmark = pytest.mark.anyio

_MIB = 1 << 20


class LimitSandbox(ScriptSandbox):
    seen: ClassVar[list[int | None]] = []

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        self.seen.append(ctx.memory_limit)
        return 0


async def limits_seen(tmp_path: Path, config: Config, spec_limit: int | None) -> int | None:
    class LimitShim(ScriptShim):
        sandbox = LimitSandbox

    LimitShim.config = config
    LimitSandbox.seen.clear()
    async with serve_shim(LimitShim) as s:
        b = make_bundle(tmp_path, args=["/app.wasm"], stdio="none", memory_limit=spec_limit)
        assert (await s.driver.run(b))[0] == 0
    (seen,) = LimitSandbox.seen
    return seen


async def test_the_configured_ceiling_applies_without_a_spec_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_DEFAULT_MEMORY_LIMIT, raising=False)
    assert await limits_seen(tmp_path, Config(default_memory_limit=32 * _MIB), None) == 32 * _MIB


async def test_the_default_ceiling_is_one_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_DEFAULT_MEMORY_LIMIT, raising=False)
    assert await limits_seen(tmp_path, Config(), None) == 1 << 30


async def test_the_operators_variable_overrides_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_DEFAULT_MEMORY_LIMIT, "48Mi")
    assert await limits_seen(tmp_path, Config(default_memory_limit=32 * _MIB), None) == 48 * _MIB


async def test_the_spec_limit_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEFAULT_MEMORY_LIMIT, "48Mi")
    assert await limits_seen(tmp_path, Config(), 5 * _MIB) == 5 * _MIB


async def test_no_ceiling_when_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DEFAULT_MEMORY_LIMIT, raising=False)
    assert await limits_seen(tmp_path, Config(default_memory_limit=None), None) is None
