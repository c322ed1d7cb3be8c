"""The CNI network of a CRI harness: a bridge on a private subnet, named after the harness.

Each harness (one working directory) gets its own bridge name, network name and /24 (all
derived from a digest of the directory, the subnet moved on while it overlaps a route this
host already has), so several harnesses on one machine never share an address or a bridge.
host-local keeps its leases under the working directory; libcni's result cache
(``/var/lib/cni/results/<network>-*``) and the bridge itself are host-wide, so
:func:`remove_network` deletes those explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import subprocess
from pathlib import Path

from runwasi_py.containerd._config import ContainerdPaths

__all__ = [
    "CNI_BIN_DIR",
    "CNI_CACHE_DIR",
    "bridge_name",
    "network_name",
    "remove_network",
    "write_network",
]

#: Where Debian's containernetworking-plugins installs bridge, host-local, loopback.
CNI_BIN_DIR = Path("/usr/lib/cni")
#: libcni's default cache folder (containerd does not let the CRI plugin move it).
CNI_CACHE_DIR = Path("/var/lib/cni")
CONFLIST_NAME = "10-runwasi-py.conflist"


def _tag(paths: ContainerdPaths) -> str:
    return hashlib.sha256(str(paths.workdir).encode()).hexdigest()


def bridge_name(paths: ContainerdPaths) -> str:
    """``rwp<10 hex>``: unique per working directory, within Linux's 15-byte limit."""
    return "rwp" + _tag(paths)[:10]


def network_name(paths: ContainerdPaths) -> str:
    return "runwasi-py-" + _tag(paths)[:10]


def _routes() -> list[ipaddress.IPv4Network]:
    nets = []
    with contextlib.suppress(OSError), open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if len(fields) >= 8:
                dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
                mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
                if int(mask):
                    nets.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return nets


def choose_subnet(paths: ContainerdPaths) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0-10.249.255.0 that no route of this host overlaps."""
    start = int(_tag(paths)[:8], 16)
    taken = _routes()
    for i in range(50 * 256):
        n = (start + i) % (50 * 256)
        net = ipaddress.IPv4Network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free /24 left in 10.200.0.0/13 for the pod network")


def write_network(paths: ContainerdPaths) -> ipaddress.IPv4Network:
    """Write the bridge conflist into the harness's CNI conf dir; return its subnet."""
    conflist = paths.cni_conf_dir / CONFLIST_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        # Keep the subnet across restarts: pods that survive a restart keep their address.
        old = json.loads(conflist.read_text())
        return ipaddress.IPv4Network(old["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    subnet = choose_subnet(paths)
    doc = {
        "cniVersion": "0.4.0",
        "name": network_name(paths),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(paths),
                "isGateway": False,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet)}]],
                    "dataDir": str(paths.cni_data_dir),
                },
            },
            {"type": "loopback"},
        ],
    }
    paths.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    tmp = conflist.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(conflist)
    return subnet


def bridge_exists(paths: ContainerdPaths) -> bool:
    return Path("/sys/class/net", bridge_name(paths)).exists()


def remove_network(paths: ContainerdPaths) -> list[str]:
    """Delete the bridge, libcni's cached results and the conflist; return what resisted."""
    problems = []
    if bridge_exists(paths):
        res = subprocess.run(
            ["ip", "link", "delete", bridge_name(paths)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if res.returncode != 0:
            problems.append(f"bridge {bridge_name(paths)}: {res.stderr.strip()}")
    name = network_name(paths)
    for cached in (CNI_CACHE_DIR / "results").glob(f"{name}-*"):
        with contextlib.suppress(OSError):
            cached.unlink()
    with contextlib.suppress(FileNotFoundError):
        (paths.cni_conf_dir / CONFLIST_NAME).unlink()
    return problems
