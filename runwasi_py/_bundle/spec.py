"""The OCI bundle: read ``config.json``, build a RuntimeContext, resolve paths inside the rootfs.

Theory of operation: containerd hands the shim a bundle directory holding ``config.json``
(an OCI runtime spec) and an empty ``rootfs/`` that the shim mounts itself. Everything the
framework needs from the spec is read here, once, with a clear :class:`InvalidArgument` for a
missing or malformed file. Paths the workload names (the entrypoint ``/app.wasm#func``) are
resolved the way the kernel would inside a chroot at the rootfs: absolute symlink targets
start again at the rootfs. A path that would climb above the rootfs, through ``..`` or a
symlink, is refused rather than clamped, so an image cannot make the shim read host files and
a mistake is reported instead of silently resolving somewhere else.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runwasi_py._bundle.group import ANNOTATION_SANDBOX_ID, grouping_id
from runwasi_py._context import Entrypoint, Mount, RuntimeContext, Stdio
from runwasi_py._errors import InvalidArgument

__all__ = [
    "ANNOTATION_CONTAINER_TYPE",
    "ANNOTATION_SANDBOX_ID",
    "BundleSpec",
    "build_context",
    "grouping_id",
    "is_sandbox_container",
    "load_spec",
    "resolve_entrypoint",
    "resolve_in_rootfs",
    "sandbox_id",
]

ANNOTATION_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
_MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS: more is ELOOP
_MAX_CONFIG_BYTES = 16 << 20


class BundleSpec:
    """The parts of a bundle's ``config.json`` the framework uses, validated.

    Example:
        >>> spec = BundleSpec.load(Path("/run/containerd/io.containerd.runtime.v2.task/ns/c1"))
        >>> spec.args, spec.rootfs
        (['/hello.wasm'], PosixPath('/run/.../c1/rootfs'))
    """

    __slots__ = (
        "annotations",
        "args",
        "bundle",
        "cwd",
        "env",
        "memory_limit",
        "mounts",
        "raw",
        "rootfs",
    )

    def __init__(self, bundle: Path, raw: dict[str, Any]) -> None:
        self.bundle = bundle
        self.raw = raw
        process = _get(raw, "process", dict, {})
        self.args: list[str] = _str_list(process, "args", "process.args")
        self.env: list[str] = _str_list(process, "env", "process.env")
        self.cwd: str = _get(process, "cwd", str, "/", "process.cwd") or "/"
        root = _get(raw, "root", dict, {})
        root_path = _get(root, "path", str, "rootfs", "root.path") or "rootfs"
        self.rootfs: Path = bundle / root_path  # an absolute root.path replaces the bundle
        self.mounts: list[Mount] = _mounts(raw.get("mounts"))
        self.memory_limit: int | None = _memory_limit(raw)
        annotations = _get(raw, "annotations", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise InvalidArgument("config.json: annotations must map strings to strings")
        self.annotations: dict[str, str] = dict(annotations)

    @classmethod
    def load(cls, bundle: str | os.PathLike[str]) -> BundleSpec:
        """Read and validate ``<bundle>/config.json``."""
        path = Path(bundle)
        return cls(path, load_spec(os.fspath(bundle)))


def load_spec(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``<bundle>/config.json``; InvalidArgument when it is missing or not a JSON object."""
    # os.path and str rather than pathlib: this runs on every Create (hot path)
    path = os.path.join(os.fspath(bundle), "config.json")
    try:
        data = _read_limited(path, _MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InvalidArgument(f"bundle {os.fspath(bundle)!r} has no config.json") from None
    except OSError as e:
        raise InvalidArgument(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > _MAX_CONFIG_BYTES:
        raise InvalidArgument(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        spec = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument(f"{path} is nested too deeply to be an OCI spec") from None
    if not isinstance(spec, dict):
        raise InvalidArgument(f"{path} is not a JSON object")
    return spec


def _read_limited(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path``.

    Not ``open(path).read(limit)``: a buffered read of ``limit`` allocates ``limit`` bytes up
    front, and at 16 MiB that allocation was the most expensive step of a Create.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size  # 0 for a FIFO or /proc file: read in chunks then
        chunks, total = [], 0
        want = min(limit, size + 1) if size else 1 << 16
        while total < limit:
            chunk = os.read(fd, min(want, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            want = 1 << 16
        return b"".join(chunks)
    finally:
        os.close(fd)


def _get(
    obj: Mapping[str, Any], key: str, kind: type, default: Any, name: str | None = None
) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(f"config.json: {name or key} must be {_json_type(kind)}")
    return value


def _json_type(kind: type) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer"}[kind]


def _str_list(obj: Mapping[str, Any], key: str, name: str) -> list[str]:
    value = _get(obj, key, list, [], name)
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"config.json: {name} must be an array of strings")
    return list(value)


def _mounts(value: Any) -> list[Mount]:
    """Bind mounts of the spec (what a wasm instance can be given as preopened dirs)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument("config.json: mounts must be an array")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise InvalidArgument(f"config.json: mounts[{i}] must be an object")
        dest = _get(m, "destination", str, "", f"mounts[{i}].destination")
        source = _get(m, "source", str, "", f"mounts[{i}].source")
        kind = _get(m, "type", str, "", f"mounts[{i}].type")
        options = tuple(_str_list(m, "options", f"mounts[{i}].options"))
        is_bind = kind == "bind" or "bind" in options or "rbind" in options
        if is_bind and dest and source:
            out.append(Mount(destination=dest, source=source, type="bind", options=options))
    return out


def _memory_limit(spec: Mapping[str, Any]) -> int | None:
    linux = _get(spec, "linux", dict, {})
    resources = _get(linux, "resources", dict, {}, "linux.resources")
    memory = _get(resources, "memory", dict, {}, "linux.resources.memory")
    limit = _get(memory, "limit", int, None, "linux.resources.memory.limit")
    # runc treats 0 as "not set" and -1 as "unlimited"
    return limit if limit is not None and limit > 0 else None


def sandbox_id(annotations: Mapping[str, str]) -> str | None:
    """The CRI pod (sandbox) id of a container, or None outside Kubernetes."""
    return annotations.get(ANNOTATION_SANDBOX_ID) or None


def is_sandbox_container(annotations: Mapping[str, str]) -> bool:
    """True for a CRI pod's sandbox (pause) container, which the shim runs as an idle task."""
    return annotations.get(ANNOTATION_CONTAINER_TYPE) == "sandbox"


def resolve_in_rootfs(rootfs: str | os.PathLike[str], path: str, cwd: str = "/") -> Path:
    """The host path of ``path`` as seen by a process chrooted at ``rootfs`` in ``cwd``.

    Symlinks are followed inside the rootfs (an absolute target starts at the rootfs); a
    relative ``path`` starts at ``cwd``. Components that do not exist are kept as they are.
    Raises InvalidArgument when ``..`` (in the path or in a symlink target) would climb above
    the rootfs, or on a symlink loop.

    >>> resolve_in_rootfs("/bundle/rootfs", "/app/../bin/app.wasm")
    PosixPath('/bundle/rootfs/bin/app.wasm')
    """
    return Path(_resolve_in_rootfs(rootfs, path, cwd))


def _real_path(path: str | os.PathLike[str]) -> str:
    """``os.path.realpath(path)``, for an existing path, from the kernel.

    realpath makes one ``lstat`` per component (7 for containerd's bundle paths), on the
    control loop at every Create, and each lets other threads take the GIL. The kernel
    names an open file in ``/proc/self/fd``; the name is used only if it is the file that
    was opened (same device and inode): not a ``/proc`` that lies, not a rename between.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return os.path.realpath(path)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
        opened, named = os.fstat(fd), os.stat(real)
    except OSError:  # no /proc, or the name is no path (deleted meanwhile, ...)
        return os.path.realpath(path)
    finally:
        os.close(fd)
    if not real.startswith("/") or (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return os.path.realpath(path)
    return real


def _resolve_in_rootfs(rootfs: str | os.PathLike[str], path: str, cwd: str) -> str:
    """``resolve_in_rootfs`` on plain strings (it runs on every Create)."""
    root = _real_path(rootfs)
    if "\0" in path or "\0" in cwd:
        raise InvalidArgument(f"path {path!r} contains a NUL byte")
    start = path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}"
    pending = _components(start)
    pending.reverse()  # a stack: the next component is pending[-1]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if not resolved:
                raise InvalidArgument(f"path {path!r} escapes the rootfs")
            resolved.pop()
            continue
        candidate = (
            "/".join((root, *resolved, part)) if root != "/" else "/" + "/".join((*resolved, part))
        )
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        except OSError as e:
            raise InvalidArgument(f"cannot resolve {path!r} in the rootfs: {e.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise InvalidArgument(f"path {path!r}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed(_components(target)))
    if not resolved:
        return root
    return "/".join((root, *resolved)) if root != "/" else "/" + "/".join(resolved)


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def _env_path(env: Iterable[str]) -> list[str]:
    value = None
    for item in env:
        if item.startswith("PATH="):
            value = item[5:]  # the last PATH= wins, as with a process's environment
    return [d for d in (value or "").split(":") if d]


def resolve_entrypoint(
    rootfs: str | os.PathLike[str], arg0: str, cwd: str = "/", env: Iterable[str] = ()
) -> Entrypoint:
    """Split ``path#func`` and find the module inside the rootfs.

    A path with a ``/`` is taken relative to ``cwd``; a bare name is looked for in ``cwd``,
    then in each directory of the spec's ``PATH``. ``source`` is the host path of a regular
    file, or None when nothing was found (``Sandbox.can_handle`` reports that). A path that
    escapes the rootfs raises InvalidArgument.

    >>> resolve_entrypoint("/b/rootfs", "/app.wasm#init").func
    'init'
    """
    ep = Entrypoint.parse(arg0)
    if not ep.path:
        return ep
    candidates = [_resolve_in_rootfs(rootfs, ep.path, cwd)]
    if "/" not in ep.path:
        candidates += [_resolve_in_rootfs(rootfs, ep.path, d) for d in _env_path(env)]
    for host_path in candidates:
        if os.path.isfile(host_path):
            return Entrypoint(path=ep.path, func=ep.func, source=Path(host_path))
    return ep


def build_context(
    spec: BundleSpec,
    *,
    container_id: str,
    namespace: str,
    stdio: Stdio | None = None,
    rootfs: Path | None = None,
) -> RuntimeContext:
    """The RuntimeContext for one container from its validated spec.

    ``rootfs`` overrides the spec's root (for instance a mounted path); the entrypoint is
    resolved inside it. InvalidArgument when ``process.args`` is empty or escapes the rootfs.

    Example:
        >>> ctx = build_context(BundleSpec.load(bundle), container_id="c1", namespace="default")
        >>> ctx.entrypoint.source
        PosixPath('/.../c1/rootfs/hello.wasm')
    """
    if not spec.args:
        raise InvalidArgument("config.json: process.args is empty")
    root = rootfs if rootfs is not None else spec.rootfs
    entrypoint = resolve_entrypoint(root, spec.args[0], spec.cwd, spec.env)
    return RuntimeContext(
        container_id=container_id,
        namespace=namespace,
        bundle=spec.bundle,
        rootfs=root,
        args=list(spec.args),
        envs=list(spec.env),
        cwd=spec.cwd,
        entrypoint=entrypoint,
        stdio=stdio if stdio is not None else Stdio(),
        mounts=list(spec.mounts),
        memory_limit=spec.memory_limit,
        annotations=dict(spec.annotations),
        spec=spec.raw,
    )
