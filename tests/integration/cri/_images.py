"""The CRI suite's extra images: a memory-hungry wasm module and a static native program."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runwasi_py.image import LayerFile, build_image, build_image_from_files
from tests.integration._images import FIXTURES, native_arch
from tests.integration._require import unavailable

GROW = "docker.io/library/runwasi-cri-grow:latest"
NATIVE_C = "docker.io/library/runwasi-cri-native:latest"


@dataclass(frozen=True)
class CriImages:
    grow: Path
    native: Path

    def all(self) -> list[Path]:
        return [self.grow, self.native]


def build_native_binary(out: Path) -> Path:
    """``fixtures/native.c`` compiled with ``gcc -static`` (runs in an empty rootfs)."""
    cc = shutil.which("gcc")
    if cc is None:
        unavailable("gcc is needed to build the native test program")
    binary = out / "native"
    subprocess.run(
        [str(cc), "-static", "-O1", "-o", str(binary), str(FIXTURES / "native.c")],
        check=True,
        capture_output=True,
    )
    return binary


def build_cri_images(out: Path) -> CriImages:
    grow = build_image(FIXTURES / "grow.wat", GROW, out / "grow.tar")
    binary = build_native_binary(out)
    native = build_image_from_files(
        NATIVE_C,
        out / "native-c.tar",
        [LayerFile("/native", binary.read_bytes(), 0o755)],
        platform=f"linux/{native_arch()}",
        entrypoint=["/native"],
        cmd=["sleep"],
    )
    return CriImages(grow.path, native.path)
