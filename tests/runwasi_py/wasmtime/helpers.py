"""Build RuntimeContexts around the .wat fixtures and run a Sandbox the way an instance does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path

import wasmtime

from runwasi_py import Entrypoint, Mount, RuntimeContext, Sandbox, Stdio

FIXTURES = Path(__file__).parent / "fixtures"


def wasm(name: str) -> bytes:
    """The fixture ``name``.wat compiled to a binary."""
    return bytes(wasmtime.wat2wasm((FIXTURES / f"{name}.wat").read_text()))


def make_ctx(
    tmp_path: Path,
    fixture: str | bytes,
    *,
    args: list[str] | None = None,
    envs: list[str] | None = None,
    func: str = "",
    memory_limit: int | None = None,
    mounts: list[Mount] | None = None,
    stdio: Stdio | None = None,
    as_text: bool = False,
) -> RuntimeContext:
    """A context for a container whose rootfs holds the fixture as ``/app.wasm``.

    ``fixture`` is a fixture name (compiled, or copied as text with ``as_text``) or raw bytes.
    stdout/stderr go to files beside the rootfs unless ``stdio`` says otherwise.
    """
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir(exist_ok=True)
    app = rootfs / "app.wasm"
    if isinstance(fixture, bytes):
        app.write_bytes(fixture)
    elif as_text:
        app.write_text((FIXTURES / f"{fixture}.wat").read_text())
    else:
        app.write_bytes(wasm(fixture))
    arg0 = "/app.wasm" + (f"#{func}" if func else "")
    if stdio is None:
        stdio = Stdio(stdout=str(tmp_path / "stdout"), stderr=str(tmp_path / "stderr"))
    return RuntimeContext(
        container_id="c1",
        namespace="default",
        bundle=tmp_path,
        rootfs=rootfs,
        args=[arg0, *(args or [])],
        envs=list(envs or []),
        cwd="/",
        entrypoint=Entrypoint.parse(arg0, source=app),
        stdio=stdio,
        mounts=list(mounts or []),
        memory_limit=memory_limit,
    )


def start(sandbox: Sandbox, ctx: RuntimeContext) -> concurrent.futures.Future[int]:
    """Run ``sandbox.run_wasi(ctx)`` on a new thread with its own loop, as an instance does."""
    fut: concurrent.futures.Future[int] = concurrent.futures.Future()

    def worker() -> None:
        try:
            fut.set_result(asyncio.run(sandbox.run_wasi(ctx)))
        except BaseException as exc:  # handed to the test
            fut.set_exception(exc)

    threading.Thread(target=worker, name="wasm-worker", daemon=True).start()
    return fut


def run(sandbox: Sandbox, ctx: RuntimeContext, timeout: float = 30) -> int:
    """Precompile as the framework does at Create, run to completion on a worker thread."""
    from runwasi_py._compile_cache import precompile

    if ctx.precompiled is None:
        try:
            ctx.precompiled = precompile(sandbox, ctx)
        except Exception:  # Create would refuse it; here the engine meets the bad module
            ctx.precompiled = None
    return start(sandbox, ctx).result(timeout)


def out(tmp_path: Path, name: str = "stdout") -> str:
    """What the container wrote to its stdout (or stderr) file."""
    p = tmp_path / name
    return p.read_text() if p.exists() else ""
