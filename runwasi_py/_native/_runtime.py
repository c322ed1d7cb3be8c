"""The shim's native-container support: whether a container runs through runc, and where.

Theory of operation: the task service classifies each container once, at Create
(:meth:`NativeRuntime.classify`): wasm when the Sandbox's ``can_handle`` accepted it (asked
first, by the service), otherwise native when the entrypoint is an executable and native
support is on, otherwise the clear error of the classification. A CRI sandbox (pause)
container with a native entrypoint runs through runc when runc is there, so the pod's
namespaces are held by a real process, and falls back to the idle task without runc.

One :class:`NativeRuntime` per daemon owns the runc state root (``_runc.state_root``) and the
daemon's :class:`Reaper`; it marks the process a child subreaper before the first
``runc create`` (the in-process test driver has no daemon to do it).
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path

from runwasi_py._bundle.spec import is_sandbox_container
from runwasi_py._context import WASM_MAGIC, RuntimeContext
from runwasi_py._errors import InvalidArgument
from runwasi_py._native._classify import NativeEntrypoint, classify_native
from runwasi_py._native._reaper import Reaper, become_subreaper, process_reaper
from runwasi_py._native._runc import (
    Runc,
    RuncUnavailable,
    find_runc,
    state_root,
)

__all__ = ["ContainerKind", "NativeRuntime", "is_wasm"]

log = logging.getLogger("runwasi_py.native")


class ContainerKind(enum.Enum):
    """How the shim runs a container, decided once at Create."""

    WASM = "wasm"
    NATIVE = "native"
    IDLE_SANDBOX = "idle-sandbox"
    """A CRI sandbox container without runc: today's idle task holds its place."""


class NativeRuntime:
    """Native containers of one daemon: on or off, runc's state root, the reaper.

    Example:
        >>> native = NativeRuntime(namespace="k8s.io", containerd_address=ttrpc_address)
        >>> kind = native.classify(ctx, wasm_refusal)      # after can_handle refused
        >>> task = await NativeTask.create(native.runc(), native.reaper, ...)
    """

    def __init__(
        self,
        *,
        namespace: str,
        containerd_address: str,
        enabled: bool = True,
        root: Path | None = None,
        reaper: Reaper | None = None,
        runc_binary: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.namespace = namespace
        self.root = root or state_root(namespace, containerd_address)
        self.reaper = reaper if reaper is not None else process_reaper()
        self._runc_binary = runc_binary
        self._runc: Runc | None = None

    def runc_path(self) -> str | None:
        """The runc binary native containers would use now, or None."""
        return self._runc_binary or find_runc()

    def runc(self) -> Runc:
        """The runc driver (subreaper set first); RuncUnavailable without a runc binary."""
        if self._runc is None or self._runc.binary != (self._runc_binary or find_runc()):
            runc = Runc(self.root, self.reaper, binary=self._runc_binary)
            if not become_subreaper():
                log.warning("cannot become a child subreaper: native exit codes will be lost")
            self._runc = runc
        return self._runc

    def classify(self, ctx: RuntimeContext, wasm_refusal: InvalidArgument) -> ContainerKind:
        """What to do with a container the Sandbox refused (``wasm_refusal``), or raise.

        Raises ``wasm_refusal`` when native support is off (today's behaviour), the
        classification's InvalidArgument when the entrypoint is no executable, and
        :class:`RuncUnavailable` for a native app container without runc on PATH.
        """
        sandbox = is_sandbox_container(ctx.annotations)
        if not self.enabled:
            if sandbox:
                return ContainerKind.IDLE_SANDBOX
            raise wasm_refusal
        try:
            entry = self.entrypoint(ctx)
        except InvalidArgument as e:
            if sandbox:
                return ContainerKind.IDLE_SANDBOX
            if e.message == wasm_refusal.message:
                raise
            # Both verdicts: why the engine refused it, and why it is no executable either.
            raise InvalidArgument(f"{wasm_refusal.message}; {e.message}") from None
        if self.runc_path() is None:
            if sandbox:
                log.info(
                    "task %s: no runc on PATH; the CRI sandbox container runs as an idle task",
                    ctx.container_id,
                )
                return ContainerKind.IDLE_SANDBOX
            raise RuncUnavailable(
                f"create {ctx.container_id}: entrypoint {entry.path!r} is a native "
                f"{entry.kind}; running it needs runc, which is not on PATH"
            )
        return ContainerKind.NATIVE

    @staticmethod
    def entrypoint(ctx: RuntimeContext) -> NativeEntrypoint:
        """The container's executable (``process.args[0]`` as resolved in the rootfs)."""
        path = ctx.args[0] if ctx.args else ctx.entrypoint.path
        return classify_native(path, ctx.entrypoint.source, ctx.rootfs)


def is_wasm(ctx: RuntimeContext) -> bool:
    """True when the entrypoint's file starts with the wasm magic (the engine's to refuse)."""
    src = ctx.entrypoint.source
    if src is None:
        return False
    try:
        with src.open("rb") as f:
            return f.read(4) == WASM_MAGIC
    except OSError:
        return False
