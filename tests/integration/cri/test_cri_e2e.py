"""End to end through containerd's CRI plugin, driven by our own CRI client as kubelet would.

Runs against each containerd version of the session (1.6 and 2.3). Pods use runtime handler
``pywasmtime`` (our shim) unless a test says otherwise; where a test allows, pods are shared
(one host-network pod and one CNI pod per module) to keep the suite short.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._cgroups._hierarchy import read_proc_cgroup
from runwasi_py._template.find import template_pids
from runwasi_py.containerd import PrivateContainerd
from runwasi_py.containerd._cleanup import mounts_under
from runwasi_py.containerd._network import bridge_name
from runwasi_py.containerd._podcgroup import cgroup_mounts, processes_in
from runwasi_py.containerd.cri import CriClient, CriError, pb, wait_exited
from tests.integration._ctr import wait_for
from tests.integration._images import IMAGE_ENV, PROBE
from tests.integration.cri._images import GROW, NATIVE_C
from tests.integration.cri._pods import RUNC, Pod, Pods

pytestmark = pytest.mark.containerd

SHIM = b"containerd-shim-pywasmtime-v1"
EXIT_SIGTERM = 128 + 15
EXIT_SIGKILL = 128 + 9


@pytest.fixture(scope="module")
def host_pod(pods: Pods) -> Pod:
    """A host-network wasm pod that many tests add containers to."""
    return pods.run("hostnet")


@pytest.fixture(scope="module")
def cni_pod(pods: Pods) -> Pod:
    """A wasm pod on the harness's CNI bridge."""
    return pods.run("cni", host_network=False)


def shim_daemons(c8d: PrivateContainerd) -> dict[int, str]:
    """Live shim daemons of this containerd, as {pid: the id they were started for}."""
    return c8d.shim_daemons()


# -- the harness -----------------------------------------------------------------------------


def test_cri_answers_with_the_harness_version_and_is_ready(
    cri: CriClient, cri_c8d: PrivateContainerd
) -> None:
    assert str(cri_c8d.version) in cri.version().runtime_version
    conditions = {c.type: c.status for c in cri.status().status.conditions}
    # 2.2+ adds ContainerdHasNoDeprecationWarnings (False on a cgroup v1 host).
    assert (conditions["RuntimeReady"], conditions["NetworkReady"]) == (True, True)


def test_sandbox_image_is_the_local_pause_build(cri: CriClient, cri_c8d: PrivateContainerd) -> None:
    cfg = cri_c8d.paths.config.read_text()
    ref = next(line.split('"')[1] for line in cfg.splitlines() if "pause:" in line)
    image = cri.image_status(ref)
    assert image is not None, f"{ref} not known to CRI"
    assert ref in image.repo_tags


# -- networks --------------------------------------------------------------------------------


def test_host_network_pod_runs_a_wasm_container(host_pod: Pod) -> None:
    status = host_pod.run("hello", PROBE)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert [(r.stream, r.text) for r in host_pod.log("hello")] == [("stdout", "hello from wasm")]
    assert host_pod.cri.pod_sandbox_status(host_pod.id).status.network.ip == ""


def test_cni_pod_gets_an_address_on_the_harness_bridge(
    cni_pod: Pod, cri_c8d: PrivateContainerd
) -> None:
    ip = ipaddress.ip_address(cni_pod.cri.pod_sandbox_status(cni_pod.id).status.network.ip)
    conflist = json.loads(next(cri_c8d.paths.cni_conf_dir.glob("*.conflist")).read_text())
    subnet = ipaddress.ip_network(conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"])
    assert ip in subnet
    assert Path("/sys/class/net", bridge_name(cri_c8d.paths)).exists()
    status = cni_pod.run("hello", PROBE)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert [r.text for r in cni_pod.log("hello")] == ["hello from wasm"]


# -- what a container gets and gives ----------------------------------------------------------


def test_logs_tag_stdout_and_stderr(host_pod: Pod) -> None:
    status = host_pod.run("stdio", PROBE, args=["stdio"])
    assert status.exit_code == 0
    records = host_pod.log("stdio")
    assert sorted((r.stream, r.text) for r in records) == [
        ("stderr", "to stderr"),
        ("stdout", "to stdout"),
    ]
    assert all(not r.partial and r.timestamp.endswith("Z") for r in records)


def test_argv_comes_from_the_container_config(host_pod: Pod) -> None:
    status = host_pod.run(
        "argv", PROBE, command=["/probe.wasm"], args=["args", "two words", "--flag=x"]
    )
    assert status.exit_code == 0
    assert [r.text for r in host_pod.log("argv")] == ["two words", "--flag=x"]


def test_env_comes_from_image_and_config_and_none_from_the_shim(
    host_pod: Pod, cri_c8d: PrivateContainerd
) -> None:
    status = host_pod.run("env", PROBE, args=["env"], env={"GREETING": "hi there"})
    assert status.exit_code == 0
    lines = [r.text for r in host_pod.log("env")]
    assert "GREETING=hi there" in lines
    assert IMAGE_ENV in lines
    assert cri_c8d.pid is not None
    daemon_env = Path(f"/proc/{cri_c8d.pid}/environ").read_bytes().split(b"\0")
    # containerd's environment (which its shims inherit) must not reach the guest; CRI
    # itself may add PATH and HOSTNAME.
    names = {e.split(b"=", 1)[0].decode() for e in daemon_env if e} - {"PATH", "HOSTNAME"}
    leaked = [line for line in lines if line.split("=", 1)[0] in names]
    assert leaked == []


def test_exit_reasons_completed_error_and_oomkilled(host_pod: Pod) -> None:
    ok = host_pod.run("exit0", PROBE, args=["exit", "0"])
    assert (ok.exit_code, ok.reason) == (0, "Completed")
    err = host_pod.run("exit3", PROBE, args=["exit", "3"])
    assert (err.exit_code, err.reason) == (3, "Error")
    limit = pb.LinuxContainerResources(memory_limit_in_bytes=32 * 1024 * 1024)
    oom = host_pod.run("grow", GROW, resources=limit)
    assert oom.reason == "OOMKilled", (oom.exit_code, oom.reason, host_pod.log("grow"))
    assert oom.exit_code != 0


def test_one_shim_process_serves_the_whole_pod(pods: Pods, cri_c8d: PrivateContainerd) -> None:
    pod = pods.run("oneshim")
    pod.start("spin1", PROBE, args=["spin"])
    pod.start("spin2", PROBE, args=["spin"])
    status = pod.run("hello", PROBE)
    assert status.exit_code == 0
    daemons = [pid for pid, ident in shim_daemons(cri_c8d).items() if ident == pod.id]
    assert len(daemons) == 1
    # No daemon was started under a container's id: every container went to the pod's shim.
    assert not set(shim_daemons(cri_c8d).values()) & set(pod.containers.values())


def test_a_pod_daemon_forked_by_the_template_is_in_its_pod_cgroup(
    pods: Pods, cri_c8d: PrivateContainerd
) -> None:
    """The template (on by default) forks a pod's daemon; start moves it into
    ``<cgroup_parent>/runwasi-py-shim-<pod id>`` before it runs, the template stays out."""
    first = pods.run("tplfirst")  # the first start of a template key spawns and launches one
    assert first.run("hello", PROBE).exit_code == 0
    address = cri_c8d.bundle(first.id).joinpath("address").read_text()
    sockets = Path(address.removeprefix("unix://")).parent
    wait_for(lambda: bool(template_pids(sockets)), "a template")
    pod = pods.run("tplforked")
    pod.start("spin", PROBE, args=["spin"])
    (daemon,) = [pid for pid, ident in shim_daemons(cri_c8d).items() if ident == pod.id]
    templates = template_pids(sockets)
    parent = int(Path(f"/proc/{daemon}/stat").read_text().rpartition(")")[2].split()[1])
    assert parent in templates  # forked, not spawned
    want = f"{pod.cgroup.path.rstrip('/')}/runwasi-py-shim-{pod.id}"
    mine, its = read_proc_cgroup(daemon), read_proc_cgroup(parent)
    key = "memory" if "memory" in mine else ""  # v1: the memory hierarchy; v2: unified
    assert mine[key] == want
    assert "runwasi-py-shim-" not in its[key]
    pod.cri.stop_container(pod.containers["spin"], timeout=1)


def test_stop_ends_a_running_wasm_container_with_sigterm(host_pod: Pod) -> None:
    cid = host_pod.start("stopme", PROBE, args=["spin"])
    wait_for(lambda: host_pod.cri.container_status(cid).state == pb.CONTAINER_RUNNING, "RUNNING")
    host_pod.cri.stop_container(cid, timeout=20)
    status = host_pod.cri.container_status(cid)
    assert status.state == pb.CONTAINER_EXITED
    assert status.exit_code == EXIT_SIGTERM


def test_stop_escalates_to_sigkill_after_the_grace_period(pods: Pods) -> None:
    # The rule containerd applies to every runtime, checked with runc so that the test
    # stands on its own; the same in a wasm pod is in test_pod_boundary.
    pod = pods.run("stopkill", handler=RUNC)
    cid = pod.start("stubborn", NATIVE_C, args=["ignore-term"])
    wait_for(lambda: [r.text for r in pod.log("stubborn")] == ["ignoring SIGTERM"], "output")
    pod.cri.stop_container(cid, timeout=1)
    assert pod.cri.container_status(cid).exit_code == EXIT_SIGKILL


def test_container_stats_report_the_guest_cpu(host_pod: Pod) -> None:
    cid = host_pod.start("busy", PROBE, args=["spin"])
    wait_for(
        lambda: host_pod.cri.container_stats(cid).cpu.usage_core_nano_seconds.value > 0,
        "CPU time in ContainerStats",
    )
    stats = {s.attributes.id: s for s in host_pod.cri.list_container_stats(host_pod.id)}
    assert stats[cid].cpu.usage_core_nano_seconds.value > 0
    assert stats[cid].memory.working_set_bytes.value > 0
    host_pod.cri.stop_container(cid, timeout=5)


def test_pod_stats_answer_for_a_pod_with_its_cgroup(host_pod: Pod) -> None:
    stats = host_pod.cri.pod_sandbox_stats(host_pod.id)
    assert stats.attributes.id == host_pod.id
    assert stats.linux.HasField("cpu")
    listed = [s.attributes.id for s in host_pod.cri.list_pod_sandbox_stats(host_pod.id)]
    assert listed == [host_pod.id]


def test_host_path_volume_is_read_by_the_guest(host_pod: Pod, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("from the host\n")
    mount = pb.Mount(container_path="/data", host_path=str(tmp_path), readonly=True)
    status = host_pod.run("volume", PROBE, args=["cat", "/data/note.txt"], mounts=[mount])
    assert status.exit_code == 0, host_pod.log("volume")
    assert [r.text for r in host_pod.log("volume")] == ["from the host"]


def test_exec_is_answered_with_a_clear_error(host_pod: Pod) -> None:
    cid = host_pod.start("noexec", PROBE, args=["spin"])
    wait_for(lambda: host_pod.cri.container_status(cid).state == pb.CONTAINER_RUNNING, "RUNNING")
    with pytest.raises(CriError) as e:
        host_pod.cri.exec_sync(cid, ["/probe.wasm", "hello"], timeout=5)
    assert "exec" in e.value.details.lower(), e.value
    # The container is unharmed.
    assert host_pod.cri.container_status(cid).state == pb.CONTAINER_RUNNING
    host_pod.cri.stop_container(cid, timeout=5)


# -- containerd restarts, pods go -------------------------------------------------------------


def test_containerd_restart_with_pods_running(
    cni_pod: Pod, cri_c8d: PrivateContainerd, cri: CriClient
) -> None:
    cid = cni_pod.start("survivor", PROBE, args=["spin"])
    wait_for(lambda: cri.container_status(cid).state == pb.CONTAINER_RUNNING, "RUNNING")
    shims = shim_daemons(cri_c8d)
    cri_c8d.restart()
    assert shim_daemons(cri_c8d) == shims
    wait_for(lambda: cri.container_status(cid).state == pb.CONTAINER_RUNNING, "RUNNING again")
    assert cri.pod_sandbox_status(cni_pod.id).status.state == pb.SANDBOX_READY
    cri.stop_container(cid, timeout=10)
    assert cri.container_status(cid).exit_code == EXIT_SIGTERM
    status = cni_pod.run("after", PROBE)
    assert status.exit_code == 0


@pytest.fixture
def doomed(pods: Pods) -> Iterator[Pod]:
    pod = pods.run("doomed", host_network=False)
    yield pod
    pod.remove()


def test_a_removed_pod_leaves_no_process_mount_or_cgroup(
    doomed: Pod, cri_c8d: PrivateContainerd, cri: CriClient
) -> None:
    doomed.start("running", PROBE, args=["spin"])
    assert doomed.run("done", PROBE).exit_code == 0
    netns = doomed.status_info().get("runtimeSpec", {}).get("linux", {}).get("namespaces", [])
    netns_paths = [n["path"] for n in netns if n.get("type") == "network" and n.get("path")]
    assert [ident for ident in shim_daemons(cri_c8d).values() if ident == doomed.id]
    cri.stop_pod_sandbox(doomed.id)
    cri.remove_pod_sandbox(doomed.id)
    # The shim exits once containerd has shut it down; give it a deadline, not a time.
    wait_for(lambda: doomed.id not in shim_daemons(cri_c8d).values(), "the pod's shim to exit")
    ids = [doomed.id, *doomed.containers.values()]
    assert [m for m in mounts_under(cri_c8d.workdir) if any(i in m for i in ids)] == []
    assert all(not Path(p).exists() for p in netns_paths)
    assert processes_in(doomed.cgroup.path) == []
    for m in cgroup_mounts():
        pod_dir = m.path / doomed.cgroup.path.lstrip("/")
        if pod_dir.is_dir():
            left = [d.name for d in pod_dir.iterdir() if d.is_dir()]
            why = [line for line in cri_c8d.log_tail(2000).splitlines() if "cgroup" in line]
            assert left == [], "\n".join(why[-10:])
    with pytest.raises(CriError):
        cri.pod_sandbox_status(doomed.id)


def test_wait_helper_reports_a_container_that_never_exits(host_pod: Pod) -> None:
    cid = host_pod.start("forever", PROBE, args=["spin"])
    with pytest.raises(AssertionError, match="not exited"):
        wait_exited(host_pod.cri, cid, timeout=0.5)
    host_pod.cri.stop_container(cid, timeout=5)
