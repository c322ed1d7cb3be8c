"""Native-container fixtures: a static probe program, OCI bundles for it, a runc state root.

The bundle's ``config.json`` has the shape ``runc spec`` writes (namespaces, the usual
mounts, masked paths), with no terminal, so the tests exercise runc as containerd's runc
shim would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runwasi_py._native import find_runc
from tests.integration._require import unavailable

FIXTURES = Path(__file__).parent / "fixtures"
CGROUP_PARENT = "runwasi-py-native-tests"
"""The cgroup parent (below each hierarchy's root) of the tests' containers."""


def require_runc() -> str:
    """Root and the runc binary are here (skip, or fail under CI=true); returns runc's path."""
    if os.geteuid() != 0:
        unavailable("native containers need root")
    runc = find_runc()
    if runc is None:
        unavailable("runc is not on PATH")
    assert runc is not None
    return runc


@functools.cache
def _probe_binary(out_dir: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        unavailable("gcc is needed to build the static probe")
    out = Path(out_dir) / "native_probe"
    res = subprocess.run(
        [str(gcc), "-static", "-O2", "-o", str(out), str(FIXTURES / "native_probe.c")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        unavailable(f"cannot build a static binary: {res.stderr.strip()[-300:]}")
    return out


def probe_binary(cache_dir: Path) -> Path:
    """The static probe, built once per session into ``cache_dir``."""
    return _probe_binary(str(cache_dir))


def make_bundle(
    bundle: Path,
    probe: Path,
    args: list[str],
    *,
    container_id: str,
    pid_namespace: bool = True,
    entrypoint: str = "/probe",
    **overrides: Any,
) -> Path:
    """A bundle whose rootfs holds only the probe at ``entrypoint``; returns the bundle."""
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    target = rootfs / entrypoint.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(probe, target)
    spec = oci_spec([entrypoint, *args], container_id=container_id, pid_namespace=pid_namespace)
    spec.update(overrides)
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def oci_spec(args: list[str], *, container_id: str, pid_namespace: bool = True) -> dict[str, Any]:
    """``runc spec``'s default, without a terminal, running ``args``."""
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
    if not pid_namespace:
        namespaces = namespaces[1:]
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "native",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
        ],
        "linux": {
            "cgroupsPath": f"/{CGROUP_PARENT}/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def container_cgroups(container_id: str) -> list[Path]:
    """The cgroup directories of a test container that exist now (any hierarchy)."""
    found = []
    for hierarchy in _hierarchies():
        path = hierarchy / CGROUP_PARENT / container_id
        if path.exists():
            found.append(path)
    return found


def remove_cgroup_parent() -> None:
    """Remove the tests' (empty) cgroup parent from every hierarchy."""
    for hierarchy in _hierarchies():
        parent = hierarchy / CGROUP_PARENT
        if parent.is_dir():
            for child in parent.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                parent.rmdir()


def _hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
