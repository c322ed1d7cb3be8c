"""wasmtime-py's short calls keep the GIL; guest code, compiles and file opens still let go."""

from __future__ import annotations

import ctypes
import signal
import time
from pathlib import Path

import pytest
import wasmtime._bindings as bindings

from runwasi_py.wasmtime import WasmtimeSandbox, _gil
from runwasi_py.wasmtime._sandbox import new_engine
from tests.runwasi_py.wasmtime.helpers import make_ctx, out, run, start

# ctypes marks a PyDLL function with this flag: called with the GIL held throughout.
_KEEPS_GIL = ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]

MUST_RELEASE = (
    "wasmtime_func_call",  # guest code
    "wasmtime_linker_instantiate",  # a start function is guest code
    "wasmtime_module_deserialize_file",
    "wasmtime_module_new",  # compiles
    "wasi_config_set_stdout_file",  # opens a file (a FIFO, a network file system)
    "wasi_config_preopen_dir",
    "wasmtime_store_delete",  # closes the guest's files
)


def keeps_gil(name: str) -> bool:
    return bool(getattr(bindings, f"_{name}")._flags_ & _KEEPS_GIL)


def test_an_engine_makes_the_short_calls_keep_the_gil_and_only_those() -> None:
    new_engine()
    assert all(keeps_gil(name) for name in _gil.SHORT_CALLS)
    assert not any(keeps_gil(name) for name in MUST_RELEASE)
    assert _gil.keep_gil_in_short_calls() == 0  # once per process


def test_runs_still_work_and_a_spinning_guest_lets_other_threads_run(tmp_path: Path) -> None:
    new_engine()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hello = make_ctx(tmp_path / "a", "hello")
    assert run(WasmtimeSandbox(), hello) == 0
    assert out(tmp_path / "a") == "hello world\n"

    spin = make_ctx(tmp_path / "b", "loop")
    sandbox = WasmtimeSandbox()
    done = start(sandbox, spin)
    # Python keeps running on this thread while the guest spins (with the call holding the
    # GIL, this loop would never get to see the guest's output, and the test would hang).
    ticks = 0
    deadline = time.monotonic() + 20
    while out(tmp_path / "b") != "running\n":
        ticks += 1
        assert time.monotonic() < deadline, "the guest never ran"
    assert ticks > 0
    spin.deliver_kill(signal.SIGKILL)
    sandbox.interrupt(signal.SIGKILL)
    assert done.result(20) == 137


def test_a_name_this_wasmtime_py_lacks_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gil, "_done", False)
    monkeypatch.setattr(_gil, "SHORT_CALLS", ("no_such_function", "wasm_functype_delete"))
    assert _gil.keep_gil_in_short_calls() == 1
    assert keeps_gil("wasm_functype_delete")
