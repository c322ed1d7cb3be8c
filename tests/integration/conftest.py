"""Session fixtures for the end-to-end tests: one private real containerd, test images.

The containerd is started once per session with this installation's console-script directory
first on its PATH (so ``io.containerd.pywasmtime.v1`` resolves to our shim) and is stopped at
the end, which also kills leftover shims, unmounts and removes its state.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.examples._demo import scripts_dir
from tests.integration._images import ImageSet, build_test_images
from tests.integration._require import require_containerd


@pytest.fixture(scope="session")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateContainerd]:
    """A private containerd for the session (skipped without root/containerd outside CI)."""
    require_containerd()
    workdir = tmp_path_factory.mktemp("c8d")
    c8d = PrivateContainerd(workdir, shim_dirs=[scripts_dir()], namespace="runwasi-e2e")
    c8d.start()
    try:
        yield c8d
    finally:
        c8d.stop()


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> ImageSet:
    return build_test_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def imported(containerd: PrivateContainerd, test_images: ImageSet) -> PrivateContainerd:
    """The session containerd with every test image imported."""
    for tarball in test_images.all():
        containerd.import_image(tarball)
    return containerd
