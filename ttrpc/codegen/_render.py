"""Render one ``<stem>_ttrpc.py`` module from a ``.proto`` file's service descriptors.

The output is written already in ``ruff format`` form (every multi-line call and signature
ends in a magic trailing comma, so the formatter keeps it as written) and passes
``mypy --strict``: it is checked like hand-written code wherever it is placed.
"""

from __future__ import annotations

import keyword
import posixpath
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    FileDescriptorProto,
    MethodDescriptorProto,
    ServiceDescriptorProto,
)

from ttrpc.codegen._naming import message_class_name, module_alias, rpc_attribute
from ttrpc.codegen._options import Options

__all__ = ["TypeIndex", "build_type_index", "output_path", "render_file"]

# FileDescriptorProto field numbers used in SourceCodeInfo paths.
_SERVICE_FIELD = 6
_METHOD_FIELD = 2

# The deadline is the server's too (sent as timeout_nano), so it is a parameter rather than
# the caller's asyncio.timeout(), which ruff's ASYNC109 would suggest.
_TIMEOUT_PARAM = "        timeout: float | None = None,  # noqa: ASYNC109 - sent as timeout_nano"

TypeIndex = dict[str, tuple[str, str]]
"""Fully-qualified proto type (``.pkg.Outer.Inner``) -> (proto package, ``Outer.Inner``)."""


def build_type_index(files: list[FileDescriptorProto]) -> TypeIndex:
    """Index every message of every file protoc passed (dependencies included)."""
    index: TypeIndex = {}

    def walk(package: str, prefix: str, messages: list[DescriptorProto]) -> None:
        for message in messages:
            prefixed = f"{prefix}{message.name}"
            full = f".{package}.{prefixed}" if package else f".{prefixed}"
            index[full] = (package, prefixed)
            walk(package, prefixed + ".", list(message.nested_type))

    for f in files:
        walk(f.package, "", list(f.message_type))
    return index


def output_path(proto: FileDescriptorProto, options: Options) -> str:
    """Where the stubs of ``proto`` go, relative to ``--ttrpc-python_out``."""
    stem = posixpath.splitext(posixpath.basename(proto.name))[0]
    filename = f"{stem}_ttrpc.py"
    if options.layout == "flat" or not proto.package:
        return filename
    return posixpath.join(*proto.package.split("."), filename)


@dataclass
class _Imports:
    """Messages modules used by one generated file, each under a unique alias."""

    options: Options
    index: TypeIndex
    aliases: dict[str, str]
    taken: set[str]

    def type_ref(self, proto_type: str) -> str:
        if proto_type not in self.index:
            raise ValueError(f"type {proto_type} is not defined in any file protoc passed")
        package, prefixed = self.index[proto_type]
        module = self.options.module_for(package)
        bad = [p for p in module.split(".") if not p.isidentifier() or keyword.iskeyword(p)]
        if bad:
            raise ValueError(
                f"type {proto_type} would come from module {module}, which Python cannot "
                f"import ({bad[0]!r}); map its package with M{package}=<python.module>"
            )
        if module not in self.aliases:
            self.aliases[module] = module_alias(module, self.taken)
        return f"{self.aliases[module]}.{message_class_name(prefixed)}"


def _comments(proto: FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading comments of services and methods, keyed by their SourceCodeInfo path."""
    out: dict[tuple[int, ...], str] = {}
    for location in proto.source_code_info.location:
        path = tuple(location.path)
        if path[:1] == (_SERVICE_FIELD,) and location.leading_comments.strip():
            out[path] = location.leading_comments
    return out


def _docstring(text: str, indent: str) -> list[str]:
    """A docstring from free text: safe quotes and escapes, wrapped to the line limit."""
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"').strip()
    lines: list[str] = []
    for raw in textwrap.dedent(text).splitlines():
        wrapped = textwrap.wrap(raw.rstrip(), width=96 - len(indent)) or [""]
        lines.extend(wrapped)
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) == 1 and len(indent) + len(lines[0]) + 6 <= 100:
        only = lines[0]
        if only.endswith('"'):
            only += " "
        return [f'{indent}"""{only}"""']
    body = [f"{indent}{line}" if line else "" for line in lines]
    return [f'{indent}"""{body[0].strip()}', *body[1:], f'{indent}"""']


def _server_method(
    method: MethodDescriptorProto, imports: _Imports, doc: str | None
) -> Iterator[str]:
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    attribute = rpc_attribute(method.name)
    request_param = (
        f"requests: AsyncIterator[{req}]" if method.client_streaming else f"request: {req}"
    )
    returns = f"AsyncIterator[{resp}]" if method.server_streaming else resp
    yield ""
    yield f'    @ttrpc.rpc(name="{method.name}")'
    yield f"    async def {attribute}("
    yield "        self,"
    yield f"        {request_param},"
    yield "        context: ttrpc.CallContext,"
    yield f"    ) -> {returns}:"
    if doc:
        yield from _docstring(doc, "        ")
    yield f'        raise ttrpc.TtrpcError(ttrpc.Code.UNIMPLEMENTED, "method {method.name}")'
    if method.server_streaming:
        # Never reached, but it makes this an async generator like the overrides, so
        # mypy accepts an override written with ``yield``.
        yield "        yield"


def _client_method(
    service_const: str, method: MethodDescriptorProto, imports: _Imports, doc: str | None
) -> Iterator[str]:
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    attribute = rpc_attribute(method.name)
    yield ""
    if not method.client_streaming and not method.server_streaming:
        yield f"    async def {attribute}("
        yield "        self,"
        yield f"        request: {req},"
        yield "        *,"
        yield _TIMEOUT_PARAM
        yield "        metadata: _Metadata | None = None,"
        yield f"    ) -> {resp}:"
        if doc:
            yield from _docstring(doc, "        ")
        yield "        return await self._client.call("
        yield f"            {service_const},"
        yield f'            "{method.name}",'
        yield "            request,"
        yield f"            {resp},"
        yield "            timeout=timeout,"
        yield "            metadata=metadata,"
        yield "        )"
        return
    if method.client_streaming and method.server_streaming:
        kind = "BIDI_STREAM"
    elif method.client_streaming:
        kind = "CLIENT_STREAM"
    else:
        kind = "SERVER_STREAM"
    yield f"    async def {attribute}("
    yield "        self,"
    if not method.client_streaming:
        yield f"        request: {req},"
    yield "        *,"
    yield _TIMEOUT_PARAM
    yield "        metadata: _Metadata | None = None,"
    yield f"    ) -> ttrpc.ClientStream[{resp}]:"
    if doc:
        yield from _docstring(doc, "        ")
    yield "        return await self._client.stream("
    yield f"            {service_const},"
    yield f'            "{method.name}",'
    yield f"            ttrpc.MethodKind.{kind},"
    yield f"            {resp},"
    if not method.client_streaming:
        yield "            request=request,"
    yield "            timeout=timeout,"
    yield "            metadata=metadata,"
    yield "        )"


def _service(
    proto: FileDescriptorProto,
    index_in_file: int,
    service: ServiceDescriptorProto,
    imports: _Imports,
    comments: dict[tuple[int, ...], str],
) -> Iterator[str]:
    full_name = f"{proto.package}.{service.name}" if proto.package else service.name
    attributes: dict[str, str] = {}
    for method in service.method:
        other = attributes.setdefault(rpc_attribute(method.name), method.name)
        if other != method.name:
            raise ValueError(
                f"{full_name}: rpcs {other} and {method.name} would both be the Python "
                f"method {rpc_attribute(method.name)}"
            )
    const = f"_{rpc_attribute(service.name).upper()}_SERVICE"
    service_doc = comments.get((_SERVICE_FIELD, index_in_file))
    method_docs = [
        comments.get((_SERVICE_FIELD, index_in_file, _METHOD_FIELD, i))
        for i in range(len(service.method))
    ]
    yield ""
    yield ""
    yield f'{const} = "{full_name}"'
    yield ""
    yield ""
    yield f"class {service.name}Base(ttrpc.Service):"
    yield from _docstring(
        f"Server base of ``{full_name}``: subclass it and override the rpcs you serve.\n\n"
        "Every rpc not overridden answers Unimplemented, as Go's generated servers do."
        + (f"\n\n{service_doc}" if service_doc else ""),
        "    ",
    )
    yield ""
    yield f"    service_name = {const}"
    for method, doc in zip(service.method, method_docs, strict=True):
        yield from _server_method(method, imports, doc)
    yield ""
    yield ""
    yield f"class {service.name}Client:"
    yield from _docstring(
        f"Typed client of ``{full_name}`` over a connected ``ttrpc.Client``.\n\n"
        "Example::\n\n"
        "    client = await ttrpc.Client.connect(address)\n"
        f"    stub = {service.name}Client(client)",
        "    ",
    )
    yield ""
    yield "    def __init__(self, client: ttrpc.Client) -> None:"
    yield "        self._client = client"
    for method, doc in zip(service.method, method_docs, strict=True):
        yield from _client_method(const, method, imports, doc)


def render_file(proto: FileDescriptorProto, index: TypeIndex, options: Options) -> str:
    """The source of the stubs module for every service in ``proto``."""
    imports = _Imports(options, index, {}, {"ttrpc", "AsyncIterator", "Iterable", "Mapping"})
    comments = _comments(proto)
    body: list[str] = []
    for i, service in enumerate(proto.service):
        body.extend(_service(proto, i, service, imports, comments))
    names = sorted(n for s in proto.service for n in (f"{s.name}Base", f"{s.name}Client"))
    uses_async_iterator = any(
        m.client_streaming or m.server_streaming for s in proto.service for m in s.method
    )

    head = [
        "# Generated by protoc-gen-ttrpc-python (ttrpc.codegen). DO NOT EDIT.",
        f"# source: {proto.name}",
    ]
    if options.regenerate:
        head.append(f"# Regenerate with: {options.regenerate}")
    head.extend(_docstring(f"ttrpc stubs for the services of ``{proto.name}``.", ""))
    head.append("")
    head.append("from __future__ import annotations")
    head.append("")
    abc_names = ["AsyncIterator"] if uses_async_iterator else []
    head.append(f"from collections.abc import {', '.join([*abc_names, 'Iterable', 'Mapping'])}")
    head.append("")
    # isort order: ttrpc first-party; message modules sorted by module path.
    first_party = ["import ttrpc", *(f"import {m} as {a}" for m, a in imports.aliases.items())]
    head.extend(sorted(first_party, key=_import_sort_key))
    head.append("")
    head.append("__all__ = [")
    head.extend(f'    "{n}",' for n in names)
    head.append("]")
    head.append("")
    head.append("# What ttrpc.Client.call/stream accept as metadata.")
    head.append(
        "_Metadata = ttrpc.Metadata | Mapping[str, str | list[str]] | Iterable[tuple[str, str]]"
    )
    return "\n".join([*head, *body]) + "\n"


def _import_sort_key(line: str) -> str:
    # ruff's isort compares module paths case-sensitively with force-sort-within-sections off:
    # "import a" lines sort by the module name.
    return line.split()[1]
