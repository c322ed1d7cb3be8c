"""A task inside its pod: the cgroup and namespaces of one container's worker thread.

:class:`TaskPlacement` is made at Create from the spec (everything validated and the
cgroup created before the task exists, so a bad spec leaves nothing behind), entered on
the worker thread before the guest runs (:meth:`TaskPlacement.on_worker`: the thread joins
its cgroup for ``cpu``/``cpuacct``, or its v2 threaded child, and the spec's network, UTS
and IPC namespaces), updated by Update, read by Stats, and removed at Delete. The instance
only calls :meth:`~TaskPlacement.on_worker`; the task service owns the rest.

:func:`refuse_cri_in_shared_shim` is the namespace-shared mode's rule. (The pod daemon's
own cgroup is ``_cgroups._daemon``'s, joined by ``start``: ``_launch/pod_cgroup.py``.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwasi_py._cgroups import (
    RECORD_NAME,
    CgroupDriver,
    CgroupRequest,
    ContainerCgroup,
    CpuLimits,
    CreationRecord,
    EngineMemory,
    discover,
    driver_for,
    systemd_cgroup_option,
)
from runwasi_py._errors import FailedPrecondition, InvalidArgument
from runwasi_py._namespaces import NamespacePlan

if TYPE_CHECKING:
    import betterproto2

__all__ = [
    "CRI_ANNOTATION_PREFIX",
    "TaskPlacement",
    "host_cgroups",
    "refuse_cri_in_shared_shim",
    "resources_from_update",
    "systemd_from_options",
]

log = logging.getLogger("runwasi_py.placement")

CRI_ANNOTATION_PREFIX = "io.kubernetes.cri."
SYSTEMD_ENV = "RUNWASI_PY_SYSTEMD_CGROUP"
"""``1``: read ``linux.cgroupsPath`` in the systemd form (``start`` sets it for the daemon
from the runtime options it was given)."""
SANDBOX_NEW_NAMESPACES = ("uts", "ipc")
"""What a CRI sandbox container asks to be new and a thread can make: the pod's own UTS and
IPC namespaces, which the pod's containers then join through the sandbox task's pid."""


@functools.cache
def host_cgroups() -> CgroupDriver | None:
    """This host's cgroup driver, or None when cgroups cannot be managed (not root, none)."""
    if os.geteuid() != 0:
        log.info("not root: containers get no cgroups of their own")
        return None
    try:
        return driver_for(discover())
    except (OSError, ValueError) as e:
        log.warning("no usable cgroup hierarchy (%s): containers get no cgroups", e)
        return None


class TaskPlacement:
    """Where one task's worker thread lives; see the module docstring.

    Example:
        >>> placement = TaskPlacement.prepare(spec, bundle, sandbox_container=False)
        >>> with placement.on_worker():      # on the worker thread, around run_wasi
        ...     run_guest()
        >>> placement.remove()               # at Delete
    """

    def __init__(self, cgroup: ContainerCgroup | None, namespaces: NamespacePlan) -> None:
        self.cgroup = cgroup
        self.namespaces = namespaces

    @classmethod
    def prepare(
        cls,
        spec: Mapping[str, Any],
        bundle: str | os.PathLike[str],
        *,
        sandbox_container: bool = False,
        systemd: bool = False,
        driver: CgroupDriver | None = None,
    ) -> TaskPlacement | None:
        """Validate the spec's cgroup and namespaces and create the cgroup; None if neither.

        Raises InvalidArgument naming the field (``linux.cgroupsPath``,
        ``linux.resources.cpu.quota``, ``linux.namespaces[i].path``) with nothing created.
        """
        request = CgroupRequest.from_spec(spec, systemd=systemd)
        allow_new = SANDBOX_NEW_NAMESPACES if sandbox_container else ()
        namespaces = NamespacePlan.from_spec(spec, allow_new=allow_new)
        cgroup: ContainerCgroup | None = None
        try:
            if request.path is not None:
                driver = driver or host_cgroups()
                if driver is not None:
                    cgroup = _create_cgroup(driver, request, Path(bundle) / RECORD_NAME)
        except BaseException:
            namespaces.close()
            raise
        if cgroup is None and namespaces.empty:
            namespaces.close()
            return None
        return cls(cgroup, namespaces)

    @property
    def pid_namespace_note(self) -> str:
        """Why the spec's other namespaces were not applied (for a log line)."""
        return "; ".join(f"{t}: {why}" for t, why in self.namespaces.skipped)

    @contextlib.contextmanager
    def on_worker(self) -> Iterator[None]:
        """Enter the cgroup and namespaces on the calling (worker) thread for the block.

        Afterwards the thread is back in the daemon's namespaces and cgroup, so a pooled
        worker carries nothing of this container into the next one. An error entering is
        the task's failure; an error going back propagates, and the worker is not reused.
        """
        if self.cgroup is not None:
            self.cgroup.place_current_thread()
        try:
            with self.namespaces.entered():
                yield
        finally:
            self.namespaces.close()
            if self.cgroup is not None:
                self.cgroup.release_current_thread()

    def update(self, resources: Mapping[str, Any]) -> None:
        """Apply an Update's CPU resources to the running task's cgroup."""
        cpu = CpuLimits.from_resources(resources, field="resources")
        if cpu.empty:
            return
        if self.cgroup is None:
            raise FailedPrecondition("update: this task has no cgroup (no linux.cgroupsPath)")
        self.cgroup.update(cpu)

    def metrics(self, memory: EngineMemory) -> betterproto2.Message | None:
        """The task's cgroup Metrics (v1 or v2 as the host is), or None without a cgroup."""
        return None if self.cgroup is None else self.cgroup.metrics(memory)

    def remove(self) -> None:
        """Close the namespace files and remove the cgroup (Delete); leftovers are logged."""
        self.namespaces.close()
        if self.cgroup is not None:
            left = self.cgroup.remove()
            if left:
                log.warning("cgroups left behind: %s", ", ".join(map(str, left)))


def _create_cgroup(
    driver: CgroupDriver, request: CgroupRequest, record_file: Path
) -> ContainerCgroup | None:
    assert request.path is not None
    try:
        return ContainerCgroup.create(
            driver, request.path, request.cpu, CreationRecord(record_file)
        )
    except FailedPrecondition as e:
        if driver.version == 2 and "root cgroup" in str(e):
            # v2 needs the daemon in a cgroup of its own (a pod's shim is; a shim started
            # outside a pod may not be): the task runs, without per-container CPU limits
            log.warning("%s: %s", request.path, e)
            return None
        raise


def resources_from_update(type_url: str, value: bytes) -> Mapping[str, Any]:
    """An UpdateTaskRequest's ``resources`` Any (containerd encodes the OCI LinuxResources as
    JSON under ``.../opencontainers/runtime-spec/1/LinuxResources``) as an object."""
    if not value:
        return {}
    if not type_url.endswith("LinuxResources"):
        raise InvalidArgument(f"update: resources of type {type_url!r}, not LinuxResources")
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"update: resources are not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidArgument("update: resources must be a JSON object")
    return obj


def systemd_from_options(options: Any | None) -> bool:
    """``SystemdCgroup`` of a CreateTaskRequest's ``options`` (``runtimeoptions.v1.Options``
    with a TOML ``config_body``, as containerd passes a non-runc runtime's options table);
    ``$RUNWASI_PY_SYSTEMD_CGROUP=1`` when containerd sends none."""
    type_url = getattr(options, "type_url", "") or ""
    if type_url.endswith("runtimeoptions.v1.Options"):
        from runwasi_py._proto.messages import RuntimeOptions

        try:
            body = RuntimeOptions.FromString(getattr(options, "value", b"")).config_body
        except Exception as e:
            raise InvalidArgument(f"create: runtime options do not decode: {e}") from None
        if body.strip():
            return systemd_cgroup_option(body)
    return os.environ.get(SYSTEMD_ENV, "") in ("1", "true")


def refuse_cri_in_shared_shim(annotations: Mapping[str, str], container_id: str) -> None:
    """In the namespace-shared mode a CRI container is refused: one daemon cannot be in every
    pod's cgroup at once, so the pod's accounting and limits would be wrong."""
    if any(k.startswith(CRI_ANNOTATION_PREFIX) for k in annotations):
        raise FailedPrecondition(
            f"create {container_id}: a Kubernetes (CRI) container needs a shim per pod, but"
            " RUNWASI_PY_SHIM_GROUP=namespace shares one shim across pods; unset"
            " RUNWASI_PY_SHIM_GROUP (or set it to 'sandbox') for this runtime"
        )
