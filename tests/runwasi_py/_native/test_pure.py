"""The pure cores of native support: file classification, exit codes, runc's errors, Metrics."""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest

from runwasi_py._errors import InvalidArgument
from runwasi_py._native import (
    Reaper,
    Runc,
    classify_native,
    describe_file,
    exit_code,
    metrics_v1,
    metrics_v2,
    runc_message,
    state_root,
)
from runwasi_py._native._runc import _error_code, _systemd_cgroups_path
from ttrpc import Code


def elf_header(e_type: int, *, big_endian: bool = False) -> bytes:
    data = 2 if big_endian else 1
    ident = b"\x7fELF" + bytes([2, data, 1]) + bytes(9)
    return ident + struct.pack(">H" if big_endian else "<H", e_type) + bytes(46)


@pytest.mark.parametrize(
    ("header", "mode", "what", "problem"),
    [
        (elf_header(2), 0o100755, "ELF executable", None),
        (elf_header(3), 0o100700, "ELF executable", None),  # PIE: ET_DYN
        (elf_header(2, big_endian=True), 0o100755, "ELF executable", None),
        (elf_header(1), 0o100755, "an ELF relocatable object (ET_REL)", "not an executable"),
        (elf_header(4), 0o100755, "an ELF core dump (ET_CORE)", "not an executable"),
        (b"\x7fELF\x02", 0o100755, "a truncated ELF file", "incomplete"),
        (b"#!/bin/sh\n", 0o100755, "#! script", None),
        (b"#!/bin/sh\n", 0o100644, "#! script", "no execute permission (mode 0644)"),
        (elf_header(2), 0o100600, "ELF executable", "no execute permission (mode 0600)"),
        (b"\0asm\x01\0\0\0", 0o100755, "a wasm module", "engine did not accept"),
        (b"", 0o100755, "an empty file", "not an ELF executable"),
        (b"hello world", 0o100755, "a file of unknown format", "b'hello wo'"),
        (b"", 0o040755, "a directory", "cannot be executed"),
        (b"", 0o010644, "not a regular file", "regular file"),
    ],
)
def test_describe_file(header: bytes, mode: int, what: str, problem: str | None) -> None:
    got_what, got_problem = describe_file(header, mode)
    assert got_what == what
    if problem is None:
        assert got_problem is None
    else:
        assert got_problem is not None
        assert problem in got_problem


def test_classify_names_the_entrypoint_and_what_it_is(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh -e\necho hi\n")
    script.chmod(0o755)
    with pytest.raises(
        InvalidArgument, match=r"'/run.sh' is a #! script whose interpreter '/bin/sh'"
    ):
        classify_native("/run.sh", script, rootfs=tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").write_bytes(elf_header(2))
    entry = classify_native("/run.sh", script, rootfs=tmp_path)
    assert (entry.kind, entry.interpreter) == ("#! script", "/bin/sh -e")
    with pytest.raises(InvalidArgument, match="'/x' not found in the rootfs"):
        classify_native("/x", None)
    with pytest.raises(InvalidArgument, match="'/bin' is a directory"):
        classify_native("/bin", tmp_path / "bin")


def test_exit_code_is_the_code_or_128_plus_signal() -> None:
    assert exit_code(0) == 0
    assert exit_code(42 << 8) == 42
    assert exit_code(signal.SIGKILL) == 137
    assert exit_code(signal.SIGTERM | 0x80) == 143  # core dumped: still 128+signal
    assert os.waitstatus_to_exitcode(42 << 8) == 42


def test_runc_message_prefers_the_json_error_line() -> None:
    log = (
        b'{"level":"warning","msg":"Setting back cgroup configs failed","time":"t"}\n'
        b'{"level":"error","msg":"failed to write \\"100\\": invalid argument","time":"t"}\n'
    )
    assert runc_message(log) == 'failed to write "100": invalid argument'
    text = b'time="t" level=error msg="container \\"c1\\" does not exist"\n'
    assert runc_message(b"", text) == 'container "c1" does not exist'
    assert runc_message(b"not json\n", b"") == "failed without a message"


def test_error_classes() -> None:
    assert _error_code("create", 'namespace {"bogus" ""} does not exist') == Code.INVALID_ARGUMENT
    assert _error_code("update", "invalid argument") == Code.INVALID_ARGUMENT
    assert _error_code("kill", "container does not exist") == Code.NOT_FOUND
    assert _error_code("kill", "container not running") == Code.UNKNOWN


def test_state_root_separates_containerds_and_namespaces() -> None:
    base = Path("/b")
    a = state_root("default", "/run/containerd/containerd.sock.ttrpc", base)
    b = state_root("default", "/tmp/private/containerd.sock.ttrpc", base)
    assert a != b
    assert a.parent == base / a.parent.name
    assert a.name == "default"
    assert state_root("k8s.io", "x", base).name == "k8s.io"
    with pytest.raises(ValueError, match="cannot name a directory"):
        state_root("../etc", "x", base)


RUNC_STATS = {
    "cpu": {
        "usage": {"total": 16268150, "percpu": [3129192, 13138958], "kernel": 10000000, "user": 0},
        "throttling": {"periods": 5, "throttledPeriods": 2, "throttledTime": 3000},
    },
    "memory": {
        "cache": 16384,
        "usage": {"limit": 1 << 30, "usage": 720896, "max": 2768896, "failcnt": 0},
        "swap": {"limit": 1 << 31, "usage": 720896},
        "kernel": {"usage": 421888},
        "raw": {"rss": 40960, "pgfault": 769, "anon": 4096, "file": 8192},
    },
    "pids": {"current": 3, "limit": 100},
    "blkio": {
        "ioServiceBytesRecursive": [
            {"major": 8, "minor": 0, "op": "Read", "value": 4096},
            {"major": 8, "minor": 0, "op": "Write", "value": 512},
        ]
    },
    "hugetlb": {"2MB": {"usage": 0, "max": 0, "failcnt": 0}},
}


def test_metrics_v1_from_runc_stats() -> None:
    m = metrics_v1(RUNC_STATS)
    assert m.pids is not None
    assert (m.pids.current, m.pids.limit) == (3, 100)
    assert m.cpu is not None
    assert m.cpu.usage is not None
    assert (m.cpu.usage.total, m.cpu.usage.kernel, m.cpu.usage.per_cpu) == (
        16268150,
        10000000,
        [3129192, 13138958],
    )
    assert m.cpu.throttling is not None
    assert m.cpu.throttling.throttled_periods == 2
    assert m.memory is not None
    assert m.memory.usage is not None
    assert (m.memory.usage.usage, m.memory.usage.limit, m.memory.rss, m.memory.pg_fault) == (
        720896,
        1 << 30,
        40960,
        769,
    )
    assert m.blkio is not None
    assert [e.value for e in m.blkio.io_service_bytes_recursive] == [4096, 512]
    assert [h.pagesize for h in m.hugetlb] == ["2MB"]


def test_metrics_v2_from_runc_stats() -> None:
    m = metrics_v2(RUNC_STATS)
    assert m.cpu is not None
    assert (m.cpu.usage_usec, m.cpu.system_usec, m.cpu.nr_throttled, m.cpu.throttled_usec) == (
        16268,
        10000,
        2,
        3,
    )
    assert m.memory is not None
    assert (m.memory.usage, m.memory.usage_limit, m.memory.anon, m.memory.file) == (
        720896,
        1 << 30,
        4096,
        8192,
    )
    assert m.io is not None
    assert [(e.major, e.rbytes, e.wbytes) for e in m.io.usage] == [(8, 4096, 512)]


def test_metrics_ignore_garbage() -> None:
    garbage = {
        "cpu": "x",
        "memory": {"usage": [1]},
        "pids": {"current": -1},
        "blkio": {"ioServiceBytesRecursive": [1, "a"]},
    }
    assert metrics_v1(garbage).pids is not None
    assert metrics_v2(garbage).pids is not None


@pytest.mark.parametrize(
    ("path", "systemd"),
    [
        ("system.slice:cri-containerd:abc", True),
        ("/kubepods/besteffort/pod1/abc", False),
        ("kubepods/abc", False),
        ("", False),
    ],
)
def test_systemd_cgroups_path_selects_runcs_systemd_driver(
    tmp_path: Path, path: str, systemd: bool
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"linux": {"cgroupsPath": path}}))
    assert _systemd_cgroups_path(tmp_path) is systemd
    runc = Runc(tmp_path / "root", Reaper(), binary="/usr/sbin/runc")
    if systemd:
        runc._systemd.add("c1")
    argv = runc._argv("kill", ["c1", "9"], container_id="c1")
    assert ("--systemd-cgroup" in argv) is systemd
    assert argv[-3:] == ["kill", "c1", "9"]


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ""])
async def test_runc_create_refuses_an_id_that_is_no_file_name(tmp_path: Path, bad: str) -> None:
    from runwasi_py._native import RuncError

    runc = Runc(tmp_path / "root", Reaper(), binary="/nonexistent/runc")
    with pytest.raises(RuncError, match="invalid container id"):
        await runc.create(bad, tmp_path, stdio=(0, 1, 2))
    assert not (tmp_path / "root").exists()
