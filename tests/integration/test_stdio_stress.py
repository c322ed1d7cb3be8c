"""Output under load through a real containerd: no attached run may lose stdout or stderr.

``ctr`` opens its FIFO readers in goroutines and, once the task exited, cancels the opens
that have not finished and drops what they would have read. The shim opens the write ends
as the program starts, so on a busy machine the exit could beat ctr's goroutine and the
output was lost (one run in ~8 here before the shim waited for its output to be read).
This runs the probe many times, several at once, beside CPU burners; a bounded count, so a
regression shows up most of the time rather than every time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from runwasi_py.containerd import PrivateContainerd
from tests.integration._ctr import RUNTIME, new_id, remove_container
from tests.integration._images import PROBE
from tests.integration._require import require_shim

pytestmark = pytest.mark.containerd

RUNS = 24
AT_ONCE = 4
BURNERS = 2


@pytest.fixture
def c8d(imported: PrivateContainerd) -> PrivateContainerd:
    require_shim()
    return imported


@pytest.fixture
def burners() -> Iterator[None]:
    """Busy cores, so goroutines and shim threads wait their turn as on a loaded CI box."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_no_output_is_lost_under_load(c8d: PrivateContainerd, burners: None) -> None:
    ids = [new_id("stdio") for _ in range(RUNS)]

    def one(cid: str) -> tuple[int, str, str]:
        clean = False
        try:
            res = c8d.run(PROBE, cid, "/probe.wasm", "stdio", runtime=RUNTIME, timeout=45)
            clean = res.returncode == 0  # --rm removed it
            return res.returncode, res.stdout, res.stderr
        finally:
            if not clean:
                remove_container(c8d, cid)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        results = list(pool.map(one, ids))
    bad = [
        (cid, r)
        for cid, r in zip(ids, results, strict=True)
        if r != (0, "to stdout\n", "to stderr\n")
    ]
    assert bad == [], f"{len(bad)} of {RUNS} runs lost output: {bad[:3]}"
