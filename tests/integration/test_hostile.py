"""Hostile workloads through ``ctr`` and a real containerd: each attack fails, and the shim
keeps serving its other containers.

All containers of this module share one shim daemon (``RUNWASI_PY_SHIM_GROUP=namespace``),
so a "neighbour" spinning beside each attack lives in the very process the attack targets.
The containerd also carries ``RUNWASI_PY_DEFAULT_MEMORY_LIMIT`` (the operator's ceiling for
containers whose spec sets none).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.examples._demo import scripts_dir
from runwasi_py.image import LayerFile, build_image, build_image_from_files
from tests.integration._ctr import RUNTIME, new_id, remove_container, status, wait_for
from tests.integration._images import PROBE, ImageSet
from tests.integration._require import require_containerd, require_shim

pytestmark = pytest.mark.containerd

FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = "docker.io/library/runwasi-e2e-hostile:latest"
MULTI_MEMORY = "docker.io/library/runwasi-e2e-multimem:latest"
PRECOMPILED = "docker.io/library/runwasi-e2e-precompiled:latest"
CEILING = 64 << 20
_MIB = 1 << 20


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Variables in our environment while containerd starts (it passes them to its shims)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_hostile_images(out: Path) -> list[Path]:
    hostile = build_image(FIXTURES / "hostile.wat", HOSTILE, out / "hostile.tar")
    mems = " ".join(f"(memory $m{i} 1)" for i in range(16))
    grows = " ".join(
        f"(block $d{i} (loop $l{i} (br_if $d{i} (i32.eq (memory.grow $m{i} (i32.const 16))"
        f" (i32.const -1))) (br $l{i})))"
        for i in range(16)
    )
    multi = out / "multimem.wat"
    multi.write_text(f'(module {mems} (func (export "_start") {grows}))')
    multimem = build_image(multi, MULTI_MEMORY, out / "multimem.tar")
    # An artifact as an attacker would ship it: wasmtime's own serialization of a module.
    artifact = bytes(
        wasmtime.Module(wasmtime.Engine(), '(module (func (export "_start")))').serialize()
    )
    precompiled = build_image_from_files(
        PRECOMPILED,
        out / "precompiled.tar",
        [LayerFile("/app.wasm", artifact, 0o755)],
        entrypoint=["/app.wasm"],
    )
    return [hostile.path, multimem.path, precompiled.path]


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, test_images: ImageSet
) -> Iterator[PrivateContainerd]:
    """A private containerd whose shims group by namespace, with a default memory ceiling."""
    require_containerd()
    require_shim()
    workdir = tmp_path_factory.mktemp("c8dh")
    images = build_hostile_images(tmp_path_factory.mktemp("hostile-images"))
    c8d = PrivateContainerd(workdir, shim_dirs=[scripts_dir()], namespace="runwasi-hostile")
    with environment(
        RUNWASI_PY_SHIM_GROUP="namespace", RUNWASI_PY_DEFAULT_MEMORY_LIMIT=str(CEILING)
    ):
        c8d.start()
    try:
        c8d.import_image(test_images.probe)
        for tarball in images:
            c8d.import_image(tarball)
        yield c8d
    finally:
        c8d.stop()


@pytest.fixture
def neighbour(shared: PrivateContainerd) -> Iterator[str]:
    """A spinning container in the shared shim; the test asserts it survived."""
    cid = new_id("nb")
    shared.run(
        PROBE, cid, "/probe.wasm", "spin", runtime=RUNTIME, rm=False, detach=True, check=True
    )
    wait_for(lambda: status(shared, cid) == "RUNNING", f"{cid} RUNNING", 45)
    try:
        yield cid
        assert status(shared, cid) == "RUNNING", shared.log_tail(40)
        # Still served: a kill through the same shim ends it as it should.
        shared.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: status(shared, cid) == "STOPPED", f"{cid} STOPPED", 30)
        assert "exit code 137" in shared.ctr("task", "rm", cid).stderr
        shared.ctr("containers", "rm", cid)
    finally:
        remove_container(shared, cid)


def detached(c8d: PrivateContainerd, image: str, cid: str, *args: str, **kw: object) -> None:
    c8d.run(image, cid, *args, runtime=RUNTIME, rm=False, detach=True, check=True, **kw)  # type: ignore[arg-type]


def exit_code(c8d: PrivateContainerd, cid: str) -> int:
    """Wait for the task to stop and remove it: its exit status (``ctr task rm`` warns
    "exit code N" for a non-zero one and says nothing for 0)."""
    wait_for(lambda: status(c8d, cid) == "STOPPED", f"{cid} STOPPED", 45)
    found = re.search(r"exit code (\d+)", c8d.ctr("task", "rm", cid).stderr)
    return int(found.group(1)) if found else 0


# --- 1. precompiled native code from an image ---------------------------------------


def test_an_images_precompiled_artifact_is_refused(
    shared: PrivateContainerd, neighbour: str
) -> None:
    cid = new_id("pre")
    try:
        res = shared.run(PRECOMPILED, cid, runtime=RUNTIME)
        assert res.returncode != 0
        assert "precompiled" in res.stderr, res.stderr
        assert status(shared, cid) is None  # never created, never ran
    finally:
        remove_container(shared, cid)


# --- 2. stdio without a reader ------------------------------------------------------


@pytest.mark.parametrize("null_io", [False, True], ids=["fifos", "null-io"])
def test_a_detached_run_starts_and_ends_without_a_reader(
    shared: PrivateContainerd, neighbour: str, null_io: bool
) -> None:
    cid = new_id("det")
    try:
        extra = ["--null-io"] if null_io else []
        detached(shared, PROBE, cid, "/probe.wasm", "stdio", extra=extra)
        assert exit_code(shared, cid) == 0
        shared.ctr("containers", "rm", cid)
    finally:
        remove_container(shared, cid)


def test_attach_later_reads_the_output(shared: PrivateContainerd, neighbour: str) -> None:
    cid = new_id("att")
    try:
        detached(shared, HOSTILE, cid, "/hostile.wasm", "chatty")
        wait_for(lambda: status(shared, cid) == "RUNNING", f"{cid} RUNNING", 45)
        attach = subprocess.run(
            shared.ctr_argv("task", "attach", cid),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        # "bye" comes after the attach ("hello" may have gone to the detached ctr's reader
        # before it left); ctr returns the task's status (ctr 1.6 then deletes the task).
        assert attach.returncode == 0, attach
        assert attach.stdout.endswith("bye\n"), attach
        wait_for(lambda: status(shared, cid) in (None, "STOPPED"), f"{cid} ended", 30)
        if status(shared, cid) is not None:  # a ctr that leaves the task for us
            assert exit_code(shared, cid) == 0
        shared.ctr("containers", "rm", cid)
    finally:
        remove_container(shared, cid)


# --- 3. signals that a process ignores ----------------------------------------------


def test_ignored_and_stop_signals_do_not_end_the_guest_and_the_first_status_stays(
    shared: PrivateContainerd, neighbour: str
) -> None:
    cid = new_id("sig")
    try:
        detached(shared, PROBE, cid, "/probe.wasm", "spin")
        wait_for(lambda: status(shared, cid) == "RUNNING", f"{cid} RUNNING", 45)
        for sig in ("SIGWINCH", "SIGCONT", "SIGCHLD", "SIGURG", "SIGSTOP"):
            shared.ctr("task", "kill", "-s", sig, cid)
        assert status(shared, cid) == "RUNNING"
        shared.ctr("task", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: status(shared, cid) == "STOPPED", f"{cid} STOPPED", 30)
        # A signal to the ended task changes nothing (containerd may refuse it outright).
        shared.ctr("task", "kill", "-s", "SIGCONT", cid, check=False)
        assert "exit code 137" in shared.ctr("task", "rm", cid).stderr
        shared.ctr("containers", "rm", cid)
    finally:
        remove_container(shared, cid)


# --- 4. memory ----------------------------------------------------------------------


def oom_events(c8d: PrivateContainerd) -> subprocess.Popen[str]:
    return subprocess.Popen(
        c8d.ctr_argv("events"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.parametrize("limit", [16 * _MIB, None], ids=["spec-limit", "default-ceiling"])
def test_growing_past_the_budget_is_oom_137(
    shared: PrivateContainerd, neighbour: str, limit: int | None
) -> None:
    cid = new_id("oom")
    events = oom_events(shared)
    try:
        extra = ["--memory-limit", str(limit)] if limit else []
        res = shared.run(HOSTILE, cid, "/hostile.wasm", "grow", runtime=RUNTIME, extra=extra)
        assert res.returncode == 137, res
        assert "out of memory" in res.stderr
    finally:
        events.terminate()
        seen, _ = events.communicate(timeout=10)
        remove_container(shared, cid)
    assert any("/tasks/oom" in line and cid in line for line in seen.splitlines()), seen


def test_sixteen_memories_do_not_multiply_the_limit(
    shared: PrivateContainerd, neighbour: str
) -> None:
    cid = new_id("mm")
    try:
        res = shared.run(
            MULTI_MEMORY, cid, runtime=RUNTIME, extra=["--memory-limit", str(64 * _MIB)]
        )
        assert res.returncode == 1, res
        assert "memor" in res.stderr  # the module is refused: multiple memories
    finally:
        remove_container(shared, cid)


# --- 5. a guest asleep in WASI ------------------------------------------------------


def test_sigterm_ends_a_guest_asleep_in_poll_oneoff(
    shared: PrivateContainerd, neighbour: str
) -> None:
    cid = new_id("slp")
    try:
        detached(shared, HOSTILE, cid, "/hostile.wasm", "sleep")
        wait_for(lambda: status(shared, cid) == "RUNNING", f"{cid} RUNNING", 45)
        shared.ctr("task", "kill", "-s", "SIGTERM", cid)
        # 143, not 137: the SIGTERM ended it, no SIGKILL was needed (none was sent).
        assert exit_code(shared, cid) == 128 + signal.SIGTERM
        shared.ctr("containers", "rm", cid)
    finally:
        remove_container(shared, cid)


# --- 6. the shim's ttrpc socket -----------------------------------------------------


def shim_socket(c8d: PrivateContainerd, cid: str) -> str:
    return (c8d.bundle(cid) / "address").read_text().removeprefix("unix://")


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def closed_by_peer(sock: socket.socket, within: float = 5.0) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(within * 1000):
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_connection_flood_is_capped_and_the_shim_serves_on(
    shared: PrivateContainerd, neighbour: str
) -> None:
    path = shim_socket(shared, neighbour)
    flood: list[socket.socket] = []
    try:
        # the shim holds at most Config.max_connections (1024)
        flood.extend(connect(path) for _ in range(1100))
        refused = sum(closed_by_peer(s, within=0.5) for s in flood[-150:])
        assert refused > 0
    finally:
        for s in flood:
            s.close()
    # The flood gone, a new container in the same shim runs.
    cid = new_id("after")
    try:
        res = shared.run(PROBE, cid, "/probe.wasm", "exit", "7", runtime=RUNTIME)
        assert res.returncode == 7, res
    finally:
        remove_container(shared, cid)


def test_unfinished_frames_do_not_grow_the_shim(shared: PrivateContainerd, neighbour: str) -> None:
    """Peers that start 4 MiB frames and never end them: the shim stops reading from them
    (its buffered bytes are capped) and keeps serving containerd."""
    path = shim_socket(shared, neighbour)
    pid = int(shared.ctr("task", "ls").stdout.split(neighbour, 1)[1].split()[0])
    shim_pid = next(p for p in _shim_daemons(pid))
    before = _rss(shim_pid)
    hogs = [connect(path) for _ in range(16)]
    try:
        header = struct.pack(">IIBB", (4 << 20) - 1, 1, 1, 0)
        stuck = 0
        for sock in hogs:
            sock.setblocking(False)
            data = memoryview(header + bytes((4 << 20) - 2))  # all but the last byte
            try:
                while data:
                    data = data[sock.send(data) :]
            except BlockingIOError:
                stuck += 1  # the shim stopped reading from this one
        assert stuck > 0
        # 16 x 4 MiB would be 64 MiB more; the cap (16 MiB) plus one frame being finished
        # and the socket buffers bound it well below that.
        assert _rss(shim_pid) - before < 40 << 20
        cid = new_id("busy")
        try:
            res = shared.run(PROBE, cid, "/probe.wasm", "exit", "3", runtime=RUNTIME)
            assert res.returncode == 3, res
        finally:
            remove_container(shared, cid)
    finally:
        for sock in hogs:
            sock.close()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _shim_daemons(task_pid: int) -> list[int]:
    """The shim process owning the task (its pid is one of the shim's threads)."""
    return [int(p.name) for p in Path("/proc").iterdir() if (p / "task" / str(task_pid)).exists()]
