"""Which shim daemon serves a container: the group modes and the one grouping function.

Light (``os`` and :mod:`runwasi_py._lightjson`, not ``json``): ``start`` reads the group
from the bundle before anything else, and must stay light.

>>> grouping_id({"io.kubernetes.cri.sandbox-id": "pod1"}, "c1"), grouping_id({}, "c1")
('pod1', 'c1')
"""

from __future__ import annotations

import os

from runwasi_py._lightjson import loads

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from runwasi_py._shim import Shim

__all__ = [
    "ANNOTATION_SANDBOX_ID",
    "GROUP_ENV",
    "GROUP_MODES",
    "group_mode",
    "grouping_id",
    "grouping_id_from_bundle",
]

ANNOTATION_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
"""The CRI annotation naming a container's pod (sandbox)."""
GROUP_ENV = "RUNWASI_PY_SHIM_GROUP"
"""``namespace``: one shim daemon per containerd namespace; ``sandbox`` (default): per pod."""
GROUP_MODES = ("sandbox", "namespace")
"""The values of ``Config.group_by`` and ``$RUNWASI_PY_SHIM_GROUP``."""


def grouping_id(annotations: Mapping[str, str], container_id: str) -> str:
    """Which shim serves a container: one per pod (sandbox id), else one per container."""
    group = annotations.get(ANNOTATION_SANDBOX_ID)
    return group if isinstance(group, str) and group else container_id


def grouping_id_from_bundle(bundle: str, container_id: str) -> str:
    """:func:`grouping_id` of the bundle's ``config.json``; the container id if unreadable."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = loads(f.read())
        annotations = spec.get("annotations") or {}
        if isinstance(annotations, dict):
            return grouping_id(annotations, container_id)
    except (OSError, ValueError, AttributeError, RecursionError):
        pass  # Create will report a bad bundle clearly; start only needs a name
    return container_id


def group_mode(shim: type[Shim] | str, group_by: str | None) -> str:
    """``sandbox`` or ``namespace``: $RUNWASI_PY_SHIM_GROUP, else the shim's choice."""
    mode = os.environ.get(GROUP_ENV, "")
    if not mode:
        mode = group_by or (shim.config.group_by if not isinstance(shim, str) else "sandbox")
    if mode not in GROUP_MODES:
        raise ValueError(f"{GROUP_ENV}={mode!r}: want one of {', '.join(GROUP_MODES)}")
    return mode
