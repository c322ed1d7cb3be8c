"""Wall time of the shim's ``start`` subcommand, beside a bare interpreter start.

containerd runs ``<shim> … start`` for every container (and waits for it), so its wall time
is on the critical path of ``ctr run``; Go shims take tens of ms, the target here is under
60 ms. What it measures, interleaved round by round so every variant sees the same machine:

- ``python -c pass``: the anchor, the cost of any Python process;
- ``import runwasi_py``: the package import alone (what every entry pays today);
- ``console script``: the shipped ``containerd-shim-pywasmtime-v1 … start``, as containerd
  runs it (bundle with config.json, fresh socket, detached daemon);
- ``import-path entry``: ``shim_main("runwasi_py.wasmtime._shim:PyWasmtimeShim")``, which
  does not import the shim module on ``start``;
- ``projected lazy __init__``: the same with the ``runwasi_py`` package's ``__init__``
  bypassed, i.e. what ``start`` costs once the package imports lazily.

Every daemon a ``start`` spawns is stopped (SIGTERM) before the next round. Bytecode is
cached (in a temporary ``PYTHONPYCACHEPREFIX``, so the tree stays clean) as on any normal
install; ``--no-bytecode-cache`` measures with ``PYTHONDONTWRITEBYTECODE=1`` instead, where
every run compiles every module again.

Run (one command):

    .venv/bin/python benchmarks/start_bench.py          # 20 rounds
    .venv/bin/python benchmarks/start_bench.py -n 50

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
STUB_PACKAGE = (
    "import sys, types; m = types.ModuleType('runwasi_py'); "
    f"m.__path__ = [{str(ROOT / 'runwasi_py')!r}]; sys.modules['runwasi_py'] = m; "
)


TEMPLATE_OFF = "console script, tpl off"
"""The shipped script with ``RUNWASI_PY_TEMPLATE=0``: every ``start`` spawns its daemon."""


def variants(python: str) -> dict[str, list[str] | None]:
    """name -> command prefix (None: the variant is a plain command, flags not appended)."""
    script = Path(python).parent / "containerd-shim-pywasmtime-v1"
    entry = f"from runwasi_py._launch.main import shim_main; shim_main({SHIM_REF!r})"
    out: dict[str, list[str] | None] = {
        "python -c pass": None,
        "import runwasi_py": None,
    }
    if script.exists():
        out["console script"] = [python, str(script)]
        out[TEMPLATE_OFF] = [python, str(script)]
    out["import-path entry"] = [python, "-c", entry]
    out["projected lazy __init__"] = [python, "-c", STUB_PACKAGE + entry]
    return out


def plain_command(name: str, python: str) -> list[str]:
    return {
        "python -c pass": [python, "-c", "pass"],
        "import runwasi_py": [python, "-c", "import runwasi_py"],
    }[name]


def daemons_in(bundle: Path) -> list[int]:
    """Pids whose working directory is ``bundle`` (the daemon of one run: a daemon forked by
    the template shows the template's command line, so not by ``-id`` in its argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/cwd") == str(bundle):
                found.append(int(entry))
    return found


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


def one_start(prefix: list[str], work: Path, sockdir: Path, template: bool = True) -> float:
    cid = "bench-" + uuid.uuid4().hex[:12]
    bundle = work / cid
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text('{"process": {"args": ["/hello.wasm"]}}')
    env = dict(ENV, RUNWASI_PY_SOCKET_DIR=str(sockdir), TTRPC_ADDRESS="/nonexistent")
    env["RUNWASI_PY_TEMPLATE"] = "1" if template else "0"
    command = [*prefix, "-namespace", "bench", "-address", "/bench.sock", "-id", cid, "start"]
    c0, t0 = _children_cpu(), time.perf_counter()
    result = subprocess.run(
        command, cwd=bundle, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - t0
    CPU.append(_children_cpu() - c0)
    stop(daemons_in(bundle))
    if result.returncode != 0 or not result.stdout.startswith(b"unix://") or result.stderr:
        raise RuntimeError(f"start failed: {command}: {result.stdout!r} {result.stderr!r}")
    shutil.rmtree(bundle, ignore_errors=True)
    return elapsed


def one_plain(command: list[str]) -> float:
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(command, env=ENV, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    elapsed = time.perf_counter() - t0
    CPU.append(_children_cpu() - c0)
    return elapsed


CPU: list[float] = []
"""CPU seconds (user + system) of the last measured process, appended per run."""


def _children_cpu() -> float:
    """CPU of our waited-for children so far: ``start`` itself, not the daemon it leaves."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def summarize(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {"median_ms": statistics.median(ms), "p90_ms": p90, "min_ms": ms[0], "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="run with PYTHONDONTWRITEBYTECODE=1"
    )
    args = parser.parse_args()

    table = variants(args.python)
    samples: dict[str, list[float]] = {name: [] for name in table}
    cpu: dict[str, list[float]] = {name: [] for name in table}
    with (
        tempfile.TemporaryDirectory(prefix="rwp-bench-") as work_dir,
        tempfile.TemporaryDirectory(prefix="rwps-", dir="/tmp") as sock_dir,
    ):
        work, sockdir = Path(work_dir), Path(sock_dir)
        ENV.clear()
        ENV.update(bench_env(None if args.no_bytecode_cache else work / "pycache"))
        for name, prefix in table.items():  # warm-up: .pyc files, page cache
            (one_plain(plain_command(name, args.python)) if prefix is None
             else one_start(prefix, work, sockdir, name != TEMPLATE_OFF))  # fmt: skip
        for _ in range(args.n):
            for name, prefix in table.items():
                if prefix is None:
                    samples[name].append(one_plain(plain_command(name, args.python)))
                else:
                    on = name != TEMPLATE_OFF
                    samples[name].append(one_start(prefix, work, sockdir, on))
                cpu[name].append(CPU[-1])
        end_templates(sockdir)  # one per prefix (a different key each)

    results = {name: summarize(s) for name, s in samples.items()}
    for name, r in results.items():
        r["cpu_ms_median"] = statistics.median(cpu[name]) * 1000
    anchor = results["python -c pass"]["median_ms"]
    cache = "no bytecode cache" if args.no_bytecode_cache else "bytecode cached"
    print(
        f"start wall time, {args.n} rounds, interleaved, {cache}, load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine); targets: "
        f"< {TARGET_MS:.0f} ms and <= {TARGET_RATIO}x `python -c pass`"
    )
    print(
        f"{'variant':<26}{'median ms':>11}{'p90 ms':>9}{'min ms':>9}{'x python':>10}{'CPU ms':>8}"
    )
    for name, r in results.items():
        ratio = r["median_ms"] / anchor
        print(
            f"{name:<26}{r['median_ms']:>11.1f}{r['p90_ms']:>9.1f}{r['min_ms']:>9.1f}{ratio:>10.2f}"
            f"{r['cpu_ms_median']:>8.1f}"
        )
    print(f"load average at the end {os.getloadavg()}")
    shipped = results.get("console script") or results["import-path entry"]
    ratio = shipped["median_ms"] / anchor
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
        "bytecode_cache": not args.no_bytecode_cache,
        "target_ms": TARGET_MS,
        "results": results,
    }
    path = out_dir / ("start_bench_nocache.json" if args.no_bytecode_cache else "start_bench.json")
    path.write_text(json.dumps(record, indent=2))
    print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
