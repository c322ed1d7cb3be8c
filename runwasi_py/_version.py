"""How a shim names itself: runtime and binary names, the ``-v`` text.

On the ``start`` path: standard library only.
"""

from __future__ import annotations

__all__ = ["binary_name", "runtime_name", "version_text"]


def runtime_name(shim_name: str, api: str = "v1") -> str:
    """The containerd runtime name of a shim: ``io.containerd.<name>.<api>``.

    >>> runtime_name("pywasmtime")
    'io.containerd.pywasmtime.v1'
    """
    return f"io.containerd.{shim_name}.{api}"


def binary_name(shim_name: str, api: str = "v1") -> str:
    """The executable containerd looks for: ``containerd-shim-<name>-<api>``.

    >>> binary_name("pywasmtime")
    'containerd-shim-pywasmtime-v1'
    """
    return f"containerd-shim-{shim_name}-{api}"


def version_text(argv0: str, runtime: str, version: str, revision: str) -> str:
    """What ``-v`` prints, in runwasi's form (Go shims print the same shape).

    >>> print(version_text("containerd-shim-x-v1", "x", "0.1.0", "<none>"))
    containerd-shim-x-v1:
      Runtime: x
      Version: 0.1.0
      Revision: <none>
    <BLANKLINE>
    """
    return f"{argv0}:\n  Runtime: {runtime}\n  Version: {version}\n  Revision: {revision}\n"
