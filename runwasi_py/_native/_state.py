"""Where runc keeps the native containers' state: one root per (containerd, namespace).

Stdlib-only and free of ``pathlib``/``hashlib`` so the ``delete`` action (which cleans a
killed daemon's containers) computes the same root as the daemon without a heavy import.

>>> state_root_dir("default", "/run/containerd/containerd.sock").rsplit("/", 2)[0]
'/run/runwasi-py/runc'
"""

from __future__ import annotations

import os

from runwasi_py._launch.address import sha256  # _sha256: hashlib would load OpenSSL

__all__ = ["DEFAULT_STATE_BASE_DIR", "STATE_BASE_ENV", "state_root_dir"]

DEFAULT_STATE_BASE_DIR = "/run/runwasi-py/runc"
"""Where the per-(containerd, namespace) runc roots live (tmpfs, like runc's own /run/runc)."""
STATE_BASE_ENV = "RUNWASI_PY_RUNC_STATE"
"""Overrides the base; the daemon and the ``delete`` action both read it."""


def state_root_dir(namespace: str, containerd_address: str, base: str | None = None) -> str:
    """The runc ``--root`` for ``namespace``'s containers under the containerd at an address.

    ``containerd_address`` identifies the containerd (the shim uses its ``TTRPC_ADDRESS``,
    which the daemon and ``delete`` are both given), so a private containerd and the system
    one never share a root even with the same namespace and container ids.
    """
    if not namespace or "/" in namespace or namespace in (".", ".."):
        raise ValueError(f"namespace {namespace!r} cannot name a directory")
    if base is None:
        base = os.environ.get(STATE_BASE_ENV) or DEFAULT_STATE_BASE_DIR
    digest = sha256(containerd_address.encode()).hexdigest()[:12]
    return os.path.join(base, digest, namespace)
