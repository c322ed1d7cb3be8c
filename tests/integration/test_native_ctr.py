"""A native image through a real containerd and ``ctr run --runtime io.containerd.pywasmtime.v1``.

The wasmtime shim hands an image whose entrypoint is a Linux executable to runc: its output
reaches ``ctr`` and its exit code is ``ctr``'s.
"""

from __future__ import annotations

import pytest

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.image import LayerFile, build_image_from_files
from tests.integration._ctr import RUNTIME, mounts_of, new_id, remove_container, shim_pids, wait_for
from tests.integration._images import NATIVE, native_arch
from tests.integration._native import probe_binary, require_runc
from tests.integration._require import require_shim

pytestmark = pytest.mark.containerd

PROBE_IMAGE = "docker.io/library/runwasi-e2e-native-probe:latest"


@pytest.fixture(scope="module")
def c8d(imported: PrivateContainerd, tmp_path_factory: pytest.TempPathFactory) -> PrivateContainerd:
    require_shim()
    require_runc()
    out = tmp_path_factory.mktemp("native-image")
    probe = probe_binary(out)
    image = build_image_from_files(
        PROBE_IMAGE,
        out / "native-probe.tar",
        [LayerFile("/probe", probe.read_bytes(), 0o755)],
        platform=f"linux/{native_arch()}",
        entrypoint=["/probe"],
        cmd=["out"],
    )
    imported.import_image(image.path)
    return imported


def run(c8d: PrivateContainerd, *args: str, image: str = PROBE_IMAGE) -> tuple[int, str, str]:
    cid = new_id()
    try:
        res = c8d.run(image, cid, *args, runtime=RUNTIME, timeout=60)
    finally:
        remove_container(c8d, cid)
    wait_for(lambda: not shim_pids(c8d, cid), "the shim to exit")
    assert mounts_of(c8d, cid) == []
    return res.returncode, res.stdout, res.stderr


def test_native_image_output_and_exit_code(c8d: PrivateContainerd) -> None:
    assert run(c8d, "/probe", "out", "native out", "native err") == (
        0,
        "native out\n",
        "native err\n",
    )
    assert run(c8d, "/probe", "exit", "3")[0] == 3


def test_host_binary_image_runs_through_our_shim(c8d: PrivateContainerd) -> None:
    code, out, _ = run(c8d, image=NATIVE)
    assert (code, out) == (0, "hello from runc\n")
