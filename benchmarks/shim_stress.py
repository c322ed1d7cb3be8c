"""Shim lifecycle throughput with real wasm, in the manner of runwasi's ``stress-test``.

What it does: starts the bundled ``pywasmtime`` shim through the real ``start`` action (cwd
= a bundle, containerd's argv, ``TTRPC_ADDRESS`` = a fake events server in this process),
then drives N tasks running the bundled ``hello.wasm`` through the Task API over one ttrpc
connection: create+start under a semaphore of P permits, then wait+delete, the clock
starting when the first permit is taken (as stress-test does). Each task's stdout/stderr
are what containerd gives: FIFOs whose read ends this process holds open (and reads, as
``ctr`` does), or plain files (``file://`` log URIs); every task's greeting is checked.

Rows, one fresh shim each, interleaved round by round (``--rounds``; medians printed):

- ``pywasmtime, FIFO stdio`` (the headline, compared with runwasi's wasmtime shim);
- ``pywasmtime, file stdio`` (target: >= 0.8x the FIFO row);
- ``framework only (no-op Sandbox)``: a Sandbox that returns at once, no stdio. It measures
  the framework without an engine; it is **not** comparable with runwasi.

``--memory`` adds the framework-only shim's RSS with 1, 10 and 100 idle tasks.

Run (one command):

    .venv/bin/python benchmarks/shim_stress.py                 # N=1000, P=8, 5 rounds
    .venv/bin/python benchmarks/shim_stress.py -n 200 --rounds 1

Anchors (runwasi, reference/runwasi.md §7): 329.85 tasks/s (1000 tasks, wasmtime shim) and
~488 tasks/s after the per-container zygote; 22.7 MB per wasmtime container (shim + zygote).
Results are saved as JSON under benchmarks/results/. ``STRESS_PY_SPY=DIR`` samples the shim
with ``py-spy`` (``pip install py-spy``) during each row's timed part, into DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import ttrpc
from runwasi_py import RuntimeContext, Sandbox, Shim
from runwasi_py._events.publisher import EVENTS_SERVICE
from runwasi_py._proto.messages import DeleteRequest, StartRequest, WaitRequest
from runwasi_py.examples import example_path
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


Row = Literal["fifo", "file", "noop"]
ROWS: dict[Row, str] = {
    "fifo": "pywasmtime, hello.wasm, FIFO stdio",
    "file": "pywasmtime, hello.wasm, file stdio",
    "noop": "framework only (no-op Sandbox)*",
}
PYWASMTIME = "runwasi_py.wasmtime._shim:PyWasmtimeShim"
GREETING = b"Hello from WebAssembly"


def hello_wasm() -> bytes:
    """The bundled example, as the wasm binary an image would carry."""
    import wasmtime

    return bytes(wasmtime.wat2wasm(example_path("hello").read_text()))


def row_bundles(row: Row, workdir: Path, count: int, wasm: bytes) -> tuple[Bundle, list[Bundle]]:
    """The pause (anchor) bundle and ``count`` task bundles for one row."""
    sandbox = {"io.kubernetes.cri.container-type": "sandbox"}
    anchor = make_bundle(
        workdir,
        args=["/pause"] if row != "noop" else ["/app.wasm", "idle"],
        container_id="pause",
        stdio="none",
        annotations=sandbox if row != "noop" else None,
        files={} if row != "noop" else None,
    )
    if row == "noop":
        tasks = [
            make_bundle(workdir, args=["/app.wasm"], container_id=f"t{i}", stdio="none")
            for i in range(count)
        ]
    else:
        tasks = [
            make_bundle(
                workdir,
                args=["/hello.wasm"],
                container_id=f"t{i}",
                files={"hello.wasm": wasm},
                stdio=row,
            )
            for i in range(count)
        ]
    return anchor, tasks


async def _lifecycle(
    client: ttrpc.Client, bundles: list[Bundle], parallel: int, check: bool
) -> float:
    svc = "containerd.task.v2.Task"
    encoded = [
        (
            b,
            Raw(bytes(b.create_request())),
            Raw(bytes(StartRequest(id=b.id))),
            Raw(bytes(WaitRequest(id=b.id))),
            Raw(bytes(DeleteRequest(id=b.id))),
        )
        for b in bundles
    ]
    sem = asyncio.Semaphore(parallel if parallel > 0 else len(bundles))
    first: list[float] = []

    async def one(b: Bundle, create: Raw, start: Raw, wait: Raw, delete: Raw) -> None:
        async with sem:
            if not first:
                first.append(time.perf_counter())
            b.open_outputs()  # containerd opens its FIFO read ends before Create
            await client.call(svc, "Create", create, Raw)
            await client.call(svc, "Start", start, Raw)
        status = await client.call(svc, "Wait", wait, Raw)
        if status.data.startswith(b"\x08"):  # field 1 present: a non-zero exit status
            raise RuntimeError(f"task {b.id} failed: {status.data!r}")
        if check:
            out, _ = await b.read_outputs()
            if GREETING.decode() not in out:
                raise RuntimeError(f"task {b.id} did not say hello: {out!r}")
        b.close()
        await client.call(svc, "Delete", delete, Raw)

    await asyncio.gather(*(one(*e) for e in encoded))
    return time.perf_counter() - first[0]


def _start_profiler(pid: int, row: Row) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` on the shim for the timed part, if ``STRESS_PY_SPY`` names a dir.

    The profile (collapsed stacks, one file per row) shows where the shim's CPU goes;
    sampling costs the shim some time, so figures from a profiled run are not headline ones.
    """
    out_dir = os.environ.get("STRESS_PY_SPY")
    if not out_dir:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(out_dir) / f"{row}-{time.strftime('%H%M%S')}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only the thread holding the GIL, i.e. where the shim's Python time goes
    extra = os.environ.get("STRESS_PY_SPY_ARGS", "--gil").split()
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--threads", "-r", "500"]
    cmd += [*extra, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # let it attach before the clock starts
    return proc


def _cpu(pid: int) -> tuple[float, float]:
    """The process's (user, system) CPU seconds so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user), float(t.system)


def _main_thread_cpu(pid: int) -> float:
    """CPU seconds of the shim's main thread (its control loop: ttrpc, Create, events)."""
    import psutil

    for t in psutil.Process(pid).threads():
        if t.id == pid:
            return float(t.user_time + t.system_time)
    return 0.0


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


async def one_row(
    row: Row, workdir: Path, count: int, warmup: int, parallel: int, wasm: bytes, memory: bool
) -> dict[str, float]:
    """One fresh shim, ``warmup`` then ``count`` lifecycles; its figures."""
    anchor, bundles = row_bundles(row, workdir, count + warmup, wasm)
    shim = PYWASMTIME if row != "noop" else "shim_stress:StressShim"
    check = row != "noop"
    async with serve_shim(
        shim, mode="subprocess", bundle=anchor, events_server=CountingEventsServer
    ) as sut:
        d = sut.driver
        # a "pause" task keeps the shim alive, as stress-test does
        await d.create(anchor)
        await d.start("pause")
        await _lifecycle(d.client, bundles[:warmup], parallel, check)
        spy = _start_profiler(sut.shim_pid, row)
        user0, sys0 = _cpu(sut.shim_pid)
        main0 = _main_thread_cpu(sut.shim_pid)
        client0 = time.process_time()
        elapsed = await _lifecycle(d.client, bundles[warmup:], parallel, check)
        client = time.process_time() - client0
        user1, sys1 = _cpu(sut.shim_pid)
        main1 = _main_thread_cpu(sut.shim_pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            await asyncio.to_thread(spy.wait)
        # every task's 4 events (+2 of the pause task) must reach "containerd"
        events = sut.events
        assert isinstance(events, CountingEventsServer)
        expected = 4 * (count + warmup) + 2
        events.target = expected
        if events.count >= expected:
            events.reached.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events.reached.wait(), 30)
        out: dict[str, float] = {
            "tasks_per_s": count / elapsed,
            "shim_cpu_us_per_task": (user1 - user0 + sys1 - sys0) / count * 1e6,
            "shim_sys_us_per_task": (sys1 - sys0) / count * 1e6,
            # the control loop's share: it holds the GIL for all of it, so it bounds the rate
            "shim_main_thread_us_per_task": (main1 - main0) / count * 1e6,
            # the driver shares the machine: its CPU bounds the rate as much as the shim's
            "client_cpu_us_per_task": client / count * 1e6,
            "events_missing": float(expected - events.count),
        }
        if memory:
            out.update(await _memory(d, workdir / "mem", sut.shim_pid, 0.5))
        await d.kill("pause")
        await d.wait("pause")
        await d.delete("pause")
    return out


async def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", "--count", type=int, default=1000)
    ap.add_argument("-p", "--parallel", type=int, default=8, help="0 = unlimited")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--rows", default="fifo,file,noop", help="comma list of fifo,file,noop")
    ap.add_argument("--memory", action="store_true", help="framework-only RSS, 1/10/100 tasks")
    ap.add_argument(
        "--workdir",
        default="/tmp",
        help="where the bundles (and the file row's logs) go; containerd keeps bundles and "
        "FIFOs on /run, a tmpfs on most hosts (creating a file on this VM's ext4 costs ~0.3 ms)",
    )
    args = ap.parse_args(argv)
    rows: list[Row] = [r for r in ROWS if r in args.rows.split(",")]  # type: ignore[misc]

    wasm = hello_wasm()
    samples: dict[Row, list[dict[str, float]]] = {r: [] for r in rows}
    for i in range(args.rounds):
        for row in rows:
            workdir = Path(tempfile.mkdtemp(prefix="rwpy-stress-", dir=args.workdir))
            try:
                mem = args.memory and row == "noop" and i == 0
                got = await one_row(row, workdir, args.count, args.warmup, args.parallel, wasm, mem)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            samples[row].append(got)
            print(f"  round {i + 1} {ROWS[row]}: {got['tasks_per_s']:.0f} tasks/s", flush=True)

    med = {r: {k: statistics.median(s[k] for s in samples[r]) for k in samples[r][0]} for r in rows}
    result: dict[str, object] = {
        "count": args.count,
        "parallel": args.parallel,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "workdir": args.workdir,
        "median": med,
        "samples": samples,
    }
    lo, hi = RUNWASI_TASKS_PER_S
    print(
        f"shim lifecycle: {args.count} tasks, concurrency {args.parallel}, through `start`, "
        f"median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f} (shared machine)"
    )
    print(
        f"{'what':<40}{'tasks/s':>9}{'us CPU/task':>13}{'(system)':>10}{'(loop)':>8}"
        f"{'client':>8}{'runwasi':>10}{'ratio':>8}"
    )
    for r in rows:
        m = med[r]
        anchor = f"{lo:.0f}-{hi:.0f}" if r != "noop" else "-"
        ratio = f"{m['tasks_per_s'] / hi:.2f}x" if r != "noop" else "-"
        print(
            f"{ROWS[r]:<40}{m['tasks_per_s']:>9.0f}{m['shim_cpu_us_per_task']:>13.0f}"
            f"{m['shim_sys_us_per_task']:>10.0f}{m['shim_main_thread_us_per_task']:>8.0f}"
            f"{m['client_cpu_us_per_task']:>8.0f}"
            f"{anchor:>10}{ratio:>8}"
        )
        if m["events_missing"]:
            print(f"  {ROWS[r]}: {m['events_missing']:.0f} events not received")
    if "fifo" in med and "file" in med:
        print(
            f"file / FIFO stdio: {med['file']['tasks_per_s'] / med['fifo']['tasks_per_s']:.2f}x"
            " (target >= 0.8x); FIFO target >= 1000 tasks/s"
        )
    if "noop" in med:
        print("* no engine, no stdio: the framework alone, not comparable with runwasi")
        m = med["noop"]
        if "mb_per_extra_task" in m:
            for k in ("rss_mb_1", "rss_mb_10", "rss_mb_100", "mb_per_extra_task"):
                print(f"  framework-only shim {k}: {m[k]:.3f}")
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
