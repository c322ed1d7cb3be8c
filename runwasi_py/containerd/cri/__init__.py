"""A CRI (``runtime.v1``) client for a containerd's CRI plugin, and kubelet-like helpers.

Example:
    >>> from runwasi_py.containerd import PrivateContainerd
    >>> from runwasi_py.containerd.cri import CriClient, container_config, pod_config
    >>> with PrivateContainerd("/tmp/c8d", shim_dirs=[".venv/bin"], cri=True) as c8d:
    ...     cg = c8d.pod_cgroup("pod1")
    ...     cri = CriClient(c8d.address)
    ...     pod = pod_config("p1", log_directory="/tmp/c8d/pods/p1", cgroup_parent=cg.path)
    ...     pod_id = cri.run_pod_sandbox(pod, "pywasmtime")
    ...     cid = cri.create_container(pod_id, container_config("app", "app:v1"), pod)
    ...     cri.start_container(cid)

The messages are ``runwasi_py.containerd.cri.pb`` (generated from ``cri_runtime_v1.proto``
by ``scripts/gen_cri_protos.sh``).
"""

from runwasi_py.containerd.cri._client import CriClient, CriError
from runwasi_py.containerd.cri._pods import (
    LogLine,
    container_config,
    pod_config,
    read_log,
    wait_exited,
)
from runwasi_py.containerd.cri.gen import cri_runtime_v1_pb2 as pb

__all__ = [
    "CriClient",
    "CriError",
    "LogLine",
    "container_config",
    "pb",
    "pod_config",
    "read_log",
    "wait_exited",
]
