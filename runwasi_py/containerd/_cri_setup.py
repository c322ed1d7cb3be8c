"""What a ``cri=True`` harness adds around containerd, and how it all goes away again.

Before start: the pause image (built and cached), the CNI bridge conflist, and the CRI
settings for the config (runtime handlers ``runc`` and ``pywasmtime``; the OOM score rule
this machine needs). After start: the pause image imported into ``k8s.io``. At teardown:
processes still in the harness's cgroup root are killed and its cgroups removed, then the
bridge and libcni's cache entries are deleted. Teardown runs whether or not the harness was
started with CRI (a later ``runwasi-py containerd down`` does not know), and is a no-op for
what does not exist.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from runwasi_py.containerd._config import ContainerdPaths, CriSettings
from runwasi_py.containerd._errors import ContainerdUnavailable
from runwasi_py.containerd._network import CNI_BIN_DIR, remove_network, write_network
from runwasi_py.containerd._pause import build_pause_image
from runwasi_py.containerd._podcgroup import remove_cgroup_tree

__all__ = [
    "CRI_NAMESPACE",
    "cgroup_root",
    "lacks_cap_sys_resource",
    "prepare_cri",
    "teardown_cri",
]

#: The containerd namespace the CRI plugin keeps pods, containers and images in.
CRI_NAMESPACE = "k8s.io"
_CAP_SYS_RESOURCE = 24


def lacks_cap_sys_resource(status: str | None = None) -> bool:
    """True when this process may not lower ``oom_score_adj`` (bit 24 of ``CapEff`` clear).

    containerd's CRI asks runc for ``oomScoreAdj: -998`` on every sandbox, which then fails
    ("can't get final child's PID from pipe"); ``restrict_oom_score_adj`` avoids that.
    """
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return not (int(line.split()[1], 16) >> _CAP_SYS_RESOURCE) & 1
    return False


def cgroup_root(paths: ContainerdPaths) -> str:
    """The cgroup (cgroupfs form) under which this harness's pods get their cgroups."""
    return "/runwasi-py-" + hashlib.sha256(str(paths.workdir).encode()).hexdigest()[:10]


def prepare_cri(paths: ContainerdPaths) -> tuple[CriSettings, Path]:
    """Build what CRI needs before containerd starts; return its settings and the pause tarball.

    Raises :class:`ContainerdUnavailable` when the CNI plugins or gcc are missing.
    """
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).is_file():
            raise ContainerdUnavailable(
                f"CNI plugin {CNI_BIN_DIR / plugin} missing: as root run "
                "`apt-get install containernetworking-plugins` (or `bash scripts/setup.sh`)"
            )
    ref, tarball = build_pause_image()
    write_network(paths)
    paths.pod_logs.mkdir(parents=True, exist_ok=True)
    settings = CriSettings(
        sandbox_image=ref,
        cni_bin_dir=CNI_BIN_DIR,
        restrict_oom_score_adj=lacks_cap_sys_resource(),
    )
    return settings, tarball


def teardown_cri(paths: ContainerdPaths) -> list[str]:
    """Remove the harness's cgroups (killing what is left in them) and its network."""
    problems = [f"cgroup {d} busy" for d in remove_cgroup_tree(cgroup_root(paths))]
    problems += remove_network(paths)
    return problems
