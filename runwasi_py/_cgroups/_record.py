"""The cgroup directories a shim created, kept on disk so they can be removed after a crash.

A record lives in the bundle of the task it belongs to (containerd runs the ``delete`` action
there after a shim died). Each directory is written to the record *before* its ``mkdir``,
so a SIGKILL between the two leaves a name that :func:`remove_recorded` skips as missing,
never a directory nobody knows about. Directories the shim found already there (the pod's
``cgroup_parent``, made by kubelet) are never recorded and never removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["DAEMON_RECORD_NAME", "RECORD_NAME", "CreationRecord", "log"]


def log() -> logging.Logger:
    """The cgroups logger (``logging`` is imported on first use: ``start`` imports this)."""
    import logging

    return logging.getLogger("runwasi_py.cgroups")


# Not typing.TYPE_CHECKING: ``start`` imports this module, and typing costs it ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

RECORD_NAME = "runwasi-py-cgroups.json"
"""The file name of a container's record inside its bundle."""
DAEMON_RECORD_NAME = "runwasi-py-daemon-cgroups.json"
"""The file name of the pod daemon's record, in the bundle the daemon was started for."""


class CreationRecord:
    """An ordered list of created cgroup directories, saved to ``file`` (None: memory only).

    Example:
        >>> rec = CreationRecord(bundle / RECORD_NAME)
        >>> rec.mkdir(Path("/sys/fs/cgroup/cpu/kubepods/pod1/c1"))
        >>> rec.remove_all(lambda d: None)
        []
    """

    def __init__(
        self,
        file: Path | None = None,
        dirs: Iterable[Path] = (),
        home: dict[str, str] | None = None,
    ) -> None:
        self.file = file
        self._dirs: list[Path] = list(dirs)
        self.home: dict[str, str] = dict(home or {})
        """Where a joined process came from (controller -> cgroup), to go back at exit."""

    @classmethod
    def load(cls, file: Path) -> CreationRecord:
        """The record saved in ``file``; empty when there is none (or it is unreadable)."""
        dirs: list[Path] = []
        home: dict[str, str] = {}
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            dirs = [Path(d) for d in data.get("dirs", []) if isinstance(d, str)]
            raw_home = data.get("home", {})
            home = {k: v for k, v in raw_home.items() if isinstance(v, str)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as e:
            log().warning("ignoring unreadable cgroup record %s: %s", file, e)
        return cls(file, dirs, home)

    @property
    def dirs(self) -> list[Path]:
        """Created directories, in creation order (parents before children)."""
        return list(self._dirs)

    def save(self) -> None:
        """Write the record now (it is also written at every change)."""
        self._save()

    def _save(self) -> None:
        if self.file is None:
            return
        if not self._dirs:
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
            return
        tmp = self.file.with_name(self.file.name + ".tmp")
        data = {"dirs": [str(d) for d in self._dirs], "home": self.home}
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.file)

    def mkdir(self, directory: Path) -> bool:
        """Create ``directory`` (its parent exists); True if this call created it."""
        if directory.is_dir():
            return False
        self._dirs.append(directory)
        self._save()
        try:
            directory.mkdir()
        except FileExistsError:
            self._dirs.remove(directory)  # lost a race with another creator: not ours
            self._save()
            return False
        except OSError:
            self._dirs.remove(directory)
            self._save()
            raise
        return True

    def mkdir_p(self, chain: Iterable[Path]) -> list[Path]:
        """Create the missing ones of ``chain`` (outermost first), as ``mkdir -p``; returns them.

        The missing ones are recorded together, in one write ahead of the first ``mkdir``.
        """
        missing = [d for d in chain if not d.is_dir()]
        if not missing:
            return []
        self._dirs.extend(missing)
        self._save()
        created: list[Path] = []
        try:
            for d in missing:
                try:
                    d.mkdir()
                except FileExistsError:
                    continue  # lost a race with another creator: not ours
                created.append(d)
        finally:
            if len(created) != len(missing):
                self._dirs = [d for d in self._dirs if d not in missing or d in created]
                self._save()
        return created

    def remove(
        self,
        directory: Path,
        move_out: Callable[[Path], None],
        rmdir: Callable[[Path], None] = os.rmdir,
    ) -> bool:
        """``rmdir`` one recorded directory after ``move_out(directory)`` emptied it.

        True when it is gone (or was never made). A directory still busy (a thread left in
        it, a child someone else made) stays in the record and is logged.
        """
        if directory not in self._dirs:
            return False
        if directory.is_dir():
            try:
                move_out(directory)
                rmdir(directory)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log().warning("cannot remove cgroup %s: %s", directory, e.strerror or e)
                    return False
        self._dirs.remove(directory)
        self._save()
        return True

    def remove_all(
        self, move_out: Callable[[Path], None], rmdir: Callable[[Path], None] = os.rmdir
    ) -> list[Path]:
        """Remove every recorded directory, innermost first; returns those left behind."""
        for d in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            self.remove(d, move_out, rmdir)
        return self.dirs
