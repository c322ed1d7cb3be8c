"""``python -m ttrpc.example serve|call``: run the Example service, or poke any server of it.

JSON in and out is proto3 JSON (bytes as base64, uint64 as a string); a streaming call's
replies are printed one JSON object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

import ttrpc
from ttrpc.example._gen.ttrpc.example.v1 import EchoRequest, FailRequest, SleepRequest
from ttrpc.example._service import ExampleService
from ttrpc.example.example_ttrpc import ExampleBase, ExampleClient

__all__ = ["main"]

_PROG = "python -m ttrpc.example"
# request type and kind of each rpc, for `call`
_METHODS: dict[str, tuple[type[Any], ttrpc.MethodKind]] = {
    "Echo": (EchoRequest, ttrpc.MethodKind.UNARY),
    "Sleep": (SleepRequest, ttrpc.MethodKind.UNARY),
    "Fail": (FailRequest, ttrpc.MethodKind.UNARY),
    "EchoStream": (EchoRequest, ttrpc.MethodKind.BIDI_STREAM),
    "SumStream": (EchoRequest, ttrpc.MethodKind.CLIENT_STREAM),
    "Count": (EchoRequest, ttrpc.MethodKind.SERVER_STREAM),
}
_SHUTDOWN_GRACE = 10.0


class UsageError(Exception):
    """Bad command-line input: printed with the usage hint, exit status 2."""


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


async def serve(
    address: str, *, service: ExampleBase | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve the Example service on ``address`` until SIGTERM/SIGINT (or ``stop`` is set),
    then shut down gracefully: in-flight calls finish, the socket file is removed.

    Example:
        >>> ttrpc.run(serve("/tmp/example.sock"))  # doctest: +SKIP
    """
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ttrpc.Server()
    server.register(service if service is not None else ExampleService())
    try:
        await server.listen(address)
        print(
            f"ttrpc.example: serving {ExampleBase.service_name} on {address} ({_loop_name()} loop)",
            file=sys.stderr,
            flush=True,
        )
        serving = asyncio.create_task(server.serve_forever())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        print("ttrpc.example: shutting down", file=sys.stderr, flush=True)
        await server.shutdown(timeout=_SHUTDOWN_GRACE)
        await serving
    finally:
        await server.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _parse_requests(method: str, text: str) -> list[Any]:
    request_type, kind = _METHODS[method]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"request is not JSON: {exc}") from None
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not kind.client_streams:
        raise UsageError(f"{method} takes one request object, not a list")
    requests = []
    for item in items:
        if not isinstance(item, dict):
            raise UsageError(f"a {request_type.__name__} must be a JSON object, got {item!r}")
        try:
            requests.append(request_type.from_dict(item))
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"bad {request_type.__name__}: {exc}") from None
    return requests


def _parse_metadata(pairs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"metadata {pair!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def _print(message: Any) -> None:
    print(json.dumps(message.to_dict()), flush=True)


async def call(
    address: str,
    method: str,
    request_json: str,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - the call's deadline, sent to the server
    metadata: Sequence[str] = (),
) -> None:
    """Call ``method`` of the Example service at ``address`` and print the reply as JSON.

    Client- and bidi-streaming methods take a JSON list of requests (or one object).

    Example:
        >>> ttrpc.run(call("/tmp/example.sock", "Echo", '{"payload": "aGk=", "seq": 1}'))
        ... # doctest: +SKIP
        {"payload": "aGk=", "seq": 1}
    """
    if method not in _METHODS:
        raise UsageError(f"unknown method {method!r} (one of {', '.join(_METHODS)})")
    requests = _parse_requests(method, request_json)
    md = _parse_metadata(metadata)
    client = await ttrpc.Client.connect(address)
    async with client:
        stub = ExampleClient(client)
        kind = _METHODS[method][1]
        if method == "Echo":
            _print(await stub.echo(requests[0], timeout=timeout, metadata=md))
        elif method == "Sleep":
            _print(await stub.sleep(requests[0], timeout=timeout, metadata=md))
        elif method == "Fail":
            _print(await stub.fail(requests[0], timeout=timeout, metadata=md))
        elif kind is ttrpc.MethodKind.SERVER_STREAM:
            async for reply in await stub.count(requests[0], timeout=timeout, metadata=md):
                _print(reply)
        elif kind is ttrpc.MethodKind.CLIENT_STREAM:
            upload = await stub.sum_stream(timeout=timeout, metadata=md)
            for request in requests:
                await upload.send(request)
            _print(await upload.close_and_recv())
        else:
            stream = await stub.echo_stream(timeout=timeout, metadata=md)
            for request in requests:
                await stream.send(request)
            await stream.close_send()
            async for reply in stream:
                _print(reply)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Serve the ttrpc Example service, or call any server of it.",
        epilog=f'example: {_PROG} call /tmp/ex.sock Echo \'{{"payload": "aGk=", "seq": 1}}\'',
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve until SIGTERM/SIGINT")
    p_serve.add_argument("address", help="socket path, \\0abstract name or unix:///path")
    p_call = sub.add_parser("call", help="call one method, print the reply as JSON")
    p_call.add_argument("address")
    p_call.add_argument("method", help=", ".join(_METHODS))
    p_call.add_argument("request", nargs="?", default="{}", help="request as JSON (default {})")
    p_call.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p_call.add_argument(
        "--metadata", "-m", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ttrpc.example``; returns the exit status.

    Exit status: 0 success; 1 the call failed (``CODE_NAME: message`` on stderr);
    2 bad usage or input.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            ttrpc.run(serve(args.address))
        else:
            ttrpc.run(
                call(
                    args.address,
                    args.method,
                    args.request,
                    timeout=args.timeout,
                    metadata=args.metadata,
                )
            )
    except UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except ttrpc.TtrpcError as exc:
        print(f"{exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"UNAVAILABLE: cannot reach {args.address}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
