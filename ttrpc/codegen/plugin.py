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
        for name in request.file_to_generate:
            proto = by_name[name]
            if not proto.service:
                continue
            out = response.file.add()
            out.name = output_path(proto, options)
            out.content = render_file(proto, index, options)
    except (OptionsError, ValueError, RuntimeError) as exc:
        response.Clear()
        response.error = f"protoc-gen-ttrpc-python: {exc}"
    return response


def main() -> None:
    """Read a ``CodeGeneratorRequest`` from stdin, write the response to stdout."""
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
