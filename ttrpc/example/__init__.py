"""The Example service (``ttrpc.example.v1.Example``): a fixed interface for peers and benchmarks.

Run it with ``python -m ttrpc.example serve SOCKET`` and poke any server of it with
``python -m ttrpc.example call SOCKET Echo '{"payload": "aGk=", "seq": 1}'``.
Messages are betterproto2 classes generated from ``example.proto`` (regenerate with
``scripts/gen_example.sh``); the server base and client stubs come from ``ttrpc.codegen``.

Example:
    >>> server = ttrpc.Server()                                  # doctest: +SKIP
    >>> server.register(ExampleService())                        # doctest: +SKIP
    >>> stub = ExampleClient(await ttrpc.Client.connect(path))   # doctest: +SKIP
    >>> (await stub.echo(EchoRequest(payload=b"hi", seq=1))).seq # doctest: +SKIP
    1
"""

from ttrpc.example._gen.google.protobuf import Empty
from ttrpc.example._gen.ttrpc.example.v1 import (
    EchoRequest,
    EchoResponse,
    FailRequest,
    SleepRequest,
)
from ttrpc.example._service import ExampleService
from ttrpc.example.example_ttrpc import ExampleBase, ExampleClient

__all__ = [
    "EchoRequest",
    "EchoResponse",
    "Empty",
    "ExampleBase",
    "ExampleClient",
    "ExampleService",
    "FailRequest",
    "SleepRequest",
]
