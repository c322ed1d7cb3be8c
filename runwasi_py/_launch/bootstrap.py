"""What containerd writes on ``start``'s stdin: 2.3's BootstrapParams, read without protos."""

from __future__ import annotations

import os

from runwasi_py._proto.wire import field_map

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._launch.flags import Flags


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
    """The parts of containerd 2.3's BootstrapParams that ``start`` needs."""

    def __init__(
        self, ttrpc_address: str, grpc_address: str, socket_dir: str | None, debug: bool
    ) -> None:
        self.ttrpc_address = ttrpc_address
        self.grpc_address = grpc_address
        self.socket_dir = socket_dir
        self.debug = debug


def bootstrap(data: bytes, flags: Flags) -> Bootstrap | None:
    """Decode ``data`` as BootstrapParams if it is one for this shim (containerd 2.3+).

    Before 2.3, stdin carries the runtime options as a bare ``Any`` (or nothing); such bytes
    may even decode as BootstrapParams, so the instance id and namespace must match the flags.
    """
    if not data:
        return None
    try:
        fields = field_map(data)

        def text(n: int) -> str | None:
            values = fields.get(n)
            if not values or not isinstance(values[-1], bytes):
                return None
            return values[-1].decode("utf-8")

        if text(1) != flags.id or text(2) != flags.namespace:
            return None
        level = fields.get(3, [0])[-1]
        if isinstance(level, int) and level >= 1 << 63:
            level -= 1 << 64  # enum values are int32, negative ones come as 10-byte varints
        return Bootstrap(
            ttrpc_address=text(5) or "",
            grpc_address=text(6) or "",
            socket_dir=text(9),
            debug=isinstance(level, int) and level < 0,  # TRACE -8, DEBUG -4
        )
    except (ValueError, UnicodeDecodeError):
        return None
