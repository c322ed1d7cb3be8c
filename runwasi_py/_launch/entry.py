"""The lean entry script of a shim binary: the interpreter without ``site`` for ``start``.

containerd runs the shim binary for ``start`` on every container and for ``delete`` after a
shim died, and waits for both. pip's console script runs the interpreter as any program
does: ``site`` imports, reads ``pyvenv.cfg``, lists site-packages and executes every ``.pth``
file there (setuptools' ``distutils-precedence.pth`` imports ``_distutils_hack``), about a
quarter of a bare ``python -c pass`` on the machine issue 10 was measured on. ``start`` and
``delete`` need none of it: they import only this package (and the standard library).

:func:`entry_script` writes a script whose ``#!`` line runs the same interpreter with
``-S`` and which puts back only the folder(s) holding ``runwasi_py`` and the shim's
package, found when the script is written. For ``start`` and ``delete``, :func:`lean_main`
also skips the interpreter's teardown (``os._exit`` once the answer is flushed). Every other
action (``-v``, ``-info``, a daemon started by hand) runs ``site`` first: it needs
site-packages (``wasmtime``, ``betterproto2``, ...) and whatever ``.pth`` files set up,
exactly as under pip's script. ``start`` re-executes the script as the daemon (and the pod
template) without the script's ``-S`` (:func:`runwasi_py._launch.start._daemon_command`), so
they run ``site`` at interpreter start with pip's script's command line.

``runwasi-py shim-entry`` writes the script (``scripts/setup.sh`` does for this checkout's
``.venv``); reinstalling the package with pip puts pip's script back.
"""

from __future__ import annotations

import os
import sys

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["LIGHT_ACTIONS", "entry_script", "import_roots", "lean_main", "write_entry_script"]

LIGHT_ACTIONS = ("start", "delete")
"""The actions a lean script runs without ``site``."""

_SHEBANG_MAX = 127  # pip's limit too: older kernels cut a longer #! line at 128 bytes

active = False
"""True in a process :func:`lean_main` runs: its ``-S`` is the script's, not the user's."""


def lean_main(shim: str, added: tuple[str, ...] = ()) -> NoReturn:
    """Run ``shim_main(shim)``; ``site`` first unless the action is ``start`` or ``delete``.

    ``added`` are the folders the script appended to ``sys.path`` (those not on it already);
    they are taken out before ``site`` runs and put back at the end if it does not add them,
    so that ``sys.path`` has the order pip's script would have given it.
    """
    from runwasi_py._launch.flags import UsageError, parse_flags
    from runwasi_py._launch.main import shim_main

    global active
    active = True
    try:
        flags = parse_flags(sys.argv[1:])
        light = flags.action in LIGHT_ACTIONS and not (flags.v or flags.info)
    except UsageError:
        light = True  # shim_main prints the usage; nothing to import for that
    if not light:
        if "site" not in sys.modules:
            _run_site(added)
        shim_main(shim)
    try:
        shim_main(shim)
    except SystemExit as e:
        if not isinstance(e.code, int):
            raise
        code = e.code
    # start and delete are done: their output is written and their files closed, and they
    # register no atexit hook. Tearing the interpreter down (modules, objects, GC) would
    # cost about 2 ms of CPU, 10% of the whole process, for a process about to vanish.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1  # containerd read less than start wrote: do not claim success
    os._exit(code)


def _run_site(added: tuple[str, ...]) -> None:
    import site

    for root in added:  # the script's own entries: the last occurrences
        if root in sys.path:
            del sys.path[len(sys.path) - 1 - sys.path[::-1].index(root)]
    site.main()
    sys.path.extend(root for root in added if root not in sys.path)


def import_roots(*modules: str) -> tuple[str, ...]:
    """The ``sys.path`` folders the top-level packages of ``modules`` are found in (unique,
    in order), without importing them. Raises ValueError for a module that is not found or
    not in a folder (a zip, a namespace package spread over several folders)."""
    import importlib.util

    roots: list[str] = []
    for module in modules:
        top = module.partition(":")[0].split(".")[0]
        spec = importlib.util.find_spec(top)
        if spec is None:
            raise ValueError(f"module {top!r} is not installed")
        locations = list(spec.submodule_search_locations or [])
        if len(locations) == 1:
            root = os.path.dirname(os.path.abspath(locations[0]))
        elif not locations and spec.origin and os.path.isfile(spec.origin):
            root = os.path.dirname(os.path.abspath(spec.origin))
        else:
            raise ValueError(f"module {top!r} does not live in one folder: {spec}")
        if not os.path.isdir(root):
            raise ValueError(f"module {top!r} is not in a folder on sys.path: {root}")
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def _check_ref(shim: str) -> None:
    module, sep, qualname = shim.partition(":")
    if not (module and sep and qualname):
        raise ValueError(f"shim {shim!r}: want 'package.module:ShimClass'")


def entry_script(name: str, shim: str, python: str, roots: tuple[str, ...]) -> str:
    """The text of the lean script ``name`` that runs ``shim`` (``"module:Class"``)."""
    _check_ref(shim)
    line = f"#!{python} -S"
    if len(line) > _SHEBANG_MAX or any(c.isspace() for c in python):
        # pip's answer to a long or spaced interpreter path: sh execs it (the line is a
        # string statement to Python); the interpreter still gets -S and this file.
        quoted = python.replace("\\", "\\\\").replace('"', '\\"')
        line = f"#!/bin/sh\n'''exec' \"{quoted}\" -S \"$0\" \"$@\"\n' '''"
    return f"""{line}
# {name}, written by `runwasi-py shim-entry` (a pip reinstall puts pip's back).
# -S: no site module for start and delete (runwasi_py._launch.entry says why); the
# folders holding the packages they import, as found when this was written:
import sys
added = tuple(p for p in {roots!r} if p not in sys.path)
sys.path.extend(added)
from runwasi_py._launch.entry import lean_main
lean_main({shim!r}, added)
"""


def write_entry_script(
    path: str, shim: str, python: str | None = None, extra_modules: tuple[str, ...] = ()
) -> str:
    """Write (atomically, mode 0755) the lean script at ``path``; returns its text.

    ``python`` defaults to this interpreter (a venv's own ``bin/python``, not the file it
    links to: the venv is found from it). The folders of ``runwasi_py``, ``ttrpc``, the
    shim's package and ``extra_modules`` go on the script's ``sys.path``.
    """
    _check_ref(shim)
    python = python or sys.executable
    if not python or not os.path.isabs(python):
        raise ValueError(f"interpreter {python!r}: want an absolute path")
    roots = import_roots("runwasi_py", "ttrpc", shim, *extra_modules)
    text = entry_script(os.path.basename(path), shim, python, roots)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return text
