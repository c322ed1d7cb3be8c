"""wasmtime-py's short calls keep the GIL; guest code, compiles and file opens still let go."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import wasmtime._bindings as bindings

from runwasi_py.wasmtime import WasmtimeSandbox, _gil
from runwasi_py.wasmtime._sandbox import new_engine
from tests.runwasi_py.wasmtime.helpers import make_ctx, out, run

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
    "wasi_config_new",  # getrandom may block early at boot
)


def keeps_gil(name: str) -> bool:
    return bool(getattr(bindings, f"_{name}")._flags_ & _KEEPS_GIL)


def test_an_engine_makes_the_short_calls_keep_the_gil_and_only_those() -> None:
    new_engine()
    assert all(keeps_gil(name) for name in _gil.SHORT_CALLS)
    assert not any(keeps_gil(name) for name in MUST_RELEASE)
    assert _gil.keep_gil_in_short_calls() == 0  # once per process


def test_runs_work_through_the_switched_calls(tmp_path: Path) -> None:
    """Each switched call has wasmtime-py's signature: a wrong one would break this run."""
    new_engine()
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "hello")) == 0
    assert out(tmp_path) == "hello world\n"


def test_a_name_this_wasmtime_py_lacks_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gil, "_done", False)
    monkeypatch.setattr(_gil, "SHORT_CALLS", ("no_such_function", "wasm_functype_delete"))
    assert _gil.keep_gil_in_short_calls() == 1
    assert keeps_gil("wasm_functype_delete")
