"""What the pod boundary costs per task: create+start+wait+delete with and without it.

Three kinds of task, interleaved round by round in one run (in-process shim, one ttrpc
connection, sequential tasks, a sandbox that returns at once): ``plain`` (no cgroupsPath,
no namespaces), ``cgroup`` (a container cgroup: mkdir in cpu/cpuacct, the thread in and
out, rmdir), ``cgroup+quota`` (that with a CPU quota written) and ``cgroup+netns`` (that,
plus joining a network namespace on the worker thread and going back). Moving a thread
between v1 cgroups waits for an RCU grace period in the kernel (``cgroup_threadgroup_rwsem``)
unless another move just happened: that wait, not the shim, is most of the difference.
Needs root. Prints ms per task and the ratio to ``plain``; saves JSON under
benchmarks/results/.

Run (one command):

    sudo .venv/bin/python benchmarks/placement_bench.py            # 5 rounds x 100 tasks
    sudo .venv/bin/python benchmarks/placement_bench.py -r 3 -n 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from runwasi_py import RuntimeContext, Sandbox, Shim
from runwasi_py.testing import make_bundle, serve_shim


class QuickSandbox(Sandbox):
    async def can_handle(self, ctx: RuntimeContext) -> None:
        pass

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        return 0


class QuickShim(Shim):
    name = "placement-bench"
    sandbox = QuickSandbox


async def _round(kind: str, n: int, tmp: Path, parent: str, netns: str) -> float:
    linux: dict[str, object] = {}
    if kind in ("cgroup+quota", "cgroup+netns"):
        linux["resources"] = {"cpu": {"quota": 50000, "period": 100000}}
    if kind == "cgroup+netns":
        linux["namespaces"] = [{"type": "network", "path": netns}]
    async with serve_shim(QuickShim) as s:
        bundles = []
        for i in range(n):
            cid = f"{kind.replace('+', '-')}-{i}"
            extra = dict(linux, cgroupsPath=f"{parent}/{cid}") if kind != "plain" else linux
            bundles.append(make_bundle(tmp / cid, container_id=cid, args=["/x"], linux=extra))
        t0 = time.perf_counter()
        for b in bundles:
            code, _, _ = await s.driver.run(b)
            assert code == 0
        return (time.perf_counter() - t0) / n * 1000


async def _measure(
    kinds: tuple[str, ...], rounds: int, n: int, parent: str, netns: str
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            for kind in kinds if r % 2 == 0 else reversed(kinds):
                tmp = Path(d) / f"{r}-{kind}"
                tmp.mkdir()
                times[kind].append(await _round(kind, n, tmp, parent, netns))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("-n", "--tasks", type=int, default=100)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (cgroups, setns)")
    name = f"rwpy-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    kinds = ("plain", "cgroup", "cgroup+quota", "cgroup+netns")
    try:
        times = asyncio.run(
            _measure(kinds, args.rounds, args.tasks, f"/{name}", f"/var/run/netns/{name}")
        )
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
        for h in ("cpu", "cpuacct"):
            p = Path("/sys/fs/cgroup") / h / name
            if p.is_dir():
                p.rmdir()
    base = sorted(times["plain"])[len(times["plain"]) // 2]
    print(f"{'kind':<14} {'ms/task (median)':>17} {'min':>7} {'x plain':>8}")
    result = {}
    for kind in kinds:
        med = sorted(times[kind])[len(times[kind]) // 2]
        result[kind] = {"median_ms": med, "all_ms": times[kind]}
        print(f"{kind:<14} {med:>17.2f} {min(times[kind]):>7.2f} {med / base:>8.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "placement_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
