"""Property tests on what reaches the shim from outside: ``config.json``, the rootfs and its
entrypoint file, stdio URIs, the shim's command line and BootstrapParams on stdin.

The rule for each: any input gives a result or the project's clear error (InvalidArgument,
UsageError, None for "not ours"), never another exception, and never a path outside the
rootfs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runwasi_py import InvalidArgument
from runwasi_py._bundle.group import grouping_id_from_bundle
from runwasi_py._bundle.spec import BundleSpec, build_context, resolve_entrypoint
from runwasi_py._launch.bootstrap import BootstrapError, bootstrap
from runwasi_py._launch.flags import Flags, UsageError, parse_flags
from runwasi_py._stdio import Stdio
from runwasi_py.wasmtime._binary import describe, detect

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Keys the parser looks at, with values of any JSON type: the interesting mismatches.
spec_like = st.fixed_dictionaries(
    {},
    optional={
        "process": st.fixed_dictionaries(
            {},
            optional={
                "args": json_values | st.lists(st.text(max_size=12), max_size=3),
                "env": json_values | st.lists(st.text(max_size=12), max_size=3),
                "cwd": json_values | st.text(max_size=12),
            },
        )
        | json_values,
        "root": st.fixed_dictionaries({}, optional={"path": json_values, "readonly": json_values})
        | json_values,
        "mounts": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "destination": json_values | st.text(max_size=12),
                    "source": json_values | st.text(max_size=12),
                    "type": json_values | st.sampled_from(["bind", "rbind", "proc", ""]),
                    "options": json_values | st.lists(st.text(max_size=6), max_size=3),
                },
            )
            | json_values,
            max_size=3,
        )
        | json_values,
        "linux": st.fixed_dictionaries(
            {},
            optional={
                "resources": st.fixed_dictionaries(
                    {},
                    optional={
                        "memory": st.fixed_dictionaries({}, optional={"limit": json_values})
                        | json_values
                    },
                )
                | json_values
            },
        )
        | json_values,
        "annotations": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
    },
)


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per example (hypothesis reuses function-scoped fixtures)."""
    d = Path(tempfile.mkdtemp(prefix="rwpy-fuzz-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _load(bundle: Path) -> None:
    spec = BundleSpec.load(bundle)
    (bundle / "rootfs").mkdir(exist_ok=True)
    build_context(spec, container_id="c1", namespace="default")


@_FUZZ
@given(spec_like)
def test_any_config_json_loads_or_is_invalid_argument(spec: dict[str, Any]) -> None:
    with scratch() as bundle:
        (bundle / "config.json").write_text(json.dumps(spec))
        with suppress(InvalidArgument):
            _load(bundle)


@_FUZZ
@given(st.binary(max_size=200))
def test_any_config_bytes_load_or_are_invalid_argument(data: bytes) -> None:
    with scratch() as bundle:
        (bundle / "config.json").write_bytes(data)
        with suppress(InvalidArgument):
            _load(bundle)


@pytest.mark.parametrize("depth", [100, 10_000, 200_000])
def test_deeply_nested_config_json_is_invalid_argument(tmp_path: Path, depth: int) -> None:
    (tmp_path / "config.json").write_text('{"process": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(InvalidArgument, match="config"):
        _load(tmp_path)


# --- the rootfs and its entrypoint ---------------------------------------------------

names = st.sampled_from(["a", "b", "app.wasm", "..", ".", "bin", "x y"])
rel_paths = st.lists(names, min_size=1, max_size=4).map("/".join)
link_targets = rel_paths | rel_paths.map(lambda p: "/" + p) | st.just("/") | st.just("../../..")
trees = st.lists(
    st.tuples(rel_paths, st.one_of(st.just("dir"), st.just("file"), link_targets)), max_size=8
)


def _through_a_link(root: Path, host: str) -> bool:
    """Whether a directory on the way from ``root`` to ``host`` is a symlink: building
    through it would write wherever it points (an earlier entry ``a -> /`` makes ``a/b``
    the host's ``/b``)."""
    here = str(root)
    for part in os.path.relpath(os.path.dirname(host), root).split(os.sep):
        if part in ("", "."):
            continue
        here = os.path.join(here, part)
        if os.path.islink(here):
            return True
    return False


def _build(root: Path, tree: list[tuple[str, str]]) -> None:
    for path, what in tree:
        host = os.path.normpath(root / path)
        if not host.startswith(str(root) + "/") or _through_a_link(root, host):
            continue  # the tree is built inside the rootfs; escapes are what links try
        if os.path.islink(host):
            continue  # writing a file or dir there would follow the link out
        try:
            os.makedirs(os.path.dirname(host), exist_ok=True)
            if what == "dir":
                os.makedirs(host, exist_ok=True)
            elif what == "file":
                with open(host, "wb") as f:
                    f.write(b"\0asm\1\0\0\0")
            else:
                os.symlink(what, host)
        except OSError:
            pass  # a path through a file, an existing name: skip that entry


@_FUZZ
@given(trees, st.text(max_size=20) | rel_paths | rel_paths.map(lambda p: "/" + p), rel_paths)
def test_the_entrypoint_resolves_inside_the_rootfs_or_is_refused(
    tree: list[tuple[str, str]], arg0: str, cwd: str
) -> None:
    with scratch() as base:
        root = base / "rootfs"
        root.mkdir()
        (base / "secret.wasm").write_bytes(b"\0asm\1\0\0\0")  # outside: must never be found
        _build(root, tree)
        try:
            ep = resolve_entrypoint(root, arg0, "/" + cwd, ["PATH=/bin:/a"])
        except InvalidArgument:
            return
        if ep.source is not None:
            real = os.path.realpath(ep.source)
            assert real.startswith(os.path.realpath(root) + "/"), (arg0, tree, real)
            assert os.path.isfile(real)


@given(st.binary(max_size=64))
def test_any_entrypoint_head_is_described(head: bytes) -> None:
    detect(head)
    assert isinstance(describe(head), str)


# --- stdio URIs ----------------------------------------------------------------------

uris = st.text(max_size=40) | st.builds(
    lambda scheme, rest: f"{scheme}{rest}",
    st.sampled_from(["file://", "binary://", "fifo://", "", "FILE://", "file:/"]),
    st.text(max_size=30),
)


@given(uris)
def test_any_stdio_uri_is_a_path_or_invalid_argument(uri: str) -> None:
    try:
        path = Stdio.from_request("", uri, "").stdout
    except InvalidArgument as exc:
        assert "stdout" in str(exc)  # noqa: PT017 (hypothesis drives the input)
        return
    assert isinstance(path, str)
    assert "\0" not in path  # a NUL would fail later, far from the request, as a ValueError
    assert "://" not in path or uri.startswith("file://")


# --- the command line and BootstrapParams --------------------------------------------

args = st.lists(
    st.text(max_size=12)
    | st.sampled_from(["-id", "-namespace", "-address", "-debug", "--bundle=x", "start", "-"]),
    max_size=8,
)


@given(args)
def test_any_command_line_parses_or_is_a_usage_error(argv: list[str]) -> None:
    try:
        flags = parse_flags(argv)
    except UsageError:
        return
    assert isinstance(flags, Flags)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


fields = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from([0, 1, 2, 5, 3, 7]), st.binary(max_size=12)),
    max_size=8,
)


@given(fields, st.booleans())
def test_any_bootstrap_bytes_decode_or_are_not_ours(
    items: list[tuple[int, int, bytes]], matching: bool
) -> None:
    flags = Flags(id="c1", namespace="ns")
    data = b""
    if matching:
        data += b"\x0a\x02c1\x12\x02ns"
    for number, wire, payload in items:
        data += _varint(number << 3 | wire)
        if wire == 2:
            data += _varint(len(payload)) + payload
        elif wire == 0:
            data += _varint(int.from_bytes(payload[:9] or b"\0", "little"))
        else:
            data += payload
    # The only outcomes: not ours (None), decoded, or the one-line error start prints
    try:
        result = bootstrap(data, flags)
    except BootstrapError as e:
        error: str | None = str(e)
        result = None
    else:
        error = None
    assert error is None or "\n" not in error
    assert result is None or isinstance(result.ttrpc_address, str)


@given(st.binary(max_size=100))
def test_random_bootstrap_bytes_raise_only_the_clear_error(data: bytes) -> None:
    # never raise anything but the clear error
    with suppress(BootstrapError):
        bootstrap(data, Flags(id="c1", namespace="ns"))


def test_start_groups_a_deeply_nested_config_by_container_id(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"annotations": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert grouping_id_from_bundle(str(tmp_path), "c1") == "c1"
