"""containerd 2.3's BootstrapParams on start's stdin: detected, or ignored."""

from __future__ import annotations

from runwasi_py._launch import bootstrap as _bootstrap_mod
from runwasi_py._launch.flags import Flags
from runwasi_py._proto.messages import (
    BootstrapParams,
    LogLevel,
    RuntimeOptions,
    pack_any,
)

# --- BootstrapParams detection (containerd 2.3) ---------------------------------------


def test_bootstrap_params_detected() -> None:
    params = BootstrapParams(
        instance_id="c1",
        namespace="ns",
        log_level=LogLevel.DEBUG,
        containerd_ttrpc_address="/run/containerd/containerd.sock.ttrpc",
        containerd_grpc_address="/run/containerd/containerd.sock",
        socket_dir="/run/s2",
    )
    boot = _bootstrap_mod.bootstrap(bytes(params), Flags(id="c1", namespace="ns"))
    assert boot is not None
    assert boot.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert boot.grpc_address == "/run/containerd/containerd.sock"
    assert boot.socket_dir == "/run/s2"
    assert boot.debug is True


def test_bootstrap_params_for_another_shim_ignored() -> None:
    params = BootstrapParams(instance_id="other", namespace="ns")
    assert _bootstrap_mod.bootstrap(bytes(params), Flags(id="c1", namespace="ns")) is None


def test_legacy_any_options_are_not_bootstrap() -> None:
    options = pack_any(RuntimeOptions(config_path="/etc/x.toml"))
    assert _bootstrap_mod.bootstrap(bytes(options), Flags(id="c1", namespace="ns")) is None
    assert _bootstrap_mod.bootstrap(b"", Flags(id="c1", namespace="ns")) is None
    assert _bootstrap_mod.bootstrap(b"\xff\xff\xff", Flags(id="c1", namespace="ns")) is None
