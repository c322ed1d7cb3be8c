"""Session fixtures for the end-to-end tests: a private real containerd per version, images.

Every containerd test runs once against Debian's containerd 1.6 (PATH) and once against the
2.3 build (``$RUNWASI_PY_CONTAINERD_23_BIN``, default the folder scripts/setup.sh builds into):
``containerd_build`` is parametrized, and pytest groups the tests by it, so one containerd
per version runs at a time. A containerd is started with this installation's console-script
directory first on its PATH (so ``io.containerd.pywasmtime.v1`` resolves to our shim) and is
stopped at the end, which also kills leftover shims, unmounts and removes its state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from runwasi_py.containerd import ContainerdBuild, ContainerdUnavailable, PrivateContainerd
from runwasi_py.containerd import find_build as _find_build
from runwasi_py.examples._demo import scripts_dir
from tests.integration._images import ImageSet, build_test_images
from tests.integration._require import require_containerd, unavailable

#: Where scripts/setup.sh builds containerd 2.3.4 (shared/tools/build-containerd.sh).
DEFAULT_23_BIN = "/var/cache/runwasi-py/containerd-2.3.4/bin"
BIN_23_ENV = "RUNWASI_PY_CONTAINERD_23_BIN"


def _bin_dir(version: str) -> str | None:
    if version == "1.6":
        return None  # Debian's, on PATH
    return os.environ.get(BIN_23_ENV) or DEFAULT_23_BIN


@pytest.fixture(scope="session", params=["1.6", "2.3"], ids=lambda v: f"containerd-{v}")
def containerd_build(request: pytest.FixtureRequest) -> ContainerdBuild:
    """The containerd build of this run of the tests (skipped/failed when missing)."""
    require_containerd()
    want: str = request.param
    saved = os.environ.pop("RUNWASI_PY_CONTAINERD_BIN", None)
    try:
        build = _find_build(_bin_dir(want))
    except ContainerdUnavailable as e:
        unavailable(f"containerd {want}: {e} (scripts/setup.sh builds it)")
        raise
    finally:
        if saved is not None:
            os.environ["RUNWASI_PY_CONTAINERD_BIN"] = saved
    got = f"{build.version.major}.{build.version.minor}"
    if got != want:
        unavailable(f"wanted containerd {want}, {build.containerd} is {build.version}")
    return build


@pytest.fixture(scope="session")
def containerd(
    tmp_path_factory: pytest.TempPathFactory, containerd_build: ContainerdBuild
) -> Iterator[PrivateContainerd]:
    """A private containerd for the session (skipped without root/containerd outside CI)."""
    workdir = tmp_path_factory.mktemp("c8d")
    c8d = PrivateContainerd(
        workdir,
        shim_dirs=[scripts_dir()],
        namespace="runwasi-e2e",
        containerd_bin=containerd_build.bin_dir,
    )
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
