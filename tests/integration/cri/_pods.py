"""Pods for the CRI end-to-end tests: created through CRI as kubelet would, removed after."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwasi_py.containerd import PodCgroup, PrivateContainerd
from runwasi_py.containerd.cri import (
    CriClient,
    CriError,
    LogLine,
    container_config,
    pb,
    pod_config,
    read_log,
    wait_exited,
)

WASM = "pywasmtime"
RUNC = "runc"


@dataclass
class Pod:
    """One pod sandbox: its id, the config CRI got, its kubelet-style cgroup and log dir."""

    cri: CriClient
    id: str
    config: pb.PodSandboxConfig
    cgroup: PodCgroup
    log_dir: Path
    handler: str
    containers: dict[str, str] = field(default_factory=dict)

    def create(
        self,
        name: str,
        image: str,
        *,
        args: Sequence[str] = (),
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        mounts: Sequence[pb.Mount] = (),
        resources: pb.LinuxContainerResources | None = None,
    ) -> str:
        """CreateContainer ``name`` in this pod; returns its id."""
        cfg = container_config(
            name, image, args=args, command=command, env=env, mounts=mounts, resources=resources
        )
        cid = self.cri.create_container(self.id, cfg, self.config)
        self.containers[name] = cid
        return cid

    def start(self, name: str, image: str, **kw: Any) -> str:
        """Create and start ``name``; returns its id."""
        cid = self.create(name, image, **kw)
        self.cri.start_container(cid)
        return cid

    def run(self, name: str, image: str, **kw: Any) -> pb.ContainerStatus:
        """Create, start and wait until ``name`` exited; returns its status."""
        return wait_exited(self.cri, self.start(name, image, **kw))

    def log(self, name: str) -> list[LogLine]:
        return read_log(self.log_dir / f"{name}.log")

    def status_info(self) -> dict[str, Any]:
        """containerd's verbose sandbox info (pid, netns path, runtime spec)."""
        info = self.cri.pod_sandbox_status(self.id, verbose=True).info
        return json.loads(info["info"]) if "info" in info else {}

    def container_pid(self, name: str) -> int:
        info = json.loads(self.cri.container_status_info(self.containers[name])["info"])
        return int(info["pid"])

    def remove(self) -> None:
        with contextlib.suppress(CriError):
            self.cri.stop_pod_sandbox(self.id)
        with contextlib.suppress(CriError):
            self.cri.remove_pod_sandbox(self.id)
        self.cgroup.remove()


@dataclass
class Pods:
    """Makes pods on one CRI harness; :meth:`remove_all` tidies whatever a test left."""

    c8d: PrivateContainerd
    cri: CriClient
    made: list[Pod] = field(default_factory=list)

    def run(self, name: str, *, handler: str = WASM, host_network: bool = True) -> Pod:
        uid = uuid.uuid4().hex
        cgroup = self.c8d.pod_cgroup(f"pod{uid}")
        log_dir = self.c8d.paths.pod_logs / f"{name}_{uid}"
        cfg = pod_config(
            f"{name}-{uid[:8]}",
            log_directory=log_dir,
            cgroup_parent=cgroup.path,
            host_network=host_network,
            uid=uid,
        )
        try:
            pod_id = self.cri.run_pod_sandbox(cfg, handler)
        except BaseException:
            cgroup.remove()
            raise
        pod = Pod(self.cri, pod_id, cfg, cgroup, log_dir, handler)
        self.made.append(pod)
        return pod

    def remove_all(self) -> None:
        for pod in self.made:
            pod.remove()
        self.made.clear()
