"""Pods through containerd's CRI plugin: pywasmtime pods vs runc pods, side by side.

What it measures, in one run against one private CRI-enabled containerd
(``PrivateContainerd(cri=True)``, driven by ``runwasi_py.containerd.cri.CriClient`` as
kubelet would):

1. Pod start: wall time of RunPodSandbox + CreateContainer + StartContainer until the
   container has exited (ContainerStatus EXITED), per pod; a pywasmtime pod running the
   bundled hello.wasm vs a runc pod running a native hello (the host's /bin/echo and its
   libraries), interleaved so both see the same machine. Teardown is outside the timing.
2. Memory per running pod: PSS of the pod's shim process tree (the shim daemon and every
   descendant: for runc the pause and container processes too), with ``--running`` pods of
   each kind running a sleeping container (a wasm module sleeping in 50 ms poll_oneoff steps;
   the host's /bin/sleep).

Anchor (issue "The pod boundary", measured through containerd 1.6's CRI): 379 ms vs 244 ms
per pod (1.56x) and 24.9 MB vs 3.8 MB PSS per pod.

Run (one command, as root, containerd and the CNI plugins installed):

    .venv/bin/python benchmarks/cri_bench.py                       # n=10, 5 running pods
    .venv/bin/python benchmarks/cri_bench.py \
        --containerd-bin /var/cache/runwasi-py/containerd-2.3.4/bin

Results are saved as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from ctr_bench import (
    NATIVE_HELLO,
    NATIVE_SLEEP,
    WASM_HELLO,
    WASM_SLEEP,
    _containerd_with,
    build_images,
)

from runwasi_py.containerd import CRI_NAMESPACE, PodCgroup, PrivateContainerd
from runwasi_py.containerd.cri import (
    CriClient,
    CriError,
    container_config,
    pb,
    pod_config,
    wait_exited,
)
from runwasi_py.examples._demo import scripts_dir

ANCHOR_START_MS = {"pywasmtime": 379.0, "runc": 244.0}
ANCHOR_PSS_MB = {"pywasmtime": 24.9, "runc": 3.8}
HELLO = {"pywasmtime": WASM_HELLO, "runc": NATIVE_HELLO}
SLEEP = {"pywasmtime": WASM_SLEEP, "runc": NATIVE_SLEEP}
SHIM = {"pywasmtime": "containerd-shim-pywasmtime-v1", "runc": "containerd-shim-runc-v2"}
RUNTIME = {"pywasmtime": "pywasmtime", "runc": "runc", "pywasmtime, tpl off": "pywasmtime"}
for _table in (HELLO, SLEEP, SHIM):
    _table["pywasmtime, tpl off"] = _table["pywasmtime"]


TEMPLATE_OFF = "pywasmtime, tpl off"
"""pywasmtime pods through a second harness with ``RUNWASI_PY_TEMPLATE=0`` (``--template-off``)."""


class Bench:
    """The harnesses, their clients, and the pods made (removed by :meth:`remove_all`).

    Kind -> harness: ``pywasmtime`` and ``runc`` on the main one (its default: the pod
    daemon template on), :data:`TEMPLATE_OFF` on the second one when there is one.
    """

    def __init__(
        self, c8ds: dict[str, tuple[PrivateContainerd, CriClient]], host_network: bool
    ) -> None:
        self.c8ds = c8ds
        self.host_network = host_network
        self.pods: list[tuple[str, str, PodCgroup]] = []

    def kinds(self) -> list[str]:
        return list(self.c8ds)

    def pod(self, kind: str) -> tuple[str, pb.PodSandboxConfig]:
        c8d, cri = self.c8ds[kind]
        uid = uuid.uuid4().hex
        cgroup = c8d.pod_cgroup(f"pod{uid}")
        cfg = pod_config(
            f"bench-{kind.split(',')[0]}-{uid[:8]}",
            log_directory=c8d.paths.pod_logs / uid,
            cgroup_parent=cgroup.path,
            host_network=self.host_network,
            uid=uid,
        )
        pod_id = cri.run_pod_sandbox(cfg, RUNTIME[kind])
        self.pods.append((kind, pod_id, cgroup))
        return pod_id, cfg

    def start_pod(self, kind: str, image: str) -> tuple[str, str]:
        pod_id, cfg = self.pod(kind)
        cri = self.c8ds[kind][1]
        cid = cri.create_container(pod_id, container_config("app", image), cfg)
        cri.start_container(cid)
        return pod_id, cid

    def remove(self, pod_id: str) -> None:
        for kind, pid, cgroup in list(self.pods):
            if pid == pod_id:
                cri = self.c8ds[kind][1]
                with contextlib.suppress(CriError):
                    cri.stop_pod_sandbox(pod_id)
                    cri.remove_pod_sandbox(pod_id)
                cgroup.remove()
                self.pods.remove((kind, pid, cgroup))

    def remove_all(self) -> None:
        for _, pod_id, _ in list(self.pods):
            self.remove(pod_id)


def pod_start(bench: Bench, n: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {kind: [] for kind in bench.kinds()}
    daemon_cpu: dict[str, list[float]] = {kind: [] for kind in bench.kinds()}
    starts_cpu: dict[str, list[float]] = {kind: [] for kind in bench.kinds()}
    for _ in range(n):
        for kind in times:  # interleaved
            c8d = bench.c8ds[kind][0]
            reaped = _children_cpu_ms(c8d.pid)
            t0 = time.perf_counter()
            pod_id, cid = bench.start_pod(kind, HELLO[kind])
            status = wait_exited(bench.c8ds[kind][1], cid, timeout=60)
            times[kind].append((time.perf_counter() - t0) * 1000)
            if status.exit_code != 0:
                raise SystemExit(f"{kind} hello exited {status.exit_code}: {status.message}")
            shim = _shim_of(c8d, pod_id)
            if shim is not None:
                with contextlib.suppress(psutil.Error):
                    t = shim.cpu_times()
                    daemon_cpu[kind].append((t.user + t.system) * 1000)
            # containerd reaps its shims' start (and runc's) invocations: their CPU
            starts_cpu[kind].append(_children_cpu_ms(c8d.pid) - reaped)
            bench.remove(pod_id)
    out: dict[str, dict[str, float]] = {}
    for kind, ms in times.items():
        out[kind] = _summary(ms)
        out[kind]["daemon_cpu_ms_median"] = statistics.median(daemon_cpu[kind] or [0.0])
        out[kind]["containerd_children_cpu_ms_median"] = statistics.median(starts_cpu[kind])
    return out


def _children_cpu_ms(pid: int | None) -> float:
    """CPU of the reaped children of ``pid`` (cutime + cstime), in ms."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) * 1000 / os.sysconf("SC_CLK_TCK")


def _summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "n": len(ms),
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "min_ms": ordered[0],
    }


def _shim_of(c8d: PrivateContainerd, pod_id: str) -> psutil.Process | None:
    """The pod's shim daemon, by its cwd (a daemon forked by the template has its argv)."""
    for pid, started_for in c8d.shim_daemons().items():
        if started_for == pod_id:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(pid)
    return None


def _template_of(shim: psutil.Process) -> psutil.Process | None:
    """The template that forked ``shim`` (its parent, serving from cwd ``/``), if any."""
    with contextlib.suppress(psutil.Error):
        parent = shim.parent()
        if (
            parent is not None
            and parent.cwd() == "/"
            and "RUNWASI_PY_TEMPLATE_SERVE" in (parent.environ())
        ):
            return parent
    return None


def _charged_mb(c8d: PrivateContainerd, pod_id: str, shim: psutil.Process) -> float | None:
    """What the pod's daemon cgroup is charged (v1 ``memory.usage_in_bytes``, v2
    ``memory.current``): the daemon's own pages, not the template's it shares."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{shim.pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "runwasi-py-shim-" not in path:
                continue
            if controllers == "":
                return int(Path(f"/sys/fs/cgroup{path}/memory.current").read_text()) / 2**20
            if "memory" in controllers.split(","):
                usage = Path(f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")
                return int(usage.read_text()) / 2**20
    return None


def _pss(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            total += getattr(p.memory_full_info(), "pss", 0)
    return total / (1024 * 1024)


def memory(bench: Bench, running: int) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in bench.kinds():
        c8d, cri = bench.c8ds[kind]
        pods = [bench.start_pod(kind, SLEEP[kind]) for _ in range(running)]
        time.sleep(1.0)  # let start-up allocations settle (not a measurement)
        per_pod, charged, forked, templates = [], [], 0, {}
        for pod_id, cid in pods:
            if cri.container_status(cid).state != pb.CONTAINER_RUNNING:
                raise SystemExit(f"{kind} sleeper {cid[:12]} is not running")
            shim = _shim_of(c8d, pod_id)
            if shim is None:
                raise SystemExit(f"no {SHIM[kind]} found for pod {pod_id[:12]}")
            per_pod.append(_pss([shim, *shim.children(recursive=True)]))
            mb = _charged_mb(c8d, pod_id, shim)
            if mb is not None:
                charged.append(mb)
            template = _template_of(shim)
            if template is not None:
                forked += 1
                templates[template.pid] = template
        out[kind] = {
            "pods": running,
            "pss_mb_per_pod_median": statistics.median(per_pod),
            "pss_mb_total": sum(per_pod),
            "forked_by_template": forked,
            "template_pss_mb": _pss(list(templates.values())) if templates else 0.0,
            "daemon_cgroup_charged_mb_median": statistics.median(charged) if charged else None,
        }
        for pod_id, _ in pods:
            bench.remove(pod_id)
    return out


def table(result: dict[str, Any]) -> str:
    s, m = result["pod_start"], result["memory"]
    ratio = s["pywasmtime"]["median_ms"] / s["runc"]["median_ms"]
    a = ANCHOR_START_MS
    rows = [
        f"containerd {result['containerd']}, {result['network']} network, n={s['runc']['n']}",
        "| what | pywasmtime pod | runc pod | ratio | anchor |",
        "|---|---|---|---|---|",
        f"| pod start, median | {s['pywasmtime']['median_ms']:.0f} ms | "
        f"{s['runc']['median_ms']:.0f} ms | {ratio:.2f}x | "
        f"{a['pywasmtime']:.0f} vs {a['runc']:.0f} ms ({a['pywasmtime'] / a['runc']:.2f}x) |",
        f"| pod start, p90 | {s['pywasmtime']['p90_ms']:.0f} ms | {s['runc']['p90_ms']:.0f} ms | "
        f"{s['pywasmtime']['p90_ms'] / s['runc']['p90_ms']:.2f}x | |",
        f"| PSS per running pod, median of {m['runc']['pods']} | "
        f"{m['pywasmtime']['pss_mb_per_pod_median']:.1f} MB | "
        f"{m['runc']['pss_mb_per_pod_median']:.1f} MB | "
        f"{m['pywasmtime']['pss_mb_per_pod_median'] / m['runc']['pss_mb_per_pod_median']:.1f}x | "
        f"{ANCHOR_PSS_MB['pywasmtime']} vs {ANCHOR_PSS_MB['runc']} MB |",
    ]
    rows.extend(
        f"| {kind}: CPU per pod start, daemon (its own, before teardown) "
        f"{s[kind]['daemon_cpu_ms_median']:.0f} ms, containerd's reaped children (start, "
        f"runc) {s[kind]['containerd_children_cpu_ms_median']:.0f} ms (medians) | | | | |"
        for kind in s
    )
    off = TEMPLATE_OFF
    if off in s:
        r = s[off]["median_ms"] / s["runc"]["median_ms"]
        rows.append(f"| pod start, median, {off} | {s[off]['median_ms']:.0f} ms | | {r:.2f}x | |")
        rows.append(
            f"| PSS per running pod, {off} | {m[off]['pss_mb_per_pod_median']:.1f} MB | | | |"
        )
    for kind in ("pywasmtime", off):
        if kind in m:
            k = m[kind]
            rows.append(
                f"| {kind}: pods forked by a template {k['forked_by_template']}/{k['pods']}, "
                f"template PSS {k['template_pss_mb']:.1f} MB, daemon cgroup charged "
                f"{k['daemon_cgroup_charged_mb_median'] or 0:.1f} MB per pod (median) | | | | |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=10, help="pods started per kind (default 10)")
    p.add_argument("--running", type=int, default=5, help="running pods per kind for memory")
    p.add_argument("--containerd-bin", default=None, help="containerd build folder")
    p.add_argument("--host-network", action="store_true", help="host-network pods (no CNI)")
    p.add_argument(
        "--template-off",
        action="store_true",
        help=f"also {TEMPLATE_OFF!r} pods (a second containerd with RUNWASI_PY_TEMPLATE=0)",
    )
    ns = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cri-bench-") as tmp:

        def harness(name: str) -> PrivateContainerd:
            return PrivateContainerd(
                Path(tmp) / name,
                shim_dirs=[scripts_dir()],
                namespace=CRI_NAMESPACE,
                log_level="info",
                containerd_bin=ns.containerd_bin,
                cri=True,
            )

        c8d = harness("c8d")
        off = harness("c8o") if ns.template_off else None
        with (
            c8d,
            CriClient(c8d.address) as cri,
            _containerd_with(off, "RUNWASI_PY_TEMPLATE", "0"),
            contextlib.ExitStack() as stack,
        ):
            cri.wait_ready()
            images = Path(tmp) / "images"
            images.mkdir()
            build_images(c8d, images)
            c8ds = {"pywasmtime": (c8d, cri)}
            if off is not None:
                off_cri = stack.enter_context(CriClient(off.address))
                off_cri.wait_ready()
                for tar in sorted(images.glob("*.tar")):
                    off.import_image(tar)
                c8ds[TEMPLATE_OFF] = (off, off_cri)
            c8ds["runc"] = (c8d, cri)
            bench = Bench(c8ds, ns.host_network)
            try:
                pod_start(bench, 2)  # warm caches (page cache, compile cache)
                print("pod start ...", file=sys.stderr)
                start = pod_start(bench, ns.n)
                print("memory ...", file=sys.stderr)
                mem = memory(bench, ns.running)
            finally:
                bench.remove_all()
            version = str(c8d.version)
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "containerd": version,
        "network": "host" if ns.host_network else "cni",
        "pod_start": start,
        "memory": mem,
        "anchors": {"pod_start_ms": ANCHOR_START_MS, "pss_mb_per_pod": ANCHOR_PSS_MB},
    }
    result["loadavg_end"] = os.getloadavg()
    print(table(result))
    print(f"load average at the end {result['loadavg_end']}")
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"cri_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
