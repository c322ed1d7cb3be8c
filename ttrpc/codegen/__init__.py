"""Generate typed ttrpc server bases and client stubs from ``.proto`` services.

``protoc-gen-ttrpc-python`` is a protoc plugin (the peer of Go's ``protoc-gen-go-ttrpc``).
Messages come from betterproto2 (generate them with ``client_generation=none,
server_generation=none`` into a Python package); this plugin writes, for every ``.proto``
file with services, a module ``<stem>_ttrpc.py`` with, per ``service Foo``:

* ``class FooBase(ttrpc.Service)``: ``service_name = "<package>.Foo"`` and one
  ``@ttrpc.rpc(name="Bar") async def bar(self, request, context)`` per rpc (snake_case
  attribute: ``CloseIO`` -> ``close_io``) answering Unimplemented ``method Bar`` (lenient:
  nothing checks that a server is complete); streaming rpcs take/return ``AsyncIterator[...]``;
* ``class FooStrictBase(FooBase, abc.ABC)``: the same with every rpc abstract, so an
  incomplete server cannot be instantiated (and mypy reports it);
* ``class FooProtocol(Protocol)``: the unary rpcs as ``bar(request, context)``, which both a
  server and ``FooClient`` satisfy (Go's service interface: proxies, fakes);
* ``class FooClient(client: ttrpc.Client)``: ``async def bar(request, context=None, *,
  timeout=None, metadata=None) -> Reply`` (a server ``context`` forwards its metadata and
  remaining deadline); a streaming rpc returns its own typed stream class
  ``Foo<Rpc>ClientStream`` (``send(Request)``, ``close_send``, ``recv``, ``close_and_recv``,
  ``async for``: only what the rpc's direction allows).

Fast message codecs are a separate step: ``python -m ttrpc.codegen.codecs PKG`` appends a
``parse``/``__bytes__`` per message class to betterproto2's modules (see
:mod:`ttrpc.codegen.codecs`).

Example (the repository's ``scripts/gen_example.sh`` does exactly this)::

    python -m grpc_tools.protoc -I ttrpc/example \\
        --plugin=protoc-gen-ttrpc-python=.venv/bin/protoc-gen-ttrpc-python \\
        --ttrpc-python_out=ttrpc/example \\
        --ttrpc-python_opt=messages_package=ttrpc.example._gen,layout=flat \\
        ttrpc/example/example.proto

Options (``--ttrpc-python_opt``, comma separated):

``messages_package=PKG``
    Required. The Python package betterproto2 generated into; proto package ``a.b`` is imported as
    ``PKG.a.b`` (betterproto2's layout, well-known types included: ``PKG.google.protobuf``).
``M<proto.package>=<python.module>``
    Take one proto package's messages from another module.
``layout=package|flat``
    ``package`` (default) writes ``a/b/<stem>_ttrpc.py``; ``flat`` writes ``<stem>_ttrpc.py``.
``regenerate=COMMAND``
    Written into the header of each generated file (no commas).

The plugin needs ``protobuf`` (shipped with grpcio-tools) and betterproto2-compiler at
generation time only; generated modules import nothing but ``ttrpc`` and the messages.
"""

from __future__ import annotations

from ttrpc.codegen.plugin import generate

__all__ = ["generate"]
