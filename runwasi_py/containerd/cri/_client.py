"""A CRI client (``runtime.v1`` over gRPC) for containerd's CRI plugin, as kubelet speaks it.

Each method sends one request message and returns the response message of the generated
``runtime.v1`` types; a failed call raises :class:`CriError` carrying the gRPC status code
and containerd's message, which is what a kubelet user sees.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc

from runwasi_py.containerd.cri.gen import cri_runtime_v1_pb2 as pb

__all__ = ["CriClient", "CriError"]

Resp = TypeVar("Resp")


class CriError(Exception):
    """A CRI call failed: ``code`` is the gRPC status, ``details`` containerd's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method}: {code.name}: {details}")


class CriClient:
    """``runtime.v1.RuntimeService`` and ``ImageService`` on a containerd socket.

    Example:
        >>> with CriClient("/run/runwasi-py/containerd/containerd.sock") as cri:
        ...     print(cri.version().runtime_version)
    """

    def __init__(self, address: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.address = os.fspath(address)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{self.address}")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(
        self,
        service: str,
        method: str,
        request: Any,
        response_type: Callable[[bytes], Resp],
        *,
        timeout: float | None = None,
    ) -> Resp:
        """Send ``request`` to ``/runtime.v1.<service>/<method>`` and decode the answer."""
        stub: Any = self._channel.unary_unary(
            f"/runtime.v1.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type,
        )
        try:
            return stub(request, timeout=timeout or self.timeout)  # type: ignore[no-any-return]
        except grpc.RpcError as e:
            call: Any = e
            raise CriError(method, call.code(), call.details() or "") from None

    def _rt(self, method: str, request: Any, response: Any, timeout: float | None = None) -> Any:
        return self.call("RuntimeService", method, request, response.FromString, timeout=timeout)

    # -- RuntimeService --------------------------------------------------------------------

    def version(self) -> pb.VersionResponse:
        return self._rt("Version", pb.VersionRequest(version="v1"), pb.VersionResponse)  # type: ignore[no-any-return]

    def status(self) -> pb.StatusResponse:
        return self._rt("Status", pb.StatusRequest(), pb.StatusResponse)  # type: ignore[no-any-return]

    def wait_ready(self, timeout: float = 30.0) -> pb.StatusResponse:
        """Wait until the CRI plugin has finished initialising and answers ``Status``.

        containerd serves its socket before the CRI plugin is ready: until then every CRI
        call fails with "server is not initialized yet" (UNKNOWN). Other errors are raised.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.status()
            except CriError as e:
                if "not initialized" not in e.details or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str) -> str:
        """RunPodSandbox; returns the sandbox id."""
        req = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        resp: pb.RunPodSandboxResponse = self._rt("RunPodSandbox", req, pb.RunPodSandboxResponse)
        return resp.pod_sandbox_id

    def stop_pod_sandbox(self, pod_id: str) -> None:
        req = pb.StopPodSandboxRequest(pod_sandbox_id=pod_id)
        self._rt("StopPodSandbox", req, pb.StopPodSandboxResponse)

    def remove_pod_sandbox(self, pod_id: str) -> None:
        req = pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id)
        self._rt("RemovePodSandbox", req, pb.RemovePodSandboxResponse)

    def pod_sandbox_status(
        self, pod_id: str, *, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse:
        req = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose)
        return self._rt("PodSandboxStatus", req, pb.PodSandboxStatusResponse)  # type: ignore[no-any-return]

    def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None) -> list[pb.PodSandbox]:
        req = pb.ListPodSandboxRequest(filter=filter)
        resp: pb.ListPodSandboxResponse = self._rt("ListPodSandbox", req, pb.ListPodSandboxResponse)
        return list(resp.items)

    def create_container(
        self, pod_id: str, config: pb.ContainerConfig, sandbox_config: pb.PodSandboxConfig
    ) -> str:
        """CreateContainer; returns the container id."""
        req = pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=sandbox_config
        )
        resp: pb.CreateContainerResponse = self._rt(
            "CreateContainer", req, pb.CreateContainerResponse
        )
        return resp.container_id

    def start_container(self, container_id: str) -> None:
        req = pb.StartContainerRequest(container_id=container_id)
        self._rt("StartContainer", req, pb.StartContainerResponse)

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """StopContainer: SIGTERM (or the image's stop signal), SIGKILL after ``timeout`` s."""
        req = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        self._rt("StopContainer", req, pb.StopContainerResponse, timeout=self.timeout + timeout)

    def remove_container(self, container_id: str) -> None:
        req = pb.RemoveContainerRequest(container_id=container_id)
        self._rt("RemoveContainer", req, pb.RemoveContainerResponse)

    def list_containers(self, filter: pb.ContainerFilter | None = None) -> list[pb.Container]:
        req = pb.ListContainersRequest(filter=filter)
        resp: pb.ListContainersResponse = self._rt("ListContainers", req, pb.ListContainersResponse)
        return list(resp.containers)

    def container_status(self, container_id: str, *, verbose: bool = False) -> pb.ContainerStatus:
        req = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        resp: pb.ContainerStatusResponse = self._rt(
            "ContainerStatus", req, pb.ContainerStatusResponse
        )
        return resp.status

    def container_status_info(self, container_id: str) -> dict[str, str]:
        """ContainerStatus(verbose) ``info`` (``info`` holds containerd's JSON with the pid)."""
        req = pb.ContainerStatusRequest(container_id=container_id, verbose=True)
        resp: pb.ContainerStatusResponse = self._rt(
            "ContainerStatus", req, pb.ContainerStatusResponse
        )
        return dict(resp.info)

    def update_container_resources(
        self, container_id: str, linux: pb.LinuxContainerResources
    ) -> None:
        req = pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux)
        self._rt("UpdateContainerResources", req, pb.UpdateContainerResourcesResponse)

    def exec_sync(
        self, container_id: str, cmd: list[str], timeout: int = 10
    ) -> pb.ExecSyncResponse:
        req = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return self._rt("ExecSync", req, pb.ExecSyncResponse, timeout=self.timeout + timeout)  # type: ignore[no-any-return]

    def container_stats(self, container_id: str) -> pb.ContainerStats:
        req = pb.ContainerStatsRequest(container_id=container_id)
        resp: pb.ContainerStatsResponse = self._rt("ContainerStats", req, pb.ContainerStatsResponse)
        return resp.stats

    def list_container_stats(self, pod_id: str = "") -> list[pb.ContainerStats]:
        req = pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=pod_id))
        resp: pb.ListContainerStatsResponse = self._rt(
            "ListContainerStats", req, pb.ListContainerStatsResponse
        )
        return list(resp.stats)

    def pod_sandbox_stats(self, pod_id: str) -> pb.PodSandboxStats:
        req = pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)
        resp: pb.PodSandboxStatsResponse = self._rt(
            "PodSandboxStats", req, pb.PodSandboxStatsResponse
        )
        return resp.stats

    def list_pod_sandbox_stats(self, pod_id: str = "") -> list[pb.PodSandboxStats]:
        req = pb.ListPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(id=pod_id))
        resp: pb.ListPodSandboxStatsResponse = self._rt(
            "ListPodSandboxStats", req, pb.ListPodSandboxStatsResponse
        )
        return list(resp.stats)

    # -- ImageService ----------------------------------------------------------------------

    def image_status(self, image: str) -> pb.Image | None:
        """The image CRI knows under ``image``, or None."""
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=image))
        resp: pb.ImageStatusResponse = self.call(
            "ImageService", "ImageStatus", req, pb.ImageStatusResponse.FromString
        )
        return resp.image if resp.HasField("image") else None

    def list_images(self) -> list[pb.Image]:
        resp: pb.ListImagesResponse = self.call(
            "ImageService", "ListImages", pb.ListImagesRequest(), pb.ListImagesResponse.FromString
        )
        return list(resp.images)

    def pull_image(
        self,
        image: str,
        *,
        runtime_handler: str = "",
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str:
        """PullImage (no credentials); returns the image ref CRI stored."""
        req = pb.PullImageRequest(
            image=pb.ImageSpec(image=image, runtime_handler=runtime_handler),
            sandbox_config=sandbox_config,
        )
        resp: pb.PullImageResponse = self.call(
            "ImageService", "PullImage", req, pb.PullImageResponse.FromString
        )
        return resp.image_ref

    def remove_image(self, image: str) -> None:
        req = pb.RemoveImageRequest(image=pb.ImageSpec(image=image))
        self.call("ImageService", "RemoveImage", req, pb.RemoveImageResponse.FromString)
