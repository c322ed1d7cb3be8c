"""The namespace-shared shim under a real containerd: ``RUNWASI_PY_SHIM_GROUP=namespace``.

A second private containerd is started with the variable in its environment (containerd
passes its own environment to the shims it runs, as an operator would set it on the
service), in its own namespace, with the test images imported.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py.containerd import ContainerdBuild, PrivateContainerd
from runwasi_py.examples._demo import scripts_dir
from tests.integration._ctr import (
    RUNTIME,
    attached_run,
    mounts_of,
    new_id,
    remove_container,
    status,
    wait_for,
)
from tests.integration._images import PROBE, ImageSet
from tests.integration._require import require_containerd, require_shim

pytestmark = pytest.mark.containerd

SHIM = b"containerd-shim-pywasmtime-v1"


@contextlib.contextmanager
def shared_env() -> Iterator[None]:
    """RUNWASI_PY_SHIM_GROUP=namespace in our environment, which containerd inherits."""
    saved = os.environ.get("RUNWASI_PY_SHIM_GROUP")
    os.environ["RUNWASI_PY_SHIM_GROUP"] = "namespace"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["RUNWASI_PY_SHIM_GROUP"]
        else:
            os.environ["RUNWASI_PY_SHIM_GROUP"] = saved


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
    test_images: ImageSet,
    containerd_build: ContainerdBuild,
) -> Iterator[PrivateContainerd]:
    """A private containerd whose shims group by namespace."""
    require_containerd()
    require_shim()
    workdir = tmp_path_factory.mktemp("c8ds")
    c8d = PrivateContainerd(
        workdir,
        shim_dirs=[scripts_dir()],
        namespace="runwasi-shared",
        containerd_bin=containerd_build.bin_dir,
    )
    with shared_env():
        c8d.start()
    try:
        for tarball in test_images.all():
            c8d.import_image(tarball)
        yield c8d
    finally:
        c8d.stop()


def daemons(c8d: PrivateContainerd) -> list[int]:
    """Live shim daemons of this containerd (not ``start``/``delete`` invocations)."""
    return sorted(c8d.shim_daemons())


def test_two_containers_share_one_daemon(shared: PrivateContainerd) -> None:
    ids = [new_id("sh"), new_id("sh")]
    try:
        with (
            attached_run(shared, PROBE, ids[0], "/probe.wasm", "spin") as first,
            attached_run(shared, PROBE, ids[1], "/probe.wasm", "spin") as second,
        ):
            for cid in ids:
                wait_for(lambda c=cid: status(shared, c) == "RUNNING", f"{cid} RUNNING", 45)  # type: ignore[misc]
            addresses = {(shared.bundle(cid) / "address").read_text() for cid in ids}
            assert len(addresses) == 1  # one socket for the namespace
            assert len(daemons(shared)) == 1
            for cid in ids:
                shared.ctr("task", "kill", "-s", "SIGKILL", cid)
            outs = [p.communicate(timeout=45) for p in (first, second)]
            assert [p.returncode for p in (first, second)] == [137, 137], outs
        address = addresses.pop().removeprefix("unix://")
        # the last container gone, the daemon lingers, then exits and removes its socket
        wait_for(lambda: not daemons(shared), "the shared daemon to exit", 30)
        assert not Path(address).exists()
    finally:
        for cid in ids:
            remove_container(shared, cid)


def test_sequential_runs_reuse_the_daemon_and_keep_exit_codes(shared: PrivateContainerd) -> None:
    wait_for(lambda: not daemons(shared), "no daemon before the test", 30)
    seen: set[int] = set()
    ids = [new_id("seq") for _ in range(5)]
    try:
        history = []
        for i, cid in enumerate(ids):
            t0 = time.monotonic()
            res = shared.run(PROBE, cid, "/probe.wasm", "exit", str(i + 3), runtime=RUNTIME)
            assert res.returncode == i + 3, res.stderr
            now = daemons(shared)
            history.append((round(time.monotonic() - t0, 2), now))
            seen.update(now)
        # one daemon served all five, lingering between them
        assert len(seen) == 1, (history, shared.log_tail(60))
        ids.append(new_id("seq"))
        hello = shared.run(PROBE, ids[-1], "/probe.wasm", runtime=RUNTIME)
        assert hello.returncode == 0
        assert hello.stdout == "hello from wasm\n"
        assert set(daemons(shared)) <= seen
        wait_for(lambda: not daemons(shared), "the shared daemon to exit", 30)
        for cid in ids:
            assert not shared.bundle(cid).exists()
            assert not mounts_of(shared, cid)
        assert not shared.ctr("containers", "ls", "-q").stdout.strip()
        assert not shared.leftover_processes()
    finally:
        for cid in ids:
            remove_container(shared, cid)


def test_containerd_restart_reconnects_to_the_shared_daemon(shared: PrivateContainerd) -> None:
    wait_for(lambda: not daemons(shared), "no daemon before the test", 30)
    ids = [new_id("rs"), new_id("rs")]
    try:
        for cid in ids:
            shared.run(
                PROBE,
                cid,
                "/probe.wasm",
                "spin",
                runtime=RUNTIME,
                rm=False,
                detach=True,
                check=True,
            )
        for cid in ids:
            wait_for(lambda c=cid: status(shared, c) == "RUNNING", f"{cid} RUNNING", 45)  # type: ignore[misc]
        before = daemons(shared)
        assert len(before) == 1
        addresses = {(shared.bundle(cid) / "address").read_text() for cid in ids}
        assert len(addresses) == 1
        with shared_env():
            shared.restart()
        for cid in ids:  # the new containerd found both tasks through the one socket
            wait_for(lambda c=cid: status(shared, c) == "RUNNING", f"{cid} after restart")  # type: ignore[misc]
        assert daemons(shared) == before
        for cid in ids:
            shared.ctr("task", "kill", "-s", "SIGKILL", cid)
            wait_for(lambda c=cid: status(shared, c) == "STOPPED", f"{cid} STOPPED")  # type: ignore[misc]
            rm = shared.ctr("task", "rm", cid)
            assert "exit code 137" in rm.stderr
            shared.ctr("containers", "rm", cid)
        wait_for(lambda: not daemons(shared), "the shared daemon to exit", 30)
        assert not Path(addresses.pop().removeprefix("unix://")).exists()
    finally:
        for cid in ids:
            remove_container(shared, cid)
