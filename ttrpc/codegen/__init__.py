"""Generate typed ttrpc server bases and client stubs from ``.proto`` services.

``protoc-gen-ttrpc-python`` is a protoc plugin (the peer of Go's ``protoc-gen-go-ttrpc``).
Messages come from betterproto2 (generate them with ``client_generation=none,
server_generation=none`` into a Python package); this plugin writes, for every ``.proto``
file with services, a module ``<stem>_ttrpc.py`` with, per ``service Foo``:

* ``class FooBase(ttrpc.Service)``: ``service_name = "<package>.Foo"`` and one
  ``@ttrpc.rpc(name="Bar") async def bar(self, request, context)`` per rpc (snake_case
  attribute: ``CloseIO`` -> ``close_io``) answering Unimplemented ``method Bar``; streaming
  rpcs take/return ``AsyncIterator[...]``;
* ``class FooClient(client: ttrpc.Client)``: ``async def bar(request, *, timeout=None,
  metadata=None) -> Reply``; streaming rpcs return the client stream object.

Example (the repository's ``scripts/gen_example.sh`` does exactly this)::

    python -m grpc_tools.protoc -I ttrpc/example \\
        --plugin=protoc-gen-ttrpc-python=.venv/bin/protoc-gen-ttrpc-python \\
        --ttrpc-python_out=ttrpc/example \\
        --ttrpc-python_opt=messages_package=ttrpc.example._gen,layout=flat \\
        ttrpc/example/example.proto

Options (``--ttrpc-python_opt``, comma separated):

``messages_package=PKG``
    The Python package betterproto2 generated into; proto package ``a.b`` is imported as
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
