"""The CRI client and its kubelet-like helpers, against an in-process gRPC server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from runwasi_py.containerd.cri import (
    CriClient,
    CriError,
    container_config,
    pb,
    pod_config,
    read_log,
)


class _Handler(grpc.GenericRpcHandler):
    """Answers Version; refuses RunPodSandbox as containerd does for an unknown handler."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def service(self, call: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = call.method
        if method == "/runtime.v1.RuntimeService/Version":
            return grpc.unary_unary_rpc_method_handler(
                self._version,
                request_deserializer=pb.VersionRequest.FromString,
                response_serializer=pb.VersionResponse.SerializeToString,
            )
        if method == "/runtime.v1.RuntimeService/RunPodSandbox":
            return grpc.unary_unary_rpc_method_handler(
                self._run_pod,
                request_deserializer=pb.RunPodSandboxRequest.FromString,
                response_serializer=pb.RunPodSandboxResponse.SerializeToString,
            )
        return None

    def _version(self, req: pb.VersionRequest, ctx: grpc.ServicerContext) -> pb.VersionResponse:
        self.seen.append(req)
        return pb.VersionResponse(runtime_name="containerd", runtime_version="v9.9.9")

    def _run_pod(
        self, req: pb.RunPodSandboxRequest, ctx: grpc.ServicerContext
    ) -> pb.RunPodSandboxResponse:
        self.seen.append(req)
        ctx.abort(grpc.StatusCode.NOT_FOUND, f"no runtime for {req.runtime_handler!r}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[CriClient, _Handler]]:
    handler = _Handler()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([handler])
    sock = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    try:
        with CriClient(sock, timeout=10) as client:
            yield client, handler
    finally:
        server.stop(None).wait()


def test_calls_round_trip_the_runtime_v1_messages(served: tuple[CriClient, _Handler]) -> None:
    client, handler = served
    assert client.version().runtime_version == "v9.9.9"
    assert handler.seen[0].version == "v1"


def test_a_failed_call_carries_code_and_message(served: tuple[CriClient, _Handler]) -> None:
    client, handler = served
    cfg = pod_config("p", log_directory="/logs/p", cgroup_parent="/pods/p", uid="u1")
    with pytest.raises(CriError) as e:
        client.run_pod_sandbox(cfg, "nosuch")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert e.value.details == "no runtime for 'nosuch'"
    assert "RunPodSandbox: NOT_FOUND" in str(e.value)
    sent = handler.seen[-1]
    assert (sent.config.metadata.uid, sent.config.linux.cgroup_parent) == ("u1", "/pods/p")


def test_an_unimplemented_method_is_a_cri_error(served: tuple[CriClient, _Handler]) -> None:
    client, _ = served
    with pytest.raises(CriError) as e:
        client.list_images()
    assert e.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_pod_config_follows_kubelet_for_host_and_pod_networks() -> None:
    host = pod_config("web", log_directory="/l", host_network=True)
    pod = pod_config("web", log_directory="/l")
    nsopt = host.linux.security_context.namespace_options
    assert (nsopt.network, host.hostname) == (pb.NODE, "")
    assert (pod.linux.security_context.namespace_options.network, pod.hostname) == (pb.POD, "web")


def test_container_config_carries_argv_env_mounts_and_limits() -> None:
    cfg = container_config(
        "app",
        "img:v1",
        command=["/app.wasm"],
        args=["a", "b c"],
        env={"K": "v"},
        mounts=[pb.Mount(container_path="/data", host_path="/srv", readonly=True)],
        resources=pb.LinuxContainerResources(memory_limit_in_bytes=1 << 20),
    )
    assert (list(cfg.command), list(cfg.args)) == (["/app.wasm"], ["a", "b c"])
    assert [(e.key, e.value) for e in cfg.envs] == [("K", "v")]
    assert cfg.log_path == "app.log"
    assert cfg.linux.resources.memory_limit_in_bytes == 1 << 20
    assert not container_config("x", "i").HasField("linux")


def test_read_log_parses_the_cri_format(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(
        "2026-01-01T00:00:00.1Z stdout F hello world\n"
        "2026-01-01T00:00:00.2Z stderr P part\n"
        "2026-01-01T00:00:00.3Z stdout F \n"
    )
    records = read_log(log)
    assert [(r.stream, r.partial, r.text) for r in records] == [
        ("stdout", False, "hello world"),
        ("stderr", True, "part"),
        ("stdout", False, ""),
    ]
    assert read_log(tmp_path / "missing.log") == []
