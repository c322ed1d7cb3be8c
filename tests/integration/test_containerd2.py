"""containerd 2.3's shim handshake, observed through the real daemons (issue 9).

A recording wrapper stands in front of the shim (``containerd-shim-pywasmtime-v1`` first on
containerd's PATH): it keeps what containerd wrote on stdin and what the shim answered for
every ``start``, ``delete`` and ``-info``, then behaves exactly as the shim. That shows what
containerd sends (BootstrapParams, runtime options, the ``-info`` request) and what it makes
of the answer (bootstrap.json, task API v3, which containers never see ``start``).

Needs root and both containerd builds: skipped outside CI, required under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from runwasi_py._launch.bootstrap import Bootstrap, bootstrap
from runwasi_py._launch.flags import Flags
from runwasi_py._proto.messages import (
    BootstrapResult,
    RuntimeInfo,
    RuntimeOptions,
    pack_any,
)
from runwasi_py._proto.wire import field_map, length_delimited
from runwasi_py.containerd import CRI_NAMESPACE, ContainerdUnavailable, PrivateContainerd
from runwasi_py.containerd import find_build as _find_build
from runwasi_py.containerd.cri import CriClient
from runwasi_py.examples._demo import SHIM_BINARY, scripts_dir
from tests.integration._ctr import new_id, wait_for
from tests.integration._images import PROBE, ImageSet
from tests.integration._require import require_containerd, require_shim, unavailable
from tests.integration.conftest import DEFAULT_23_BIN
from tests.integration.cri._pods import Pods

RUNTIME = "io.containerd.pywasmtime.v1"

WRAPPER = """#!/bin/sh
# Records one shim invocation of containerd, then is the shim.
n="{calls}/$(date +%s%N).$$"
if [ -f "{calls}/../env" ]; then set -a; . "{calls}/../env"; set +a; fi
cat > "$n.stdin"
printf '%s\\n' "$@" > "$n.argv"
"{real}" "$@" < "$n.stdin" > "$n.stdout"
rc=$?
cat "$n.stdout"
echo $rc > "$n.rc"
exit $rc
"""


@dataclass(frozen=True)
class Call:
    """One run of the shim binary by containerd."""

    argv: list[str]
    stdin: bytes
    stdout: bytes
    rc: int

    @property
    def action(self) -> str:
        """``start``, ``delete``, ``-info`` (the last argument)."""
        return self.argv[-1] if self.argv else ""

    def flag(self, name: str) -> str:
        return self.argv[self.argv.index(name) + 1] if name in self.argv else ""


class Recorder:
    """The wrapper's folder (put it first on containerd's PATH) and what it recorded."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.env_file = root / "env"
        self.calls_dir = root / "calls"
        self.bin.mkdir(parents=True)
        self.calls_dir.mkdir()
        real = shutil.which(SHIM_BINARY, path=str(scripts_dir()))
        assert real is not None
        wrapper = self.bin / SHIM_BINARY
        wrapper.write_text(WRAPPER.format(calls=self.calls_dir, real=real))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def set_env(self, **env: str) -> None:
        """Environment for the shims the wrapper runs from now on (as containerd's own)."""
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def calls(self) -> list[Call]:
        out = []
        for rc_file in sorted(self.calls_dir.glob("*.rc")):
            base = str(rc_file)[: -len(".rc")]
            out.append(
                Call(
                    argv=Path(base + ".argv").read_text().splitlines(),
                    stdin=Path(base + ".stdin").read_bytes(),
                    stdout=Path(base + ".stdout").read_bytes(),
                    rc=int(rc_file.read_text()),
                )
            )
        return out

    def of(self, container_id: str) -> list[Call]:
        """The calls for ``container_id`` (its ``-id``)."""
        return [c for c in self.calls() if c.flag("-id") == container_id]


def _build(version: str) -> str | None:
    require_containerd()
    require_shim()
    bin_dir = (
        None if version == "1.6" else os.environ.get("RUNWASI_PY_CONTAINERD_23_BIN", DEFAULT_23_BIN)
    )
    try:
        build = _find_build(bin_dir)
    except ContainerdUnavailable as e:
        unavailable(f"containerd {version}: {e} (scripts/setup.sh builds it)")
        raise
    got = f"{build.version.major}.{build.version.minor}"
    if got != version:
        unavailable(f"wanted containerd {version}, {build.containerd} is {build.version}")
    return bin_dir


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Recorder:
    return Recorder(tmp_path_factory.mktemp("rec"))


@pytest.fixture(scope="module")
def c8d23(
    tmp_path_factory: pytest.TempPathFactory,
    recorder: Recorder,
    test_images: ImageSet,
) -> Iterator[PrivateContainerd]:
    """containerd 2.3 with CRI, the recording wrapper in front of the shim, images in k8s.io."""
    bin_dir = _build("2.3")
    c8d = PrivateContainerd(
        tmp_path_factory.mktemp("c23"),
        shim_dirs=[recorder.bin, scripts_dir()],
        namespace=CRI_NAMESPACE,
        containerd_bin=bin_dir,
        cri=True,
    )
    c8d.start()
    try:
        for tarball in test_images.all():
            c8d.import_image(tarball)
        yield c8d
    finally:
        c8d.stop()


@pytest.fixture(scope="module")
def c8d16(
    tmp_path_factory: pytest.TempPathFactory, recorder: Recorder, test_images: ImageSet
) -> Iterator[PrivateContainerd]:
    """Debian's containerd 1.6 with the same wrapper, for what must not change there."""
    bin_dir = _build("1.6")
    c8d = PrivateContainerd(
        tmp_path_factory.mktemp("c16"),
        shim_dirs=[recorder.bin, scripts_dir()],
        namespace="c2e2e",
        containerd_bin=bin_dir,
    )
    c8d.start()
    try:
        c8d.import_image(test_images.probe)
        yield c8d
    finally:
        c8d.stop()


def _run_detached(c8d: PrivateContainerd, cid: str, *extra: str) -> dict[str, object]:
    """``ctr run -d`` a spinning probe, read containerd's bootstrap.json, then remove it."""
    c8d.run(
        PROBE,
        cid,
        "/probe.wasm",
        "spin",
        runtime=RUNTIME,
        rm=False,
        detach=True,
        extra=extra,
        check=True,
    )
    try:
        boot = c8d.bundle(cid) / "bootstrap.json"
        return json.loads(boot.read_text()) if boot.exists() else {}
    finally:
        c8d.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        wait_for(lambda: c8d.ctr("task", "rm", cid, check=False).returncode == 0, f"{cid} gone")
        c8d.ctr("container", "rm", cid)


# -- BootstrapParams in, BootstrapResult out ---------------------------------------------------


def test_23_sends_bootstrap_params_with_runtime_options(
    c8d23: PrivateContainerd, recorder: Recorder, tmp_path: Path
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("# read by nobody: it only has to reach the shim\n")
    cid = new_id("boot")
    shown = _run_detached(c8d23, cid, "--runtime-config-path", str(config))
    (start,) = [c for c in recorder.of(cid) if c.action == "start"]
    boot = bootstrap(start.stdin, Flags(id=cid, namespace=CRI_NAMESPACE))
    assert isinstance(boot, Bootstrap)
    assert boot.containerd_version.startswith("v2.3.")
    assert boot.ttrpc_address == c8d23.ttrpc_address
    assert boot.grpc_address == c8d23.address
    assert boot.containerd_binary == str(c8d23.build.containerd)
    assert boot.debug  # the harness runs containerd at debug level
    options = boot.runtime_options
    assert options is not None
    assert options[0] == "runtimeoptions.v1.Options"
    assert RuntimeOptions.FromString(options[1]).config_path == str(config)
    # The answer is a protobuf BootstrapResult announcing task API v3, which 2.3 kept.
    result = BootstrapResult.FromString(start.stdout)
    assert (result.version, result.protocol) == (3, "ttrpc")
    assert result.address.startswith("unix://")
    assert shown == {"version": 3, "address": result.address, "protocol": "ttrpc"}


def test_16_gets_the_plain_address_and_no_bootstrap(
    c8d16: PrivateContainerd, recorder: Recorder, tmp_path: Path
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_text("\n")
    cid = new_id("old")
    shown = _run_detached(c8d16, cid, "--runtime-config-path", str(config))
    (start,) = [c for c in recorder.of(cid) if c.action == "start"]
    # 1.6 writes the runtime options as a bare Any, which is not BootstrapParams
    assert start.stdin == bytes(pack_any(RuntimeOptions(config_path=str(config))))
    assert bootstrap(start.stdin, Flags(id=cid, namespace="c2e2e")) is None
    assert start.stdout.startswith(b"unix://")
    assert b"{" not in start.stdout
    assert shown == {}  # 1.6 keeps the address file, no bootstrap.json


# -- task API v3 in a pod ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cri23(c8d23: PrivateContainerd) -> Iterator[CriClient]:
    with CriClient(c8d23.address) as client:
        client.wait_ready()
        yield client


@pytest.fixture(scope="module")
def pods23(c8d23: PrivateContainerd, cri23: CriClient) -> Iterator[Pods]:
    made = Pods(c8d23, cri23)
    try:
        yield made
    finally:
        made.remove_all()


def test_23_pod_containers_reuse_the_sandbox_shim_without_start_or_delete(
    c8d23: PrivateContainerd, cri23: CriClient, pods23: Pods, recorder: Recorder
) -> None:
    pod = pods23.run("v3")
    spin = pod.start("spin", PROBE, args=["spin"])
    # containerd loaded the sandbox's shim for the container from the sandbox's bootstrap.json
    sandbox_boot = json.loads((c8d23.bundle(pod.id) / "bootstrap.json").read_text())
    assert sandbox_boot["version"] == 3
    assert json.loads((c8d23.bundle(spin) / "bootstrap.json").read_text()) == sandbox_boot
    assert (c8d23.bundle(spin) / "sandbox").read_text() == pod.id
    hello = pod.run("hello", PROBE)
    assert hello.exit_code == 0
    assert [line.text for line in pod.log("hello")] == ["hello from wasm"]
    cri23.stop_container(spin, timeout=0)
    for cid in pod.containers.values():
        cri23.remove_container(cid)
    pod.remove()
    # start ran for the sandbox only; no container of the pod saw start or delete
    assert [c.action for c in recorder.of(pod.id)][:1] == ["start"]
    for cid in pod.containers.values():
        assert recorder.of(cid) == []


def test_23_task_api_2_on_request_starts_the_shim_for_every_container(
    c8d23: PrivateContainerd, cri23: CriClient, pods23: Pods, recorder: Recorder
) -> None:
    recorder.set_env(RUNWASI_PY_TASK_API="2")
    try:
        pod = pods23.run("v2")
        hello = pod.run("hello", PROBE)
    finally:
        recorder.set_env()
    assert hello.exit_code == 0
    cid = pod.containers["hello"]
    (start,) = [c for c in recorder.of(cid) if c.action == "start"]
    assert BootstrapResult.FromString(start.stdout).version == 2
    assert BootstrapResult.FromString(recorder.of(pod.id)[0].stdout).version == 2
    pod.remove()


def test_23_removed_pod_leaves_no_shim(
    c8d23: PrivateContainerd, cri23: CriClient, pods23: Pods
) -> None:
    pod = pods23.run("gone")
    pod.start("spin", PROBE, args=["spin"])
    address = json.loads((c8d23.bundle(pod.id) / "bootstrap.json").read_text())["address"]
    sock = Path(address.removeprefix("unix://"))
    assert sock.exists()
    pod.remove()
    wait_for(lambda: not sock.exists(), "the pod's shim to exit")


# -- -info ---------------------------------------------------------------------------------------


def _plugin_info(address: str, runtime_path: str, options: bytes | None) -> tuple[int, bytes]:
    """containerd's introspection ``PluginInfo`` of the task plugin, as CRI asks it.

    Returns (status code, RuntimeInfo bytes); the messages are encoded by hand (containerd's
    introspection protos are not vendored: only this test needs them).
    """
    runtime_request = length_delimited(1, runtime_path.encode())
    if options is not None:
        runtime_request += length_delimited(2, options)
    request = (
        length_delimited(1, b"io.containerd.runtime.v2")
        + length_delimited(2, b"task")
        + length_delimited(
            3,
            length_delimited(1, b"containerd.types.RuntimeRequest")
            + length_delimited(2, runtime_request),
        )
    )
    with grpc.insecure_channel(f"unix://{address}") as channel:
        call = channel.unary_unary(
            "/containerd.services.introspection.v1.Introspection/PluginInfo",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            raw: bytes = call(request, timeout=30)
        except grpc.RpcError as e:
            return e.code().value[0], b""
    extra = field_map(raw)[2][-1]
    assert isinstance(extra, bytes)
    assert field_map(extra)[1] == [b"containerd.types.RuntimeInfo"]
    value = field_map(extra).get(2, [b""])[-1]
    assert isinstance(value, bytes)
    return 0, value


def test_23_cri_asked_for_runtime_info_at_startup(
    c8d23: PrivateContainerd, recorder: Recorder
) -> None:
    infos = [c for c in recorder.calls() if c.action == "-info"]
    assert infos, "CRI runs the shim's -info for its runtime handler"
    for call in infos:
        assert (call.rc, call.stdin) == (0, b"")  # no options table: nothing on stdin
        features = RuntimeInfo.FromString(call.stdout).features
        assert features is not None
        assert (
            features.type_url
            == "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
        )
        assert "ro" in json.loads(features.value)["mountOptions"]


def test_23_introspection_returns_the_shim_runtime_info_with_options(
    c8d23: PrivateContainerd, recorder: Recorder
) -> None:
    options = bytes(pack_any(RuntimeOptions(config_path="/etc/pywasmtime.toml")))
    code, value = _plugin_info(c8d23.address, RUNTIME, options)
    assert code == 0
    info = RuntimeInfo.FromString(value)
    assert info.name == RUNTIME
    assert info.version is not None
    assert info.version.version
    assert info.options is not None
    assert bytes(info.options) == options
    assert info.features is not None
    features = json.loads(info.features.value)
    assert features["ociVersionMin"] == "1.0.0"
    assert "user" not in features.get("linux", {}).get("namespaces", [])
    assert info.annotations["io.github.runwasi-py.task-api-versions"] == "2,3"
    assert recorder.calls()[-1].stdin == options  # what containerd put on -info's stdin


def test_23_task_create_loads_the_shim_info(c8d23: PrivateContainerd) -> None:
    # 2.3's task manager runs -info once per runtime (cached on success only: a failing
    # -info would run again, with an error line, for every container)
    cid = new_id("info")
    _run_detached(c8d23, cid)
    log = c8d23.log_path.read_text()
    assert "failed to load runtime info" not in log
    assert (
        f'msg="loaded shim info" io.github.runwasi-py.task-api-versions="2,3" shim={RUNTIME}' in log
    )


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RUNWASI_PY_TASK_API": "4"},
            "RUNWASI_PY_TASK_API=4: this shim speaks task API versions 2 and 3 (or auto)",
        ),
        (
            {"MAX_SHIM_VERSION": "1"},
            "containerd reads shim versions up to MAX_SHIM_VERSION=1; "
            "this shim speaks task API versions 2 and 3",
        ),
    ],
    ids=["task-api", "max-shim-version"],
)
def test_23_unknown_protocol_version_fails_start_with_one_line(
    c8d23: PrivateContainerd, recorder: Recorder, env: dict[str, str], message: str
) -> None:
    cid = new_id("badver")
    recorder.set_env(**env)
    try:
        res = c8d23.run(PROBE, cid, runtime=RUNTIME, rm=False)
    finally:
        recorder.set_env()
        c8d23.ctr("container", "rm", cid, check=False)
    assert res.returncode != 0
    (start,) = [c for c in recorder.of(cid) if c.action == "start"]
    assert start.rc == 1
    assert f"start: {message}\n" in res.stderr  # containerd passed the shim's line to ctr


def test_23_shim_exits_when_the_sandbox_went_first(
    c8d23: PrivateContainerd, cri23: CriClient, pods23: Pods
) -> None:
    # The sandbox task dies first (its Shutdown is declined: a container still runs); with
    # task API v3 the container's Delete comes without a Shutdown, and must end the shim.
    pod = pods23.run("orphan")
    spin = pod.start("spin", PROBE, args=["spin"])
    address = json.loads((c8d23.bundle(pod.id) / "bootstrap.json").read_text())["address"]
    sock = Path(address.removeprefix("unix://"))
    c8d23.ctr("task", "kill", "-s", "SIGKILL", pod.id)
    wait_for(lambda: not c8d23.bundle(pod.id).exists(), "the sandbox task to be deleted")
    assert sock.exists()  # the container keeps the shim
    cri23.stop_container(spin, timeout=0)
    wait_for(lambda: not sock.exists(), "the shim to exit after the last Delete")
    pod.remove()
