"""Build the end-to-end test images from fixtures with the project's own image builder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runwasi_py.image import (
    LayerFile,
    build_image,
    build_image_from_files,
    host_binary_files,
)

FIXTURES = Path(__file__).parent / "fixtures"
PROBE = "docker.io/library/runwasi-e2e-probe:latest"
NATIVE = "docker.io/library/runwasi-e2e-native-echo:latest"
MISSING_ENTRYPOINT = "docker.io/library/runwasi-e2e-missing:latest"
NOT_WASM = "docker.io/library/runwasi-e2e-notwasm:latest"
FILE_CONTENT = "a file from the image\nsecond line\n"
IMAGE_ENV = "FROM_IMAGE=yes"


@dataclass(frozen=True)
class ImageSet:
    """Tarballs of the test images (refs are the module constants)."""

    probe: Path
    native: Path
    missing_entrypoint: Path
    not_wasm: Path

    def all(self) -> list[Path]:
        return [self.probe, self.native, self.missing_entrypoint, self.not_wasm]


def native_arch() -> str:
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def build_test_images(out: Path) -> ImageSet:
    data = out / "data.txt"
    data.write_text(FILE_CONTENT)
    probe = build_image(
        FIXTURES / "probe.wat",
        PROBE,
        out / "probe.tar",
        files=[(data, "/etc/probe/data.txt")],
        env=[IMAGE_ENV],
    )
    native = build_image_from_files(
        NATIVE,
        out / "native.tar",
        host_binary_files("/bin/echo"),
        platform=f"linux/{native_arch()}",
        entrypoint=["/bin/echo"],
        cmd=["hello from runc"],
    )
    missing = build_image(
        FIXTURES / "probe.wat",
        MISSING_ENTRYPOINT,
        out / "missing.tar",
        entrypoint=["/not-there.wasm"],
    )
    # A wasip1 image whose entrypoint is a shell script, not a wasm module.
    not_wasm = build_image_from_files(
        NOT_WASM,
        out / "notwasm.tar",
        [LayerFile("/app.wasm", b"#!/bin/sh\necho not wasm\n", 0o755)],
        entrypoint=["/app.wasm"],
    )
    return ImageSet(probe.path, native.path, missing.path, not_wasm.path)
