"""Errors of the private containerd harness."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ContainerdError", "ContainerdUnavailable", "CtrError"]


class ContainerdUnavailable(Exception):
    """This machine cannot run a private containerd (not root, or containerd missing).

    The message says what to do (``apt-get install containerd``, run as root); test fixtures
    turn it into a skip outside CI and a failure in CI.
    """


class ContainerdError(Exception):
    """containerd did not start, did not answer, or did not stop; the log tail is included."""


class CtrError(ContainerdError):
    """A ``ctr`` command failed; carries its argv, exit code and output."""

    def __init__(
        self, argv: Sequence[str], returncode: int, stdout: str, stderr: str, log_tail: str = ""
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        msg = f"`{' '.join(argv)}` exited {returncode}: {(stderr or stdout).strip()}"
        if log_tail:
            msg += f"\n--- containerd log (tail) ---\n{log_tail}"
        super().__init__(msg)
