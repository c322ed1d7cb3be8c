"""``start``'s handshake: containerd 2.3's BootstrapParams in, the answer containerd reads out.

containerd 2.3 writes a protobuf ``containerd.runtime.bootstrap.v1.BootstrapParams`` on the
shim's stdin (the runtime options travel in its ``extensions``); 1.6 to 2.2 write the runtime
options as a bare ``google.protobuf.Any``, or nothing. Both are protobuf messages whose fields
1 and 2 are strings, so a BootstrapParams is recognised by its ``instance_id`` and
``namespace`` matching ``-id`` and ``-namespace``. stdin that is not protobuf at all, or a
BootstrapParams with a field of the wrong shape, is refused with a message naming the field.

The answer (:func:`start_answer`) depends on what containerd sent: a protobuf
``BootstrapResult`` to a containerd that sent BootstrapParams (2.3+, which parses that first
and accepts task API v3), else the plain address (1.6 reads nothing else; task API v2), or
the JSON form when task API v3 was asked for explicitly (2.0 to 2.2). Decoded and encoded by
hand with :mod:`runwasi_py._proto.wire`: ``start`` must not import betterproto2.
"""

from __future__ import annotations

import os

from runwasi_py._proto.wire import encode_varint, iter_fields, length_delimited

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from runwasi_py._launch.flags import Flags

TASK_API_VERSIONS = (2, 3)
"""The shim task API versions this shim speaks (``containerd.task.v2`` / ``v3``)."""
TASK_API_ENV = "RUNWASI_PY_TASK_API"
"""``auto`` (default: 3 to a containerd that sent BootstrapParams, else 2), ``2`` or ``3``."""
MAX_SHIM_VERSION_ENV = "MAX_SHIM_VERSION"
"""What containerd 1.7+ sets: the highest shim version it reads back (``2`` up to 2.3)."""

_LOG_DEBUG = -4  # BootstrapParams.LogLevel: TRACE -8, DEBUG -4, INFO 0, WARN 4, ...
# The string fields of BootstrapParams: number -> (proto name, Bootstrap attribute)
_STRINGS = {
    1: ("instance_id", "instance_id"),
    2: ("namespace", "namespace"),
    4: ("containerd_version", "containerd_version"),
    5: ("containerd_ttrpc_address", "ttrpc_address"),
    6: ("containerd_grpc_address", "grpc_address"),
    7: ("containerd_binary", "containerd_binary"),
    9: ("socket_dir", "socket_dir"),
}


class BootstrapError(ValueError):
    """What containerd sent (or asked for) cannot be served; the text is one line."""


def read_stdin() -> bytes:
    """What containerd wrote on stdin ("" for a terminal or a closed stdin)."""
    try:
        if os.isatty(0):
            return b""
        chunks = []
        while chunk := os.read(0, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""


class Bootstrap:
    """A decoded BootstrapParams (containerd 2.3+): who starts this shim, and with what."""

    def __init__(
        self,
        *,
        instance_id: str = "",
        namespace: str = "",
        log_level: int = 0,
        containerd_version: str = "",
        ttrpc_address: str = "",
        grpc_address: str = "",
        containerd_binary: str = "",
        extensions: list[tuple[str, bytes]] | None = None,
        socket_dir: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.namespace = namespace
        self.log_level = log_level
        self.containerd_version = containerd_version
        self.ttrpc_address = ttrpc_address
        self.grpc_address = grpc_address
        self.containerd_binary = containerd_binary
        self.extensions: list[tuple[str, bytes]] = list(extensions or [])
        """Each extension's ``Any`` as (type_url, value); the runtime options are one."""
        self.socket_dir = socket_dir

    @property
    def debug(self) -> bool:
        """DEBUG or TRACE (an unknown level counts as the nearest known one)."""
        return self.log_level <= _LOG_DEBUG + 1

    @property
    def runtime_options(self) -> tuple[str, bytes] | None:
        """The runtime options containerd put in ``extensions`` (the first one), if any."""
        return self.extensions[0] if self.extensions else None


def bootstrap(data: bytes, flags: Flags) -> Bootstrap | None:
    """Decode ``data`` as the BootstrapParams for this shim; None for legacy stdin.

    Legacy stdin (containerd 1.6 to 2.2) is empty or a runtime options ``Any``; raises
    BootstrapError when ``data`` is not protobuf, or is this shim's BootstrapParams with a
    malformed field.
    """
    if not data:
        return None
    try:
        fields = iter_fields(data)
    except ValueError as e:
        raise BootstrapError(
            f"stdin holds neither BootstrapParams nor runtime options (not protobuf: {e})"
        ) from None
    first: dict[int, int | bytes] = {}
    for number, _, value in fields:
        first.setdefault(number, value)
    if first.get(1) != flags.id.encode() or first.get(2) != flags.namespace.encode():
        return None  # a legacy runtime options Any (its fields 1 and 2 are type_url, value)
    boot = Bootstrap()
    for number, wire, value in fields:
        string = _STRINGS.get(number)
        if string is not None:
            setattr(boot, string[1], _text(string[0], wire, value))
        elif number == 3:
            if not isinstance(value, int) or wire != 0:
                raise BootstrapError("malformed BootstrapParams: log_level is not a varint")
            boot.log_level = _int32(value)
        elif number == 8:
            if not isinstance(value, bytes) or wire != 2:
                raise BootstrapError("malformed BootstrapParams: extensions[] is not a message")
            boot.extensions.append(_extension(value, len(boot.extensions)))
        # other field numbers: a newer containerd's additions, ignored as proto3 does
    if not boot.socket_dir:
        boot.socket_dir = None  # present but empty: the default directory (as Go shims read it)
    return boot


def _text(name: str, wire: int, value: int | bytes) -> str:
    if not isinstance(value, bytes) or wire != 2:
        raise BootstrapError(f"malformed BootstrapParams: {name} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BootstrapError(f"malformed BootstrapParams: {name} is not UTF-8") from None


def _int32(value: int) -> int:
    """An int32 enum from its varint (negative ones arrive as 64-bit two's complement)."""
    value &= (1 << 64) - 1
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise BootstrapError("malformed BootstrapParams: log_level is out of int32 range")
    return value


def _extension(data: bytes, index: int) -> tuple[str, bytes]:
    """``Extension{Any value = 1}`` as the Any's (type_url, value)."""
    what = f"malformed BootstrapParams: extensions[{index}]"
    try:
        anys = [v for n, w, v in iter_fields(data) if n == 1 and w == 2]
        any_fields = iter_fields(anys[-1]) if anys else []  # type: ignore[arg-type]
    except ValueError as e:
        raise BootstrapError(f"{what}: {e}") from None
    type_url, value = "", b""
    for number, wire, v in any_fields:
        if number in (1, 2) and (wire != 2 or not isinstance(v, bytes)):
            raise BootstrapError(f"{what}.value is not a google.protobuf.Any")
        if number == 1 and isinstance(v, bytes):
            try:
                type_url = v.decode("utf-8")
            except UnicodeDecodeError:
                raise BootstrapError(f"{what}.value.type_url is not UTF-8") from None
        elif number == 2 and isinstance(v, bytes):
            value = v
    if not type_url:
        raise BootstrapError(f"{what}.value has no type_url")
    return type_url, value


def task_api_version(boot: Bootstrap | None, env: Mapping[str, str]) -> int:
    """The task API version ``start`` announces; BootstrapError for one it cannot serve.

    Auto: 3 to a containerd that sent BootstrapParams (2.3+; every 2.x reads version 3, so
    CRI then hands a pod's later containers to the pod's shim without running ``start``
    and ``delete`` for each), else 2 (1.6 and 1.7 know nothing else). ``$MAX_SHIM_VERSION``
    is only a floor check: containerd 1.7 to 2.3 all set it to 2, 2.x accepts 3 anyway.
    """
    speaks = " and ".join(map(str, TASK_API_VERSIONS))
    ceiling = env.get(MAX_SHIM_VERSION_ENV, "")
    if ceiling and (not ceiling.isdigit() or int(ceiling) < TASK_API_VERSIONS[0]):
        raise BootstrapError(
            f"containerd reads shim versions up to {MAX_SHIM_VERSION_ENV}={ceiling}; "
            f"this shim speaks task API versions {speaks}"
        )
    want = env.get(TASK_API_ENV, "") or "auto"
    if want == "auto":
        return 3 if boot is not None else 2
    if want.isdigit() and int(want) in TASK_API_VERSIONS:
        return int(want)
    raise BootstrapError(
        f"{TASK_API_ENV}={want}: this shim speaks task API versions {speaks} (or auto)"
    )


def start_answer(address: str, version: int, boot: Bootstrap | None) -> bytes:
    """What ``start`` prints: the form of answer this containerd reads.

    >>> start_answer("unix:///s/1", 2, None)
    b'unix:///s/1'
    >>> start_answer("unix:///s/1", 3, None)
    b'{"version":3,"address":"unix:///s/1","protocol":"ttrpc"}'
    >>> start_answer("unix:///s/1", 3, Bootstrap())
    b'\\x08\\x03\\x12\\x0bunix:///s/1\\x1a\\x05ttrpc'
    """
    if boot is not None:  # BootstrapResult{int32 version=1, string address=2, protocol=3}
        return (
            b"\x08"
            + encode_varint(version)
            + length_delimited(2, address.encode())
            + length_delimited(3, b"ttrpc")
        )
    if version == 2:
        return address.encode()
    quoted = address.replace("\\", "\\\\").replace('"', '\\"')  # JSON without importing json
    return b'{"version":%d,"address":"%s","protocol":"ttrpc"}' % (version, quoted.encode())
