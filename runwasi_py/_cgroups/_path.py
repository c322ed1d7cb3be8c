"""``linux.cgroupsPath`` in its two forms, validated, as a path inside the cgroup hierarchy.

* **cgroupfs** (the default): ``/kubepods/burstable/pod<uid>/<id>``. A relative path is taken
  from the hierarchy's root as well (the spec lets the runtime choose; runc's fs driver
  does the same when it runs outside a cgroup of its own).
* **systemd** (chosen by ``SystemdCgroup = true`` in the runtime's options): ``slice:prefix:name``,
  e.g. ``kubepods-burstable-pod1.slice:cri-containerd:abc``. Without a systemd to ask, the
  directory is the one systemd would make, as runc's systemd driver computes it: the slice
  expands to its parents (``a-b.slice`` -> ``/a.slice/a-b.slice``), and the unit is
  ``<prefix>-<name>.scope`` (or ``name`` itself when it is a ``.slice``).

A path that climbs above the cgroup root (``/../x``), names the root itself, or holds a NUL
is refused with :class:`InvalidArgument` naming ``linux.cgroupsPath``: runc silently clamps
``..`` at the root, which would put a workload somewhere its operator did not name.
Everything here is sans-IO.
"""

from __future__ import annotations

import posixpath

from runwasi_py._errors import InvalidArgument

__all__ = [
    "CgroupPath",
    "expand_slice",
    "parse_cgroups_path",
    "systemd_cgroup_option",
]

FIELD = "linux.cgroupsPath"


class CgroupPath:
    """A validated cgroup: ``path`` is absolute and normalised inside the hierarchy.

    A plain class, not a dataclass: ``start`` imports this module, and ``dataclasses``
    costs it ~10 ms. Example:
        >>> parse_cgroups_path("/kubepods/pod1/c1").parent
        CgroupPath(path='/kubepods/pod1')
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        if not path.startswith("/") or path == "/":
            raise ValueError(f"not a cgroup below the root: {path!r}")
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CgroupPath) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"CgroupPath(path={self.path!r})"

    @property
    def name(self) -> str:
        """The last component (the container's own directory)."""
        return posixpath.basename(self.path)

    @property
    def parent(self) -> CgroupPath | None:
        """The enclosing cgroup, or None when this one sits right below the root."""
        up = posixpath.dirname(self.path)
        return None if up == "/" else CgroupPath(up)

    def child(self, name: str) -> CgroupPath:
        """The cgroup ``name`` below this one (``name`` is one path component)."""
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise InvalidArgument(f"cgroup name {name!r} is not a single path component")
        return CgroupPath(f"{self.path}/{name}")

    def ancestors(self) -> list[CgroupPath]:
        """This cgroup and its parents, outermost first (``/a``, ``/a/b``, ``/a/b/c``)."""
        parts = self.path.strip("/").split("/")
        return [CgroupPath("/" + "/".join(parts[: i + 1])) for i in range(len(parts))]

    def __str__(self) -> str:
        return self.path


def _normalise(raw: str, field: str) -> CgroupPath:
    if "\0" in raw:
        raise InvalidArgument(f"{field}: {raw!r} contains a NUL byte")
    depth, parts = 0, list[str]()
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if depth == 0:
                raise InvalidArgument(f"{field}: {raw!r} escapes the cgroup root")
            parts.pop()
            depth -= 1
            continue
        parts.append(part)
        depth += 1
    if not parts:
        raise InvalidArgument(f"{field}: {raw!r} names the cgroup root, not a cgroup below it")
    return CgroupPath("/" + "/".join(parts))


def expand_slice(slice_name: str, field: str = FIELD) -> str:
    """The cgroupfs directory of a systemd slice: ``a-b.slice`` -> ``/a.slice/a-b.slice``.

    ``-.slice`` is the root slice (``/``). A slice holding ``/``, an empty dash-separated
    part (``a--b.slice``, ``-a.slice``), or not ending in ``.slice`` is refused.
    """
    suffix = ".slice"
    if not slice_name.endswith(suffix) or "/" in slice_name:
        raise InvalidArgument(f"{field}: {slice_name!r} is not a systemd slice name")
    if slice_name == "-.slice":
        return "/"
    stem = slice_name[: -len(suffix)]
    if not stem or any(not p for p in stem.split("-")):
        raise InvalidArgument(f"{field}: {slice_name!r} is not a valid systemd slice name")
    out, prefix = [], ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        out.append(prefix + suffix)
    return "/" + "/".join(out)


def parse_cgroups_path(raw: str, *, systemd: bool = False, field: str = FIELD) -> CgroupPath | None:
    """``linux.cgroupsPath`` as a :class:`CgroupPath`; None when the spec sets none.

    Example:
        >>> parse_cgroups_path("kubepods-pod1.slice:cri-containerd:c1", systemd=True).path
        '/kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope'
    """
    if not raw:
        return None
    if not systemd:
        return _normalise(raw, field)
    pieces = raw.split(":")
    if len(pieces) != 3:
        raise InvalidArgument(
            f"{field}: {raw!r} is not in the systemd form slice:prefix:name"
            " (the runtime's options set SystemdCgroup = true)"
        )
    slice_name, prefix, name = pieces
    if not name or "/" in name or "/" in prefix or name in (".", ".."):
        raise InvalidArgument(f"{field}: {raw!r} has an invalid unit name or prefix")
    slice_dir = expand_slice(slice_name or "system.slice", field)
    if name.endswith(".slice"):
        unit = name  # a slice unit is named as it is, below its parent slice
    else:
        unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return _normalise(posixpath.join(slice_dir, unit), field)


def systemd_cgroup_option(config_body: str) -> bool:
    """``SystemdCgroup`` from a runtime options TOML body (containerd's ``runtimeoptions.v1``).

    A body that is not valid TOML, or sets a non-boolean, is refused: a silently ignored
    driver choice would put every container in the wrong place.
    """
    if not config_body.strip():
        return False
    import tomllib  # only runtimes with options need it: off the daemon's boot path

    try:
        table = tomllib.loads(config_body)
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"runtime options config_body is not valid TOML: {e}") from None
    value = table.get("SystemdCgroup", False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"runtime options: SystemdCgroup must be a boolean, not {value!r}")
    return value
