"""The plugin parameter (``--ttrpc-python_opt=...``): where messages live, where stubs go."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Options", "OptionsError", "parse_options"]

_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_PACKAGE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?$")
LAYOUTS = ("package", "flat")


class OptionsError(ValueError):
    """The plugin parameter is malformed; the message says which part and why."""


@dataclass(frozen=True)
class Options:
    """Parsed plugin options.

    ``messages_package``: the Python package that betterproto2's output was generated into
    (``ttrpc.example._gen``); proto package ``a.b`` is then the module ``<messages_package>.a.b``,
    which is how betterproto2 lays out its packages (well-known types included:
    ``google.protobuf`` -> ``<messages_package>.google.protobuf``).
    ``package_modules``: per proto package overrides (``Mgoogle.protobuf=my.wkt``).
    ``layout``: ``package`` writes ``a/b/<stem>_ttrpc.py`` (beside betterproto2's tree);
    ``flat`` writes ``<stem>_ttrpc.py`` at the root of the output directory.
    ``regenerate``: a command written into the header of every generated file.
    """

    messages_package: str = ""
    package_modules: dict[str, str] = field(default_factory=dict)
    layout: str = "package"
    regenerate: str = ""

    def module_for(self, proto_package: str) -> str:
        """The Python module that holds the betterproto2 classes of ``proto_package``."""
        if proto_package in self.package_modules:
            return self.package_modules[proto_package]
        if not self.messages_package:
            # Without it the stubs would `import <proto.package>`, which only works when
            # betterproto2's output directory itself is on sys.path: say so now, not at import.
            what = f"proto package {proto_package!r}" if proto_package else "a package-less .proto"
            raise OptionsError(
                f"messages of {what}: give messages_package=<python package>, the package "
                "betterproto2 generated into (e.g. --ttrpc-python_opt=messages_package="
                f"myproject.gen), or map it with M{proto_package or '<package>'}=<python.module>"
            )
        return ".".join(p for p in (self.messages_package, proto_package) if p)


def parse_options(parameter: str) -> Options:
    """Parse ``key=value`` pairs separated by commas.

    Example:
        >>> parse_options("messages_package=ttrpc.example._gen,layout=flat").layout
        'flat'
    """
    messages_package = ""
    package_modules: dict[str, str] = {}
    layout = "package"
    regenerate = ""
    for item in (part.strip() for part in parameter.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionsError(f"option {item!r} is not key=value")
        if key == "messages_package":
            if not value:
                raise OptionsError(
                    "messages_package is empty: give the Python package betterproto2 generated "
                    "into, e.g. messages_package=myproject.gen"
                )
            if not _MODULE_RE.match(value):
                raise OptionsError(f"messages_package {value!r} is not a dotted Python name")
            messages_package = value
        elif key.startswith("M") and len(key) > 1:
            proto_package = key[1:]
            if not _PACKAGE_RE.match(proto_package) or not _MODULE_RE.match(value):
                raise OptionsError(f"option {item!r}: want M<proto.package>=<python.module>")
            package_modules[proto_package] = value
        elif key == "layout":
            if value not in LAYOUTS:
                raise OptionsError(f"layout {value!r}: want one of {', '.join(LAYOUTS)}")
            layout = value
        elif key == "regenerate":
            regenerate = value
        else:
            raise OptionsError(
                f"unknown option {key!r} (known: messages_package, M<proto.package>, layout, "
                "regenerate)"
            )
    return Options(messages_package, package_modules, layout, regenerate)
