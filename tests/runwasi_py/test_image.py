"""The OCI image builder: deterministic output, a valid layout, clear errors on bad input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from runwasi_py.cli import main
from runwasi_py.image import (
    ImageError,
    LayerFile,
    build_image,
    build_image_from_files,
    host_binary_files,
    import_image,
    normalize_ref,
    parse_file_spec,
    read_image,
)

HELLO_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hi\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
    (drop (call 0 (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


@pytest.fixture
def wat(tmp_path: Path) -> Path:
    p = tmp_path / "hello.wat"
    p.write_text(HELLO_WAT)
    return p


def _members(tarball: Path) -> dict[str, bytes]:
    with tarfile.open(tarball) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _blob(members: dict[str, bytes], desc: dict[str, Any]) -> bytes:
    """The blob a descriptor names, checked against its digest and size."""
    algo, _, hexd = desc["digest"].partition(":")
    assert algo == "sha256"
    data = members[f"blobs/sha256/{hexd}"]
    assert hashlib.sha256(data).hexdigest() == hexd
    assert len(data) == desc["size"]
    return data


def _layout(tarball: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
    """Validate the whole layout; return index, manifest, config and the layer's tar bytes."""
    members = _members(tarball)
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(members["index.json"])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (mdesc,) = index["manifests"]
    assert mdesc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(_blob(members, mdesc))
    assert manifest["schemaVersion"] == 2
    config = json.loads(_blob(members, manifest["config"]))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (ldesc,) = manifest["layers"]
    assert ldesc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    layer_gz = _blob(members, ldesc)
    layer = gzip.decompress(layer_gz)
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
    }
    # Every blob in the tarball is referenced: nothing stray.
    referenced = {d["digest"].split(":")[1] for d in (mdesc, manifest["config"], ldesc)}
    blobs = {n.rsplit("/", 1)[1] for n in members if n.startswith("blobs/")}
    assert blobs == referenced
    return index, manifest, config, layer


def test_same_input_gives_same_bytes(wat: Path, tmp_path: Path) -> None:
    a = build_image(wat, "app:v1", tmp_path / "a.tar", env=["K=V"])
    b = build_image(wat, "app:v1", tmp_path / "b.tar", env=["K=V"])
    assert a.manifest_digest == b.manifest_digest
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_changed_setting_changes_the_digest(wat: Path, tmp_path: Path) -> None:
    a = build_image(wat, "app:v1", tmp_path / "a.tar", env=["K=V"])
    b = build_image(wat, "app:v1", tmp_path / "b.tar", env=["K=W"])
    assert a.config_digest != b.config_digest
    assert a.layer_digest == b.layer_digest


def test_wat_and_its_compiled_wasm_give_the_same_image(wat: Path, tmp_path: Path) -> None:
    import wasmtime

    wasm = tmp_path / "w" / "hello.wasm"
    wasm.parent.mkdir()
    wasm.write_bytes(bytes(wasmtime.wat2wasm(HELLO_WAT)))
    a = build_image(wat, "app", tmp_path / "a.tar")
    b = build_image(wasm, "app", tmp_path / "b.tar")
    assert a.manifest_digest == b.manifest_digest


def test_layout_is_valid_and_describes_a_wasm_image(wat: Path, tmp_path: Path) -> None:
    img = build_image(wat, "hello", tmp_path / "img.tar", env=["A=1"], cmd=["x"])
    index, _manifest, config, layer = _layout(img.path)
    (mdesc,) = index["manifests"]
    assert mdesc["platform"] == {"architecture": "wasm", "os": "wasip1"}
    assert mdesc["annotations"]["org.opencontainers.image.ref.name"] == (
        "docker.io/library/hello:latest"
    )
    assert img.ref == "docker.io/library/hello:latest"
    assert (config["os"], config["architecture"]) == ("wasip1", "wasm")
    assert config["config"]["Entrypoint"] == ["/hello.wasm"]
    assert config["config"]["Cmd"] == ["x"]
    assert config["config"]["Env"] == ["A=1"]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode, member.uid, member.gid, member.mtime) == (
            "hello.wasm",
            0o755,
            0,
            0,
            0,
        )
        assert tar.extractfile(member).read(4) == b"\0asm"  # type: ignore[union-attr]


def test_layer_gzip_and_tar_entries_are_pinned(wat: Path, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "b").mkdir(parents=True)
    (src / "z.txt").write_text("z")
    (src / "b" / "a.sh").write_text("#!/bin/sh\n")
    (src / "b" / "a.sh").chmod(0o700)
    img = build_image(wat, "app", tmp_path / "img.tar", files=[(src, "/data")])
    members = _members(img.path)
    layer_gz = members["blobs/sha256/" + img.layer_digest.split(":")[1]]
    assert layer_gz[4:8] == b"\0\0\0\0"  # gzip MTIME
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer_gz))) as tar:
        entries = [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime) for m in tar.getmembers()]
    names = [e[0] for e in entries]
    assert names == sorted(names)
    assert names == ["data", "data/b", "data/b/a.sh", "data/z.txt", "hello.wasm"]
    assert {e[3:] for e in entries} == {(0, 0, 0)}
    modes = {e[0]: e[2] for e in entries}
    assert modes == {
        "data": 0o755,
        "data/b": 0o755,
        "data/b/a.sh": 0o755,
        "data/z.txt": 0o644,
        "hello.wasm": 0o755,
    }


def test_file_option_places_a_file(wat: Path, tmp_path: Path) -> None:
    f = tmp_path / "cfg.txt"
    f.write_text("content\n")
    img = build_image(wat, "app", tmp_path / "img.tar", files=[(f, "/etc/app/cfg.txt")])
    *_, layer = _layout(img.path)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        data = tar.extractfile("etc/app/cfg.txt").read()  # type: ignore[union-attr]
    assert data == b"content\n"


def test_entrypoint_and_wasm_path_options(wat: Path, tmp_path: Path) -> None:
    img = build_image(wat, "app", tmp_path / "img.tar", wasm_path="/app/main.wasm")
    assert img.entrypoint == ("/app/main.wasm",)
    img = build_image(wat, "app", tmp_path / "img.tar", entrypoint=["/hello.wasm#init"])
    *_, config, _ = _layout(img.path)
    assert config["config"]["Entrypoint"] == ["/hello.wasm#init"]


def test_native_platform_image(tmp_path: Path) -> None:
    files = host_binary_files("/bin/echo")
    dests = [f.dest for f in files]
    assert dests[0] == "/bin/echo"
    assert any("libc.so" in d for d in dests)
    img = build_image_from_files(
        "echo", tmp_path / "e.tar", files, platform="linux/amd64", entrypoint=["/bin/echo"]
    )
    index, *_ = _layout(img.path)
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("hello", "docker.io/library/hello:latest"),
        ("hello:v1", "docker.io/library/hello:v1"),
        ("me/app:1.0", "docker.io/me/app:1.0"),
        ("ghcr.io/me/app", "ghcr.io/me/app:latest"),
        ("localhost:5000/app:x", "localhost:5000/app:x"),
        ("localhost/app", "localhost/app:latest"),
        ("docker.io/library/a-b_c.d:t", "docker.io/library/a-b_c.d:t"),
    ],
)
def test_refs_are_fully_qualified(ref: str, full: str) -> None:
    assert normalize_ref(ref) == full


@pytest.mark.parametrize(
    "ref", ["", "Hello", "app@sha256:abc", "app:", "app:-x", "a//b", " app", "app:t/x", "a..b"]
)
def test_bad_refs_are_refused(ref: str) -> None:
    with pytest.raises(ImageError, match="invalid image reference"):
        normalize_ref(ref)


def test_file_spec_parsing() -> None:
    assert parse_file_spec("a:b:/c") == (Path("a:b"), "/c")
    for bad in ("nocolon", ":/x", "a:", "a:rel", "a:/x/../y", "a:/"):
        with pytest.raises(ImageError, match="--file"):
            parse_file_spec(bad)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: p / "missing.wasm", "does not exist"),
        (lambda p: p, "not a file"),
        (lambda p: _write(p / "x.wasm", b"not wasm"), "not a wasm module"),
        (lambda p: _write(p / "x.wat", b"(module (func $broken"), "not valid WAT"),
    ],
)
def test_bad_module_input(tmp_path: Path, setup: Any, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        build_image(setup(tmp_path), "app", tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def test_layer_conflicts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="two files"):
        build_image_from_files(
            "a", tmp_path / "o.tar", [LayerFile("/x", b""), LayerFile("/x", b"")]
        )
    with pytest.raises(ImageError, match="both a file and a directory"):
        build_image_from_files(
            "a", tmp_path / "o.tar", [LayerFile("/x", b""), LayerFile("/x/y", b"")]
        )
    with pytest.raises(ImageError, match="at least one file"):
        build_image_from_files("a", tmp_path / "o.tar", [])


def test_bad_settings_are_refused(wat: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    with pytest.raises(ImageError, match="invalid env"):
        build_image(wat, "a", out, env=["NOEQUALS"])
    with pytest.raises(ImageError, match="invalid platform"):
        build_image(wat, "a", out, platform="wasm")
    with pytest.raises(ImageError, match="output directory"):
        build_image(wat, "a", tmp_path / "nodir" / "o.tar")
    with pytest.raises(ImageError, match="does not exist"):
        build_image(wat, "a", out, files=[(tmp_path / "nope", "/nope")])
    assert not out.exists()


def test_import_without_ctr_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="apt-get install containerd"):
        import_image(tmp_path / "x.tar", address="/nonexistent.sock", ctr="/nonexistent/ctr")


def test_cli_builds_an_image(wat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.txt"
    data.write_text("d")
    out = tmp_path / "cli.tar"
    argv = ["image", "build", str(wat), "-t", "cli-app:1", "-o", str(out)]
    argv += ["--env", "A=1", "--file", f"{data}:/d.txt", "--entrypoint", "/hello.wasm"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("docker.io/library/cli-app:1 sha256:")
    _, _, config, _ = _layout(out)
    assert config["config"]["Env"] == ["A=1"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["-t", "BAD"], "invalid image reference"),
        (["-t", "ok", "--file", "nocolon"], "invalid --file"),
        (["-t", "ok", "--file", "/nonexistent-src:/x"], "does not exist"),
        (["-t", "ok", "--env", "X"], "invalid env"),
    ],
)
def test_cli_bad_input_exits_1_with_message(
    wat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    assert main(["image", "build", str(wat), "-o", str(tmp_path / "o.tar"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("runwasi-py: error: ")
    assert match in err


def test_cli_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "build", str(tmp_path / "no.wasm"), "-t", "a", "-o", "o.tar"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["image", "build", "x.wasm"])
    assert e.value.code == 2
    assert "required" in capsys.readouterr().err


def test_read_image_round_trip(wat: Path, tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("A")
    img = build_image(
        wat, "rt:1", tmp_path / "img.tar", files=[(f, "/d/a.txt")], env=["E=1"], cmd=["x"]
    )
    got = read_image(img.path)
    assert got.ref == "docker.io/library/rt:1"
    assert str(got.platform) == "wasip1/wasm"
    assert got.args == ["/hello.wasm", "x"]
    assert got.env == ["E=1"]
    assert sorted(got.files) == ["/d/a.txt", "/hello.wasm"]
    assert got.files["/d/a.txt"] == b"A"
    assert got.files["/hello.wasm"].startswith(b"\0asm")


def test_read_image_detects_corruption(wat: Path, tmp_path: Path) -> None:
    img = build_image(wat, "rt", tmp_path / "img.tar")
    members = _members(img.path)
    layer_name = "blobs/sha256/" + img.layer_digest.split(":")[1]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in members.items():
            if name == layer_name:
                data = data[:-1] + bytes([data[-1] ^ 1])
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageError, match="does not match its digest"):
        read_image(bad)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    with pytest.raises(ImageError, match="cannot read image"):
        read_image(tmp_path / "junk.tar")
