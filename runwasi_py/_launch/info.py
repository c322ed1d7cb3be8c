"""``-info``: the shim's ``containerd.types.RuntimeInfo`` on stdout, as containerd 2.x asks it.

containerd 2.x runs ``<shim> -info`` for its introspection API (``PluginInfo`` of the task
plugin), with the runtime options (a marshalled ``Any``, or nothing) on stdin, and decodes
stdout as RuntimeInfo; CRI does it for every runtime handler at startup and reads the OCI
runtime ``features`` (mount options, user namespaces) into the handler features it reports
to kubelet, and again before a container with idmap mounts. A failure there is only logged
at debug level, so the answer must be right rather than merely present.

Encoded by hand with :mod:`runwasi_py._proto.wire` (like ``start``: no betterproto2).
"""

from __future__ import annotations

import sys

from runwasi_py._launch.bootstrap import TASK_API_VERSIONS, read_stdin
from runwasi_py._proto.wire import iter_fields, length_delimited

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._shim import Shim

TASK_API_ANNOTATION = "io.github.runwasi-py.task-api-versions"
"""RuntimeInfo (and features) annotation: the task API versions ``start`` can announce."""
_TASK_APIS = ",".join(map(str, TASK_API_VERSIONS))
FEATURES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
"""How containerd's typeurl names the OCI runtime-spec ``features.Features`` (JSON value)."""

# What the framework does with a spec (runtime-spec features.md): it reads bind mounts and
# their "ro"; it creates no Linux namespaces of its own (so no "user": CRI's user namespace
# support needs it) and has no idmap mounts, hooks, seccomp or AppArmor.
FEATURES_JSON = (
    b'{"ociVersionMin":"1.0.0","ociVersionMax":"1.3.0",'
    b'"mountOptions":["bind","rbind","ro","rw"],'
    b'"annotations":{"%s":"%s"}}' % (TASK_API_ANNOTATION.encode(), _TASK_APIS.encode())
)


class InfoError(ValueError):
    """stdin was not a runtime options ``Any``."""


def info(shim: type[Shim]) -> int:
    """Write the RuntimeInfo of ``shim`` to stdout; exit status 1 on malformed stdin."""
    from runwasi_py._version import runtime_name

    try:
        options = options_any(read_stdin())
    except InfoError as e:
        sys.stderr.write(f"-info: {e}\n")
        return 1
    ver, rev = shim.version()
    sys.stdout.buffer.write(
        runtime_info(runtime_name(shim.name or "runwasi-py"), ver, rev, options)
    )
    sys.stdout.flush()
    return 0


def options_any(data: bytes) -> bytes | None:
    """``data`` if it is a marshalled ``Any`` with a type URL (containerd echoes those)."""
    if not data:
        return None
    try:
        fields = iter_fields(data)
    except ValueError as e:
        raise InfoError(f"stdin is not a runtime options Any ({e})") from None
    type_urls = [v for n, w, v in fields if n == 1]
    if not type_urls or not all(isinstance(v, bytes) for v in type_urls):
        raise InfoError("stdin is not a runtime options Any (no type_url)")
    return data


def runtime_info(name: str, version: str, revision: str, options: bytes | None) -> bytes:
    """``RuntimeInfo{name=1, version=2{version=1, revision=2}, options=3, features=4,
    annotations=5}`` on the wire.

    >>> runtime_info("x", "1", "r", None)[:11]
    b'\\n\\x01x\\x12\\x06\\n\\x011\\x12\\x01r'
    """
    out = length_delimited(1, name.encode()) if name else b""
    ver = length_delimited(1, version.encode()) if version else b""
    ver += length_delimited(2, revision.encode()) if revision else b""
    out += length_delimited(2, ver)
    if options is not None:
        out += length_delimited(3, options)
    features = length_delimited(1, FEATURES_TYPE_URL.encode()) + length_delimited(2, FEATURES_JSON)
    out += length_delimited(4, features)
    entry = length_delimited(1, TASK_API_ANNOTATION.encode())
    out += length_delimited(5, entry + length_delimited(2, _TASK_APIS.encode()))
    return out
