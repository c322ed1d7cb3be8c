"""The generated containerd messages: exact bytes, field numbers, bare type urls."""

from __future__ import annotations

import datetime
import random
from typing import Any

import betterproto2
import pytest

from runwasi_py._proto import messages as p


def numbers(cls: type[betterproto2.Message]) -> dict[str, int]:
    # betterproto2 keeps the proto field numbers in per-class metadata
    meta: Any = cls._betterproto  # type: ignore[arg-type]
    return {name: m.number for name, m in meta.meta_by_field_name.items()}


def test_connect_response_bytes_match_go() -> None:
    # reference §1.2: Go's reply body for ConnectResponse{shim_pid:1234,task_pid:5678}
    msg = p.ConnectResponse(shim_pid=1234, task_pid=5678)
    assert bytes(msg) == bytes.fromhex("08d20910ae2c")
    assert p.ConnectResponse.FromString(bytes.fromhex("08d20910ae2c")) == msg


def test_connect_request_bytes() -> None:
    assert bytes(p.ConnectRequest(id="c1")) == bytes.fromhex("0a026331")


def test_v3_is_wire_identical_to_v2() -> None:
    v2 = p.task_v2.StateResponse(id="c1", pid=7, status=p.Status.STOPPED, exit_status=137)
    v3 = p.task_v3.StateResponse.FromString(bytes(v2))
    assert bytes(v3) == bytes(v2)
    assert v3.exit_status == 137


def test_go_zero_time_encoding() -> None:
    data = bytes(p.WaitResponse(exited_at=p.GO_ZERO_TIME))
    # field 2, length 11, Timestamp{seconds: -62135596800}
    assert data == bytes.fromhex("120b088092b8c398feffffff01")
    ts = p.Timestamp.FromString(data[2:])
    assert ts.seconds == -62135596800
    assert ts.nanos == 0
    assert p.WaitResponse.FromString(data).exited_at == p.GO_ZERO_TIME


def test_state_response_field_numbers() -> None:
    assert numbers(p.StateResponse) == {
        "id": 1,
        "bundle": 2,
        "pid": 3,
        "status": 4,
        "stdin": 5,
        "stdout": 6,
        "stderr": 7,
        "terminal": 8,
        "exit_status": 9,
        "exited_at": 10,
        "exec_id": 11,
    }


def test_task_exit_field_numbers_and_bytes() -> None:
    assert numbers(p.TaskExit) == {
        "container_id": 1,
        "id": 2,
        "pid": 3,
        "exit_status": 4,
        "exited_at": 5,
    }
    assert bytes(p.TaskExit(container_id="c", id="c", pid=1, exit_status=137)) == bytes.fromhex(
        "0a01631201631801208901"
    )


def test_task_delete_has_exec_id_last() -> None:
    assert numbers(p.TaskDelete) == {
        "container_id": 1,
        "pid": 2,
        "exit_status": 3,
        "exited_at": 4,
        "id": 5,
    }


def test_create_task_request_field_numbers() -> None:
    assert numbers(p.CreateTaskRequest) == {
        "id": 1,
        "bundle": 2,
        "rootfs": 3,
        "terminal": 4,
        "stdin": 5,
        "stdout": 6,
        "stderr": 7,
        "checkpoint": 8,
        "parent_checkpoint": 9,
        "options": 10,
    }


def test_cgroup_v2_metrics_has_no_field_3() -> None:
    assert numbers(p.cgroups_v2.Metrics) == {
        "pids": 1,
        "cpu": 2,
        "memory": 4,
        "rdma": 5,
        "io": 6,
        "hugetlb": 7,
        "memory_events": 8,
    }
    assert numbers(p.cgroups_v2.MemoryStat)["usage"] == 32
    assert numbers(p.cgroups_v2.MemoryStat)["swap_limit"] == 35
    m = p.cgroups_v2.Metrics(memory=p.cgroups_v2.MemoryStat(usage=1))
    assert bytes(m) == bytes.fromhex("2203800201")


def test_cgroup_v1_memory_entries() -> None:
    fields = numbers(p.cgroups_v1.MemoryStat)
    assert fields["total_unevictable"] == 32
    assert fields["usage"] == 33
    assert fields["kernel_tcp"] == 36


def test_pack_any_uses_bare_type_url() -> None:
    any_ = p.pack_any(p.TaskExit(container_id="c1"))
    assert any_.type_url == "containerd.events.TaskExit"
    assert any_.value == bytes.fromhex("0a026331")
    assert p.pack_any(p.cgroups_v2.Metrics()).type_url == "io.containerd.cgroups.v2.Metrics"
    assert p.pack_any(p.ProcessDetails()).type_url == "containerd.runc.v1.ProcessDetails"
    assert p.pack_any(p.RuntimeOptions()).type_url == "runtimeoptions.v1.Options"


@pytest.mark.parametrize(
    "url", ["containerd.events.TaskStart", "type.googleapis.com/containerd.events.TaskStart"]
)
def test_unpack_any_accepts_bare_and_prefixed(url: str) -> None:
    msg = p.unpack_any(p.Any(type_url=url, value=bytes(p.TaskStart(container_id="x", pid=3))))
    assert msg == p.TaskStart(container_id="x", pid=3)


def test_unpack_any_errors() -> None:
    with pytest.raises(TypeError, match="unknown message type"):
        p.unpack_any(p.Any(type_url="no.such.Type", value=b""))
    with pytest.raises(ValueError, match="no type_url"):
        p.unpack_any(p.Any())


def test_forward_request_round_trip() -> None:
    now = datetime.datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=datetime.UTC)
    req = p.ForwardRequest(
        envelope=p.Envelope(
            timestamp=now,
            namespace="default",
            topic="/tasks/exit",
            event=p.pack_any(p.TaskExit(container_id="c1", exit_status=1)),
        )
    )
    back = p.ForwardRequest.FromString(bytes(req))
    assert back == req
    assert back.envelope is not None
    assert back.envelope.timestamp == now


def test_runtime_options_config_path_is_field_2() -> None:
    # what `ctr run --runtime-config-path X` was seen to send (containerd-recipe.md)
    assert bytes(p.RuntimeOptions(config_path="X")) == bytes.fromhex("120158")


def test_bootstrap_params_socket_dir_presence() -> None:
    params = p.BootstrapParams(instance_id="c1", namespace="ns", socket_dir="")
    back = p.BootstrapParams.FromString(bytes(params))
    assert back.socket_dir == ""
    assert p.BootstrapParams.FromString(b"").socket_dir is None
    assert int(p.LogLevel.DEBUG) == -4


def test_delete_response_decodes_hand_made_bytes() -> None:
    # pid absent, exit_status=137, exited_at=Timestamp{seconds: 1}
    msg = p.DeleteResponse.FromString(bytes.fromhex("1089011a020801"))
    assert msg.pid == 0
    assert msg.exit_status == 137
    assert msg.exited_at == datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)


def _stubs_importable() -> bool:
    import ttrpc

    return all(hasattr(ttrpc, n) for n in ("CallContext", "Client"))


@pytest.mark.skipif(not _stubs_importable(), reason="ttrpc runtime names not exported yet")
@pytest.mark.parametrize("version", ["v2", "v3"])
def test_task_stubs_cover_all_17_rpcs(version: str) -> None:
    import importlib

    stubs = importlib.import_module(f"runwasi_py._proto.gen.containerd.task.{version}.shim_ttrpc")
    base = stubs.TaskBase
    assert base.service_name == f"containerd.task.{version}.Task"
    expected = {
        "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill",
        "Exec", "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown",
    }  # fmt: skip
    assert {spec.name for spec in base.ttrpc_methods().values()} == expected


@pytest.mark.skipif(not _stubs_importable(), reason="ttrpc runtime names not exported yet")
def test_events_stub() -> None:
    from runwasi_py._proto.gen.containerd.services.events.ttrpc.v1 import events_ttrpc

    assert events_ttrpc.EventsBase.service_name == "containerd.services.events.ttrpc.v1.Events"


def test_default_cache_keeps_encoding_and_fresh_mutable_defaults() -> None:
    import betterproto2

    from runwasi_py._proto.defaults_cache import install_default_cache
    from runwasi_py._proto.messages import CreateTaskRequest, Mount, TaskExit

    install_default_cache()  # what the daemon does at boot; nothing patches at import
    assert getattr(betterproto2.Message._get_field_default, "_runwasi_cached", False)
    a, b = CreateTaskRequest(id="c1"), CreateTaskRequest(id="c2")
    a.rootfs.append(Mount(type="bind"))  # a mutable default must not leak into b
    assert b.rootfs == []
    assert a.rootfs is not b.rootfs
    assert b._get_field_default("rootfs") is not b._get_field_default("rootfs")
    # repeated lookups of an immutable default return the same value; encoding skips it
    assert b._get_field_default("id") == ""
    assert b._get_field_default("stdin") == ""
    exit_ = TaskExit(container_id="c1", id="c1", pid=7, exit_status=0)
    assert bytes(exit_) == b"\n\x02c1\x12\x02c1\x18\x07"
    assert TaskExit.FromString(bytes(exit_)) == exit_
    assert not TaskExit()
    assert bool(exit_)


def test_default_cache_install_is_idempotent() -> None:
    import betterproto2

    from runwasi_py._proto.defaults_cache import install_default_cache

    install_default_cache()
    before = betterproto2.Message._get_field_default
    install_default_cache()
    assert betterproto2.Message._get_field_default is before


def test_cgroups_modules_load_on_first_use() -> None:
    import subprocess
    import sys

    code = """
import sys
import runwasi_py._task.service
assert not [m for m in sys.modules if "_proto.gen.io.containerd.cgroups" in m], "loaded at boot"
from runwasi_py._proto.messages import Any, unpack_any
m = unpack_any(Any(type_url="io.containerd.cgroups.v2.Metrics", value=b""))
assert type(m).__name__ == "Metrics", m
from runwasi_py._proto.messages import cgroups_v1
assert cgroups_v1.Metrics
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr


def _random_message(cls: type, rng: random.Random, depth: int = 0) -> Any:
    import enum as enum_mod

    import betterproto2

    meta = cls._betterproto  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {}
    for name, field in meta.meta_by_field_name.items():
        if rng.random() < 0.3:
            continue  # left at its default

        def one(field: Any = field, name: str = name) -> Any:
            t = field.proto_type
            if t == betterproto2.TYPE_STRING:
                return rng.choice(["", "c1", "ünï", "x" * rng.randint(0, 300)])
            if t == betterproto2.TYPE_BYTES:
                return rng.randbytes(rng.randint(0, 200))
            if t == betterproto2.TYPE_BOOL:
                return rng.random() < 0.5
            if t in (betterproto2.TYPE_UINT32,):
                return rng.choice([0, 1, 127, 128, 2**32 - 1, rng.randint(0, 2**32 - 1)])
            if t in (betterproto2.TYPE_UINT64,):
                return rng.choice([0, 2**64 - 1, rng.randint(0, 2**64 - 1)])
            if t in (betterproto2.TYPE_INT32, betterproto2.TYPE_INT64):
                return rng.choice([0, -1, 2**31 - 1, -(2**31), rng.randint(-(2**31), 2**31)])
            if t == betterproto2.TYPE_ENUM:
                members = list(meta.cls_by_field[name])
                assert all(isinstance(m, enum_mod.Enum) for m in members)
                return rng.choice(members)
            if t == betterproto2.TYPE_MESSAGE and field.unwrap is not None:
                seconds = rng.choice([0, 1, -62135596800, rng.randint(-(10**10), 10**10)])
                return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
                    seconds=seconds, microseconds=rng.choice([0, 1, 999999])
                )
            if t == betterproto2.TYPE_MESSAGE:
                sub = meta.cls_by_field[name]
                return _random_message(sub, rng, depth + 1) if depth < 3 else sub()
            raise AssertionError(f"no generator for {t}")

        kwargs[name] = [one() for _ in range(rng.randint(0, 3))] if field.repeated else one()
    return cls(**kwargs)


def test_fast_encoders_match_betterproto_byte_for_byte() -> None:
    import betterproto2

    from runwasi_py._proto import messages as _proto
    from runwasi_py._proto.gen.containerd.types import Mount as TypesMount

    hot = [
        TypesMount, _proto.TaskIo, _proto.TaskCreate, _proto.TaskStart, _proto.TaskExit,
        _proto.TaskDelete, _proto.CreateTaskResponse, _proto.StartResponse,
        _proto.WaitResponse, _proto.DeleteResponse, _proto.StateResponse,
        _proto.ConnectResponse, _proto.Empty, _proto.Any, _proto.Envelope,
    ]  # fmt: skip
    generic = betterproto2.Message.__bytes__
    rng = random.Random(20261129)
    for cls in hot:
        assert "__bytes__" in vars(cls), f"{cls.__name__} has no fast encoder"
        for _ in range(300):
            msg = _random_message(cls, rng)
            if rng.random() < 0.1:
                msg._unknown_fields = b"\xf8\x07\x01"  # field 127, varint 1
            fast = bytes(msg)
            assert fast == generic(msg), f"{cls.__name__}: {msg!r}"
            if not msg._unknown_fields:
                assert type(msg).FromString(fast) == msg


def test_fast_encoder_plans_only_what_it_encodes_identically() -> None:
    import betterproto2

    from runwasi_py._proto import _fast
    from runwasi_py._proto.messages import cgroups_v1, cgroups_v2

    assert _fast._timestamp(datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) == b""
    with pytest.raises(ValueError, match="timezone"):
        _fast._timestamp(datetime.datetime(2020, 1, 1))
    generic = betterproto2.Message.__bytes__
    rng = random.Random(7)
    planned = 0
    for module in (cgroups_v1, cgroups_v2):
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, betterproto2.Message)):
                continue
            fast = _fast._plan(cls)  # planned, not installed: the classes stay untouched
            if fast is None:
                continue
            planned += 1
            for _ in range(20):
                try:
                    msg = _random_message(cls, rng)
                except AssertionError:
                    break  # a field type the generator does not know: nothing to compare
                assert fast(msg) == generic(msg), f"{cls.__name__}: {msg!r}"
    assert planned > 0
