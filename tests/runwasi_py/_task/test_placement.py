"""TaskPlacement's inputs: Update's resources Any, runtime options, the shared-shim rule."""

from __future__ import annotations

import json

import pytest

from runwasi_py._errors import FailedPrecondition, InvalidArgument
from runwasi_py._launch.pod_cgroup import systemd_cgroup as _systemd_cgroup
from runwasi_py._launch.pod_cgroup import systemd_in_options
from runwasi_py._proto.messages import Any, RuntimeOptions, pack_any
from runwasi_py._task.placement import (
    TaskPlacement,
    refuse_cri_in_shared_shim,
    resources_from_update,
    systemd_from_options,
)

LINUX_RESOURCES = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"


def test_update_resources_are_json_linux_resources() -> None:
    body = json.dumps({"cpu": {"quota": 20000}}).encode()
    assert resources_from_update(LINUX_RESOURCES, body) == {"cpu": {"quota": 20000}}
    assert resources_from_update(LINUX_RESOURCES, b"") == {}
    with pytest.raises(InvalidArgument, match="not LinuxResources"):
        resources_from_update("containerd.task.v2.Other", body)
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        resources_from_update(LINUX_RESOURCES, b"{")
    with pytest.raises(InvalidArgument, match="JSON object"):
        resources_from_update(LINUX_RESOURCES, b"[1]")


def test_systemd_from_runtime_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWASI_PY_SYSTEMD_CGROUP", raising=False)
    on = pack_any(RuntimeOptions(config_body="SystemdCgroup = true\n"))
    off = pack_any(RuntimeOptions(config_body="SystemdCgroup = false\n"))
    assert systemd_from_options(on) is True
    assert systemd_from_options(off) is False
    assert systemd_from_options(None) is False
    with pytest.raises(InvalidArgument, match="not valid TOML"):
        systemd_from_options(pack_any(RuntimeOptions(config_body="= =")))
    monkeypatch.setenv("RUNWASI_PY_SYSTEMD_CGROUP", "1")
    assert systemd_from_options(None) is True


def test_start_reads_systemd_cgroup_from_stdin_options() -> None:
    on = pack_any(RuntimeOptions(config_body="SystemdCgroup = true\n"))
    assert _systemd_cgroup(bytes(on)) is True
    off = pack_any(RuntimeOptions(config_body="BinaryName = 'x'  # SystemdCgroup\n"))
    assert _systemd_cgroup(bytes(off)) is False
    assert _systemd_cgroup(bytes(Any(type_url="other", value=b"SystemdCgroup"))) is False
    assert _systemd_cgroup(b"\xffSystemdCgroup") is False
    assert _systemd_cgroup(b"") is False


def test_start_reads_systemd_cgroup_from_bootstrap_extensions() -> None:
    # containerd 2.3 sends the runtime options as BootstrapParams.extensions[0]'s Any
    on = pack_any(RuntimeOptions(config_body="SystemdCgroup = true\n"))
    assert systemd_in_options(on.type_url, on.value) is True
    off = pack_any(RuntimeOptions(config_body="SystemdCgroup = false\n"))
    assert systemd_in_options(off.type_url, off.value) is False
    assert systemd_in_options("other.Options", on.value) is False
    assert systemd_in_options(on.type_url, b"\xffSystemdCgroup") is False


def test_cri_containers_are_refused_by_a_shared_shim() -> None:
    with pytest.raises(FailedPrecondition, match="RUNWASI_PY_SHIM_GROUP=namespace"):
        refuse_cri_in_shared_shim({"io.kubernetes.cri.sandbox-id": "sb"}, "c1")
    refuse_cri_in_shared_shim({"org.example": "x"}, "c1")


def test_nothing_to_place_is_none(tmp_path: object) -> None:
    assert TaskPlacement.prepare({}, "/nonexistent") is None
    spec = {"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]}}
    assert TaskPlacement.prepare(spec, "/nonexistent") is None  # new netns: not for a thread
