"""Wall and CPU time of the shim's ``start`` and ``delete`` subcommands, beside a bare interpreter.

containerd runs ``<shim> … start`` for every container (and waits for it), so its wall time
is on the critical path of ``ctr run``; Go shims take tens of ms, the target here is under
60 ms and at most 1.5x a bare ``python -c pass`` (issue 10). ``delete`` is containerd's
cleanup after a shim died. What it measures, interleaved round by round so every variant
sees the same machine:

- ``python -c pass``: the anchor, the cost of any Python process (site and .pth included);
- ``python -S -c pass``: the interpreter without ``site``, the floor of a lean entry script;
- ``start <shim>``: the shim binary executed directly, as containerd runs it (bundle with
  config.json, fresh socket, detached daemon); ``<shim>`` is ``shipped``
  (``containerd-shim-pywasmtime-v1`` beside the interpreter, its daemon forked by the pod
  template, the default), ``shipped, tpl off`` (the same with ``RUNWASI_PY_TEMPLATE=0``:
  the daemon is spawned) and any ``--shim NAME=PATH``;
- ``delete <shim>``: the same binary's ``delete`` on that bundle once its daemon was stopped
  (a dead shim's leftovers: the ``address`` file, no live socket);
- ``start python -c entry``: ``shim_main("runwasi_py.wasmtime._shim:PyWasmtimeShim")``
  through ``python -c`` with the full ``site``, i.e. what pip's console script runs.

Wall time is ``perf_counter`` around the process; CPU time is its user + system time
(``RUSAGE_CHILDREN`` around it: the daemon ``start`` spawns is never waited for by it, so it
is not counted). Every daemon a ``start`` leaves (found by its working directory, the
bundle) is stopped (SIGTERM) before ``delete``; the templates are ended at the end.
Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, so the tree stays clean) as on
any normal install; ``--no-bytecode-cache`` measures with ``PYTHONDONTWRITEBYTECODE=1``
instead, where every run compiles every module again.

Run (one command):

    .venv/bin/python benchmarks/start_bench.py          # 20 rounds
    .venv/bin/python benchmarks/start_bench.py -n 50 --shim before=/tmp/old/shim-binary

Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from runwasi_py._template.find import end_templates

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 60.0
TARGET_RATIO = 1.5  # issue 10: `start` <= 1.5x a bare `python -c pass`, same run
SHIM_REF = "runwasi_py.wasmtime._shim:PyWasmtimeShim"
SHIPPED = "shipped"
TEMPLATE_OFF = ", tpl off"
"""Suffix of a shim variant run with ``RUNWASI_PY_TEMPLATE=0``: every ``start`` spawns."""


def plain_variants(python: str) -> dict[str, list[str]]:
    """name -> command of the variants that are a plain process (no bundle, no daemon)."""
    return {
        "python -c pass": [python, "-c", "pass"],
        "python -S -c pass": [python, "-S", "-c", "pass"],
    }


def shim_variants(python: str, extra: list[str]) -> dict[str, list[str]]:
    """shim name -> command prefix run with containerd's flags and ``start``/``delete``."""
    entry = f"from runwasi_py._launch.main import shim_main; shim_main({SHIM_REF!r})"
    out: dict[str, list[str]] = {}
    script = Path(python).parent / "containerd-shim-pywasmtime-v1"
    if script.exists():
        out[SHIPPED] = [str(script)]
        out[SHIPPED + TEMPLATE_OFF] = [str(script)]
    for item in extra:
        name, sep, path = item.partition("=")
        if not sep or not name or not os.access(path, os.X_OK):
            raise SystemExit(f"--shim {item!r}: want NAME=PATH of an executable shim binary")
        out[name] = [path]
    out["python -c entry"] = [python, "-c", entry]
    return out


def daemons_in(folder: Path, *, below: bool = False) -> list[int]:
    """Pids whose working directory is ``folder`` (the daemon of one run: its bundle), or
    (``below``) anywhere under it. Not by ``-id`` in the argv: a daemon forked by the pod
    template shows the template's command line."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if cwd == str(folder) or (below and cwd.startswith(f"{folder}/")):
            found.append(int(entry))
    return found


def spawned_daemons(bundle: Path, timeout: float = 2.0) -> list[int]:
    """The daemon a ``start`` left, looked for until it shows (right after ``start`` exits,
    a freshly spawned or forked daemon may not have entered its bundle yet)."""
    deadline = time.monotonic() + timeout
    while True:
        found = daemons_in(bundle)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.002)


def stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.01)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def bench_env(pycache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


ENV: dict[str, str] = dict(os.environ)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, subprocess.CompletedProcess[bytes]]:
    """(wall s, CPU s, result) of one process run to its exit."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, env=env or ENV, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    return time.perf_counter() - t0, _children_cpu() - cpu0, result


def one_shim(
    prefix: list[str], work: Path, sockdir: Path, template: bool = True
) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, CPU) of start, (wall, CPU) of delete) on a fresh bundle. ``start``'s CPU is
    its own (a waited-for child), not the daemon's it leaves."""
    cid = "bench-" + uuid.uuid4().hex[:12]
    bundle = work / cid
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text('{"process": {"args": ["/hello.wasm"]}}')
    env = dict(ENV, RUNWASI_PY_SOCKET_DIR=str(sockdir), TTRPC_ADDRESS="/nonexistent")
    env["RUNWASI_PY_TEMPLATE"] = "1" if template else "0"
    flags = ["-namespace", "bench", "-address", "/bench.sock", "-id", cid]
    wall, cpu, result = timed([*prefix, *flags, "start"], bundle, env)
    stop(spawned_daemons(bundle))
    if result.returncode != 0 or not result.stdout.startswith(b"unix://") or result.stderr:
        raise RuntimeError(f"start failed: {prefix}: {result.stdout!r} {result.stderr!r}")
    dwall, dcpu, dresult = timed([*prefix, *flags, "-bundle", str(bundle), "delete"], bundle, env)
    if dresult.returncode != 0 or dresult.stderr:
        raise RuntimeError(f"delete failed: {prefix}: {dresult.stdout!r} {dresult.stderr!r}")
    shutil.rmtree(bundle, ignore_errors=True)
    return (wall, cpu), (dwall, dcpu)


def summarize(samples: list[tuple[float, float]]) -> dict[str, float]:
    ms = sorted(s[0] * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {
        "median_ms": statistics.median(ms),
        "p90_ms": p90,
        "min_ms": ms[0],
        "cpu_median_ms": statistics.median(s[1] * 1000 for s in samples),
        "n": len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--shim",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another shim binary to measure in the same rounds (e.g. an older install)",
    )
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="run with PYTHONDONTWRITEBYTECODE=1"
    )
    args = parser.parse_args()

    plain = plain_variants(args.python)
    shims = shim_variants(args.python, args.shim)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in plain}
    for name in shims:
        samples[f"start {name}"], samples[f"delete {name}"] = [], []
    with (
        tempfile.TemporaryDirectory(prefix="rwp-bench-") as work_dir,
        tempfile.TemporaryDirectory(prefix="rwps-", dir="/tmp") as sock_dir,
    ):
        work, sockdir = Path(work_dir), Path(sock_dir)
        ENV.clear()
        ENV.update(bench_env(None if args.no_bytecode_cache else work / "pycache"))
        try:
            for round_ in range(args.n + 1):  # round 0 warms up: .pyc files, page cache
                for name, command in plain.items():
                    wall, cpu, result = timed(command)
                    if result.returncode != 0:
                        raise RuntimeError(f"{command} failed: {result.stderr!r}")
                    if round_:
                        samples[name].append((wall, cpu))
                for name, prefix in shims.items():
                    on = not name.endswith(TEMPLATE_OFF)
                    start, delete = one_shim(prefix, work, sockdir, on)
                    if round_:
                        samples[f"start {name}"].append(start)
                        samples[f"delete {name}"].append(delete)
        finally:  # whatever a round missed: every daemon's bundle is under work/
            stop(daemons_in(work, below=True))
            end_templates(sockdir)  # one per shim binary (a different key each)

    results = {name: summarize(s) for name, s in samples.items()}
    anchor = results["python -c pass"]
    cache = "no bytecode cache" if args.no_bytecode_cache else "bytecode cached"
    print(
        f"start/delete wall and CPU time, {args.n} rounds, interleaved, {cache}, load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine); targets: "
        f"start < {TARGET_MS:.0f} ms and <= {TARGET_RATIO}x `python -c pass`"
    )
    print(
        f"{'variant':<28}{'median ms':>10}{'p90 ms':>8}{'min ms':>8}{'CPU ms':>8}"
        f"{'x python':>10}{'CPU x':>7}"
    )
    for name, r in results.items():
        ratio = r["median_ms"] / anchor["median_ms"]
        cpu_ratio = r["cpu_median_ms"] / anchor["cpu_median_ms"]
        print(
            f"{name:<28}{r['median_ms']:>10.1f}{r['p90_ms']:>8.1f}{r['min_ms']:>8.1f}"
            f"{r['cpu_median_ms']:>8.1f}{ratio:>10.2f}{cpu_ratio:>7.2f}"
        )
    shipped = results.get(f"start {SHIPPED}") or results["start python -c entry"]
    ratio = shipped["median_ms"] / anchor["median_ms"]
    verdict = "holds" if ratio <= TARGET_RATIO else "missed"
    print(
        f"shipped `start` / `python -c pass`: {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict})"
    )
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "benchmark": "start_bench",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": args.python,
        "rounds": args.n,
        "load": os.getloadavg()[0],
        "bytecode_cache": not args.no_bytecode_cache,
        "target_ms": TARGET_MS,
        "shims": shims,
        "results": results,
    }
    path = out_dir / ("start_bench_nocache.json" if args.no_bytecode_cache else "start_bench.json")
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
