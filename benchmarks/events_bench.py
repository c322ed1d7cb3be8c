"""Event publisher throughput: ``EventPublisher`` -> ``Events/Forward`` events/s, before/after.

What it does: in a fresh process (the "shim") it creates an :class:`EventPublisher`, publishes
a burst of N events at once (N/4 tasks' create/start/exit/delete) and times until every one
was acknowledged (``flush``). The events server runs in another process, as containerd
does, so the publisher's CPU per event is measured alone. Rows:

- ``before -> before fake``: the publisher and fake server of git revision ``--before``
  (default ec656cc, the last commit before the fix): **the anchor**;
- ``after -> before fake``: today's publisher against the old fake server;
- ``after -> after fake``: today's publisher and fake server (``RecordingEventsServer``);
- ``after -> counting``: today's publisher against a server that only counts (no decoding):
  the publisher's own ceiling, nearest to a Go containerd.

Every row passes ``max_queue`` large enough for the burst (the old default of 4,096 dropped
events; the rows count drops anyway). Columns: events/s (wall, burst published to last
ack), the publisher process's CPU per event, ``publish()``'s CPU per call, the server
process's CPU per event. With two or more CPUs the server is pinned to CPU 0 and the
publisher to CPU 1 (``taskset``). Rows are the median of ``--rounds`` interleaved rounds.

Run (one command):

    .venv/bin/python benchmarks/events_bench.py              # 5,000 events, 3 rounds
    .venv/bin/python benchmarks/events_bench.py -n 20000 --rounds 1

Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# In the children, PYTHONPATH puts the chosen code (before or after) ahead of the checkout.
import ttrpc

try:
    from runwasi_py._events.publisher import EVENTS_SERVICE, EventPublisher
except ImportError:  # a "before" revision from ahead of the layout (issue 13)
    from runwasi_py._events import EVENTS_SERVICE, EventPublisher  # type: ignore[no-redef]

try:
    from runwasi_py._proto.messages import TaskCreate, TaskDelete, TaskExit, TaskStart
except ImportError:  # before the layout
    from runwasi_py._proto import TaskCreate, TaskDelete, TaskExit, TaskStart  # type: ignore
try:
    from runwasi_py.testing.events_server import RecordingEventsServer
except ImportError:  # before the layout
    from runwasi_py._events_fake import RecordingEventsServer  # type: ignore[no-redef]
from ttrpc import RawMessage as Raw

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EVENT_FILES = ("runwasi_py/_events.py", "runwasi_py/_events_fake.py")
"""The event files of a "before" revision (ahead of the layout: flat modules)."""


# --- child processes ------------------------------------------------------------------------


async def _serve(path: str, kind: str) -> None:
    """The events server: prints "ready", serves until stdin closes, prints its CPU seconds."""
    if kind == "counting":

        class Counting(ttrpc.Service):
            service_name = EVENTS_SERVICE

            @ttrpc.rpc(name="Forward")
            async def forward(self, request: Raw, context: ttrpc.CallContext) -> Raw:
                return Raw()

        server = ttrpc.Server()
        server.register(Counting())
        await server.listen(path)
        stop = server.close
    else:
        fake = RecordingEventsServer(path)
        await fake.start()
        stop = fake.stop
    cpu0 = time.process_time()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    cpu = time.process_time() - cpu0
    await stop()
    print(json.dumps({"server_cpu_s": cpu}), flush=True)


async def _publish(path: str, count: int) -> None:
    """The shim side: publish a burst, wait for the last acknowledgement, print figures."""
    publisher = EventPublisher(path, "default", max_queue=max(count * 2, 4096))
    # warm up the connection and code paths
    publisher.publish("/tasks/start", TaskStart(container_id="warm", pid=1))
    await publisher.flush(30)
    events: list[tuple[str, Any]] = []
    for i in range(count // 4):
        cid = f"task-{i}"
        events += [
            ("/tasks/create", TaskCreate(container_id=cid, bundle=f"/run/bundles/{cid}", pid=i)),
            ("/tasks/start", TaskStart(container_id=cid, pid=i)),
            ("/tasks/exit", TaskExit(container_id=cid, id=cid, pid=i, exit_status=0)),
            ("/tasks/delete", TaskDelete(container_id=cid, pid=i, exit_status=0)),
        ]
    cpu0, t0 = time.process_time(), time.perf_counter()
    for topic, event in events:
        publisher.publish(topic, event)
    cpu_published = time.process_time()
    done = await publisher.flush(300)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    result = {
        "events": len(events),
        "complete": done,
        "forwarded": publisher.forwarded - 1,
        "dropped": publisher.dropped,
        "seconds": elapsed,
        "events_per_s": len(events) / elapsed,
        "publish_us": (cpu_published - cpu0) / len(events) * 1e6,
        "publisher_cpu_us": cpu / len(events) * 1e6,
    }
    await publisher.close(timeout=1)
    print(json.dumps(result), flush=True)


# --- the driver -----------------------------------------------------------------------------


def _overlay(revision: str, where: Path) -> Path:
    """Today's packages with the event files of ``revision`` (the "before" code).

    Those files predate the layout (flat ``_events.py``, ``_events_fake.py`` importing from
    ``runwasi_py._proto``): they replace the ``_events`` package, and ``_proto`` re-exports
    the messages for them.
    """
    for package in ("ttrpc", "runwasi_py"):
        shutil.copytree(ROOT / package, where / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.rmtree(where / "runwasi_py" / "_events")
    (where / "runwasi_py" / "_proto" / "__init__.py").write_text(
        "from runwasi_py._proto.messages import *  # noqa: F403\n"
        "from runwasi_py._proto.messages import GO_ZERO_TIME, full_name, pack_any, unpack_any\n"
    )
    for name in EVENT_FILES:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (where / name).write_text(text)
    return where


def _pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def _row(pub_path: Path, srv_path: Path, server_kind: str, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="evb-") as tmp:
        sock = str(Path(tmp) / "events.sock")
        env_srv = {**os.environ, "PYTHONPATH": str(srv_path)}
        env_pub = {**os.environ, "PYTHONPATH": str(pub_path)}
        me = str(Path(__file__).resolve())
        server = subprocess.Popen(
            [*_pin(0), sys.executable, me, "--child-serve", sock, server_kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env_srv,
            cwd=tmp,
        )
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("events server did not start")
            pub = subprocess.run(
                [*_pin(1), sys.executable, me, "--child-publish", sock, str(count)],
                capture_output=True,
                text=True,
                env=env_pub,
                cwd=tmp,
                timeout=600,
                check=True,
            )
            out, _ = server.communicate("", timeout=60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        result: dict[str, Any] = json.loads(pub.stdout.strip().splitlines()[-1])
        result["server_cpu_us"] = json.loads(out.strip().splitlines()[-1])["server_cpu_s"] / (
            result["events"] + 1
        )
        result["server_cpu_us"] *= 1e6
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--count", type=int, default=5000, help="events per burst")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="ec656cc", help="git revision of the anchor")
    ap.add_argument("--child-serve", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-publish", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_serve:
        asyncio.run(_serve(*args.child_serve))
        return
    if args.child_publish:
        asyncio.run(_publish(args.child_publish[0], int(args.child_publish[1])))
        return

    with tempfile.TemporaryDirectory(prefix="evb-before-") as tmp:
        before = _overlay(args.before, Path(tmp))
        rows = {
            "before -> before fake": (before, before, "fake"),
            "after -> before fake": (ROOT, before, "fake"),
            "after -> after fake": (ROOT, ROOT, "fake"),
            "after -> counting": (ROOT, ROOT, "counting"),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, (pub, srv, kind) in rows.items():
                runs[name].append(_row(pub, srv, kind, args.count))

    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    anchor = med("before -> before fake", "events_per_s")
    load = os.getloadavg()[0]
    print(
        f"event publisher: burst of {args.count} events, {args.rounds} round(s), "
        f"{os.cpu_count()} CPUs, load {load:.1f}, anchor = {args.before}"
    )
    header = (
        f"{'publisher -> server':24} {'events/s':>9} {'ratio':>6} {'pub CPU':>9} "
        f"{'publish()':>9} {'srv CPU':>9} {'dropped':>7} {'complete':>8}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, Any] = {}
    for name in rows:
        rate = med(name, "events_per_s")
        summary[name] = {
            "events_per_s": rate,
            "ratio": rate / anchor,
            "publisher_cpu_us": med(name, "publisher_cpu_us"),
            "publish_us": med(name, "publish_us"),
            "server_cpu_us": med(name, "server_cpu_us"),
            "dropped": max(r["dropped"] for r in runs[name]),
            "complete": all(r["complete"] and r["forwarded"] == r["events"] for r in runs[name]),
        }
        s = summary[name]
        print(
            f"{name:24} {rate:9.0f} {s['ratio']:6.2f} {s['publisher_cpu_us']:7.0f}us "
            f"{s['publish_us']:7.1f}us {s['server_cpu_us']:7.0f}us {s['dropped']:7d} "
            f"{'yes' if s['complete'] else 'NO':>8}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = RESULTS / f"events_bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "count": args.count,
                "rounds": args.rounds,
                "before": args.before,
                "cpus": os.cpu_count(),
                "load_avg_1m": load,
                "rows": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
