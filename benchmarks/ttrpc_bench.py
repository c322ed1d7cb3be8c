"""ttrpc unary Echo throughput and latency: the Python server beside Go's, in one run.

Pairs (client -> server), each on the Example service (``ttrpc.example.v1.Example/Echo``):

- ``go -> py``: **the headline**: Go's ttrpc 1.1.1 client (tests/interop/go/ttrpcpeer)
  against ``python -m ttrpc.example serve``, the shipped Example with its generated messages
  (betterproto2 classes with the generated fast codecs of ``ttrpc.codegen.codecs``);
- ``go -> go``: the same Go client against Go's ttrpc 1.1.1 server: **the anchor**;
- ``go -> py/bp2``: the same Example server with betterproto2's own encoder and decoder
  (``ttrpc._msgcodec.reference_codecs``): what the generated codecs save;
- ``go -> py/raw``: a pass-through message class (no codec at all): the ttrpc runtime alone;
- with ``--all-pairs`` also ``py -> py`` (the Python client) and ``go -> py/upb`` (the
  official protobuf classes, needs grpcio-tools).

Scenarios: a 64-byte payload on one connection (one call at a time: sequential latency), and
64 B, 1 KiB and 64 KiB payloads at 32 connections, each keeping one call in flight (closed
loop), as a shim's clients do. The server is pinned to CPU 0 and the client to CPU 1 when
there are two or more CPUs (``taskset``), so each side has one core; the Python server runs
on uvloop when installed (the table says which). ``ratio`` is calls/s divided by the
``go -> go`` figure of the same scenario; ``srv CPU`` is the server process's CPU time per
call and ``srv wait`` the share of the run its threads spent runnable without a CPU (other
load on its core; a single-threaded server then gets fewer CPU shares than Go's several
threads, and that, not its work per call, sets its calls/s). Rows are the median of
interleaved rounds (5 by default).

Run (one command; needs Go and Debian's ttrpc sources for the Go rows):

    .venv/bin/python benchmarks/ttrpc_bench.py            # 5 rounds of 3 s per row, ~7 min
    .venv/bin/python benchmarks/ttrpc_bench.py --quick    # 1 round of 1 s per row

Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from ttrpc import RawMessage

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tests" / "interop" / "go" / "build.sh"
RESULTS = ROOT / "benchmarks" / "results"
SERVICE = "ttrpc.example.v1.Example"

SCENARIOS = [  # (name, connections, payload bytes)
    ("64 B x1 conn", 1, 64),
    ("64 B x32 conns", 32, 64),
    ("1 KiB x32 conns", 32, 1024),
    ("64 KiB x32 conns", 32, 64 * 1024),
]
PAIRS = ["go -> py", "go -> go", "go -> py/bp2", "go -> py/raw"]
EXTRA_PAIRS = ["py -> py", "go -> py/upb"]


@dataclass
class Row:
    scenario: str
    pair: str
    calls: int
    calls_per_s: float
    p50_us: float
    p99_us: float
    server_cpu_us_per_call: float
    server_wait_pct: float  # share of the run the server's threads waited, runnable, for a CPU
    ratio_to_go: float | None = None


# --- the Python load generator (run as a subprocess: `ttrpc_bench.py _pyclient ...`) ---------


async def _py_load(address: str, conns: int, payload: int, seconds: float, warmup: float) -> Any:
    import ttrpc
    from ttrpc.example import EchoRequest, EchoResponse

    clients = [await ttrpc.Client.connect(address) for _ in range(conns)]
    request = EchoRequest(payload=b"x" * payload, seq=1)
    loop = asyncio.get_running_loop()
    start_at = loop.time() + warmup
    stop_at = start_at + seconds
    latencies: list[float] = []

    async def worker(client: ttrpc.Client) -> None:
        clock = time.perf_counter
        while True:
            now = loop.time()
            if now >= stop_at:
                return
            t0 = clock()
            await client.call(SERVICE, "Echo", request, EchoResponse)
            if now >= start_at:
                latencies.append(clock() - t0)

    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()
    latencies.sort()
    n = len(latencies)
    return {
        "calls": n,
        "seconds": seconds,
        "calls_per_s": n / seconds,
        "p50_us": latencies[n // 2] * 1e6 if n else 0.0,
        "p99_us": latencies[int(0.99 * (n - 1))] * 1e6 if n else 0.0,
    }


def _py_client_main(argv: list[str]) -> None:
    import ttrpc

    address, conns, payload, seconds, warmup = argv
    result = ttrpc.run(_py_load(address, int(conns), int(payload), float(seconds), float(warmup)))
    print(json.dumps(result))


# --- the Python server variants (`ttrpc_bench.py _pyserver upb|raw SOCKET [PB2_DIR]`) -------


def _variant_service(kind: str, pb2_dir: str | None) -> Any:
    import ttrpc

    if kind == "raw":

        async def raw_echo(self: Any, request: RawMessage, context: ttrpc.CallContext) -> Any:
            return request

        request_type: Any = RawMessage
        response_type: Any = RawMessage
        echo: Any = raw_echo
    else:
        assert pb2_dir is not None
        sys.path.insert(0, pb2_dir)
        import example_pb2  # type: ignore[import-not-found]

        request_type, response_type = example_pb2.EchoRequest, example_pb2.EchoResponse

        async def upb_echo(self: Any, request: Any, context: ttrpc.CallContext) -> Any:
            return response_type(
                payload=request.payload,
                seq=request.seq,
                metadata=sorted(f"{k}={v}" for k, v in context.metadata.items()),
            )

        echo = upb_echo
    # Real classes (not strings) in the hints: Service reads them at class creation.
    echo.__annotations__ = {
        "request": request_type,
        "context": ttrpc.CallContext,
        "return": response_type,
    }
    cls = type(
        f"{kind}Example",
        (ttrpc.Service,),
        {"service_name": SERVICE, "echo": ttrpc.rpc(name="Echo")(echo)},
    )
    return cls()


def _py_server_main(argv: list[str]) -> None:
    import ttrpc
    from ttrpc import _msgcodec
    from ttrpc.example._cli import serve

    kind, address, *rest = argv
    if kind == "bp2":
        with _msgcodec.reference_codecs():
            ttrpc.run(serve(address))
        return
    ttrpc.run(serve(address, service=_variant_service(kind, rest[0] if rest else None)))


def _generate_pb2(tmp: Path) -> Path | None:
    """example_pb2.py (official protobuf) for the upb variant, or None without grpcio-tools."""
    out = tmp / "pb2"
    out.mkdir()
    proto_dir = ROOT / "ttrpc" / "example"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out}",
            str(proto_dir / "example.proto"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"ttrpc_bench: no upb variant ({result.stderr.strip()})", file=sys.stderr)
        return None
    return out


# --- orchestration ----------------------------------------------------------------------------


def _pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    # The socket file exists from bind(), before listen(): wait until a connect succeeds.
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"ttrpc_bench: server for {path} did not start (rc {proc.poll()})")
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except OSError:
                    pass
                else:
                    return
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _python_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _build_go() -> Path | None:
    if shutil.which("go") is None:
        print("ttrpc_bench: no Go toolchain: Go rows skipped", file=sys.stderr)
        return None
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"ttrpc_bench: Go peer not built, Go rows skipped:\n{result.stderr}", file=sys.stderr)
        return None
    return Path(result.stdout.strip().splitlines()[-1])


def _runqueue_wait_ns(pid: int) -> int:
    """Time the process's threads spent runnable but not running (/proc schedstat, Linux)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total


def _run_client(cmd: list[str]) -> dict[str, Any]:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"ttrpc_bench: client failed: {' '.join(cmd)}\n{result.stderr}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def measure(
    pair: str,
    scenario: tuple[str, int, int],
    go_peer: Path | None,
    pb2_dir: Path | None,
    seconds: float,
    warmup: float,
    cpus: tuple[int | None, int | None],
    tmp: Path,
) -> Row | None:
    """Start the pair's server, drive it with the pair's client, stop it; one table row."""
    name, conns, payload = scenario
    client_lang, server_lang = (part.strip() for part in pair.split("->"))
    if "go" in (client_lang, server_lang) and go_peer is None:
        return None
    server_cpu, client_cpu = cpus
    sock = tmp / f"{server_lang.replace('/', '-')}-{conns}-{payload}.sock"
    script = str(Path(__file__).resolve())
    if server_lang == "py":
        server_cmd = [sys.executable, "-m", "ttrpc.example", "serve", str(sock)]
    elif server_lang in ("py/raw", "py/bp2"):
        server_cmd = [sys.executable, script, "_pyserver", server_lang[3:], str(sock)]
    elif server_lang == "py/upb":
        if pb2_dir is None:
            return None
        server_cmd = [sys.executable, script, "_pyserver", "upb", str(sock), str(pb2_dir)]
    else:
        assert go_peer is not None
        server_cmd = [str(go_peer), "server", str(sock)]
    server = subprocess.Popen(
        [*_pin(server_cpu), *server_cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(sock, server)
        cpu_proc = psutil.Process(server.pid)
        before = cpu_proc.cpu_times()
        wait_before, wall_before = _runqueue_wait_ns(server.pid), time.monotonic()
        args = [str(sock), str(conns), str(payload), str(seconds), str(warmup)]
        if client_lang == "go":
            assert go_peer is not None
            result = _run_client([*_pin(client_cpu), str(go_peer), "bench", *args])
        else:
            result = _run_client([*_pin(client_cpu), sys.executable, script, "_pyclient", *args])
        after = cpu_proc.cpu_times()
        wait = _runqueue_wait_ns(server.pid) - wait_before
        wall = time.monotonic() - wall_before
    finally:
        _stop(server)
    cpu = (after.user + after.system) - (before.user + before.system)
    # The server's CPU covers warm-up too: divide by every call it served, measured or not.
    total_calls = max(1, round(result["calls"] * (seconds + warmup) / seconds))
    return Row(
        scenario=name,
        pair=pair,
        calls=result["calls"],
        calls_per_s=result["calls_per_s"],
        p50_us=result["p50_us"],
        p99_us=result["p99_us"],
        server_cpu_us_per_call=cpu / total_calls * 1e6,
        server_wait_pct=100.0 * wait / 1e9 / wall if wall > 0 else 0.0,
    )


def print_table(rows: list[Row], loop: str) -> None:
    print(f"\nttrpc unary Echo; Python server on {loop}; ratio = calls/s / (go -> go)")
    print("srv wait = share of the run the server's threads were runnable but had no CPU\n")
    head = (
        f"{'scenario':<16} {'client -> server':<17} {'calls/s':>10} {'p50 us':>9} "
        f"{'p99 us':>9} {'srv CPU us/call':>16} {'srv wait':>9} {'ratio':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r.ratio_to_go:.2f}" if r.ratio_to_go is not None else "-"
        print(
            f"{r.scenario:<16} {r.pair:<17} {r.calls_per_s:>10,.0f} {r.p50_us:>9,.0f} "
            f"{r.p99_us:>9,.0f} {r.server_cpu_us_per_call:>16,.1f} "
            f"{r.server_wait_pct:>8.0f}% {ratio:>7}"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_pyclient":
        _py_client_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_pyserver":
        _py_server_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s per row instead of 3 s")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per row")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (median kept)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server/client CPUs")
    parser.add_argument("--all-pairs", action="store_true", help="add py -> py, go -> py/upb")
    parser.add_argument("--pairs", default=None, help="comma-separated pairs to run")
    args = parser.parse_args()
    pairs = PAIRS + EXTRA_PAIRS if args.all_pairs else PAIRS
    if args.pairs:
        pairs = [p.strip() for p in args.pairs.split(",")]
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    rounds = max(1, args.rounds or (1 if args.quick else 5))
    warmup = 0.3 if args.quick else 0.5
    cpus: tuple[int | None, int | None] = (None, None)
    if not args.no_pin and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        available = sorted(os.sched_getaffinity(0))
        cpus = (available[0], available[1])
    loop = _python_loop()
    go_peer = _build_go()

    # Rounds interleave every pair, so a burst of load elsewhere on the machine hits one
    # round of every pair rather than all rounds of one; each row is the median round.
    samples: dict[tuple[str, str], list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="ttrpc-bench-") as tmp:
        pb2_dir = _generate_pb2(Path(tmp)) if "go -> py/upb" in pairs else None
        for round_no in range(1, rounds + 1):
            for scenario in SCENARIOS:
                for pair in pairs:
                    row = measure(
                        pair, scenario, go_peer, pb2_dir, seconds, warmup, cpus, Path(tmp)
                    )
                    if row is not None:
                        samples.setdefault((row.scenario, row.pair), []).append(row)
                        print(
                            f"  round {round_no}/{rounds}  {row.scenario:<16} {row.pair:<13}"
                            f" {row.calls_per_s:>10,.0f}/s",
                            flush=True,
                        )
    rows = [sorted(runs, key=lambda r: r.calls_per_s)[len(runs) // 2] for runs in samples.values()]
    for row in rows:
        anchor = samples.get((row.scenario, "go -> go"))
        if anchor:
            go = sorted(r.calls_per_s for r in anchor)[len(anchor) // 2]
            row.ratio_to_go = row.calls_per_s / go if go else None
    print_table(rows, loop)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ttrpc_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "ttrpc_bench",
                "python": platform.python_version(),
                "python_server_loop": loop,
                "pinned_cpus": {"server": cpus[0], "client": cpus[1]},
                "seconds_per_row": seconds,
                "rounds": rounds,
                "warmup_seconds": warmup,
                "go_ttrpc": "1.1.1 (Debian golang-github-containerd-ttrpc-dev)"
                if go_peer
                else None,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nsaved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
