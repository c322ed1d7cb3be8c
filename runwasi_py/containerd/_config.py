"""The config of a private containerd: every path under one directory, CRI off or on.

The config file (not the ``--root/--state/--address`` flags) is needed because only the file
can set the ttrpc and debug sockets, the ``opt`` plugin's path (else /var/lib/containerd/opt)
and switch the CRI plugin off, or on with our runtimes, sandbox image and CNI network.

Two formats: containerd 1.6/1.7 read version 2, where CRI is one plugin
``io.containerd.grpc.v1.cri``; containerd 2.x reads version 3, where CRI is split into
``io.containerd.cri.v1.runtime`` (runtimes, CNI, OOM score rule) and
``io.containerd.cri.v1.images`` (snapshotter, ``pinned_images.sandbox``), with the gRPC
service (stream server) left in ``io.containerd.grpc.v1.cri``. 2.x also gets the
transfer service's ``unpack_config`` for ``wasip1/wasm`` beside the host platform (so
``ctr images import --platform wasip1/wasm`` unpacks a wasm image) and CRI's
``use_local_image_pull`` (so a CRI pull of a wasm image unpacks it); see the README.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ContainerdPaths", "CriSettings", "render_config"]

# A sockaddr_un path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class ContainerdPaths:
    """Where a private containerd keeps everything, all under ``workdir``."""

    workdir: Path

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    @property
    def opt(self) -> Path:
        return self.workdir / "opt"

    @property
    def fifo_dir(self) -> Path:
        return self.workdir / "fifo"

    @property
    def address(self) -> Path:
        return self.workdir / "containerd.sock"

    @property
    def ttrpc_address(self) -> Path:
        return self.workdir / "containerd.sock.ttrpc"

    @property
    def debug_address(self) -> Path:
        return self.workdir / "debug.sock"

    @property
    def config(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "containerd.pid"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def cni_data_dir(self) -> Path:
        """host-local IPAM's lease files (else /var/lib/cni/networks)."""
        return self.workdir / "cni" / "ipam"

    @property
    def pod_logs(self) -> Path:
        """Where the harness's CRI clients put pod log directories."""
        return self.workdir / "pods"

    @property
    def registry_hosts(self) -> Path:
        """CRI's registry ``config_path``: ``<host:port>/hosts.toml`` files go here."""
        return self.workdir / "certs.d"

    def sockets(self) -> list[Path]:
        return [self.address, self.ttrpc_address, self.debug_address]

    def bundles(self) -> Path:
        """Parent of ``<namespace>/<id>`` bundle directories (the v2 runtime's state)."""
        return self.state / "io.containerd.runtime.v2.task"


#: The CRI runtime handlers a ``--cri`` harness offers, and their shims.
DEFAULT_RUNTIMES: Mapping[str, str] = {
    "runc": "io.containerd.runc.v2",
    "pywasmtime": "io.containerd.pywasmtime.v1",
}

#: The platform our image builder gives wasm images.
WASM_PLATFORM = "wasip1/wasm"


@dataclass(frozen=True, slots=True)
class CriSettings:
    """What the CRI plugin is configured with when a harness runs with ``cri=True``."""

    sandbox_image: str
    cni_bin_dir: Path
    restrict_oom_score_adj: bool
    runtimes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RUNTIMES))
    default_runtime: str = "runc"


def _toml_str(path: Path | str) -> str:
    # A JSON string is a valid TOML basic string for any path text.
    return json.dumps(str(path))


def host_platform() -> str:
    """``linux/<arch>`` in containerd's names (``linux/amd64``, ``linux/arm64``)."""
    machine = platform.machine()
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _common(
    paths: ContainerdPaths, config_version: int, disabled: list[str], log_level: str
) -> str:
    return f"""version = {config_version}
root = {_toml_str(paths.root)}
state = {_toml_str(paths.state)}
disabled_plugins = {json.dumps(disabled)}

[grpc]
  address = {_toml_str(paths.address)}

[ttrpc]
  address = {_toml_str(paths.ttrpc_address)}

[debug]
  address = {_toml_str(paths.debug_address)}
  level = {json.dumps(log_level)}

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {_toml_str(paths.opt)}
"""


def _runtimes(prefix: str, cri: CriSettings) -> str:
    out = f"""
  [{prefix}.containerd]
    default_runtime_name = {json.dumps(cri.default_runtime)}
"""
    for handler, runtime_type in cri.runtimes.items():
        out += f"""
    [{prefix}.containerd.runtimes.{json.dumps(handler)}]
      runtime_type = {json.dumps(runtime_type)}
"""
    return out


def _cri_v2(paths: ContainerdPaths, cri: CriSettings) -> str:
    prefix = 'plugins."io.containerd.grpc.v1.cri"'
    return (
        f"""
  [{prefix}]
    sandbox_image = {json.dumps(cri.sandbox_image)}
    restrict_oom_score_adj = {json.dumps(cri.restrict_oom_score_adj)}
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""
        + _runtimes(prefix, cri)
        + f"""
  [{prefix}.registry]
    config_path = {_toml_str(paths.registry_hosts)}
"""
        + f"""
  [{prefix}.cni]
    bin_dir = {_toml_str(cri.cni_bin_dir)}
    conf_dir = {_toml_str(paths.cni_conf_dir)}
"""
    )


def _cri_v3(paths: ContainerdPaths, cri: CriSettings) -> str:
    runtime = 'plugins."io.containerd.cri.v1.runtime"'
    images = 'plugins."io.containerd.cri.v1.images"'
    return (
        f"""
  [{runtime}]
    restrict_oom_score_adj = {json.dumps(cri.restrict_oom_score_adj)}
    netns_mounts_under_state_dir = true
"""
        + _runtimes(runtime, cri)
        + f"""
  [{runtime}.cni]
    bin_dirs = [{_toml_str(cri.cni_bin_dir)}]
    conf_dir = {_toml_str(paths.cni_conf_dir)}

  [{images}]
    snapshotter = "overlayfs"
    # CRI's default 2.x pull (transfer service) unpacks only images whose config names the
    # host platform: a wasip1/wasm image arrives without a snapshot. The client-side pull
    # unpacks what it fetched, as 1.6/1.7 do (measured with 2.3.4; README).
    use_local_image_pull = true

  [{images}.pinned_images]
    sandbox = {json.dumps(cri.sandbox_image)}

  [{images}.registry]
    config_path = {_toml_str(paths.registry_hosts)}

  [plugins."io.containerd.grpc.v1.cri"]
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""
    )


def _unpack_v3() -> str:
    # Replacing the transfer service's default (host platform only) with the host platform
    # plus wasip1/wasm makes `ctr images import` and CRI pulls (which go through the
    # transfer service in 2.1+) unpack wasm images into overlayfs, where CRI looks for them.
    # The differ must be named for wasm: the walking differ registers linux platforms only,
    # and a platform no differ lists makes the whole transfer plugin fail to load.
    out = ""
    for plat, differ in ((host_platform(), ""), (WASM_PLATFORM, "walking")):
        out += f"""
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = {json.dumps(plat)}
    snapshotter = "overlayfs"
"""
        if differ:
            out += f"    differ = {json.dumps(differ)}\n"
    return out


_CRI_PLUGINS_V2 = ["io.containerd.grpc.v1.cri"]
_CRI_PLUGINS_V3 = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
    "io.containerd.cri.v1.images",
    "io.containerd.podsandbox.controller.v1.podsandbox",
]
# NRI (on by default in 2.x) listens on the host-wide /var/run/nri/nri.sock: two private
# containerds would fight over it, and no test needs it.
_ALWAYS_OFF_V3 = ["io.containerd.nri.v1.nri"]


def render_config(
    paths: ContainerdPaths,
    *,
    log_level: str = "debug",
    config_version: int = 2,
    cri: CriSettings | None = None,
) -> str:
    """The config.toml text: ``config_version`` 2 (containerd 1.6/1.7) or 3 (2.x).

    Without ``cri`` the CRI plugin is disabled; with it, CRI serves on the main socket with
    ``cri``'s runtimes, sandbox image and a CNI config directory under ``paths``.

    >>> print(render_config(ContainerdPaths(Path("/w"))).splitlines()[1])
    root = "/w/root"
    """
    if config_version == 2:
        disabled = [] if cri else _CRI_PLUGINS_V2
        text = _common(paths, 2, disabled, log_level)
        return text + (_cri_v2(paths, cri) if cri else "")
    if config_version == 3:
        disabled = _ALWAYS_OFF_V3 + ([] if cri else _CRI_PLUGINS_V3)
        text = _common(paths, 3, disabled, log_level)
        return text + (_cri_v3(paths, cri) if cri else "") + _unpack_v3()
    raise ValueError(f"config_version {config_version} unsupported (2 for 1.6/1.7, 3 for 2.x)")
