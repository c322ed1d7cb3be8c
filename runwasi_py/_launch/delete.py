"""``delete``: containerd's cleanup after a shim died; as light as ``start`` (no asyncio)."""

from __future__ import annotations

import os
import sys

from runwasi_py._launch.address import is_listening, socket_path
from runwasi_py._launch.pod_cgroup import cleanup as cleanup_cgroups
from runwasi_py._mountinfo import is_mountpoint
from runwasi_py._proto.wire import encode_timestamp, encode_varint, length_delimited

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._launch.flags import Flags


_DELETE_EXIT_STATUS = 128 + 9  # what the runc shim reports for a task it could not reap


def delete(flags: Flags) -> int:
    """containerd's cleanup after a shim died; as light as ``start`` (no asyncio, no protos).

    A live shim on the bundle's address (a shared daemon still serving other containers)
    is never touched: only a socket nobody answers on is removed.
    """
    import time

    bundle = os.path.abspath(flags.bundle or os.getcwd())
    rootfs = os.path.join(bundle, "rootfs")
    if flags.id and flags.namespace:  # first: its processes use the rootfs and cgroups
        _delete_runc_leftover(flags.namespace, flags.id)
    if is_mountpoint(rootfs):  # rare (a daemon that died mid-task): only then load _mount
        from runwasi_py._bundle.mount import unmount_all

        try:
            unmount_all(rootfs)
        except Exception as e:  # containerd logs delete's stderr as a warning on success
            sys.stderr.write(f"delete: unmount rootfs: {e}\n")
    cleanup_cgroups(bundle)
    try:
        with open(os.path.join(bundle, "address")) as f:
            address = f.read().strip()
    except OSError:
        address = ""
    if address and not is_listening(address):
        try:
            os.unlink(socket_path(address))
        except FileNotFoundError:
            pass
        except OSError as e:
            sys.stderr.write(f"delete: remove socket: {e}\n")
    now = time.time_ns()
    sys.stdout.buffer.write(
        encode_delete_response(0, _DELETE_EXIT_STATUS, now // 1_000_000_000, now % 1_000_000_000)
    )
    sys.stdout.flush()
    return 0


def _delete_runc_leftover(namespace: str, container_id: str) -> None:
    """``runc delete --force`` a native container a killed daemon left in its state root.

    The root is the daemon's (``_native/_state.py``, a light module); only when
    ``<root>/<id>`` exists is runc run, which kills the container's processes and removes its
    state and cgroup.
    """
    from runwasi_py._native._state import state_root_dir

    if "/" in container_id or container_id in (".", ".."):
        return
    try:
        root = state_root_dir(namespace, os.environ.get("TTRPC_ADDRESS", ""))
    except ValueError:  # a namespace that cannot name a directory has no state root
        return
    if not os.path.isdir(os.path.join(root, container_id)):
        return
    import shutil
    import subprocess

    runc = shutil.which("runc")
    if runc is None:
        sys.stderr.write(f"delete: runc state of {container_id} left in {root}, but no runc\n")
        return
    try:
        res = subprocess.run(
            [runc, "--root", root, "delete", "--force", container_id],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"delete: runc delete {container_id}: {e}\n")
        return
    if res.returncode != 0:
        message = res.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        sys.stderr.write(f"delete: runc delete {container_id}: {message[0]}\n")


def encode_delete_response(pid: int, exit_status: int, seconds: int, nanos: int) -> bytes:
    """``containerd.task.v2.DeleteResponse{pid, exit_status, exited_at}`` on the wire.

    Hand-encoded so that ``delete`` does not import betterproto2 and the generated classes
    (~100 ms); byte-identical to ``bytes(DeleteResponse(...))`` (tests check it). Zero fields
    are omitted as proto3 does; ``exited_at`` is always present.

    >>> encode_delete_response(0, 137, 1, 0)
    b'\\x10\\x89\\x01\\x1a\\x02\\x08\\x01'
    """
    out = b""
    if pid:
        out += b"\x08" + encode_varint(pid)
    if exit_status:
        out += b"\x10" + encode_varint(exit_status)
    return out + length_delimited(3, encode_timestamp(seconds, nanos))
