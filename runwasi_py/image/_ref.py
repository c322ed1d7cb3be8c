"""Image references: validate ``NAME[:TAG]`` and spell it out the way containerd stores it.

containerd keeps images under their fully qualified name (``docker.io/library/app:latest``),
and ``ctr image import`` takes the name from the OCI index's ``ref.name`` annotation as is.
Writing the short form there would give an image that ``ctr run app:latest`` cannot find.
"""

from __future__ import annotations

import re

from runwasi_py.image._errors import ImageError

__all__ = ["normalize_ref"]

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DEFAULT_DOMAIN = "docker.io"


def normalize_ref(ref: str) -> str:
    """Return the fully qualified form of ``ref``, or raise :class:`ImageError`.

    >>> normalize_ref("hello")
    'docker.io/library/hello:latest'
    >>> normalize_ref("ghcr.io/me/app:v1")
    'ghcr.io/me/app:v1'
    """
    if not ref or ref != ref.strip():
        raise ImageError(f"invalid image reference {ref!r}: empty or surrounded by spaces")
    if "@" in ref:
        raise ImageError(
            f"invalid image reference {ref!r}: a built image is named by NAME[:TAG], not a digest"
        )
    name, tag = ref, "latest"
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ImageError(f"invalid image reference {ref!r}: bad tag {tag!r}")
    parts = name.split("/")
    # As in the distribution reference grammar: the first part is a registry only when it
    # looks like a host (has a dot or a port, or is localhost).
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, path = parts[0], parts[1:]
        if not _DOMAIN.fullmatch(domain):
            raise ImageError(f"invalid image reference {ref!r}: bad registry {domain!r}")
    else:
        domain, path = _DEFAULT_DOMAIN, parts
    for part in path:
        if not _COMPONENT.fullmatch(part):
            raise ImageError(
                f"invalid image reference {ref!r}: {part!r} must be lower-case letters, "
                "digits and single separators (. _ -)"
            )
    if domain == _DEFAULT_DOMAIN and len(path) == 1:
        path = ["library", *path]
    full = f"{domain}/{'/'.join(path)}:{tag}"
    if len(full) > 255:
        raise ImageError(f"invalid image reference {ref!r}: longer than 255 characters")
    return full
