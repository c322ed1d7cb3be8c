"""A read-only OCI registry on loopback, serving image tarballs, for CRI pull tests.

Implements the few distribution API calls containerd makes to pull (``GET /v2/``, manifests
by tag or digest, blobs by digest; HEAD too). An image can be served as built (one manifest
with its own platform) or under an index that lists the same manifest for extra platforms,
which is how a wasm image is made pullable by a client that only takes the host platform.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"


class Registry:
    """Blobs and tags in memory; :meth:`add` loads an image tarball under a name and tag."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}  # digest -> (bytes, media type)
        self.tags: dict[tuple[str, str], str] = {}  # (name, tag) -> digest
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def _put(self, data: bytes, media_type: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = (data, media_type)
        return digest

    def add(
        self,
        tarball: Path,
        name: str,
        tag: str,
        *,
        as_index: bool = False,
        extra_platforms: Sequence[str] = (),
    ) -> str:
        """Serve ``tarball`` as ``<host>/<name>:<tag>``; returns that reference.

        The tag names the image's manifest itself, or (``as_index`` or ``extra_platforms``)
        an index listing it for its own platform and each of ``extra_platforms``.
        """
        with tarfile.open(tarball) as tar:
            index = json.loads(_read(tar, "index.json"))
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith("blobs/sha256/"):
                    data = _read(tar, member.name)
                    self._put(data, "application/octet-stream")
        desc = index["manifests"][0]
        manifest_digest = desc["digest"]
        data, _ = self.blobs[manifest_digest]
        self.blobs[manifest_digest] = (data, desc["mediaType"])
        if not (as_index or extra_platforms):
            top = manifest_digest
        else:
            entries: list[dict[str, Any]] = [{k: v for k, v in desc.items() if k != "annotations"}]
            for plat in extra_platforms:
                os_, arch = plat.split("/")[:2]
                entries.append({**entries[0], "platform": {"os": os_, "architecture": arch}})
            body = json.dumps(
                {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}
            ).encode()
            top = self._put(body, MEDIA_INDEX)
        self.tags[(name, tag)] = top
        return f"{self.host}/{name}:{tag}"

    def hosts_toml(self) -> str:
        """A containerd ``hosts.toml`` saying this registry speaks plain HTTP."""
        return (
            f'server = "http://{self.host}"\n\n[host."http://{self.host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )

    @contextmanager
    def serving(self) -> Iterator[Registry]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                registry.requests.append(getattr(self, "path", "?"))

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                found = registry.lookup(self.path)
                if found is None:
                    self.send_response(404 if self.path != "/v2/" else 200)
                    payload = b"{}"
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if body:
                        self.wfile.write(payload)
                    return
                digest, data, media_type = found
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()

    def lookup(self, path: str) -> tuple[str, bytes, str] | None:
        """The blob a ``/v2/<name>/(manifests|blobs)/<ref>`` path names, or None."""
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) < 4 or parts[0] != "v2" or parts[-2] not in ("manifests", "blobs"):
            return None
        name, ref = "/".join(parts[1:-2]), parts[-1]
        digest = ref if ref.startswith("sha256:") else self.tags.get((name, ref))
        if digest is None or digest not in self.blobs:
            return None
        data, media_type = self.blobs[digest]
        return digest, data, media_type


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None, name
    return member.read()
