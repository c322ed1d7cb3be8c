"""The shim executable's entry: :func:`shim_main` reads containerd's argv and dispatches.

Actions live in their own modules: ``start`` (:mod:`.start`), ``delete`` (:mod:`.delete`),
``-info`` (:mod:`.info`), ``-v`` here; no action runs the daemon (:mod:`.._daemon.main`).

``start`` is latency-critical (containerd waits for it on every container): the package
imports only light standard-library modules at the top and everything else where needed
(``tests/runwasi_py/_launch/test_light.py`` guards it).
"""

from __future__ import annotations

import os
import sys

from runwasi_py._launch.flags import USAGE, UsageError, parse_flags

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from runwasi_py._shim import Shim

__all__ = ["shim_main"]


def shim_main(
    shim: type[Shim] | str, argv: list[str] | None = None, *, group_by: str | None = None
) -> NoReturn:
    """Run ``shim`` as containerd runs a shim binary; never returns.

    ``shim`` is the Shim class, or its import path ``"package.module:ShimClass"``: with a
    string, ``start`` and ``delete`` never import the shim's module (nor the engine it
    pulls in), which keeps ``start`` fast. ``argv`` defaults to ``sys.argv[1:]``. Exit
    status 0 on success, 1 on failure (the message on stderr, which containerd reports),
    2 on a bad command line. ``group_by`` (``"sandbox"`` or ``"namespace"``) is
    ``Config.group_by`` for an import-path ``shim``, whose Config ``start`` does not read;
    ``$RUNWASI_PY_SHIM_GROUP`` overrides both.

    Example (the body of a console script ``containerd-shim-my-shim-v1``):
        >>> def main() -> None:
        ...     shim_main("my_shim._shim:MyShim")
    """
    sys.exit(_main(shim, argv, group_by))


def _resolve(shim: type[Shim] | str) -> type[Shim]:
    """The Shim class of a class-or-import-path reference."""
    if not isinstance(shim, str):
        return shim
    import importlib

    module, _, qualname = shim.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _main(shim: type[Shim] | str, argv: list[str] | None, group_by: str | None = None) -> int:
    explicit = argv is not None
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "shim"
    try:
        flags = parse_flags(args)
    except UsageError as e:
        sys.stderr.write(f"{e}\n{USAGE.format(prog=prog)}")
        return 2
    if flags.help:
        sys.stderr.write(USAGE.format(prog=prog))
        return 0
    if flags.v:
        from runwasi_py._version import version_text

        cls = _resolve(shim)
        ver, rev = cls.version()
        sys.stdout.write(version_text(sys.argv[0] if sys.argv else prog, cls.name, ver, rev))
        sys.stdout.flush()
        return 0
    if flags.info:
        from runwasi_py._launch.info import info

        return info(_resolve(shim))
    flags.namespace = flags.namespace or os.environ.get("NAMESPACE", "")
    flags.address = flags.address or os.environ.get("GRPC_ADDRESS", "")
    if not flags.namespace:
        sys.stderr.write("shim namespace cannot be empty\n")
        return 1
    try:
        if flags.action == "start":
            from runwasi_py._launch.start import start

            return start(shim, flags, explicit, group_by)
        if flags.action == "delete":
            from runwasi_py._launch.delete import delete

            return delete(flags)
        if flags.action == "" and os.environ.get("RUNWASI_PY_TEMPLATE_SERVE"):
            from runwasi_py._template.serve import serve_template

            return serve_template(shim, flags)  # start spawned us as the pod template
        if flags.action == "":
            from runwasi_py._daemon.main import run_daemon

            return run_daemon(_resolve(shim), flags)
    except Exception as e:
        # containerd shows start's combined output as the error: one clear line
        sys.stderr.write(f"{flags.action or 'shim'}: {e}\n")
        return 1
    sys.stderr.write(f"unknown action {flags.action!r}: want start, delete or none\n")
    return 1


def daemon_entry() -> NoReturn:
    """Entry of a daemon started through ``python -c``: ``<module>:<qualname> <flags…>``."""
    target = sys.argv.pop(1)
    shim_main(target, sys.argv[1:])
