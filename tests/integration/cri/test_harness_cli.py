"""``runwasi-py containerd up --cri`` and ``down`` as a user runs them: down removes it all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runwasi_py.containerd import ContainerdBuild, PrivateContainerd
from runwasi_py.containerd._cleanup import mounts_under, processes_of
from runwasi_py.containerd._network import CNI_CACHE_DIR, bridge_name, network_name
from runwasi_py.containerd._podcgroup import cgroup_mounts
from runwasi_py.containerd.cri import CriClient, container_config, pb, pod_config
from runwasi_py.examples._demo import scripts_dir
from tests.integration._ctr import wait_for
from tests.integration._images import PROBE, ImageSet
from tests.integration._require import require_shim

pytestmark = pytest.mark.containerd


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(scripts_dir() / "runwasi-py"), "containerd", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_down_removes_containerd_shims_mounts_netns_bridge_and_cgroups(
    tmp_path_factory: pytest.TempPathFactory,
    containerd_build: ContainerdBuild,
    test_images: ImageSet,
) -> None:
    require_shim()
    workdir = tmp_path_factory.mktemp("cli-cri")
    up = cli(
        "up", "--cri", "--dir", str(workdir), "--containerd-bin", str(containerd_build.bin_dir)
    )
    assert up.returncode == 0, up.stderr
    c8d = PrivateContainerd(workdir, namespace="k8s.io", containerd_bin=containerd_build.bin_dir)
    try:
        assert up.stdout.strip() == c8d.address
        assert f"containerd {containerd_build.version}" in up.stderr
        c8d.import_image(test_images.probe)
        cgroup = c8d.pod_cgroup("podcli")
        cfg = pod_config("cli", log_directory=workdir / "pods" / "cli", cgroup_parent=cgroup.path)
        with CriClient(c8d.address) as cri:
            pod = cri.run_pod_sandbox(cfg, "pywasmtime")
            cid = cri.create_container(pod, container_config("spin", PROBE, args=["spin"]), cfg)
            cri.start_container(cid)
            wait_for(lambda: cri.container_status(cid).state == pb.CONTAINER_RUNNING, "RUNNING")
        assert Path("/sys/class/net", bridge_name(c8d.paths)).exists()
        assert processes_of(c8d.paths.address, workdir)
    finally:
        down = cli("down", "--dir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert "stopped containerd" in down.stdout
    assert not c8d.is_running()
    assert processes_of(c8d.paths.address, workdir) == []
    assert mounts_under(workdir) == []
    assert not Path("/sys/class/net", bridge_name(c8d.paths)).exists()
    assert list((CNI_CACHE_DIR / "results").glob(f"{network_name(c8d.paths)}-*")) == []
    for m in cgroup_mounts():
        assert not (m.path / c8d.cgroup_root.lstrip("/")).exists()
    assert sorted(p.name for p in workdir.iterdir()) == ["config.toml", "containerd.log"]
    assert cli("status", "--dir", str(workdir)).returncode == 3
