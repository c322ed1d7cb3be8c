"""The ``runwasi-py`` command: build wasm images, run a private containerd, run the demo.

Example::

    runwasi-py image build app.wasm -t app:v1 -o app.tar --env MODE=demo
    runwasi-py containerd up            # prints the address to give ctr
    runwasi-py containerd up --cri --containerd-bin /var/cache/runwasi-py/containerd-2.3.4/bin
    runwasi-py image build app.wasm -t app:v1 -o app.tar --import --address SOCK
    runwasi-py containerd down
    runwasi-py demo                     # build the bundled hello and run it as a container
    runwasi-py shim-entry               # a lean containerd-shim-pywasmtime-v1 (faster start)

Exit status: 0 on success, 2 on a usage error, 1 on any other error (message on stderr);
``demo`` exits with the container's own exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from runwasi_py.containerd import (
    BIN_ENV,
    ContainerdError,
    ContainerdUnavailable,
    PrivateContainerd,
    default_workdir,
)
from runwasi_py.examples._demo import SHIM_BINARY, DemoError, run_demo, scripts_dir
from runwasi_py.image import ImageError, build_image, import_image, parse_file_spec
from runwasi_py.wasmtime.__main__ import SHIM

__all__ = ["main"]

PROG = "runwasi-py"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    image = sub.add_parser("image", help="build OCI images from wasm")
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    b = image_sub.add_parser(
        "build",
        help="write an OCI image layout tarball that runs a .wasm (or .wat)",
        description="Write an OCI image tarball (platform wasip1/wasm) that "
        "`ctr image import --all-platforms` accepts. The same input gives the same digest.",
    )
    b.add_argument("input", help="the .wasm module (a .wat file is compiled)")
    b.add_argument("-t", "--tag", required=True, metavar="NAME[:TAG]", help="image reference")
    b.add_argument("-o", "--output", required=True, metavar="FILE", help="tarball to write")
    b.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="SRC:DEST",
        help="also put host file or directory SRC at DEST in the image (repeatable)",
    )
    b.add_argument(
        "--entrypoint",
        action="append",
        metavar="ARG",
        help="entrypoint (repeat for more words; default: the module's path in the image)",
    )
    b.add_argument("--cmd", action="append", default=[], metavar="ARG", help="default arguments")
    b.add_argument("--env", action="append", default=[], metavar="K=V", help="environment")
    b.add_argument("--platform", default="wasip1/wasm", help="OS/ARCH (default wasip1/wasm)")
    b.add_argument(
        "--wasm-path", metavar="PATH", help="where the module lands (default /<name>.wasm)"
    )
    b.add_argument(
        "--import",
        dest="do_import",
        action="store_true",
        help="then run `ctr image import --all-platforms` against --address",
    )
    b.add_argument(
        "--address",
        default=os.environ.get("CONTAINERD_ADDRESS", DEFAULT_ADDRESS),
        help="containerd socket for --import (default $CONTAINERD_ADDRESS or %(default)s)",
    )
    b.add_argument("--namespace", default="default", help="containerd namespace for --import")

    c8d = sub.add_parser("containerd", help="a private containerd (own root, state, sockets)")
    c8d_sub = c8d.add_subparsers(dest="c8d_command", required=True, metavar="COMMAND")
    for name, text in (
        ("up", "start it in the background and print its address"),
        ("down", "stop it, kill leftover shims, unmount and remove its state (keeps the log)"),
        ("status", "say whether it runs (exit 0) or not (exit 3)"),
    ):
        sp = c8d_sub.add_parser(name, help=text)
        sp.add_argument(
            "--dir", default=None, help=f"working directory (default {default_workdir()})"
        )
        if name == "up":
            sp.add_argument(
                "--shim-dir",
                action="append",
                default=[],
                help="directory put first on containerd's PATH (default: this Python's scripts)",
            )
            sp.add_argument(
                "--containerd-bin",
                metavar="DIR",
                default=None,
                help=f"folder holding the containerd and ctr to run (default ${BIN_ENV}, "
                "else PATH); its version decides the config format",
            )
            sp.add_argument(
                "--cri",
                action="store_true",
                help="turn the CRI plugin on: runtime handlers pywasmtime and runc, a locally "
                "built pause image, a CNI bridge network of its own",
            )

    d = sub.add_parser(
        "demo",
        help="build the bundled hello.wasm into an image and run it as a container",
        description="Runs through a private real containerd when root and containerd are "
        "available, else through the in-process driver; says which on stderr.",
    )
    d.add_argument("args", nargs="*", help="arguments for the wasm program")
    d.add_argument(
        "--mode",
        choices=("auto", "containerd", "in-process"),
        default="auto",
        help="force one path (default: auto)",
    )
    e = sub.add_parser(
        "shim-entry",
        help="write a shim binary as a lean entry script (start and delete without site)",
        description="Replace pip's console script of a shim binary by one whose interpreter "
        "runs with -S for start and delete (and with site for the daemon), which saves the "
        "site and .pth processing of every start; see runwasi_py/_launch/entry.py.",
    )
    e.add_argument("--name", default=SHIM_BINARY, help=f"binary name (default {SHIM_BINARY})")
    e.add_argument(
        "--shim",
        default=SHIM,
        metavar="MODULE:CLASS",
        help=f"the Shim class it runs (default {SHIM})",
    )
    e.add_argument(
        "--bin-dir",
        default=None,
        metavar="DIR",
        help="where to write it (default: this Python's scripts folder)",
    )
    return p


def _shim_entry(ns: argparse.Namespace) -> int:
    from runwasi_py._launch.entry import write_entry_script

    path = os.path.join(ns.bin_dir or str(scripts_dir()), ns.name)
    try:
        write_entry_script(path, ns.shim)
    except (OSError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _image_build(ns: argparse.Namespace) -> int:
    files = [parse_file_spec(spec) for spec in ns.file]
    img = build_image(
        ns.input,
        ns.tag,
        ns.output,
        files=files,
        entrypoint=ns.entrypoint,
        cmd=ns.cmd,
        env=ns.env,
        platform=ns.platform,
        wasm_path=ns.wasm_path,
    )
    print(f"{img.ref} {img.manifest_digest} -> {img.path}")
    if ns.do_import:
        out = import_image(img.path, address=ns.address, namespace=ns.namespace)
        sys.stdout.write(out)
    return 0


def _shim_dirs(extra: Sequence[str]) -> list[str]:
    return [*extra, str(scripts_dir())]


def _containerd(ns: argparse.Namespace) -> int:
    workdir = ns.dir or default_workdir()
    if ns.c8d_command == "up":
        c8d = PrivateContainerd(
            workdir, shim_dirs=_shim_dirs(ns.shim_dir), containerd_bin=ns.containerd_bin, cri=ns.cri
        )
        if c8d.is_running():
            print(c8d.address)
            print(f"{PROG}: already running (pid {c8d.pid})", file=sys.stderr)
            return 0
        c8d.start()
        print(c8d.address)
        cri = (
            f"  CRI on {c8d.address} (handlers pywasmtime, runc); pod cgroups under "
            f"{c8d.cgroup_root}\n"
            if ns.cri
            else ""
        )
        print(
            f"{PROG}: containerd {c8d.version} pid {c8d.pid}, log {c8d.log_path}\n"
            f"  {c8d.build.ctr} --address {c8d.address} version\n"
            + cri
            + f"  stop it with: {PROG} containerd down"
            + (f" --dir {ns.dir}" if ns.dir else ""),
            file=sys.stderr,
        )
        # Leave it running: forget the child so no warning says it is still alive.
        c8d.detach()
        return 0
    c8d = PrivateContainerd(workdir)
    if ns.c8d_command == "down":
        was = c8d.pid
        c8d.stop()
        print(f"{PROG}: " + (f"stopped containerd (pid {was})" if was else "was not running"))
        return 0
    if c8d.is_running():
        print(f"running pid {c8d.pid} address {c8d.address} log {c8d.log_path}")
        return 0
    print(f"not running ({workdir})")
    return 3


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runwasi-py`` console script; returns the exit status."""
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "image":
            return _image_build(ns)
        if ns.command == "containerd":
            return _containerd(ns)
        if ns.command == "shim-entry":
            return _shim_entry(ns)
        return run_demo(ns.args, mode=ns.mode)
    except (ImageError, ContainerdUnavailable, ContainerdError, DemoError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
