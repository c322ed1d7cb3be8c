"""``-info``: the shim's RuntimeInfo (name, version, the options containerd echoed) on stdout."""

from __future__ import annotations

import sys

from runwasi_py._launch.bootstrap import read_stdin

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._shim import Shim


def info(shim: type[Shim]) -> int:
    from runwasi_py._proto.messages import Any as AnyMessage
    from runwasi_py._proto.messages import RuntimeInfo, RuntimeVersion
    from runwasi_py._version import runtime_name

    options = None
    data = read_stdin()
    if data:
        try:
            options = AnyMessage.FromString(data)
        except Exception:
            options = None  # not an Any: containerd only echoes options it sent
    ver, rev = shim.version()
    info = RuntimeInfo(
        name=runtime_name(shim.name or "runwasi-py"),
        version=RuntimeVersion(version=ver, revision=rev),
        options=options if options is not None and options.type_url else None,
    )
    sys.stdout.buffer.write(bytes(info))
    sys.stdout.flush()
    return 0
