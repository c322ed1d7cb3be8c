"""One container's OCI bundle from Create to Delete: spec, rootfs mounts, context, unmount.

The task service asks a :class:`Bundle` for everything on disk, in this order and only this
order: :meth:`Bundle.load` reads ``config.json``; :meth:`Bundle.mount` mounts
CreateTaskRequest's rootfs; :meth:`Bundle.context` resolves the entrypoint inside the
(mounted) rootfs once and builds the :class:`~runwasi_py.RuntimeContext`;
:meth:`Bundle.unmount` undoes the mounts at Delete (or when Create fails half-way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from runwasi_py._bundle import mount as _mount
from runwasi_py._bundle.mount import MountLike
from runwasi_py._bundle.spec import BundleSpec, build_context
from runwasi_py._context import RuntimeContext
from runwasi_py._stdio import Stdio

__all__ = ["Bundle"]

log = logging.getLogger("runwasi_py")


class Bundle:
    """The bundle directory of one container and what the shim mounted in it."""

    def __init__(self, path: str, spec: BundleSpec) -> None:
        self.path = path
        self.spec = spec
        self._mounted: list[MountLike] | None = None

    @classmethod
    def load(cls, path: str) -> Bundle:
        """Read ``<path>/config.json``; InvalidArgument naming the field that is wrong."""
        return cls(path, BundleSpec.load(path))

    @property
    def rootfs(self) -> Path:
        """The rootfs directory the spec names."""
        return self.spec.rootfs

    @property
    def mounted(self) -> bool:
        """True while :meth:`mount` mounted something that :meth:`unmount` has not undone."""
        return self._mounted is not None

    def mount(self, mounts: Sequence[MountLike]) -> None:
        """Mount CreateTaskRequest's rootfs on the spec's rootfs (nothing for no mounts)."""
        if not mounts:
            return
        _mount.mount_rootfs(mounts, self.spec.rootfs)
        self._mounted = list(mounts)

    def context(self, *, container_id: str, namespace: str, stdio: Stdio) -> RuntimeContext:
        """The RuntimeContext for ``run_wasi``: the entrypoint resolved inside the rootfs."""
        return build_context(self.spec, container_id=container_id, namespace=namespace, stdio=stdio)

    def unmount(self, task_id: str) -> None:
        """Undo :meth:`mount`, innermost first; failures are logged, never raised. Idempotent."""
        mounts, self._mounted = self._mounted, None
        if mounts is None:
            return
        rootfs = self.spec.rootfs
        targets = [rootfs / m.target.lstrip("/") for m in reversed(mounts) if m.target]
        for target in [*targets, rootfs]:
            try:
                _mount.unmount_all(target)
            except Exception:
                log.exception("task %s: cannot unmount %s", task_id, target)
