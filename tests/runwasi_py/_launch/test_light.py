"""The ``start``/``delete`` path stays light: no asyncio, betterproto2, wasmtime or typing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from runwasi_py._launch.address import SOCKET_DIR_ENV
from runwasi_py._proto.wire import length_delimited

HEAVY = (
    "asyncio",
    "betterproto2",
    "wasmtime",
    "typing",
    "dataclasses",
    "subprocess",
    "socket",
    "hashlib",
    "pathlib",
    "ttrpc._client",
    "runwasi_py._proto.messages",
    "runwasi_py._shim",
    "runwasi_py._task.service",
)

# Runs the real start (spawning replaced by a stub: no daemon) and the real delete of the
# bundled shim's console script, then reports which heavy modules got imported.
PROGRAM = """
import json, os, sys
bundle, heavy = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["containerd-shim-pywasmtime-v1"]
from runwasi_py.wasmtime.__main__ import SHIM
from runwasi_py._launch import start as start_mod
start_mod._spawn_daemon = lambda command, cwd, env: os.getpid()
from runwasi_py import shim_main
flags = ["-namespace", "ns1", "-address", "/run/c8d.sock", "-id", "c1", "-bundle", bundle]
codes = []
for action in ("start", "delete"):
    try:
        shim_main(SHIM, [*flags, action])
    except SystemExit as e:
        codes.append(e.code)
sys.stderr.write(json.dumps({"codes": codes, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_start_and_delete_import_nothing_heavy(tmp_path: Path) -> None:
    sockets = Path(tempfile.mkdtemp(prefix="light", dir="/tmp"))  # short: sun_path is 108
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {}}))
    # containerd 2.3's BootstrapParams on stdin: the decoder runs too
    params = length_delimited(1, b"c1") + length_delimited(2, b"ns1")
    env = dict(os.environ, **{SOCKET_DIR_ENV: str(sockets)})
    env.pop("RUNWASI_PY_SHIM_GROUP", None)
    try:
        result = subprocess.run(
            [sys.executable, "-c", PROGRAM, str(bundle), json.dumps(HEAVY)],
            input=params,
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    report = json.loads(result.stderr.decode().strip().splitlines()[-1])
    assert report["codes"] == [0, 0], result
    assert report["loaded"] == []
    # BootstrapParams came: the answer is a BootstrapResult (version 3, then the address)
    assert result.stdout.startswith(b"\x08\x03\x12")
    assert f"unix://{sockets}/".encode() in result.stdout
    assert (bundle / "address").read_text().startswith("unix://")
