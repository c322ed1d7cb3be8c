"""containerd 2.3's BootstrapParams on start's stdin, the task API version, the answer."""

from __future__ import annotations

import os

import pytest

from runwasi_py._launch import bootstrap as _bootstrap_mod
from runwasi_py._launch.bootstrap import (
    Bootstrap,
    BootstrapError,
    bootstrap,
    start_answer,
    task_api_version,
)
from runwasi_py._launch.flags import Flags
from runwasi_py._proto.messages import (
    BootstrapParams,
    BootstrapResult,
    Extension,
    LogLevel,
    RuntimeOptions,
    pack_any,
)
from runwasi_py._proto.wire import encode_varint, length_delimited

FLAGS = Flags(id="c1", namespace="ns")
ID_NS = length_delimited(1, b"c1") + length_delimited(2, b"ns")

# --- BootstrapParams decoding (field by field, against the generated 2.3.4 proto) ---------


def test_every_field_of_bootstrap_params_is_decoded() -> None:
    options = pack_any(RuntimeOptions(config_path="/etc/x.toml"))
    params = BootstrapParams(
        instance_id="c1",
        namespace="ns",
        log_level=LogLevel.DEBUG,
        containerd_version="v2.3.4",
        containerd_ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        containerd_grpc_address="/run/containerd/containerd.sock",
        containerd_binary="/usr/bin/containerd",
        extensions=[Extension(value=options)],
        socket_dir="/run/s2",
    )
    boot = bootstrap(bytes(params), FLAGS)
    assert boot is not None
    assert (boot.instance_id, boot.namespace) == ("c1", "ns")
    assert boot.log_level == -4
    assert boot.debug is True
    assert boot.containerd_version == "v2.3.4"
    assert boot.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert boot.grpc_address == "/run/containerd/containerd.sock"
    assert boot.containerd_binary == "/usr/bin/containerd"
    assert boot.socket_dir == "/run/s2"
    assert boot.runtime_options == ("runtimeoptions.v1.Options", bytes(options.value))
    assert RuntimeOptions.FromString(boot.extensions[0][1]).config_path == "/etc/x.toml"


@pytest.mark.parametrize(
    ("level", "debug"),
    [
        (LogLevel.TRACE, True),
        (LogLevel.DEBUG, True),
        (LogLevel.INFO, False),
        (LogLevel.WARN, False),
        (LogLevel.PANIC, False),
        (-3, True),  # an open enum: unknown values count as the nearest known level
        (-2, False),
    ],
)
def test_log_level_decides_debug(level: int, debug: bool) -> None:
    boot = bootstrap(ID_NS + b"\x18" + encode_varint(level), FLAGS)
    assert boot is not None
    assert (boot.log_level, boot.debug) == (level, debug)


def test_empty_socket_dir_means_the_default() -> None:
    boot = bootstrap(bytes(BootstrapParams(instance_id="c1", namespace="ns", socket_dir="")), FLAGS)
    assert boot is not None
    assert boot.socket_dir is None


def test_fields_a_newer_containerd_adds_are_ignored() -> None:
    boot = bootstrap(ID_NS + length_delimited(42, b"future") + b"\xa8\x03\x01", FLAGS)
    assert boot is not None
    assert boot.extensions == []


def test_bootstrap_params_for_another_shim_are_legacy() -> None:
    params = BootstrapParams(instance_id="other", namespace="ns")
    assert bootstrap(bytes(params), FLAGS) is None


def test_legacy_any_options_and_empty_stdin_are_not_bootstrap() -> None:
    options = pack_any(RuntimeOptions(config_path="/etc/x.toml"))
    assert bootstrap(bytes(options), FLAGS) is None
    assert bootstrap(b"", FLAGS) is None


# --- malformed stdin: a clear error naming the field ----------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff", "stdin holds neither BootstrapParams nor runtime options (not protobuf"),
        (ID_NS + b"\x42\x10ab", "(not protobuf: field 8 runs past the end of the message)"),
        (ID_NS + length_delimited(3, b"x"), "malformed BootstrapParams: log_level is not a varint"),
        (
            ID_NS + b"\x28\x01",
            "malformed BootstrapParams: containerd_ttrpc_address is not a string",
        ),
        (ID_NS + length_delimited(4, b"\xff"), "containerd_version is not UTF-8"),
        (ID_NS + b"\x40\x01", "malformed BootstrapParams: extensions[] is not a message"),
        (ID_NS + length_delimited(8, b"\x0a\x05ab"), "extensions[0]: field 1 runs past the end"),
        (ID_NS + length_delimited(8, b""), "malformed BootstrapParams: extensions[0].value has no"),
        (
            ID_NS + length_delimited(8, length_delimited(1, b"\x08\x01")),
            "extensions[0].value is not a google.protobuf.Any",
        ),
        (ID_NS + b"\x18" + encode_varint(1 << 40), "log_level is out of int32 range"),
    ],
    ids=[
        "not-protobuf",
        "truncated",
        "log-level",
        "string",
        "utf8",
        "extension-wire",
        "extension-truncated",
        "extension-empty",
        "extension-not-any",
        "int32",
    ],
)
def test_malformed_bootstrap_params_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BootstrapError) as info:
        bootstrap(data, FLAGS)
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # containerd shows it as one line


# --- the task API version and the answer ---------------------------------------------------


def test_task_api_v3_only_to_a_containerd_that_sent_bootstrap_params() -> None:
    boot = Bootstrap(instance_id="c1", namespace="ns")
    assert task_api_version(boot, {}) == 3
    assert task_api_version(None, {}) == 2  # 1.6 to 2.2: nothing tells 2.x from 1.x
    assert task_api_version(boot, {"MAX_SHIM_VERSION": "2"}) == 3  # what 2.3 sets, wrongly
    assert task_api_version(boot, {"RUNWASI_PY_TASK_API": "2"}) == 2
    assert task_api_version(None, {"RUNWASI_PY_TASK_API": "3"}) == 3
    assert task_api_version(None, {"RUNWASI_PY_TASK_API": "auto"}) == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNWASI_PY_TASK_API": "4"}, "RUNWASI_PY_TASK_API=4: this shim speaks task API versions"),
        ({"RUNWASI_PY_TASK_API": "v3"}, "RUNWASI_PY_TASK_API=v3: this shim speaks"),
        ({"MAX_SHIM_VERSION": "1"}, "up to MAX_SHIM_VERSION=1; this shim speaks task API versions"),
        ({"MAX_SHIM_VERSION": "x"}, "up to MAX_SHIM_VERSION=x; this shim speaks"),
    ],
)
def test_unknown_task_api_versions_name_the_ones_spoken(env: dict[str, str], message: str) -> None:
    with pytest.raises(BootstrapError) as info:
        task_api_version(None, env)
    assert message in str(info.value)
    assert "2 and 3" in str(info.value)


def test_answers_decode_as_containerd_decodes_them() -> None:
    boot = Bootstrap(instance_id="c1", namespace="ns")
    for version in (2, 3):
        result = BootstrapResult.FromString(start_answer("unix:///run/s/ab", version, boot))
        assert result == BootstrapResult(
            version=version, address="unix:///run/s/ab", protocol="ttrpc"
        )
    assert start_answer("unix:///run/s/ab", 2, None) == b"unix:///run/s/ab"
    assert start_answer('unix:///x"\\', 3, None) == (
        b'{"version":3,"address":"unix:///x\\"\\\\","protocol":"ttrpc"}'
    )


def test_read_stdin_of_a_closed_stdin_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fd: int, n: int) -> bytes:
        raise OSError(9, "bad fd")

    monkeypatch.setattr(os, "isatty", lambda fd: False)
    monkeypatch.setattr(os, "read", fail)
    assert _bootstrap_mod.read_stdin() == b""
