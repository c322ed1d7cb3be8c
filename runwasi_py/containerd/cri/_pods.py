"""Building CRI pod and container configs the way kubelet fills them, and reading results.

kubelet sends a ``PodSandboxConfig`` (metadata, log directory, cgroup parent, namespace
modes) with RunPodSandbox and again with every CreateContainer; :func:`pod_config` and
:func:`container_config` build the fields that matter to a runtime. :func:`read_log`
parses the CRI log format containerd writes (``<RFC3339Nano> <stream> <F|P> <text>``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runwasi_py.containerd.cri._client import CriClient
from runwasi_py.containerd.cri.gen import cri_runtime_v1_pb2 as pb

__all__ = [
    "LogLine",
    "container_config",
    "pod_config",
    "read_log",
    "wait_exited",
]


def pod_config(
    name: str,
    *,
    log_directory: str | Path,
    cgroup_parent: str = "",
    host_network: bool = False,
    namespace: str = "default",
    uid: str | None = None,
) -> pb.PodSandboxConfig:
    """A pod's config: host network (``NODE``) or a CNI network (``POD``), its cgroup parent."""
    net = pb.NODE if host_network else pb.POD
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=name, uid=uid or uuid.uuid4().hex, namespace=namespace, attempt=0
        ),
        # kubelet leaves the hostname empty for host-network pods: they share the node's UTS
        # namespace, and runc refuses to set a hostname without a private one.
        hostname="" if host_network else name[:63],
        log_directory=str(log_directory),
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=net, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )


def container_config(
    name: str,
    image: str,
    *,
    command: Sequence[str] = (),
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    mounts: Sequence[pb.Mount] = (),
    resources: pb.LinuxContainerResources | None = None,
    log_path: str | None = None,
) -> pb.ContainerConfig:
    """A container's config; ``log_path`` is relative to the pod's log directory."""
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=list(command),
        args=list(args),
        envs=[pb.KeyValue(key=k, value=v) for k, v in (env or {}).items()],
        mounts=list(mounts),
        log_path=log_path if log_path is not None else f"{name}.log",
        linux=pb.LinuxContainerConfig(resources=resources) if resources else None,
    )


def wait_exited(cri: CriClient, container_id: str, timeout: float = 30.0) -> pb.ContainerStatus:
    """Poll ContainerStatus until EXITED; AssertionError after ``timeout`` (a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        status = cri.container_status(container_id)
        if status.state == pb.CONTAINER_EXITED:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(
                f"container {container_id} not exited after {timeout:g}s "
                f"(state {pb.ContainerState.Name(status.state)})"
            )
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One record of a CRI log file."""

    timestamp: str
    stream: str
    partial: bool
    text: str


def read_log(path: str | Path) -> list[LogLine]:
    """The records of a CRI container log file (missing file: none)."""
    try:
        data = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in data.splitlines():
        ts, stream, tag, text = ([*line.split(" ", 3), "", "", ""])[:4]
        out.append(LogLine(ts, stream, tag == "P", text))
    return out
