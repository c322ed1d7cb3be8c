"""linux.cgroupsPath in the cgroupfs and systemd forms, and the SystemdCgroup option."""

from __future__ import annotations

import pytest

from runwasi_py._cgroups import (
    CgroupPath,
    expand_slice,
    parse_cgroups_path,
    systemd_cgroup_option,
)
from runwasi_py._errors import InvalidArgument


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/kubepods/burstable/pod1/c1", "/kubepods/burstable/pod1/c1"),
        ("kubepods/pod1/c1", "/kubepods/pod1/c1"),
        ("//a/./b//c/", "/a/b/c"),
        ("/a/x/../b", "/a/b"),
    ],
)
def test_cgroupfs_form(raw: str, want: str) -> None:
    got = parse_cgroups_path(raw)
    assert got is not None
    assert got.path == want


def test_unset_is_none() -> None:
    assert parse_cgroups_path("") is None


@pytest.mark.parametrize("raw", ["/../etc", "/a/../../b", "..", "/a/b/../../../x"])
def test_escaping_path_is_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath: .* escapes the cgroup root"):
        parse_cgroups_path(raw)


@pytest.mark.parametrize("raw", ["/", "/./", "/a/.."])
def test_the_root_itself_is_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="names the cgroup root"):
        parse_cgroups_path(raw)


def test_nul_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        parse_cgroups_path("/a\0b")


def test_parent_child_ancestors() -> None:
    p = CgroupPath("/kubepods/p1/c1")
    assert p.parent == CgroupPath("/kubepods/p1")
    assert p.name == "c1"
    assert CgroupPath("/a").parent is None
    assert [a.path for a in p.ancestors()] == ["/kubepods", "/kubepods/p1", "/kubepods/p1/c1"]
    assert p.child("x").path == "/kubepods/p1/c1/x"
    with pytest.raises(InvalidArgument):
        p.child("../x")


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("-.slice", "/"),
        ("system.slice", "/system.slice"),
        (
            "kubepods-burstable-pod1.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice",
        ),
    ],
)
def test_expand_slice(name: str, want: str) -> None:
    assert expand_slice(name) == want


@pytest.mark.parametrize("name", ["a--b.slice", "-a.slice", "a/b.slice", "a.scope", ".slice"])
def test_bad_slices(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath"):
        expand_slice(name)


def test_systemd_form_maps_to_the_scope_systemd_would_make() -> None:
    got = parse_cgroups_path("kubepods-besteffort-pod9.slice:cri-containerd:abc", systemd=True)
    assert got is not None
    assert got.path == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice"
        "/cri-containerd-abc.scope"
    )


def test_systemd_form_defaults_and_slice_units() -> None:
    got = parse_cgroups_path(":pfx:c1", systemd=True)
    assert got is not None
    assert got.path == "/system.slice/pfx-c1.scope"
    got = parse_cgroups_path("kubepods.slice::kubepods-pod1.slice", systemd=True)
    assert got is not None
    assert got.path == "/kubepods.slice/kubepods-pod1.slice"


@pytest.mark.parametrize("raw", ["/kubepods/p1/c1", "a:b", "a.slice:p:", "a.slice:p:x/y"])
def test_systemd_form_is_checked(raw: str) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath"):
        parse_cgroups_path(raw, systemd=True)


def test_systemd_cgroup_option() -> None:
    assert systemd_cgroup_option("SystemdCgroup = true\n") is True
    assert systemd_cgroup_option("BinaryName = 'x'\n") is False
    assert systemd_cgroup_option("") is False
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        systemd_cgroup_option("SystemdCgroup = = true")
    with pytest.raises(InvalidArgument, match="must be a boolean"):
        systemd_cgroup_option('SystemdCgroup = "yes"')
