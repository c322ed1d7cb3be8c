"""Build OCI images from WebAssembly modules, with no Docker and no network.

Example:
    >>> from runwasi_py.image import build_image, import_image
    >>> img = build_image("app.wasm", "app:v1", "app.tar", env=["MODE=demo"])
    >>> import_image(img.path, address="/run/containerd/containerd.sock")
"""

from runwasi_py.image._errors import ImageError
from runwasi_py.image._host import host_binary_files
from runwasi_py.image._import import import_image
from runwasi_py.image._layout import (
    BuiltImage,
    LayerFile,
    Platform,
    build_image,
    build_image_from_files,
    parse_file_spec,
)
from runwasi_py.image._read import ImageContents, read_image
from runwasi_py.image._ref import normalize_ref

__all__ = [
    "BuiltImage",
    "ImageContents",
    "ImageError",
    "LayerFile",
    "Platform",
    "build_image",
    "build_image_from_files",
    "host_binary_files",
    "import_image",
    "normalize_ref",
    "parse_file_spec",
    "read_image",
]
