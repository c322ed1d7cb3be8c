"""``ctr run --rm`` through a real containerd: this shim vs the runc shim, side by side.

What it measures, in one run against one private containerd (runwasi_py.containerd):

1. Wall time of ``ctr run --rm`` per container (median, p90): a wasm hello through
   ``io.containerd.pywasmtime.v1`` with one shim daemon per container ("pywasmtime") and
   with the namespace-shared daemon ("shared": a second private containerd started with
   ``RUNWASI_PY_SHIM_GROUP=namespace``) vs a native hello (an image of the host's /bin/echo
   and its libraries) through ``io.containerd.runc.v2``; sequential (interleaved, so all see
   the same machine), then at concurrency C. The ratio is wasm / runc (target: <= 1).
2. Containers per second through containerd at concurrency P (anchor: runwasi's
   stress-test with real containerd, 330 tasks/s).
3. Memory of the shim daemons with 1, 10 and 50 running containers (a wasm module that
   sleeps in 50 ms ``poll_oneoff`` steps): summed RSS, PSS (shared pages counted once) and
   peak RSS (VmHWM), per container (anchor: runwasi wasmtime, 22.7 MB per container).

Run (one command, as root, containerd installed):

    .venv/bin/python benchmarks/ctr_bench.py                  # n=20, C=8, P=8, 1/10/50
    .venv/bin/python benchmarks/ctr_bench.py -n 10 --throughput-n 50 --rss 1,10

Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.containerd._cleanup import processes_of
from runwasi_py.examples import example_path
from runwasi_py.examples._demo import scripts_dir
from runwasi_py.image import build_image, build_image_from_files, host_binary_files

RUNWASI_TASKS_PER_S = 330.0
RUNWASI_MB_PER_CONTAINER = 22.7
WASM_RUNTIME = "io.containerd.pywasmtime.v1"
RUNC_RUNTIME = "io.containerd.runc.v2"
WASM_HELLO = "docker.io/library/bench-wasm-hello:latest"
WASM_SLEEP = "docker.io/library/bench-wasm-sleep:latest"
NATIVE_HELLO = "docker.io/library/bench-native-hello:latest"
NATIVE_SLEEP = "docker.io/library/bench-native-sleep:latest"

# Sleeps forever in 50 ms steps: idle, yet its loop lets the engine's kill interrupt it.
SLEEP_WAT = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 50000000))
    (loop $l
      (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
      (br $l))))
"""


def _arch() -> str:
    import platform

    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def build_images(c8d: PrivateContainerd, out: Path) -> None:
    sleep_wat = out / "sleep.wat"
    sleep_wat.write_text(SLEEP_WAT)
    build_image(example_path("hello"), WASM_HELLO, out / "wasm-hello.tar")
    build_image(sleep_wat, WASM_SLEEP, out / "wasm-sleep.tar")
    plat = f"linux/{_arch()}"
    build_image_from_files(
        NATIVE_HELLO,
        out / "native-hello.tar",
        host_binary_files("/bin/echo"),
        platform=plat,
        entrypoint=["/bin/echo"],
        cmd=["Hello from a native binary"],
    )
    build_image_from_files(
        NATIVE_SLEEP,
        out / "native-sleep.tar",
        host_binary_files("/bin/sleep"),
        platform=plat,
        entrypoint=["/bin/sleep"],
        cmd=["3600"],
    )
    for tar in sorted(out.glob("*.tar")):
        c8d.import_image(tar)


def _new_id(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:10]}"


STDIN: dict[str, int] = {"fd": subprocess.DEVNULL}


def use_open_stdin() -> None:
    """Give every ctr an empty stdin that stays open instead of /dev/null (both shims).

    A workaround switch: a shim that opens its stdin FIFO with a blocking open hangs when
    ctr's stdin is at EOF (ctr then never opens the FIFO's write end).
    """
    r, _w = os.pipe()
    STDIN["fd"] = r
    STDIN["keep"] = _w


KINDS = ("wasm", "tpl_off", "shared", "runc")
LABELS = {"wasm": "pywasmtime", "tpl_off": "tpl off", "shared": "shared", "runc": "runc"}
"""``wasm``: per-pod daemons, the default (forked by the pod daemon template);
``tpl_off``: the same with ``RUNWASI_PY_TEMPLATE=0`` (every daemon spawned)."""


def one_run(c8d: PrivateContainerd, kind: str) -> float:
    """Wall seconds of one ``ctr run --rm``; raises if the container did not say hello."""
    image, runtime = (NATIVE_HELLO, None) if kind == "runc" else (WASM_HELLO, WASM_RUNTIME)
    argv = c8d.run_argv(image, _new_id(kind), runtime=runtime)
    t0 = time.perf_counter()
    res = subprocess.run(
        argv, stdin=STDIN["fd"], capture_output=True, text=True, timeout=120, check=False
    )
    dt = time.perf_counter() - t0
    if res.returncode != 0 or "Hello" not in res.stdout:
        raise RuntimeError(
            f"{kind} run failed ({res.returncode}): {res.stderr.strip()}\n"
            f"--- containerd log (tail) ---\n{c8d.log_tail(30)}"
        )
    return dt


def stats(samples: list[float]) -> dict[str, float]:
    p90 = statistics.quantiles(samples, n=10)[8] if len(samples) >= 2 else samples[0]
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p90_ms": p90 * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def sequential(c8ds: dict[str, PrivateContainerd], n: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {k: [] for k in c8ds}
    for _ in range(n):
        for kind, c8d in c8ds.items():  # interleaved: all see the same machine state
            samples[kind].append(one_run(c8d, kind))
    return {k: stats(v) for k, v in samples.items()}


def concurrent(c8d: PrivateContainerd, kind: str, n: int, conc: int) -> dict[str, float]:
    with ThreadPoolExecutor(conc) as pool:
        t0 = time.perf_counter()
        samples = list(pool.map(lambda _: one_run(c8d, kind), range(n)))
        elapsed = time.perf_counter() - t0
    return {**stats(samples), "concurrency": conc, "containers_per_s": n / elapsed}


def _shim_processes(c8d: PrivateContainerd, binary: str) -> list[psutil.Process]:
    procs = []
    for pid in processes_of(c8d.paths.address, c8d.workdir):
        try:
            p = psutil.Process(pid)
            if binary in " ".join(p.cmdline()) and pid != c8d.pid:
                procs.append(p)
        except psutil.Error:
            continue
    return procs


def _memory(procs: list[psutil.Process]) -> dict[str, float]:
    rss = pss = hwm = 0
    for p in procs:
        try:
            full = p.memory_full_info()
            rss += full.rss
            pss += getattr(full, "pss", full.rss)
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) * 1024
        except (psutil.Error, OSError):
            continue
    mb = 1024 * 1024
    return {"processes": len(procs), "rss_mb": rss / mb, "pss_mb": pss / mb, "peak_mb": hwm / mb}


def _running(c8d: PrivateContainerd) -> set[str]:
    out = c8d.ctr("task", "ls").stdout.splitlines()[1:]
    return {f.split()[0] for f in out if len(f.split()) >= 3 and f.split()[2] == "RUNNING"}


def memory(c8d: PrivateContainerd, kind: str, counts: list[int]) -> list[dict[str, float]]:
    image, runtime, binary = (
        (NATIVE_SLEEP, None, "containerd-shim-runc-v2")
        if kind == "runc"
        else (WASM_SLEEP, WASM_RUNTIME, "containerd-shim-pywasmtime-v1")
    )
    started: list[str] = []
    rows = []
    try:
        for target in counts:
            while len(started) < target:
                cid = _new_id(f"{kind}-idle")
                # No stdio: nothing would read it, and the instance should run, not wait.
                c8d.run(
                    image,
                    cid,
                    runtime=runtime,
                    rm=False,
                    detach=True,
                    extra=["--null-io"],
                    check=True,
                    timeout=120,
                )
                started.append(cid)
            _wait(lambda: set(started) <= _running(c8d), f"{target} {kind} containers running")
            time.sleep(1.0)  # let the daemons settle after their start-up allocations
            row = {"containers": target, **_memory(_shim_processes(c8d, binary))}
            row["rss_mb_per_container"] = row["rss_mb"] / target
            row["pss_mb_per_container"] = row["pss_mb"] / target
            rows.append(row)
            print(f"  {kind}: {target} running -> {row['rss_mb']:.1f} MB RSS", file=sys.stderr)
    finally:
        _remove(c8d, started)
    return rows


def _wait(cond: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _remove(c8d: PrivateContainerd, ids: list[str]) -> None:
    for cid in ids:
        c8d.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    for cid in ids:
        c8d.ctr("task", "rm", "-f", cid, check=False)
        c8d.ctr("containers", "rm", cid, check=False)


def _memory_line(kind: str, row: dict[str, float]) -> str:
    return (
        f"  {LABELS[kind]:<11}{row['containers']:>4.0f}"
        f"{row['processes']:>7.0f}{row['rss_mb']:>9.1f}{row['pss_mb']:>9.1f}"
        f"{row['peak_mb']:>9.1f}{row['rss_mb_per_container']:>9.1f}"
        f"{row['pss_mb_per_container']:>9.1f}"
    )


def table(result: dict[str, Any]) -> str:
    seq, lines = result["sequential"], []
    kinds = [k for k in KINDS if k in seq]
    lines.append("ctr run --rm, wall time per container (ms)")
    lines.append(f"{'':34}{'median':>10}{'p90':>10}{'/runc':>8}")
    for key in kinds:
        ratio = seq[key]["median_ms"] / seq["runc"]["median_ms"]
        lines.append(
            f"  sequential {LABELS[key]:<22}{seq[key]['median_ms']:>10.1f}"
            f"{seq[key]['p90_ms']:>10.1f}{ratio:>8.2f}"
        )
    conc = result["concurrent"]
    for key in kinds:
        c = conc[key]
        ratio = c["median_ms"] / conc["runc"]["median_ms"]
        lines.append(
            f"  concurrency {c['concurrency']} {LABELS[key]:<19}{c['median_ms']:>10.1f}"
            f"{c['p90_ms']:>10.1f}{ratio:>8.2f}"
        )
    lines.append("")
    tp = result["throughput"]
    if tp:
        first = tp[kinds[0]]
        lines.append(
            f"containers/s through containerd, concurrency {first['concurrency']}, n={first['n']}"
        )
        lines.append(
            "  "
            + "   ".join(f"{LABELS[k]} {tp[k]['containers_per_s']:.1f}" for k in kinds)
            + f"   (anchor runwasi {RUNWASI_TASKS_PER_S:.0f} tasks/s)"
        )
        lines.append("")
    lines.append("shim daemon memory with N running containers (MB)")
    lines.append(
        f"  {'shim':<11}{'N':>4}{'procs':>7}{'RSS':>9}{'PSS':>9}{'peak':>9}"
        f"{'RSS/ctr':>9}{'PSS/ctr':>9}{'extra/ctr':>10}"
    )
    for kind in KINDS:
        rows = result["memory"].get(kind, [])
        for row in rows:
            extra = ""
            if row is not rows[0] and row["containers"] > rows[0]["containers"]:
                per = (row["rss_mb"] - rows[0]["rss_mb"]) / (
                    row["containers"] - rows[0]["containers"]
                )
                extra = f"{per:>10.2f}"
            lines.append(_memory_line(kind, row) + extra)
    lines.append(
        f"  anchor: runwasi wasmtime {RUNWASI_MB_PER_CONTAINER} MB per container; "
        "extra/ctr = RSS per container beyond the first"
    )
    return "\n".join(lines)


@contextlib.contextmanager
def _containerd_with(c8d: PrivateContainerd | None, name: str, value: str) -> Iterator[None]:
    """Run ``c8d`` (if any) with ``$name=value`` in its environment, which its shims inherit."""
    if c8d is None:
        yield
        return
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        c8d.start()
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
    try:
        yield
    finally:
        c8d.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20, help="sequential runs per shim (default 20)")
    p.add_argument("-c", "--concurrency", type=int, default=8, help="concurrency (default 8)")
    p.add_argument("--concurrent-n", type=int, default=40, help="runs at that concurrency")
    p.add_argument("-p", "--parallel", type=int, default=8, help="P for containers/s")
    p.add_argument(
        "--throughput-n", type=int, default=100, help="containers for containers/s (0 = skip)"
    )
    p.add_argument("--rss", default="1,10,50", help="running-container counts for memory")
    p.add_argument("--no-runc-memory", action="store_true", help="skip runc's memory rows")
    p.add_argument("--no-shared", action="store_true", help="skip the namespace-shared rows")
    p.add_argument(
        "--no-template-off",
        action="store_true",
        help="skip the per-pod rows with RUNWASI_PY_TEMPLATE=0 (every daemon spawned)",
    )
    p.add_argument(
        "--stdin",
        choices=("devnull", "open-pipe"),
        default="devnull",
        help="ctr's stdin: /dev/null (default) or an empty pipe kept open",
    )
    ns = p.parse_args(argv)
    if ns.stdin == "open-pipe":
        use_open_stdin()
    counts = [int(x) for x in ns.rss.split(",") if x]
    if ns.n < 1 or ns.concurrent_n < 1 or ns.concurrency < 1 or ns.throughput_n < 0:
        p.error("-n, --concurrent-n and -c must be at least 1; --throughput-n 0 or more")
    if any(c < 1 for c in counts):
        p.error("--rss: counts of running containers must be at least 1")

    with tempfile.TemporaryDirectory(prefix="ctr-bench-") as tmp:
        c8d = PrivateContainerd(
            Path(tmp) / "c8d", shim_dirs=[scripts_dir()], namespace="bench", log_level="info"
        )
        shared = None
        if not ns.no_shared:
            shared = PrivateContainerd(
                Path(tmp) / "c8s", shim_dirs=[scripts_dir()], namespace="bench", log_level="info"
            )
        templ = None
        if not ns.no_template_off:  # per-pod daemons, all spawned (docs/template.md)
            templ = PrivateContainerd(
                Path(tmp) / "c8t", shim_dirs=[scripts_dir()], namespace="bench", log_level="info"
            )
        with (
            c8d,
            _containerd_with(shared, "RUNWASI_PY_SHIM_GROUP", "namespace"),
            _containerd_with(templ, "RUNWASI_PY_TEMPLATE", "0"),
        ):
            images = Path(tmp) / "images"
            images.mkdir()
            build_images(c8d, images)
            c8ds = {"wasm": c8d}
            for kind, other in (("tpl_off", templ), ("shared", shared)):
                if other is not None:
                    for tar in sorted(images.glob("*.tar")):
                        other.import_image(tar)
                    c8ds[kind] = other
            c8ds["runc"] = c8d
            for kind, one in [*c8ds.items(), *c8ds.items()]:  # warm caches (page cache, ...)
                one_run(one, kind)
            print("sequential ...", file=sys.stderr)
            seq = sequential(c8ds, ns.n)
            print("concurrent ...", file=sys.stderr)
            conc = {
                k: concurrent(one, k, ns.concurrent_n, ns.concurrency) for k, one in c8ds.items()
            }
            print("throughput ...", file=sys.stderr)
            tput = {
                k: concurrent(one, k, ns.throughput_n, ns.parallel)
                for k, one in c8ds.items()
                if ns.throughput_n
            }
            print("memory ...", file=sys.stderr)
            mem = {"wasm": memory(c8d, "wasm", counts)}
            if templ is not None:
                mem["tpl_off"] = memory(templ, "tpl_off", counts)
            if shared is not None:
                mem["shared"] = memory(shared, "shared", counts)
            if not ns.no_runc_memory:
                mem["runc"] = memory(c8d, "runc", counts)
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "ctr_stdin": ns.stdin,
        "sequential": seq,
        "concurrent": conc,
        "throughput": tput,
        "memory": mem,
        "ratio_shared_sequential_median": (
            seq["shared"]["median_ms"] / seq["runc"]["median_ms"] if "shared" in seq else None
        ),
        "ratio_shared_concurrent_median": (
            conc["shared"]["median_ms"] / conc["runc"]["median_ms"] if "shared" in conc else None
        ),
        "ratio_sequential_median": seq["wasm"]["median_ms"] / seq["runc"]["median_ms"],
        "ratio_sequential_p90": seq["wasm"]["p90_ms"] / seq["runc"]["p90_ms"],
        "ratio_concurrent_median": conc["wasm"]["median_ms"] / conc["runc"]["median_ms"],
        "ratio_concurrent_p90": conc["wasm"]["p90_ms"] / conc["runc"]["p90_ms"],
        "anchors": {
            "runwasi_tasks_per_s": RUNWASI_TASKS_PER_S,
            "runwasi_mb_per_container": RUNWASI_MB_PER_CONTAINER,
        },
    }
    print(table(result))
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"ctr_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
