"""``start`` for a new pod daemon joins the daemon's cgroup on a light path, and ``delete``
(and the daemon's exit) remove it; SystemdCgroup from a pre-2.3 stdin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from runwasi_py._cgroups import cleanup_bundle, discover, driver_for
from runwasi_py._cgroups._hierarchy import read_proc_cgroup
from runwasi_py._launch.address import SOCKET_DIR_ENV
from tests.integration._require import require_root

# pathlib and json are allowed here (the join needs them); the rest stays out
HEAVY = (
    "asyncio",
    "betterproto2",
    "wasmtime",
    "typing",
    "dataclasses",
    "logging",
    "subprocess",
    "runwasi_py._proto.messages",
    "runwasi_py._task.service",
    "runwasi_py._cgroups._cpu",
    "runwasi_py._cgroups._metrics",
    "runwasi_py._namespaces",
)

# The real start of the bundled shim with spawning stubbed out: no daemon, so this process
# plays the daemon that would have been born in the cgroup; it reports its cgroup and what
# got imported.
PROGRAM = """
import json, os, sys
bundle, heavy = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["containerd-shim-pywasmtime-v1"]
from runwasi_py.wasmtime.__main__ import SHIM
from runwasi_py._launch import start as start_mod
seen = {}
def spawn(command, cwd, env):
    seen["note"] = env.get("RUNWASI_PY_DAEMON_CGROUP", "") if env else ""
    return os.getpid()
start_mod._spawn_daemon = spawn
if os.environ.get("RUNWASI_PY_TEMPLATE") != "0":
    # no template answers: start launches one, then joins and spawns. The launch is
    # stubbed (no process left behind): it must happen before the join.
    from runwasi_py._template import client
    def launch(*args):
        with open("/proc/self/cgroup") as f:
            seen["launched_from"] = f.read()
    client.launch_template = launch
from runwasi_py import shim_main
flags = ["-namespace", "ns1", "-address", "/run/c8d.sock", "-id", "sb", "-bundle", bundle]
try:
    shim_main(SHIM, [*flags, "start"])
except SystemExit as e:
    seen["code"] = e.code
with open("/proc/self/cgroup") as f:
    seen["cgroup"] = f.read()
seen["loaded"] = [m for m in heavy if m in sys.modules]
seen["modules"] = sorted(sys.modules)
sys.stderr.write(json.dumps(seen))
"""


@pytest.mark.parametrize("template", ["0", ""])
def test_start_joins_the_pod_daemon_cgroup_without_heavy_imports(
    tmp_path: Path, template: str
) -> None:
    require_root()
    driver = driver_for(discover())
    parent = f"/runwasi-py-test-{uuid.uuid4().hex[:10]}"
    bundle = tmp_path / "sb"
    bundle.mkdir()
    spec = {
        "annotations": {"io.kubernetes.cri.sandbox-id": "sb"},
        "linux": {"cgroupsPath": f"{parent}/sb"},
    }
    (bundle / "config.json").write_text(json.dumps(spec))
    sockets = Path(tempfile.mkdtemp(prefix="podcg", dir="/tmp"))
    env = dict(os.environ, **{SOCKET_DIR_ENV: str(sockets)})
    env.pop("RUNWASI_PY_SHIM_GROUP", None)
    env["RUNWASI_PY_TEMPLATE"] = template
    want = f"{parent}/runwasi-py-shim-sb"
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(bundle), json.dumps(HEAVY)],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        report = json.loads(result.stderr.decode().strip().splitlines()[-1])
        assert report["code"] == 0, result
        assert report["loaded"] == []
        if template == "0":
            assert "runwasi_py._template.client" not in report["modules"]
        else:
            assert want not in report["launched_from"]  # a template never in a pod's cgroup
            assert "runwasi_py._template.client" in report["modules"]
        assert report["note"] == f"daemon cgroup {want}"
        own = {
            line.split(":", 2)[1]: line.split(":", 2)[2] for line in report["cgroup"].splitlines()
        }
        key = "cpu" if driver.version == 1 else ""
        assert own[key] == want
        assert (bundle / "runwasi-py-daemon-cgroups.json").exists()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        # the process is gone: what `delete` does for a dead daemon removes it all
        assert cleanup_bundle(bundle) == []
    for h in driver.layout.hierarchies():
        assert not h.dir_of(parent).exists()
    assert want not in read_proc_cgroup().values()  # only start's own process moved
