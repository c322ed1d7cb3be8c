"""Write an OCI image layout tarball, byte for byte the same for the same input.

Theory of operation: the image has one gzip layer holding the given files, a config (platform,
entrypoint, env), a manifest pointing at both, and an ``index.json`` naming the manifest with
the full reference, which is what ``ctr image import`` uses as the image name. Every input that
could vary between runs is pinned: tar entries are sorted, owned by 0:0, dated 0, with fixed
modes; gzip's header carries mtime 0 and no file name; JSON is written with sorted keys and no
spaces. So the digest only changes when a file, a path or a setting changes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwasi_py.image._errors import ImageError
from runwasi_py.image._ref import normalize_ref

__all__ = [
    "BuiltImage",
    "LayerFile",
    "Platform",
    "build_image",
    "build_image_from_files",
    "parse_file_spec",
]

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
WASM_MAGIC = b"\0asm"


@dataclass(frozen=True, slots=True)
class Platform:
    """An image platform, ``os/architecture[/variant]`` (``wasip1/wasm``, ``linux/amd64``)."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``.

        >>> Platform.parse("wasip1/wasm")
        Platform(os='wasip1', architecture='wasm', variant='')
        """
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def as_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class LayerFile:
    """One regular file of the image layer: its absolute path in the image, content and mode."""

    dest: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """What :func:`build_image` wrote: the tarball, the full name and the blob digests."""

    path: Path
    ref: str
    platform: Platform
    manifest_digest: str
    config_digest: str
    layer_digest: str
    diff_id: str
    entrypoint: tuple[str, ...]


def parse_file_spec(spec: str) -> tuple[Path, str]:
    """Split a ``SRC:DEST`` file spec (DEST is an absolute path in the image).

    >>> parse_file_spec("data/a.txt:/etc/a.txt")
    (PosixPath('data/a.txt'), '/etc/a.txt')
    """
    src, sep, dest = spec.rpartition(":")
    if not sep or not src or not dest:
        raise ImageError(f"invalid --file {spec!r}: expected SRC:DEST, e.g. ./a.txt:/etc/a.txt")
    return Path(src), _image_path(dest, what=f"--file {spec!r}")


def _image_path(dest: str, *, what: str) -> str:
    if not dest.startswith("/"):
        raise ImageError(f"invalid {what}: the image path {dest!r} must be absolute")
    if ".." in dest.split("/"):
        raise ImageError(f"invalid {what}: the image path {dest!r} must not contain '..'")
    norm = posixpath.normpath(dest)
    if norm == "/":
        raise ImageError(f"invalid {what}: the image path must name a file, not '/'")
    return norm


def _mode_of(path: Path) -> int:
    return 0o755 if os.stat(path).st_mode & 0o111 else 0o644


def _files_from_source(src: Path, dest: str) -> list[LayerFile]:
    """A file, or a directory tree (symlinks followed), as layer files under ``dest``."""
    if not src.exists():
        raise ImageError(f"file {str(src)!r} does not exist")
    if src.is_file():
        return [LayerFile(dest, src.read_bytes(), _mode_of(src))]
    if not src.is_dir():
        raise ImageError(f"file {str(src)!r} is neither a regular file nor a directory")
    out = []
    for root, dirs, names in os.walk(src, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            p = Path(root, name)
            rel = p.relative_to(src).as_posix()
            if p.is_file():
                out.append(LayerFile(posixpath.join(dest, rel), p.read_bytes(), _mode_of(p)))
    return out


def _read_module(wasm: Path) -> bytes:
    """The module's bytes; ``.wat`` text is compiled, anything else must be wasm."""
    if not wasm.exists():
        raise ImageError(f"input {str(wasm)!r} does not exist")
    if not wasm.is_file():
        raise ImageError(f"input {str(wasm)!r} is not a file")
    data = wasm.read_bytes()
    if data.startswith(WASM_MAGIC):
        return data
    if wasm.suffix == ".wat":
        import wasmtime  # here: only .wat input needs the compiler

        try:
            return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        except (UnicodeDecodeError, wasmtime.WasmtimeError) as e:
            raise ImageError(f"input {str(wasm)!r} is not valid WAT: {e}") from e
    raise ImageError(
        f"input {str(wasm)!r} is not a wasm module (no \\0asm header); give a .wasm or a .wat file"
    )


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_bytes(entries: Iterable[tuple[str, bytes | None, int]]) -> bytes:
    """A PAX tar of ``(name, data or None for a directory, mode)``, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer_tar(files: Sequence[LayerFile]) -> bytes:
    by_path: dict[str, LayerFile] = {}
    for f in files:
        dest = _image_path(f.dest, what=f"image path {f.dest!r}")
        if dest in by_path:
            raise ImageError(f"two files are placed at {dest!r} in the image")
        by_path[dest] = LayerFile(dest, f.data, f.mode)
    dirs: set[str] = set()
    for dest in by_path:
        parent = posixpath.dirname(dest)
        while parent != "/":
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    clash = dirs & by_path.keys()
    if clash:
        raise ImageError(f"{sorted(clash)[0]!r} is both a file and a directory in the image")
    entries: list[tuple[str, bytes | None, int]] = [(d[1:], None, 0o755) for d in dirs]
    entries += [(p[1:], f.data, f.mode & 0o7777) for p, f in by_path.items()]
    entries.sort(key=lambda e: e[0])
    return _tar_bytes(entries)


def _write_atomically(output: Path, data: bytes) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ImageError(f"output directory {str(parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_image_from_files(
    ref: str,
    output: str | os.PathLike[str],
    files: Sequence[LayerFile],
    *,
    platform: str | Platform = "wasip1/wasm",
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    workdir: str = "/",
) -> BuiltImage:
    """Write an OCI image layout tarball with one layer holding ``files``.

    This is the general form (a native image for runc is built with it too);
    :func:`build_image` is the wasm front door.

    Example:
        >>> build_image_from_files(
        ...     "native-echo", "echo.tar",
        ...     [LayerFile("/bin/echo", Path("/bin/echo").read_bytes(), 0o755)],
        ...     platform="linux/amd64", entrypoint=["/bin/echo"])
    """
    full_ref = normalize_ref(ref)
    plat = platform if isinstance(platform, Platform) else Platform.parse(platform)
    for item in env:
        if "=" not in item or item.startswith("="):
            raise ImageError(f"invalid env {item!r}: expected KEY=VALUE")
    if not files:
        raise ImageError("an image needs at least one file")
    layer_tar = _layer_tar(files)
    layer = gzip.compress(layer_tar, compresslevel=9, mtime=0)
    diff_id = _digest(layer_tar)
    image_config: dict[str, Any] = {"WorkingDir": workdir}
    if entrypoint:
        image_config["Entrypoint"] = list(entrypoint)
    if cmd:
        image_config["Cmd"] = list(cmd)
    if env:
        image_config["Env"] = list(env)
    config = _json(
        {
            **plat.as_json(),
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "runwasi-py image build"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": plat.as_json(),
                    "annotations": {REF_NAME: full_ref, CONTAINERD_NAME: full_ref},
                }
            ],
        }
    )
    blobs = {_digest(b)[len("sha256:") :]: b for b in (layer, config, manifest)}
    entries: list[tuple[str, bytes | None, int]] = [
        ("blobs", None, 0o755),
        ("blobs/sha256", None, 0o755),
        *((f"blobs/sha256/{h}", blobs[h], 0o644) for h in sorted(blobs)),
        ("index.json", index, 0o644),
        ("oci-layout", _json({"imageLayoutVersion": "1.0.0"}), 0o644),
    ]
    out = Path(output)
    _write_atomically(out, _tar_bytes(entries))
    return BuiltImage(
        path=out,
        ref=full_ref,
        platform=plat,
        manifest_digest=_digest(manifest),
        config_digest=_digest(config),
        layer_digest=_digest(layer),
        diff_id=diff_id,
        entrypoint=tuple(entrypoint),
    )


def build_image(
    wasm: str | os.PathLike[str],
    ref: str,
    output: str | os.PathLike[str],
    *,
    files: Sequence[tuple[str | os.PathLike[str], str]] = (),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] = (),
    env: Sequence[str] = (),
    platform: str | Platform = "wasip1/wasm",
    wasm_path: str | None = None,
) -> BuiltImage:
    """Build an OCI image tarball that runs ``wasm`` (a ``.wasm`` or ``.wat`` file).

    The module lands at ``/<name>.wasm`` (or ``wasm_path``) and the entrypoint points at it
    unless ``entrypoint`` is given. ``files`` are ``(host path, image path)`` pairs; a host
    directory is copied recursively. Raises :class:`ImageError` on bad input.

    Example:
        >>> img = build_image("hello.wat", "hello:1", "hello.tar", env=["GREETING=hi"])
        >>> img.ref
        'docker.io/library/hello:1'
        >>> # then: ctr image import --all-platforms hello.tar
    """
    src = Path(wasm)
    module = _read_module(src)
    default_name = src.name if src.suffix != ".wat" else src.with_suffix(".wasm").name
    dest = _image_path(wasm_path or "/" + default_name, what="wasm path")
    layer_files = [LayerFile(dest, module, 0o755)]
    for host, image_path in files:
        layer_files += _files_from_source(Path(host), _image_path(image_path, what="file path"))
    return build_image_from_files(
        ref,
        output,
        layer_files,
        platform=platform,
        entrypoint=list(entrypoint) if entrypoint is not None else [dest],
        cmd=cmd,
        env=env,
    )
