"""Files that make a host binary runnable in an image of its own: the binary and its libraries.

Used for native images that the runc shim runs (the harness self-check and the runc side of
the benchmark), so no registry is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from runwasi_py.image._errors import ImageError
from runwasi_py.image._layout import LayerFile

__all__ = ["host_binary_files"]

# ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no path and is skipped.
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def host_binary_files(binary: str) -> list[LayerFile]:
    """The binary at its own path plus every shared library ``ldd`` lists, at theirs.

    >>> [f.dest for f in host_binary_files("/bin/echo")]  # doctest: +SKIP
    ['/bin/echo', '/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2']
    """
    path = Path(binary) if "/" in binary else Path(shutil.which(binary) or binary)
    if not path.is_absolute() or not path.is_file():
        raise ImageError(f"host binary {binary!r} not found")
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ImageError("ldd not found: install libc-bin")
    res = subprocess.run(
        [ldd, str(path)], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    libs = [] if res.returncode != 0 else _LDD_PATH.findall(res.stdout)
    files = [LayerFile(str(path), path.read_bytes(), 0o755)]
    files += [LayerFile(lib, Path(lib).read_bytes(), 0o755) for lib in sorted(set(libs))]
    return files
