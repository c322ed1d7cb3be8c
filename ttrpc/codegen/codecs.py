"""``python -m ttrpc.codegen.codecs PACKAGE``: append fast codecs to betterproto2's modules.

Run it after betterproto2-compiler (``client_generation=none,server_generation=none``) has
written ``PACKAGE``; the package must be importable (run from the directory that holds it).
Every module of the package that defines messages gets, appended to its own source file, a
``parse`` classmethod and a ``__bytes__`` per message class: plain source, checked in with the
rest of the generated code, importing only ``ttrpc._msgcodec``. Running it again replaces the
block it wrote before. ``--check`` writes nothing and exits 1 when a file is out of date.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from ttrpc.codegen._codecs import MARKER, CodecError, render_module

__all__ = ["main", "write_codecs"]


def _strip(source: str) -> str:
    head, sep, _ = source.partition("\n\n\n" + MARKER)
    if sep:
        return head + "\n"
    head, sep, _ = source.partition(MARKER)
    return head.rstrip("\n") + "\n" if sep else source


def write_codecs(package: str, *, check: bool = False) -> list[Path]:
    """Append (or refresh) the codec block of every module under ``package``.

    Returns the files that changed (with ``check``: that would change).
    Raises :class:`CodecError` for a message the generator cannot plan.
    """
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(root.__path__, prefix=package + ".")]
    planned: list[tuple[Path, str]] = []
    for name in names:
        module = importlib.import_module(name)
        if module.__file__ is None:
            continue
        path = Path(module.__file__)
        block = render_module(module)
        source = path.read_text()
        new = _strip(source).rstrip("\n") + "\n" + block if block else _strip(source)
        if new != source:
            planned.append((path, new))
    if not check:
        for path, new in planned:
            path.write_text(new)
    return [path for path, _ in planned]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; the exit code is 0 on success."""
    parser = argparse.ArgumentParser(
        prog="python -m ttrpc.codegen.codecs",
        description="Append fast parse/__bytes__ codecs to betterproto2-generated modules.",
    )
    parser.add_argument("package", help="the generated package, e.g. ttrpc.example._gen")
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    try:
        changed = write_codecs(args.package, check=args.check)
    except (CodecError, ImportError) as exc:
        print(f"ttrpc.codegen.codecs: {exc}", file=sys.stderr)
        return 2
    if args.check and changed:
        for path in changed:
            print(f"out of date: {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
