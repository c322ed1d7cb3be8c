"""A private, real containerd for tests and demos (own root, state, sockets; CRI off).

Example:
    >>> from runwasi_py.containerd import PrivateContainerd
    >>> with PrivateContainerd("/tmp/c8d", shim_dirs=[".venv/bin"]) as c8d:
    ...     c8d.import_image("hello.tar")
    ...     res = c8d.run("docker.io/library/hello:latest", "c1",
    ...                   runtime="io.containerd.pywasmtime.v1")
"""

from runwasi_py.containerd._config import ContainerdPaths, render_config
from runwasi_py.containerd._daemon import INSTALL_HINT, PrivateContainerd, check_available
from runwasi_py.containerd._errors import ContainerdError, ContainerdUnavailable, CtrError
from runwasi_py.containerd._location import default_workdir

__all__ = [
    "INSTALL_HINT",
    "ContainerdError",
    "ContainerdPaths",
    "ContainerdUnavailable",
    "CtrError",
    "PrivateContainerd",
    "check_available",
    "default_workdir",
    "render_config",
]
