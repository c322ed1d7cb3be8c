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
            out[path] = _clean_comment(location.leading_comments)
    return out


def _clean_comment(text: str) -> str:
    """A proto comment with its first line stripped and the rest dedented together."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    rest = textwrap.dedent("\n".join(lines[1:])) if len(lines) > 1 else ""
    return lines[0].strip() + ("\n" + rest if rest else "")


def _docstring(text: str, indent: str) -> list[str]:
    """A docstring from free text: safe quotes and escapes, wrapped to the line limit.

    Laid out as ``ruff format`` leaves it: the first line stripped, the lines after it
    dedented together (their relative indentation kept), no trailing blanks.
    """
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    raw = [line.rstrip() for line in text.splitlines()]
    while raw and not raw[0]:
        raw.pop(0)
    while raw and not raw[-1]:
        raw.pop()
    if not raw:
        return []
    first = raw[0].strip()
    rest = textwrap.dedent("\n".join(raw[1:])).splitlines() if len(raw) > 1 else []
    width = 96 - len(indent)
    lines: list[str] = []
    for line in [first, *rest]:
        lead = line[: len(line) - len(line.lstrip())]
        wrapped = textwrap.wrap(line, width=width, subsequent_indent=lead) if line else []
        lines.extend(wrapped or [""])
    if len(lines) == 1 and len(indent) + len(lines[0]) + 6 <= 100:
        only = lines[0]
        if only.endswith('"'):
            only += " "
        return [f'{indent}"""{only}"""']
    body = [f"{indent}{line}" if line else "" for line in lines]
    return [f'{indent}"""{lines[0]}', *body[1:], f'{indent}"""']


def _kind(method: MethodDescriptorProto) -> str:
    if method.client_streaming and method.server_streaming:
        return "BIDI_STREAM"
    if method.client_streaming:
        return "CLIENT_STREAM"
    if method.server_streaming:
        return "SERVER_STREAM"
    return "UNARY"


def _stream_class(service: ServiceDescriptorProto, method: MethodDescriptorProto) -> str:
    return f"{service.name}{method.name}ClientStream"


def _server_method(
    method: MethodDescriptorProto, imports: _Imports, doc: str | None, *, abstract: bool = False
) -> Iterator[str]:
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    attribute = rpc_attribute(method.name)
    request_param = (
        f"requests: AsyncIterator[{req}]" if method.client_streaming else f"request: {req}"
    )
    returns = f"AsyncIterator[{resp}]" if method.server_streaming else resp
    yield ""
    if abstract:
        yield "    @abc.abstractmethod"
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


def _protocol_method(method: MethodDescriptorProto, imports: _Imports) -> Iterator[str]:
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    yield ""
    yield f"    async def {rpc_attribute(method.name)}("
    yield "        self,"
    yield f"        request: {req},"
    yield "        context: ttrpc.CallContext,"
    yield f"    ) -> {resp}: ..."


def _stream_wrapper(
    service: ServiceDescriptorProto, method: MethodDescriptorProto, imports: _Imports
) -> Iterator[str]:
    """A typed client stream for one streaming rpc, as Go's ``<Service>_<Method>Client``."""
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    kind = {"BIDI_STREAM": "bidi-streaming", "CLIENT_STREAM": "client-streaming"}.get(
        _kind(method), "server-streaming"
    )
    what = {
        "bidi-streaming": "``send`` requests, ``close_send``, then ``recv`` or ``async for``",
        "client-streaming": "``send`` requests, then ``close_and_recv`` for the one reply",
        "server-streaming": "``recv`` replies (``EOFError`` at the end) or ``async for``",
    }[kind]
    yield ""
    yield ""
    yield f"class {_stream_class(service, method)}:"
    yield from _docstring(
        f"Client side of ``{method.name}`` ({kind}): {what}.\n\n"
        "``stream`` is the underlying ``ttrpc.ClientStream``.",
        "    ",
    )
    yield ""
    yield '    __slots__ = ("stream",)'
    yield ""
    yield f"    def __init__(self, stream: ttrpc.ClientStream[{resp}]) -> None:"
    yield "        self.stream = stream"
    if method.client_streaming:
        yield ""
        yield f"    async def send(self, request: {req}) -> None:"
        yield '        """Send one request."""'
        yield "        await self.stream.send(request)"
    if method.client_streaming and method.server_streaming:
        yield ""
        yield "    async def close_send(self) -> None:"
        yield '        """Tell the server no more requests follow."""'
        yield "        await self.stream.close_send()"
    if method.server_streaming:
        yield ""
        yield f"    async def recv(self) -> {resp}:"
        yield '        """The next reply; ``EOFError`` at the end, the status as ``TtrpcError``."""'
        yield "        return await self.stream.recv()"
        yield ""
        yield f"    def __aiter__(self) -> AsyncIterator[{resp}]:"
        yield "        return self.stream.__aiter__()"
    else:
        yield ""
        yield f"    async def close_and_recv(self) -> {resp}:"
        yield '        """Close the sending side and return the single reply."""'
        yield "        return await self.stream.close_and_recv()"


def _client_method(
    service: ServiceDescriptorProto,
    service_const: str,
    method: MethodDescriptorProto,
    imports: _Imports,
    doc: str | None,
) -> Iterator[str]:
    req = imports.type_ref(method.input_type)
    resp = imports.type_ref(method.output_type)
    attribute = rpc_attribute(method.name)
    yield ""
    if not method.client_streaming and not method.server_streaming:
        yield f"    async def {attribute}("
        yield "        self,"
        yield f"        request: {req},"
        yield "        context: ttrpc.CallContext | None = None,"
        yield "        *,"
        yield _TIMEOUT_PARAM
        yield "        metadata: _Metadata | None = None,"
        yield f"    ) -> {resp}:"
        if doc:
            yield from _docstring(doc, "        ")
        yield "        if context is not None:"
        yield "            timeout, metadata = _forward(context, timeout, metadata)"
        yield "        return await self._client.call("
        yield f"            {service_const},"
        yield f'            "{method.name}",'
        yield "            request,"
        yield f"            {resp},"
        yield "            timeout=timeout,"
        yield "            metadata=metadata,"
        yield "        )"
        return
    wrapper = _stream_class(service, method)
    yield f"    async def {attribute}("
    yield "        self,"
    if not method.client_streaming:
        yield f"        request: {req},"
    yield "        *,"
    yield _TIMEOUT_PARAM
    yield "        metadata: _Metadata | None = None,"
    yield f"    ) -> {wrapper}:"
    if doc:
        yield from _docstring(doc, "        ")
    yield "        stream = await self._client.stream("
    yield f"            {service_const},"
    yield f'            "{method.name}",'
    yield f"            ttrpc.MethodKind.{_kind(method)},"
    yield f"            {resp},"
    if not method.client_streaming:
        yield "            request=request,"
    yield "            timeout=timeout,"
    yield "            metadata=metadata,"
    yield "        )"
    yield f"        return {wrapper}(stream)"


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
    unary = [m for m in service.method if not (m.client_streaming or m.server_streaming)]
    streaming = [m for m in service.method if m.client_streaming or m.server_streaming]
    yield ""
    yield ""
    yield f'{const} = "{full_name}"'
    yield ""
    yield ""
    yield f"class {service.name}Protocol(Protocol):"
    yield from _docstring(
        f"The unary rpcs of ``{full_name}``, as both ``{service.name}Base`` subclasses and "
        f"``{service.name}Client`` offer them (Go's service interface): code written against "
        "it takes a server implementation or a client (a proxy, a fake) alike. Streaming "
        "rpcs have different shapes on the two sides and are not part of it."
        + (f"\n\n{service_doc}" if service_doc else ""),
        "    ",
    )
    for method in unary:
        yield from _protocol_method(method, imports)
    yield ""
    yield ""
    yield f"class {service.name}Base(ttrpc.Service):"
    yield from _docstring(
        f"Lenient server base of ``{full_name}``: subclass it and override the rpcs you serve.\n\n"
        "An rpc not overridden answers Unimplemented at run time; nothing checks that the "
        "server is complete (Go's generated service is an interface, which does not compile "
        f"with a method missing). Subclass ``{service.name}StrictBase`` for that check."
        + (f"\n\n{service_doc}" if service_doc else ""),
        "    ",
    )
    yield ""
    yield f"    service_name = {const}"
    for method, doc in zip(service.method, method_docs, strict=True):
        yield from _server_method(method, imports, doc)
    yield ""
    yield ""
    yield f"class {service.name}StrictBase({service.name}Base, abc.ABC):"
    yield from _docstring(
        f"Strict server base of ``{full_name}``: every rpc is abstract, so a subclass that "
        "misses one cannot be instantiated (``TypeError``; mypy reports it too).",
        "    ",
    )
    for method in service.method:
        yield from _server_method(method, imports, None, abstract=True)
    for method in streaming:
        yield from _stream_wrapper(service, method, imports)
    yield ""
    yield ""
    yield f"class {service.name}Client:"
    yield from _docstring(
        f"Typed client of ``{full_name}`` over a connected ``ttrpc.Client``.\n\n"
        "A unary rpc given a server's ``context`` forwards its metadata and remaining "
        "deadline (unless ``metadata``/``timeout`` are given), as a Go client does with the "
        "incoming ``ctx``.\n\n"
        "Example::\n\n"
        "    client = await ttrpc.Client.connect(address)\n"
        f"    stub = {service.name}Client(client)",
        "    ",
    )
    yield ""
    yield "    def __init__(self, client: ttrpc.Client) -> None:"
    yield "        self._client = client"
    for method, doc in zip(service.method, method_docs, strict=True):
        yield from _client_method(service, const, method, imports, doc)


def render_file(proto: FileDescriptorProto, index: TypeIndex, options: Options) -> str:
    """The source of the stubs module for every service in ``proto``."""
    imports = _Imports(
        options, index, {}, {"abc", "ttrpc", "AsyncIterator", "Iterable", "Mapping", "Protocol"}
    )
    comments = _comments(proto)
    body: list[str] = []
    for i, service in enumerate(proto.service):
        body.extend(_service(proto, i, service, imports, comments))
    names = sorted(
        n
        for s in proto.service
        for n in (
            f"{s.name}Base",
            f"{s.name}Client",
            f"{s.name}Protocol",
            f"{s.name}StrictBase",
            *(_stream_class(s, m) for m in s.method if m.client_streaming or m.server_streaming),
        )
    )
    uses_async_iterator = any(
        m.client_streaming or m.server_streaming for s in proto.service for m in s.method
    )
    uses_unary = any(
        not (m.client_streaming or m.server_streaming) for s in proto.service for m in s.method
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
    head.append("import abc")
    abc_names = ["AsyncIterator"] if uses_async_iterator else []
    head.append(f"from collections.abc import {', '.join([*abc_names, 'Iterable', 'Mapping'])}")
    head.append("from typing import Protocol")
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
    if uses_unary:
        head.extend(_FORWARD)
    return "\n".join([*head, *body]) + "\n"


_FORWARD = [
    "",
    "",
    "def _forward(",
    "    context: ttrpc.CallContext,",
    "    timeout: float | None,",
    "    metadata: _Metadata | None,",
    ") -> tuple[float | None, _Metadata | None]:",
    '    """A server call\'s remaining deadline and metadata, for a call made on its behalf."""',
    "    if timeout is None:",
    "        timeout = context.time_remaining()",
    "    if metadata is None:",
    "        metadata = context.metadata",
    "    return timeout, metadata",
]


def _import_sort_key(line: str) -> str:
    # ruff's isort compares module paths case-sensitively with force-sort-within-sections off:
    # "import a" lines sort by the module name.
    return line.split()[1]
