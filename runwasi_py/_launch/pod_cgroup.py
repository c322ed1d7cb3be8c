"""``start``'s and the daemon's part of the pod boundary: the daemon's own cgroup.

``start`` moves itself into ``<cgroup_parent>/runwasi-py-shim-<group>`` right before it
spawns a pod's daemon, so the daemon is born there and every page it ever writes is charged
to the pod (charges never move with a process on v2, and on v1 only with
``memory.move_charge_at_immigrate``). The cgroup modules are imported only on that path (a
new per-pod daemon whose spec has a ``cgroupsPath``); an app container's ``start`` that finds
the live daemon pays nothing. At its exit the daemon goes back where ``start`` came from and
removes what was created; after a SIGKILL the ``delete`` action does (:func:`cleanup`).
"""

from __future__ import annotations

import os
import sys

from runwasi_py._lightjson import loads
from runwasi_py._proto.wire import field_map

TYPE_CHECKING = False  # not typing's: start imports this module
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RECORD_FILES = ("runwasi-py-cgroups.json", "runwasi-py-daemon-cgroups.json")
"""= ``_cgroups.RECORD_NAME``, ``DAEMON_RECORD_NAME`` (not imported: delete stays light)."""
SYSTEMD_ENV = "RUNWASI_PY_SYSTEMD_CGROUP"  # = _task.placement.SYSTEMD_ENV
NOTE_ENV = "RUNWASI_PY_DAEMON_CGROUP"
"""``start`` -> daemon: one line for the daemon's log saying where ``start`` put it."""


def systemd_cgroup(stdin: bytes) -> bool:
    """``SystemdCgroup = true`` in a pre-2.3 stdin's runtime options (an ``Any`` holding
    ``runtimeoptions.v1.Options``, whose field 3 is the options table as TOML)."""
    if b"SystemdCgroup" not in stdin:
        return False
    try:
        fields = field_map(stdin)
    except ValueError:
        return False
    url, value = fields.get(1, [b""])[-1], fields.get(2, [b""])[-1]
    if not isinstance(url, bytes) or not isinstance(value, bytes):
        return False
    return systemd_in_options(url.decode("utf-8", "replace"), value)


def systemd_in_options(type_url: str, value: bytes) -> bool:
    """``SystemdCgroup = true`` in runtime options given as an Any's type URL and value (2.3
    puts them in ``BootstrapParams.extensions``; earlier containerds on stdin)."""
    if b"SystemdCgroup" not in value or not type_url.endswith("runtimeoptions.v1.Options"):
        return False
    try:
        body = field_map(value).get(3, [b""])[-1]
        if not isinstance(body, bytes):
            return False
        import tomllib

        return tomllib.loads(body.decode("utf-8")).get("SystemdCgroup") is True
    except (ValueError, UnicodeDecodeError):
        return False


def pod_spec(bundle: str) -> dict[str, Any] | None:
    """The bundle's spec when it has a ``linux.cgroupsPath`` (a pod's daemon joins a cgroup),
    else None (also for an unreadable one: Create reports that to containerd). Read once
    per ``start``: the join below takes it."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = loads(f.read())
    except (OSError, ValueError):
        return None
    linux = spec.get("linux") if isinstance(spec, dict) else None
    return spec if isinstance(linux, dict) and linux.get("cgroupsPath") else None


def join_pod_cgroup(
    spec: dict[str, Any], bundle: str, group: str, env: Mapping[str, str], pid: int | None = None
) -> str:
    """Move ``pid`` (default: this ``start`` process) into the pod's daemon cgroup, for the
    :func:`pod_spec` ``spec``.

    Returns the note for the daemon's log: ``daemon cgroup <path>``, or why it stays where
    it is (a spec the join cannot use is not fatal here: Create reports it to containerd),
    or "" when there is nothing to join. ``pid`` is a daemon the template forked, joining
    itself before it waits for its ``go``: a failure then raises (it is not used).
    """
    try:
        from runwasi_py._cgroups._daemon import join_daemon_cgroup

        systemd = env.get(SYSTEMD_ENV, "") in ("1", "true")
        pod = join_daemon_cgroup(spec, bundle, group, systemd=systemd, pid=pid)
        return f"daemon cgroup {pod.path}" if pod is not None else ""
    except Exception as e:
        if pid is not None:
            raise  # a forked daemon that could not join is not used: start spawns instead
        return f"the daemon stays in containerd's cgroup: {e}"


def join_before_spawn(
    spec: dict[str, Any], bundle: str, group: str, env: dict[str, str] | None
) -> dict[str, str] | None:
    """Join the daemon's cgroup (this ``start`` process); returns the daemon's environment."""
    note = join_pod_cgroup(spec, bundle, group, env if env is not None else os.environ)
    if not note:
        return env
    return dict(env if env is not None else os.environ, **{NOTE_ENV: note})


def leave_at_exit(bundle: str) -> None:
    """The daemon's exit: back to ``start``'s cgroups; remove the daemon cgroup."""
    if not os.path.exists(os.path.join(bundle, RECORD_FILES[1])):
        return
    import logging

    from runwasi_py._cgroups._daemon import leave_daemon_cgroup

    try:
        left: list[object] = list(leave_daemon_cgroup(bundle))
    except Exception as e:
        left = [e]
    if left:
        logging.getLogger("runwasi_py.daemon").warning("cgroups left behind: %s", left)


def cleanup(bundle: str) -> None:
    """The ``delete`` action: remove the cgroups a dead shim recorded in ``bundle``."""
    if not any(os.path.exists(os.path.join(bundle, n)) for n in RECORD_FILES):
        return
    try:
        from runwasi_py._cgroups._daemon import cleanup_bundle

        left = cleanup_bundle(bundle)
        if left:
            sys.stderr.write(f"delete: cgroups left behind: {', '.join(map(str, left))}\n")
    except Exception as e:  # containerd logs delete's stderr as a warning on success
        sys.stderr.write(f"delete: remove cgroups: {e}\n")
