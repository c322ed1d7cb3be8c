"""The pod sandbox image of a CRI harness: ``pause.c`` built with ``gcc -static``, cached.

No registry is reachable, so the CRI plugin's sandbox image is built here: the checked-in C
source is compiled once per source digest into a cache folder, and packed by our own image
builder as a ``linux/<arch>`` image whose entrypoint is ``/pause``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from runwasi_py.containerd._config import host_platform
from runwasi_py.containerd._errors import ContainerdUnavailable
from runwasi_py.image import LayerFile, build_image_from_files

__all__ = ["PAUSE_SOURCE", "build_pause_image", "pause_cache_dir", "pause_image_ref"]

PAUSE_SOURCE = Path(__file__).with_name("pause.c")


def _digest() -> str:
    return hashlib.sha256(PAUSE_SOURCE.read_bytes()).hexdigest()[:16]


def pause_image_ref() -> str:
    """The sandbox image name (tagged with the source digest, so an edit gives a new image)."""
    return f"localhost/runwasi-py/pause:{_digest()}"


def pause_cache_dir() -> Path:
    """``/var/cache/runwasi-py`` as root, else ``$XDG_CACHE_HOME``/``~/.cache``/runwasi-py."""
    if os.geteuid() == 0:
        return Path("/var/cache/runwasi-py")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "runwasi-py"


def _build_binary(out: Path) -> None:
    cc = shutil.which("gcc")
    if cc is None:
        raise ContainerdUnavailable(
            "building the pause image needs gcc: as root run `apt-get install gcc libc6-dev`"
        )
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    res = subprocess.run(
        [cc, "-static", "-O2", "-s", "-o", str(tmp), str(PAUSE_SOURCE)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ContainerdUnavailable(f"gcc -static {PAUSE_SOURCE} failed: {res.stderr.strip()}")
    os.replace(tmp, out)


def build_pause_image(cache_dir: Path | None = None) -> tuple[str, Path]:
    """The pause image's ref and tarball, building what the cache lacks."""
    folder = (cache_dir or pause_cache_dir()) / f"pause-{_digest()}"
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "pause"
    if not binary.is_file():
        _build_binary(binary)
    ref = pause_image_ref()
    tarball = folder / "pause.tar"
    if not tarball.is_file():
        build_image_from_files(
            ref,
            tarball,
            [LayerFile("/pause", binary.read_bytes(), 0o755)],
            platform=host_platform(),
            entrypoint=["/pause"],
        )
    return ref, tarball
