"""Which precompiled wasmtime artifacts the engine runs: native code is only as trustworthy as
whoever compiled it.

Trust model. wasmtime maps an artifact's machine code and runs it without validating it, so
an artifact is native code running as the shim's user (root): an image that ships a patched
``.cwasm`` as its entrypoint runs whatever it likes on the host. Artifacts are therefore run
from two places only:

- the shim's own compile cache: files this engine wrote after compiling a module itself,
  checked before use for their checksum (the cache's trailer, see ``_compile_cache``) and
  for who could have written them: a regular file (no symlink), owned by the shim's user,
  writable by nobody else, in a directory that is the same;
- an image's entrypoint, only where the operator or the shim's author opted in:
  ``RUNWASI_PY_ACCEPT_PRECOMPILED=1`` in the shim's environment (which it inherits from
  containerd), or ``accept_precompiled = True`` on the sandbox class.

Nothing in the image or the container's spec (annotations, its environment, file names)
can turn this on: the check reads only the shim process's own environment and class.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from runwasi_py import InvalidArgument

__all__ = [
    "ENV_ACCEPT_PRECOMPILED",
    "UntrustedArtifact",
    "accepts_image_artifacts",
    "check_cache_entry",
    "check_image_artifact",
]

ENV_ACCEPT_PRECOMPILED = "RUNWASI_PY_ACCEPT_PRECOMPILED"
_YES = frozenset({"1", "true", "yes", "on"})


class UntrustedArtifact(InvalidArgument):
    """A precompiled artifact the trust model does not allow to run."""


def accepts_image_artifacts(author_accepts: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an image's own precompiled entrypoint may run: the author's flag or the
    operator's ``RUNWASI_PY_ACCEPT_PRECOMPILED`` (the shim's environment, not the container's)."""
    env = os.environ if environ is None else environ
    return author_accepts or env.get(ENV_ACCEPT_PRECOMPILED, "").strip().lower() in _YES


def check_image_artifact(
    entrypoint: str, author_accepts: bool, environ: Mapping[str, str] | None = None
) -> None:
    """Raise :class:`UntrustedArtifact` unless an image's precompiled entrypoint may run."""
    if accepts_image_artifacts(author_accepts, environ):
        return
    raise UntrustedArtifact(
        f"entrypoint {entrypoint!r} is a precompiled wasmtime artifact (native code), which "
        "this shim does not run from images: ship the .wasm (the shim compiles and caches "
        f"it), or let the operator set {ENV_ACCEPT_PRECOMPILED}=1 in containerd's environment"
    )


def check_cache_entry(path: Path) -> os.stat_result:
    """Raise :class:`UntrustedArtifact` unless ``path`` is a compile-cache file that only the
    shim's user could have written (the checksum is the cache's own check, on ``get``).

    Returns the file's ``lstat`` (a regular file: the same as its ``stat``)."""
    euid = os.geteuid()
    try:
        st = os.lstat(path)
        parent = os.lstat(path.parent)
    except OSError as exc:
        raise UntrustedArtifact(f"compiled artifact {path}: {exc.strerror}") from None
    _owned_and_private(path, st, euid, stat.S_ISREG, "a regular file")
    _owned_and_private(path.parent, parent, euid, stat.S_ISDIR, "a directory")
    return st


def _owned_and_private(
    path: Path, st: os.stat_result, euid: int, is_kind: Callable[[int], bool], kind: str
) -> None:
    if not is_kind(st.st_mode):
        raise UntrustedArtifact(f"compile cache {path} is not {kind} (a symlink?): not trusted")
    if st.st_uid != euid:
        raise UntrustedArtifact(
            f"compile cache {path} is owned by uid {st.st_uid}, not the shim's {euid}: not trusted"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedArtifact(
            f"compile cache {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
            "not trusted"
        )
