"""Fixtures of the CRI end-to-end tests: a CRI-enabled private containerd per version.

The harness runs with the CRI plugin on (handlers ``pywasmtime`` and ``runc``, the pause
image, a CNI bridge of its own), the test images imported into ``k8s.io``, and a CRI client
on its socket. Pods get a kubelet-style cgroup under the harness's cgroup root.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runwasi_py.containerd import CRI_NAMESPACE, ContainerdBuild, PrivateContainerd
from runwasi_py.containerd.cri import CriClient
from runwasi_py.examples._demo import scripts_dir
from tests.integration._images import ImageSet
from tests.integration._require import require_shim
from tests.integration.cri._images import CriImages, build_cri_images
from tests.integration.cri._pods import Pods


@pytest.fixture(scope="session")
def cri_images(tmp_path_factory: pytest.TempPathFactory) -> CriImages:
    return build_cri_images(tmp_path_factory.mktemp("cri-images"))


@pytest.fixture(scope="session")
def cri_c8d(
    tmp_path_factory: pytest.TempPathFactory,
    containerd_build: ContainerdBuild,
    test_images: ImageSet,
    cri_images: CriImages,
) -> Iterator[PrivateContainerd]:
    """A private containerd with CRI on and every test image in ``k8s.io``."""
    require_shim()
    c8d = PrivateContainerd(
        tmp_path_factory.mktemp("cri"),
        shim_dirs=[scripts_dir()],
        namespace=CRI_NAMESPACE,
        containerd_bin=containerd_build.bin_dir,
        cri=True,
    )
    c8d.start()
    try:
        for tarball in [*test_images.all(), *cri_images.all()]:
            c8d.import_image(tarball)
        yield c8d
    finally:
        c8d.stop()


@pytest.fixture(scope="session")
def cri(cri_c8d: PrivateContainerd) -> Iterator[CriClient]:
    with CriClient(cri_c8d.address) as client:
        client.wait_ready()
        yield client


@pytest.fixture(scope="module")
def pods(cri_c8d: PrivateContainerd, cri: CriClient) -> Iterator[Pods]:
    """Pods for one test module, all removed at its end."""
    made = Pods(cri_c8d, cri)
    try:
        yield made
    finally:
        made.remove_all()
