"""CRI pulls a wasm image from a registry (a loopback one of our own) and runs it.

kubelet pulls through CRI's ImageService; containerd 1.6 and 2.x take different paths
(2.x's default transfer-service pull leaves a wasip1/wasm image unpacked-less, which the
harness config avoids with ``use_local_image_pull``). A single-platform image as pushed (tag
names the manifest) and an image built for ``linux/<arch>`` must both run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.containerd.cri import CriClient, CriError
from runwasi_py.image import build_image
from tests.integration._images import FIXTURES, native_arch
from tests.integration.cri._pods import Pods
from tests.integration.cri._registry import Registry

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def registry(
    cri_c8d: PrivateContainerd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    out = tmp_path_factory.mktemp("registry")
    reg = Registry()
    with reg.serving():
        hosts = cri_c8d.paths.registry_hosts / reg.host
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(reg.hosts_toml())
        wasm = build_image(FIXTURES / "probe.wat", "probe:pull", out / "wasm.tar")
        linux = build_image(
            FIXTURES / "probe.wat",
            "probe:pull",
            out / "linux.tar",
            platform=f"linux/{native_arch()}",
        )
        reg.add(wasm.path, "probe-wasm", "v1")
        reg.add(linux.path, "probe-linux", "v1", as_index=True)
        reg.add(wasm.path, "probe-wasm-index", "v1", as_index=True)
        yield reg


@pytest.mark.parametrize("name", ["probe-wasm", "probe-linux"])
def test_a_pulled_wasm_image_runs(
    registry: Registry, pods: Pods, cri: CriClient, name: str
) -> None:
    ref = f"{registry.host}/{name}:v1"
    cri.pull_image(ref, runtime_handler="pywasmtime")
    assert cri.image_status(ref) is not None
    pod = pods.run(f"pull-{name}")
    status = pod.run("app", ref)
    assert (status.exit_code, status.reason) == (0, "Completed"), status.message
    assert [r.text for r in pod.log("app")] == ["hello from wasm"]
    pod.remove()


def test_an_index_without_the_host_platform_is_refused_at_pull(
    registry: Registry, cri: CriClient
) -> None:
    # Both versions pick the host platform from an index: a wasm-only index has none.
    with pytest.raises(CriError, match="no match for platform"):
        cri.pull_image(f"{registry.host}/probe-wasm-index:v1", runtime_handler="pywasmtime")


def test_registry_serves_by_digest_too(registry: Registry) -> None:
    found = registry.lookup("/v2/probe-wasm/manifests/v1")
    assert found is not None
    digest = found[0]
    assert registry.lookup(f"/v2/probe-wasm/manifests/{digest}") == found
    assert registry.lookup("/v2/nope/manifests/v1") is None
