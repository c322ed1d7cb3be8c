"""Validating a spec's linux.namespaces: missing paths, non-namespaces, wrong types, skips."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runwasi_py._errors import InvalidArgument
from runwasi_py._namespaces import CLONE_FLAGS, NamespacePlan, namespace_type


def spec(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"linux": {"namespaces": list(entries)}}


def test_a_missing_namespace_path_names_the_field(tmp_path: Path) -> None:
    missing = str(tmp_path / "cni-gone")
    with pytest.raises(
        InvalidArgument, match=r"linux\.namespaces\[1\]\.path: network .* does not exist"
    ):
        NamespacePlan.from_spec(spec({"type": "pid"}, {"type": "network", "path": missing}))


def test_a_file_that_is_not_a_namespace(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("x")
    with pytest.raises(
        InvalidArgument, match=r"linux\.namespaces\[0\]\.path: .* is not a namespace"
    ):
        NamespacePlan.from_spec(spec({"type": "network", "path": str(f)}))
    with pytest.raises(InvalidArgument, match="is not a namespace file"):
        NamespacePlan.from_spec(spec({"type": "network", "path": str(tmp_path)}))


def test_a_namespace_of_the_wrong_type() -> None:
    with pytest.raises(InvalidArgument, match="is a uts namespace, not network"):
        NamespacePlan.from_spec(spec({"type": "network", "path": "/proc/self/ns/uts"}))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"type": "bogus"}, r"\[0\]\.type: unknown namespace type"),
        ({"type": "network", "path": 3}, r"\[0\]\.path must be a string"),
        ({"type": "network", "path": "relative/ns"}, "not an absolute path"),
        ("network", r"\[0\] must be an object"),
    ],
)
def test_malformed_entries(entry: Any, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        NamespacePlan.from_spec(spec(entry))


def test_duplicate_types_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="a second uts namespace"):
        NamespacePlan.from_spec(spec({"type": "uts"}, {"type": "uts"}))


def test_valid_entries_are_kept_open_and_closed() -> None:
    plan = NamespacePlan.from_spec(
        spec(
            {"type": "network", "path": "/proc/self/ns/net"},
            {"type": "uts"},
            {"type": "pid", "path": "/proc/self/ns/pid"},
            {"type": "mount"},
            {"type": "user"},
        )
    )
    try:
        assert [j.type for j in plan.joins] == ["network"]
        fd = plan.joins[0].fd
        assert namespace_type(fd) == CLONE_FLAGS["network"]
        assert plan.unshare == ["uts"]
        assert {t for t, _ in plan.skipped} == {"pid", "mount", "user"}
        reasons = dict(plan.skipped)
        assert "children" in reasons["pid"]
        assert "CLONE_FS" in reasons["mount"]
        assert "single-threaded" in reasons["user"]
    finally:
        plan.close()
    with pytest.raises(OSError):  # noqa: PT011 - EBADF: closed
        os.fstat(fd)


def test_new_namespaces_only_when_allowed() -> None:
    plan = NamespacePlan.from_spec(spec({"type": "network"}, {"type": "ipc"}), allow_new=("ipc",))
    assert plan.unshare == ["ipc"]
    assert NamespacePlan.from_spec({}).empty


def test_a_bad_entry_after_a_good_one_closes_the_good_one() -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(InvalidArgument):
        NamespacePlan.from_spec(
            spec({"type": "network", "path": "/proc/self/ns/net"}, {"type": "uts", "path": "/nope"})
        )
    assert len(os.listdir("/proc/self/fd")) == before


def test_hostname_is_checked() -> None:
    assert NamespacePlan.from_spec({"hostname": "pod-x"}).hostname == "pod-x"
    with pytest.raises(InvalidArgument, match="hostname"):
        NamespacePlan.from_spec({"hostname": "x" * 65})
    with pytest.raises(InvalidArgument, match="hostname"):
        NamespacePlan.from_spec({"hostname": 7})
