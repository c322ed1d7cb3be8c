"""A private, real containerd for tests and demos (own root, state, sockets; CRI off or on).

Example:
    >>> from runwasi_py.containerd import PrivateContainerd
    >>> with PrivateContainerd("/tmp/c8d", shim_dirs=[".venv/bin"]) as c8d:
    ...     c8d.import_image("hello.tar")
    ...     res = c8d.run("docker.io/library/hello:latest", "c1",
    ...                   runtime="io.containerd.pywasmtime.v1")
"""

from runwasi_py.containerd._config import ContainerdPaths, CriSettings, render_config
from runwasi_py.containerd._cri_setup import CRI_NAMESPACE
from runwasi_py.containerd._daemon import INSTALL_HINT, PrivateContainerd, check_available
from runwasi_py.containerd._errors import ContainerdError, ContainerdUnavailable, CtrError
from runwasi_py.containerd._location import default_workdir
from runwasi_py.containerd._podcgroup import PodCgroup, create_pod_cgroup, remove_cgroup_tree
from runwasi_py.containerd._version import (
    BIN_ENV,
    ContainerdBuild,
    ContainerdVersion,
    find_build,
)

__all__ = [
    "BIN_ENV",
    "CRI_NAMESPACE",
    "INSTALL_HINT",
    "ContainerdBuild",
    "ContainerdError",
    "ContainerdPaths",
    "ContainerdUnavailable",
    "ContainerdVersion",
    "CriSettings",
    "CtrError",
    "PodCgroup",
    "PrivateContainerd",
    "check_available",
    "create_pod_cgroup",
    "default_workdir",
    "find_build",
    "remove_cgroup_tree",
    "render_config",
]
