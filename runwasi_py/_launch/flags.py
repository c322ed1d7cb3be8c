"""containerd's shim command line, parsed the way Go's ``flag`` package does."""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

__all__ = ["USAGE", "Flags", "UsageError", "parse_flags"]


_STRING_FLAGS = frozenset(
    {"namespace", "address", "publish-binary", "id", "bundle", "socket", "debug-socket"}
)


_BOOL_FLAGS = frozenset({"debug", "v", "info"})


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


USAGE = """\
Usage of {prog}:
  -address string
        grpc address back to main containerd
  -bundle string
        path to the bundle if not workdir
  -debug
        enable debug output in logs
  -id string
        id of the task
  -info
        get the runtime info and exit
  -namespace string
        namespace that owns the shim
  -publish-binary string
        path to publish binary (used for publishing events)
  -socket string
        socket path to serve
  -v    show the shim version and exit
Actions: start | delete | (none: serve as the daemon)
"""


class UsageError(Exception):
    """The command line is wrong (Go's flag package exits 2 with this message)."""


class Flags:
    """containerd's shim command line, parsed the way Go's ``flag`` package does.

    (A plain class rather than a dataclass: ``dataclasses`` costs ~10 ms to import, and
    ``start`` is on containerd's critical path.)
    """

    def __init__(
        self,
        *,
        namespace: str = "",
        address: str = "",
        publish_binary: str = "",
        id: str = "",
        bundle: str = "",
        socket: str = "",
        debug_socket: str = "",
        debug: bool = False,
        v: bool = False,
        info: bool = False,
        help: bool = False,
        action: str = "",
        args: list[str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.address = address
        self.publish_binary = publish_binary
        self.id = id
        self.bundle = bundle
        self.socket = socket
        self.debug_socket = debug_socket
        self.debug = debug
        self.v = v
        self.info = info
        self.help = help
        self.action = action
        self.args: list[str] = list(args or [])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flags) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v)
        return f"Flags({fields})"


def parse_flags(argv: list[str]) -> Flags:
    """Parse ``argv`` (without the program name) like Go's ``flag.Parse``.

    Single or double dash, ``-k v`` or ``-k=v``; boolean flags take no separate value
    (``-debug`` or ``-debug=false``); parsing stops at the first non-flag (the action) or
    after ``--``. Raises UsageError for an unknown flag or a missing value.

    >>> parse_flags(["-namespace", "default", "-id=c1", "-debug", "start"]).action
    'start'
    """
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or not arg.startswith("-"):
            break
        i += 1
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name in ("h", "help"):
            flags.help = True
        elif name in _BOOL_FLAGS:
            if has_value and value not in _TRUE | _FALSE:
                raise UsageError(f'invalid boolean value "{value}" for -{name}: parse error')
            setattr(flags, name, not has_value or value in _TRUE)
        elif name in _STRING_FLAGS:
            if not has_value:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            setattr(flags, name.replace("-", "_"), value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    rest = argv[i:]
    flags.action = rest[0] if rest else ""
    flags.args = rest[1:]
    return flags
