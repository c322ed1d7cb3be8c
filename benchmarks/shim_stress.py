"""Shim lifecycle throughput and memory, in the manner of runwasi's ``stress-test`` mock mode.

What it does: starts the shim through the real ``start`` action (cwd = a bundle, containerd's
argv, ``TTRPC_ADDRESS`` = a fake events server in this process), then drives N tasks through
the Task API over one ttrpc connection: create+start under a semaphore of P permits, then
wait+delete, the clock starting when the first permit is taken (as stress-test does). The
sandbox returns at once, so this measures the shim, not an engine. Then it measures the shim
process's RSS with 1, 10 and 100 live (idle, running) tasks.

Run (one command):

    .venv/bin/python benchmarks/shim_stress.py              # N=1000, P=8, through `start`
    .venv/bin/python benchmarks/shim_stress.py -n 200 -p 4 --mode in-process

Anchors (runwasi, reference/runwasi.md §7): 329.85 tasks/s (1000 tasks, wasmtime shim) and
~488 tasks/s after the per-container zygote; 22.7 MB per wasmtime container (shim + zygote).
Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ttrpc
from runwasi_py import RuntimeContext, Sandbox, Shim
from runwasi_py._events.publisher import EVENTS_SERVICE
from runwasi_py._proto.messages import DeleteRequest, StartRequest, WaitRequest
from runwasi_py.testing import Bundle, RecordingEventsServer, TaskDriver, make_bundle, serve_shim
from ttrpc import RawMessage as Raw

RUNWASI_TASKS_PER_S = (329.85, 488.0)
RUNWASI_MB_PER_CONTAINER = 22.7


class StressSandbox(Sandbox):
    """Returns at once, or idles until killed when args[1] == "idle"."""

    async def can_handle(self, ctx: RuntimeContext) -> None:
        pass  # no file to check: the benchmark is about the shim

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        if ctx.args[1:2] == ["idle"]:
            await asyncio.Event().wait()
        return 0


class StressShim(Shim):
    """The shim under test (importable as ``shim_stress:StressShim``)."""

    name = "stress"
    sandbox = StressSandbox


class CountingEventsServer(RecordingEventsServer):
    """A fake ``Events/Forward`` that only counts (stress-test's mock does no more)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    async def start(self) -> None:
        owner = self

        class Events(ttrpc.Service):
            service_name = EVENTS_SERVICE

            @ttrpc.rpc(name="Forward")
            async def forward(self, request: Raw, context: ttrpc.CallContext) -> Raw:
                owner.count += 1
                if owner.target and owner.count >= owner.target:
                    owner.reached.set()
                return Raw()

        server = ttrpc.Server()
        server.register(Events())
        await server.listen(self.path)
        self._server = server


async def _lifecycle(client: ttrpc.Client, bundles: list[Bundle], parallel: int) -> float:
    svc = "containerd.task.v2.Task"
    encoded = [
        (
            b.id,
            Raw(bytes(b.create_request())),
            Raw(bytes(StartRequest(id=b.id))),
            Raw(bytes(WaitRequest(id=b.id))),
            Raw(bytes(DeleteRequest(id=b.id))),
        )
        for b in bundles
    ]
    sem = asyncio.Semaphore(parallel if parallel > 0 else len(bundles))
    first: list[float] = []

    async def one(task_id: str, create: Raw, start: Raw, wait: Raw, delete: Raw) -> None:
        async with sem:
            if not first:
                first.append(time.perf_counter())
            await client.call(svc, "Create", create, Raw)
            await client.call(svc, "Start", start, Raw)
        status = await client.call(svc, "Wait", wait, Raw)
        if status.data.startswith(b"\x08"):  # field 1 present: a non-zero exit status
            raise RuntimeError(f"task {task_id} failed: {status.data!r}")
        await client.call(svc, "Delete", delete, Raw)

    await asyncio.gather(*(one(*e) for e in encoded))
    return time.perf_counter() - first[0]


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


async def _memory(
    driver: TaskDriver, workdir: Path, shim_pid: int, settle: float
) -> dict[str, float]:
    live: list[str] = []
    out: dict[str, float] = {}
    for target in (1, 10, 100):
        while len(live) < target:
            cid = f"idle{len(live)}"
            b = make_bundle(workdir, args=["/app.wasm", "idle"], container_id=cid, stdio="none")
            await driver.create(b)
            await driver.start(cid)
            live.append(cid)
        await asyncio.sleep(settle)
        out[f"rss_mb_{target}"] = _rss(shim_pid) / 1e6
    for cid in live:
        await driver.kill(cid)
        await driver.wait(cid)
        await driver.delete(cid)
    out["mb_per_extra_task"] = (out["rss_mb_100"] - out["rss_mb_1"]) / 99
    return out


async def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", "--count", type=int, default=1000)
    ap.add_argument("-p", "--parallel", type=int, default=8, help="0 = unlimited")
    ap.add_argument("--mode", choices=["subprocess", "in-process"], default="subprocess")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--settle", type=float, default=0.5, help="seconds before reading RSS")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="rwpy-stress-", dir="/tmp"))
    try:
        anchor = make_bundle(
            workdir, args=["/app.wasm", "idle"], container_id="pause", stdio="none"
        )
        bundles = [
            make_bundle(workdir, args=["/app.wasm"], container_id=f"t{i}", stdio="none")
            for i in range(args.count + args.warmup)
        ]
        shim = "shim_stress:StressShim" if args.mode == "subprocess" else StressShim
        async with serve_shim(
            shim, mode=args.mode, bundle=anchor, events_server=CountingEventsServer
        ) as sut:
            d = sut.driver
            # a "pause" task keeps the shim alive, as stress-test does
            await d.create(anchor)
            await d.start("pause")
            await _lifecycle(d.client, bundles[: args.warmup], args.parallel)
            shim_cpu = _cpu(sut.shim_pid)
            elapsed = await _lifecycle(d.client, bundles[args.warmup :], args.parallel)
            shim_cpu = _cpu(sut.shim_pid) - shim_cpu
            # every task's 4 events (+2 of the pause task) must reach "containerd"
            events = sut.events
            assert isinstance(events, CountingEventsServer)
            expected = 4 * (args.count + args.warmup) + 2
            t0 = time.perf_counter()
            events.target = expected
            if events.count >= expected:
                events.reached.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(events.reached.wait(), 30)
            events_done = time.perf_counter() - t0
            events_got = events.count
            mem: dict[str, float] = {}
            if not args.no_memory:
                pid = sut.shim_pid
                mem = await _memory(d, workdir / "mem", pid, args.settle)
            await d.kill("pause")
            await d.wait("pause")
            await d.delete("pause")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rate = args.count / elapsed
    result: dict[str, object] = {
        "count": args.count,
        "parallel": args.parallel,
        "mode": args.mode,
        "seconds": elapsed,
        "tasks_per_s": rate,
        "shim_cpu_us_per_task": shim_cpu / args.count * 1e6,
        "events_expected": expected,
        "events_received": events_got,
        "events_lag_s": events_done,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        **mem,
    }
    lo, hi = RUNWASI_TASKS_PER_S
    print(
        f"shim lifecycle: {args.count} tasks, concurrency {args.parallel}, {args.mode}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'what':<34}{'runwasi-py':>14}{'runwasi':>16}{'ratio':>9}")
    print(
        f"{'tasks/s (create+start+wait+delete)':<34}{rate:>14.0f}{f'{lo:.0f}-{hi:.0f}':>16}"
        f"{rate / hi:>8.1f}x"
    )
    per_task = shim_cpu / args.count * 1e6
    print(
        f"{'shim CPU per task (us)':<34}{per_task:>14.0f}{'':>16}"
        f"   (= {1e6 / per_task:.0f} tasks/s per shim core)"
    )
    print(
        f"{'events received / published':<34}{f'{events_got}/{expected}':>14}"
        f"{'':>16}   (last one {events_done:.2f} s after the last task)"
    )
    if mem:
        per = mem["mb_per_extra_task"]
        print(f"{'shim RSS, 1 live task (MB)':<34}{mem['rss_mb_1']:>14.1f}{'':>16}")
        print(f"{'shim RSS, 10 live tasks (MB)':<34}{mem['rss_mb_10']:>14.1f}{'':>16}")
        print(f"{'shim RSS, 100 live tasks (MB)':<34}{mem['rss_mb_100']:>14.1f}{'':>16}")
        print(
            f"{'MB per extra live task':<34}{per:>14.3f}{RUNWASI_MB_PER_CONTAINER:>16.1f}"
            f"{RUNWASI_MB_PER_CONTAINER / per if per > 0 else float('inf'):>8.0f}x less"
        )
    print(f"saved {_save(result)}")
    return result


def _save(result: dict[str, object]) -> Path:
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    out_file = out_dir / f"shim_stress-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out_file.write_text(json.dumps(result, indent=2))
    return out_file


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ttrpc import run as ttrpc_run

    ttrpc_run(main())
