"""Read an OCI image layout tarball back: its name, platform, process settings and files.

The reverse of the builder, checking every digest on the way; used to run an image without
containerd (``runwasi-py demo`` in-process) and to test the builder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Any

from runwasi_py.image._errors import ImageError
from runwasi_py.image._layout import REF_NAME, Platform

__all__ = ["ImageContents", "read_image"]


@dataclass(frozen=True, slots=True)
class ImageContents:
    """An image's name, platform, entrypoint/cmd/env and the files of its layers."""

    ref: str
    platform: Platform
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    """Regular files by absolute image path; later layers win."""

    @property
    def args(self) -> list[str]:
        """The process args a runtime starts with no override: entrypoint + cmd."""
        return [*self.entrypoint, *self.cmd]


def _blob(tar: tarfile.TarFile, desc: dict[str, Any]) -> bytes:
    digest = str(desc.get("digest", ""))
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise ImageError(f"unsupported digest {digest!r}")
    try:
        member = tar.extractfile(f"blobs/sha256/{hexd}")
    except KeyError:
        member = None
    if member is None:
        raise ImageError(f"blob {digest} is missing from the image")
    data = member.read()
    if hashlib.sha256(data).hexdigest() != hexd or len(data) != desc.get("size"):
        raise ImageError(f"blob {digest} does not match its digest or size")
    return data


def _layer_files(layer: bytes, media_type: str, files: dict[str, bytes]) -> None:
    if media_type.endswith("+gzip"):
        try:
            layer = gzip.decompress(layer)
        except (OSError, EOFError, zlib.error) as e:
            raise ImageError(f"layer is not valid gzip: {e}") from e
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for m in tar.getmembers():
            name = "/" + m.name.lstrip("./").lstrip("/")
            if m.isfile():
                f = tar.extractfile(m)
                if f is not None:
                    files[name] = f.read()


def read_image(tarball: str | os.PathLike[str]) -> ImageContents:
    """Read and verify an image tarball of one manifest (as :func:`build_image` writes).

    Example:
        >>> img = read_image("hello.tar")
        >>> img.args, sorted(img.files)
        (['/hello.wasm'], ['/hello.wasm'])
    """
    try:
        with tarfile.open(tarball) as tar:
            try:
                raw_index = tar.extractfile("index.json")
            except KeyError:
                raw_index = None
            if raw_index is None:
                raise ImageError(f"{os.fspath(tarball)!r} has no index.json: not an OCI layout")
            index = json.loads(raw_index.read())
            manifests = index.get("manifests") or []
            if len(manifests) != 1:
                raise ImageError(f"expected one manifest in the index, found {len(manifests)}")
            mdesc = manifests[0]
            manifest = json.loads(_blob(tar, mdesc))
            config = json.loads(_blob(tar, manifest["config"]))
            files: dict[str, bytes] = {}
            for ldesc in manifest.get("layers", []):
                _layer_files(_blob(tar, ldesc), str(ldesc.get("mediaType", "")), files)
    except (OSError, tarfile.TarError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ImageError(f"cannot read image {os.fspath(tarball)!r}: {e}") from e
    proc = config.get("config") or {}
    return ImageContents(
        ref=str(mdesc.get("annotations", {}).get(REF_NAME, "")),
        platform=Platform(
            config.get("os", ""), config.get("architecture", ""), config.get("variant", "")
        ),
        entrypoint=list(proc.get("Entrypoint") or []),
        cmd=list(proc.get("Cmd") or []),
        env=list(proc.get("Env") or []),
        files=files,
    )
