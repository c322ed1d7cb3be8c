"""Reading bundles and resolving entrypoints inside the rootfs (no escape)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runwasi_py import InvalidArgument, Stdio
from runwasi_py._bundle.spec import (
    BundleSpec,
    build_context,
    grouping_id,
    is_sandbox_container,
    load_spec,
    resolve_entrypoint,
    resolve_in_rootfs,
    sandbox_id,
)

WASM = b"\0asm\x01\0\0\0"


def make_bundle(tmp_path: Path, spec: dict[str, Any] | None = None) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    if spec is None:
        spec = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/hello.wasm"], "env": ["PATH=/bin"], "cwd": "/"},
            "root": {"path": "rootfs"},
        }
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def test_load_containerd_like_spec(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        {
            "process": {"args": ["/app.wasm#run", "x"], "env": ["A=1"], "cwd": "/work"},
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]},
                {"destination": "/etc/hosts", "source": "/h", "options": ["rbind", "ro"]},
            ],
            "linux": {"resources": {"memory": {"limit": 1 << 20}}},
            "annotations": {"io.kubernetes.cri.sandbox-id": "pod1"},
        },
    )
    spec = BundleSpec.load(bundle)
    assert spec.args == ["/app.wasm#run", "x"]
    assert spec.env == ["A=1"]
    assert spec.cwd == "/work"
    assert spec.rootfs == bundle / "rootfs"
    assert [m.destination for m in spec.mounts] == ["/data", "/etc/hosts"]
    assert spec.mounts[1].options == ("rbind", "ro")
    assert spec.memory_limit == 1 << 20
    assert grouping_id(spec.annotations, "c1") == "pod1"


def test_defaults_when_fields_absent(tmp_path: Path) -> None:
    spec = BundleSpec.load(make_bundle(tmp_path, {}))
    assert spec.args == []
    assert spec.cwd == "/"
    assert spec.mounts == []
    assert spec.memory_limit is None
    assert spec.annotations == {}


@pytest.mark.parametrize("limit", [-1, 0])
def test_memory_limit_unlimited(tmp_path: Path, limit: int) -> None:
    spec = {"linux": {"resources": {"memory": {"limit": limit}}}}
    assert BundleSpec.load(make_bundle(tmp_path, spec)).memory_limit is None


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"has no config\.json"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_config(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(InvalidArgument, match=message):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"process": []}, "process must be an object"),
        ({"process": {"args": "x"}}, "process.args must be an array"),
        ({"process": {"args": [1]}}, "process.args must be an array of strings"),
        ({"process": {"cwd": 3}}, "process.cwd must be a string"),
        ({"annotations": {"a": 1}}, "annotations must map strings"),
        ({"linux": {"resources": {"memory": {"limit": "1G"}}}}, "memory.limit must be"),
        ({"linux": {"resources": {"memory": {"limit": True}}}}, "memory.limit must be"),
        ({"mounts": {}}, "mounts must be an array"),
        ({"mounts": [3]}, r"mounts\[0\] must be an object"),
    ],
)
def test_wrong_types(tmp_path: Path, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        BundleSpec.load(make_bundle(tmp_path, spec))


def test_cri_annotations() -> None:
    sandbox = {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": "p",
    }
    assert is_sandbox_container(sandbox)
    assert not is_sandbox_container({"io.kubernetes.cri.container-type": "container"})
    assert sandbox_id(sandbox) == "p"
    assert sandbox_id({}) is None
    assert grouping_id({}, "c9") == "c9"


# --- resolving inside the rootfs ---------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "app").mkdir()
    (root / "bin" / "app.wasm").write_bytes(WASM)
    (root / "app" / "main.wasm").write_bytes(WASM)
    (tmp_path / "secret.wasm").write_bytes(WASM)  # outside the rootfs
    return root


def test_plain_paths(rootfs: Path) -> None:
    assert resolve_in_rootfs(rootfs, "/bin/app.wasm") == rootfs / "bin" / "app.wasm"
    assert resolve_in_rootfs(rootfs, "app.wasm", "/bin") == rootfs / "bin" / "app.wasm"
    assert resolve_in_rootfs(rootfs, "./../bin/./app.wasm", "/app") == rootfs / "bin/app.wasm"
    assert resolve_in_rootfs(rootfs, "/") == rootfs
    assert resolve_in_rootfs(rootfs, "/nope/x") == rootfs / "nope" / "x"


@pytest.mark.parametrize(
    ("path", "cwd"),
    [
        ("/../secret.wasm", "/"),
        ("../secret.wasm", "/"),
        ("../../secret.wasm", "/app"),
        ("/a/../..", "/"),
    ],
)
def test_dotdot_escape_refused(rootfs: Path, path: str, cwd: str) -> None:
    with pytest.raises(InvalidArgument, match="escapes the rootfs"):
        resolve_in_rootfs(rootfs, path, cwd)


def test_absolute_symlink_is_relative_to_rootfs(rootfs: Path) -> None:
    # on the host this would point at the host's /bin; inside the rootfs it is rootfs/bin
    (rootfs / "link").symlink_to("/bin/app.wasm")
    (rootfs / "dirlink").symlink_to("/bin")
    assert resolve_in_rootfs(rootfs, "/link") == rootfs / "bin" / "app.wasm"
    assert resolve_in_rootfs(rootfs, "/dirlink/app.wasm") == rootfs / "bin" / "app.wasm"


def test_relative_symlink_chain(rootfs: Path) -> None:
    (rootfs / "app" / "l1").symlink_to("l2")
    (rootfs / "app" / "l2").symlink_to("../bin/app.wasm")
    assert resolve_in_rootfs(rootfs, "/app/l1") == rootfs / "bin" / "app.wasm"


def test_symlink_escape_refused(rootfs: Path) -> None:
    (rootfs / "app" / "out").symlink_to("../../secret.wasm")
    with pytest.raises(InvalidArgument, match="escapes the rootfs"):
        resolve_in_rootfs(rootfs, "/app/out")


def test_symlink_to_host_absolute_path_stays_inside(rootfs: Path, tmp_path: Path) -> None:
    # an absolute target naming the real host file must not reach it
    (rootfs / "host").symlink_to(tmp_path / "secret.wasm")
    resolved = resolve_in_rootfs(rootfs, "/host")
    assert resolved.is_relative_to(rootfs)
    assert not resolved.exists()


def test_symlink_loop(rootfs: Path) -> None:
    (rootfs / "a").symlink_to("b")
    (rootfs / "b").symlink_to("a")
    with pytest.raises(InvalidArgument, match="too many levels"):
        resolve_in_rootfs(rootfs, "/a")


def test_rootfs_itself_a_symlink(rootfs: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(rootfs)
    assert resolve_in_rootfs(alias, "/bin/app.wasm") == rootfs / "bin" / "app.wasm"


@pytest.mark.parametrize("proc", [True, False], ids=["proc", "no-proc"])
def test_the_rootfs_resolves_as_realpath_would(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: bool
) -> None:
    """The rootfs is resolved by the kernel (an O_PATH open), else by os.path.realpath."""
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "up").symlink_to("..")
    via_links = tmp_path / "links" / "up" / rootfs.name
    missing = tmp_path / "links" / "up" / "no-such-rootfs"
    if not proc:
        readlink = os.readlink

        def no_proc(path: str) -> str:
            if path.startswith("/proc/"):
                raise FileNotFoundError(path)
            return readlink(path)

        monkeypatch.setattr(os, "readlink", no_proc)
    for root in (rootfs, via_links, missing, tmp_path / "links" / ".." / rootfs.name):
        want = Path(os.path.realpath(root)) / "bin" / "app.wasm"
        assert resolve_in_rootfs(root, "/bin/app.wasm") == want


def test_nul_byte_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        resolve_in_rootfs(rootfs, "/bin/a\0b")


# --- entrypoint ---------------------------------------------------------------------


def test_entrypoint_absolute_with_func(rootfs: Path) -> None:
    ep = resolve_entrypoint(rootfs, "/bin/app.wasm#init")
    assert ep.path == "/bin/app.wasm"
    assert ep.func == "init"
    assert ep.source == rootfs / "bin" / "app.wasm"


def test_entrypoint_relative_to_cwd_first(rootfs: Path) -> None:
    (rootfs / "app" / "app.wasm").write_bytes(WASM)
    ep = resolve_entrypoint(rootfs, "app.wasm", cwd="/app", env=["PATH=/bin"])
    assert ep.source == rootfs / "app" / "app.wasm"
    assert ep.func == "_start"


def test_entrypoint_from_path(rootfs: Path) -> None:
    ep = resolve_entrypoint(rootfs, "app.wasm", cwd="/", env=["PATH=/nope:/bin"])
    assert ep.source == rootfs / "bin" / "app.wasm"


def test_entrypoint_with_slash_does_not_search_path(rootfs: Path) -> None:
    ep = resolve_entrypoint(rootfs, "./app.wasm", cwd="/", env=["PATH=/bin"])
    assert ep.source is None


def test_entrypoint_not_found_and_empty(rootfs: Path) -> None:
    assert resolve_entrypoint(rootfs, "/missing.wasm").source is None
    assert resolve_entrypoint(rootfs, "/bin").source is None  # a directory is not a module
    ep = resolve_entrypoint(rootfs, "#init")
    assert (ep.path, ep.func, ep.source) == ("", "init", None)


def test_only_a_regular_file_is_an_entrypoint_whatever_the_walk_ends_on(rootfs: Path) -> None:
    """The walk's own lstat decides where it has one; otherwise the file is looked at."""
    app = rootfs / "bin" / "app.wasm"
    os.mkfifo(rootfs / "fifo.wasm")
    (rootfs / "link.wasm").symlink_to("bin/app.wasm")
    (rootfs / "dirlink").symlink_to("bin")
    found = {
        "/fifo.wasm": None,  # no module, though it exists
        "/link.wasm": app,  # a link is followed to its file
        "/dirlink/app.wasm": app,
        "/bin/app.wasm/x": None,  # under a file
        "/bin/..": None,  # ends on a directory by ..
        "/bin/../bin/app.wasm": app,
        "/dirlink": None,
    }
    for arg0, want in found.items():
        assert resolve_entrypoint(rootfs, arg0).source == want, arg0


def test_entrypoint_escape_through_path_env(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="escapes the rootfs"):
        resolve_entrypoint(rootfs, "secret.wasm", cwd="/", env=["PATH=/../.."])


def test_entrypoint_symlink_escape(rootfs: Path) -> None:
    (rootfs / "evil.wasm").symlink_to("../secret.wasm")
    with pytest.raises(InvalidArgument, match="escapes the rootfs"):
        resolve_entrypoint(rootfs, "/evil.wasm")


# --- context ------------------------------------------------------------------------


def test_build_context(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        {
            "process": {"args": ["hello.wasm", "a"], "env": ["PATH=/bin"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "annotations": {"k": "v"},
            "linux": {"resources": {"memory": {"limit": 4096}}},
        },
    )
    (bundle / "rootfs" / "bin").mkdir()
    (bundle / "rootfs" / "bin" / "hello.wasm").write_bytes(WASM)
    stdio = Stdio(stdout="/tmp/out")
    ctx = build_context(BundleSpec.load(bundle), container_id="c1", namespace="ns", stdio=stdio)
    assert ctx.container_id == "c1"
    assert ctx.namespace == "ns"
    assert ctx.bundle == bundle
    assert ctx.rootfs == bundle / "rootfs"
    assert ctx.args == ["hello.wasm", "a"]
    assert ctx.envs == ["PATH=/bin"]
    assert ctx.entrypoint.source == bundle / "rootfs" / "bin" / "hello.wasm"
    assert ctx.stdio is stdio
    assert ctx.memory_limit == 4096
    assert ctx.annotations == {"k": "v"}
    assert ctx.spec["annotations"] == {"k": "v"}


def test_build_context_empty_args(tmp_path: Path) -> None:
    spec = BundleSpec.load(make_bundle(tmp_path, {"process": {"args": []}}))
    with pytest.raises(InvalidArgument, match=r"process\.args is empty"):
        build_context(spec, container_id="c", namespace="n")


def test_absolute_root_path(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    spec = BundleSpec.load(make_bundle(tmp_path, {"root": {"path": os.fspath(other)}}))
    assert spec.rootfs == other


def test_read_limited_reads_up_to_the_limit(tmp_path: Path) -> None:
    from runwasi_py._bundle.spec import _read_limited

    f = tmp_path / "config.json"
    f.write_bytes(b"x" * 100_000)
    assert _read_limited(str(f), 1 << 20) == b"x" * 100_000
    assert _read_limited(str(f), 10) == b"x" * 10
    # a file whose size stat reports as 0 (procfs) is read in chunks, still up to the limit
    status = _read_limited("/proc/self/status", 1 << 20)
    assert status.startswith(b"Name:")
    assert _read_limited("/proc/self/status", 5) == b"Name:"
