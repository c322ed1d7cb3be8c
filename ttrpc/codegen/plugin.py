"""protoc plugin entry point: ``protoc-gen-ttrpc-python`` (see :mod:`ttrpc.codegen`)."""

from __future__ import annotations

import sys

from google.protobuf.compiler import plugin_pb2

from ttrpc.codegen._options import OptionsError, parse_options
from ttrpc.codegen._render import build_type_index, output_path, render_file

__all__ = ["generate", "main"]


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """Answer a protoc ``CodeGeneratorRequest``: one stubs module per file with services.

    Errors (bad options, a type no file defines) come back in ``response.error``; protoc
    prints them and exits non-zero.
    """
    response = plugin_pb2.CodeGeneratorResponse()
    # Service stubs never look at fields, so proto3 `optional` needs no support from us.
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    try:
        options = parse_options(request.parameter)
        index = build_type_index(list(request.proto_file))
        by_name = {f.name: f for f in request.proto_file}
        written: dict[str, str] = {}
        for name in request.file_to_generate:
            proto = by_name[name]
            if not proto.service:
                continue
            path = output_path(proto, options)
            if path in written:
                raise ValueError(
                    f"{written[path]} and {name} would both be written as {path} "
                    "(layout=flat puts every stubs module in one directory): use "
                    "layout=package (the default), or run protoc once per file with a "
                    "different --ttrpc-python_out"
                )
            written[path] = name
            out = response.file.add()
            out.name = path
            out.content = render_file(proto, index, options)
    except (OptionsError, ValueError, RuntimeError) as exc:
        response.Clear()
        response.error = f"protoc-gen-ttrpc-python: {exc}"
    return response


def main(argv: list[str] | None = None) -> None:
    """Read a ``CodeGeneratorRequest`` from stdin, write the response to stdout.

    ``--help`` (or a terminal on stdin) prints the usage instead: protoc runs this program.
    """
    args = sys.argv[1:] if argv is None else argv
    if args or sys.stdin.isatty():
        import ttrpc.codegen

        print("usage: protoc --ttrpc-python_out=DIR [--ttrpc-python_opt=OPTIONS] FILES\n")
        print((ttrpc.codegen.__doc__ or "").strip())
        raise SystemExit(0 if args[:1] in (["--help"], ["-h"]) or not args else 2)
    data = sys.stdin.buffer.read()
    request = plugin_pb2.CodeGeneratorRequest()
    try:
        request.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError and others; stdin is not protoc
        print(
            f"protoc-gen-ttrpc-python: stdin is not a CodeGeneratorRequest ({exc}); "
            "this program is run by protoc",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc
    sys.stdout.buffer.write(generate(request).SerializeToString())


if __name__ == "__main__":
    main()
