"""The config of a private containerd: every path under one directory, CRI off.

The config file (not the ``--root/--state/--address`` flags) is needed because only the file
can set the ttrpc and debug sockets, the ``opt`` plugin's path (else /var/lib/containerd/opt)
and disable the CRI plugin, which would otherwise start a CNI/Kubernetes stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ContainerdPaths", "render_config"]

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

    def sockets(self) -> list[Path]:
        return [self.address, self.ttrpc_address, self.debug_address]

    def bundles(self) -> Path:
        """Parent of ``<namespace>/<id>`` bundle directories (the v2 runtime's state)."""
        return self.state / "io.containerd.runtime.v2.task"


def _toml_str(path: Path) -> str:
    # A JSON string is a valid TOML basic string for any path text.
    return json.dumps(str(path))


def render_config(paths: ContainerdPaths, *, log_level: str = "debug") -> str:
    """The config.toml text (version 2, containerd 1.6 and 1.7).

    >>> print(render_config(ContainerdPaths(Path("/w"))).splitlines()[1])
    root = "/w/root"
    """
    return f"""version = 2
root = {_toml_str(paths.root)}
state = {_toml_str(paths.state)}
disabled_plugins = ["io.containerd.grpc.v1.cri"]

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
