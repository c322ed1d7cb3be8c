"""Rootfs mounts: Go-style option parsing, real overlay and bind mounts (root only)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py import InvalidArgument
from runwasi_py._bundle.mount import (
    MS_BIND,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_SLAVE,
    MountError,
    is_mountpoint,
    mount,
    mount_rootfs,
    parse_options,
    unmount_all,
)
from runwasi_py._proto.messages import Mount

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount tests need root")


def test_parse_overlay_options() -> None:
    opts = parse_options(["index=off", "workdir=/s/2/work", "upperdir=/s/2/fs", "lowerdir=/s/1/fs"])
    assert opts.flags == 0
    assert opts.propagation == 0
    assert opts.data == "index=off,workdir=/s/2/work,upperdir=/s/2/fs,lowerdir=/s/1/fs"


def test_parse_bind_options() -> None:
    assert parse_options(["rbind", "rw"]).flags == MS_BIND | MS_REC
    assert parse_options(["rbind", "ro"]).flags == MS_BIND | MS_REC | MS_RDONLY
    # later words win, as in Go: ro then rw is read-write
    assert parse_options(["ro", "rw"]).flags == 0
    assert parse_options(["nosuid", "suid", "nosuid"]).flags == MS_NOSUID
    assert parse_options(["defaults"]).flags == 0


def test_parse_propagation() -> None:
    assert parse_options(["bind", "rprivate"]).propagation == MS_PRIVATE | MS_REC
    assert parse_options(["slave"]).propagation == MS_SLAVE
    assert parse_options(["bind", "slave"]).data == ""


# --- real mounts ----------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if (line.split(" ")[4] + "/").startswith(prefix)]


@pytest.fixture
def area(tmp_path: Path) -> Iterator[Path]:
    """A scratch dir whose mounts are all removed afterwards (and checked)."""
    yield tmp_path
    leaked = _mounts_under(tmp_path)
    for mp in sorted(leaked, key=len, reverse=True):
        unmount_all(mp)
    assert leaked == [], f"test leaked mounts: {leaked}"


def _overlay(area: Path) -> tuple[Mount, Path]:
    lower, upper, work, target = (area / n for n in ("lower", "upper", "work", "rootfs"))
    for d in (lower, upper, work, target):
        d.mkdir()
    (lower / "hello.wasm").write_bytes(b"\0asm")
    m = Mount(
        type="overlay",
        source="overlay",
        options=["index=off", f"workdir={work}", f"upperdir={upper}", f"lowerdir={lower}"],
    )
    return m, target


@needs_root
def test_overlay_mount_and_unmount(area: Path) -> None:
    m, target = _overlay(area)
    mount(m, target)
    try:
        assert is_mountpoint(target)
        assert (target / "hello.wasm").read_bytes() == b"\0asm"
        (target / "new").write_text("x")
        assert (area / "upper" / "new").read_text() == "x"
    finally:
        unmount_all(target)
    assert not is_mountpoint(target)
    assert not (target / "hello.wasm").exists()
    unmount_all(target)  # idempotent


@needs_root
def test_bind_read_only_is_remounted(area: Path) -> None:
    src, target = area / "src", area / "rootfs"
    src.mkdir()
    target.mkdir()
    (src / "f").write_text("data")
    mount(Mount(type="bind", source=str(src), options=["rbind", "ro"]), target)
    try:
        assert (target / "f").read_text() == "data"
        with pytest.raises(OSError, match="Read-only") as info:
            (target / "g").write_text("no")
        assert info.value.errno == errno.EROFS
        (src / "g").write_text("source stays writable")
    finally:
        unmount_all(target)
    assert not is_mountpoint(target)


@needs_root
def test_bind_read_write(area: Path) -> None:
    src, target = area / "src", area / "rootfs"
    src.mkdir()
    target.mkdir()
    mount(Mount(type="bind", source=str(src), options=["rbind", "rw"]), target)
    try:
        (target / "f").write_text("through")
        assert (src / "f").read_text() == "through"
    finally:
        unmount_all(target)


@needs_root
def test_mount_rootfs_creates_target_and_rolls_back(area: Path) -> None:
    good, target = _overlay(area)
    (area / "rootfs").rmdir()  # mount_rootfs creates it
    bad = Mount(type="bind", source=str(area / "does-not-exist"), options=["rbind"])
    with pytest.raises(MountError, match="does-not-exist") as info:
        mount_rootfs([good, bad], target)
    assert info.value.errno == errno.ENOENT
    assert target.is_dir()
    assert not is_mountpoint(target)  # the overlay was undone


@needs_root
def test_mount_rootfs_in_order(area: Path) -> None:
    m, target = _overlay(area)
    mount_rootfs([m], target)
    try:
        assert (target / "hello.wasm").exists()
    finally:
        unmount_all(target)


@needs_root
def test_unmount_all_stacked_and_busy(area: Path) -> None:
    src, target = area / "src", area / "rootfs"
    src.mkdir()
    target.mkdir()
    (src / "f").write_text("x")
    mount(Mount(type="bind", source=str(src), options=["bind"]), target)
    mount(Mount(type="bind", source=str(src), options=["bind"]), target)
    with (target / "f").open() as busy:  # an open file makes a plain umount fail (EBUSY)
        unmount_all(target)
        assert busy.read() == "x"
    assert not is_mountpoint(target)


def test_unmount_all_missing_or_not_mounted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("umount2 needs root to report EINVAL rather than EPERM")
    unmount_all(tmp_path / "missing")
    unmount_all(tmp_path)


def test_bad_mount_reports_errno(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(MountError, match=r"mount nosuchfs .* on") as info:
        mount(Mount(type="nosuchfs", source="x"), tmp_path)
    assert info.value.errno == errno.ENODEV


def test_overlong_data_refused(tmp_path: Path) -> None:
    lower = ":".join(f"/var/lib/containerd/snapshots/{i}/fs" for i in range(200))
    with pytest.raises(InvalidArgument, match="longer than 4095 bytes"):
        mount(Mount(type="overlay", source="overlay", options=[f"lowerdir={lower}"]), tmp_path)


def test_is_mountpoint() -> None:
    assert is_mountpoint("/")
    assert is_mountpoint("/proc")
    assert not is_mountpoint("/proc/self")
