"""Errors a shim raises, each mapping to the containerd error class containerd expects.

containerd maps ttrpc status codes back to its errdefs classes, so raising
``NotFound("container c1")`` from a task RPC reaches ``ctr`` as "not found".
"""

from __future__ import annotations

from ttrpc import Code, TtrpcError

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ShimError",
    "Unimplemented",
]


class ShimError(TtrpcError):
    """Base of the shim's errors; ``code`` is the status sent to containerd."""

    code_for_class: Code = Code.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(self.code_for_class, message)


class NotFound(ShimError):
    """No such task or process (containerd: ``errdefs.ErrNotFound``)."""

    code_for_class = Code.NOT_FOUND


class AlreadyExists(ShimError):
    """A task with that id exists already (``errdefs.ErrAlreadyExists``)."""

    code_for_class = Code.ALREADY_EXISTS


class InvalidArgument(ShimError):
    """The request or the bundle is wrong (``errdefs.ErrInvalidArgument``)."""

    code_for_class = Code.INVALID_ARGUMENT


class FailedPrecondition(ShimError):
    """The task is not in a state that allows this call (``errdefs.ErrFailedPrecondition``)."""

    code_for_class = Code.FAILED_PRECONDITION


class Unimplemented(ShimError):
    """This shim does not do that (``errdefs.ErrNotImplemented``)."""

    code_for_class = Code.UNIMPLEMENTED
