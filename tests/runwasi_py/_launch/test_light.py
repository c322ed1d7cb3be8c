"""The ``start``/``delete`` path stays light: no asyncio, betterproto2, wasmtime, typing, json.

Each module listed costs ``start`` measurable CPU time (``python -X importtime``; issue 10:
``start`` within 1.5x a bare interpreter); ``json`` alone is about half an interpreter start.
"""

from __future__ import annotations

import ast
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
    "json",  # re and enum: runwasi_py._lightjson decodes config.json
    "re",
    "enum",
    "contextlib",  # collections and functools
    "collections",
    "functools",
    "importlib",  # warnings (the lazy package __getattr__s import it)
    "warnings",
    "struct",
    "ttrpc",  # the Reserve client packs its own frame header
    "tomllib",
    "runwasi_py._proto.messages",
    "runwasi_py._shim",
    "runwasi_py._task.service",
)

# Runs the real start (spawning replaced by a stub: no daemon), a second start that finds
# the first one's socket file with nobody listening (the Reserve client runs, answers
# "dead"), and the real delete of the bundled shim's console script, then reports which
# heavy modules got imported. The program's own imports are the interpreter's (os, sys),
# and it reads its arguments without json.
PROGRAM = """
import os, sys
bundle, heavy, RAN = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
sys.argv = ["containerd-shim-pywasmtime-v1"]
from runwasi_py.wasmtime.__main__ import SHIM
from runwasi_py._launch import start as start_mod
start_mod._spawn_daemon = lambda command, cwd, env: os.getpid()
from runwasi_py._launch.main import shim_main
flags = ["-namespace", "ns1", "-address", "/run/c8d.sock", "-id", "c1", "-bundle", bundle]
codes = []
for action in ("start", "start", "delete"):
    try:
        shim_main(SHIM, [*flags, action])
    except SystemExit as e:
        codes.append(e.code)
    if action == "start":  # the daemon that never was: its socket is dead
        try:
            os.close(start_mod.LISTENER_FD)
        except OSError:  # the listener was fd 3 itself, closed with its socket object
            pass
loaded = [m for m in heavy if m in sys.modules]
ran = [m for m in RAN if m in sys.modules]
sys.stderr.write(repr({"codes": codes, "loaded": loaded, "ran": ran}))
"""
# What the program must have run (else it proves nothing about the paths above).
RAN = ("runwasi_py._launch.reserve", "runwasi_py._lightjson", "runwasi_py._launch.delete")


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
            [sys.executable, "-c", PROGRAM, str(bundle), ",".join(HEAVY), ",".join(RAN)],
            input=params,
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    report = ast.literal_eval(result.stderr.decode().strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0], result
    assert report["loaded"] == []
    assert report["ran"] == list(RAN)
    # BootstrapParams came: the answer is a BootstrapResult (version 3, then the address)
    assert result.stdout.startswith(b"\x08\x03\x12")
    assert f"unix://{sockets}/".encode() in result.stdout
    assert (bundle / "address").read_text().startswith("unix://")
