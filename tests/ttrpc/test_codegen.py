"""protoc-gen-ttrpc-python: names, options, and generated modules that import, dispatch and lint.

The end-to-end cases run the real protoc (grpcio-tools) with betterproto2 and this plugin on
small .proto files written here, import what they produce, and check it with ruff and
mypy --strict exactly as hand-written code is checked.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

import ttrpc
from ttrpc import Code, MethodKind, TtrpcError
from ttrpc.codegen import generate
from ttrpc.codegen._naming import rpc_attribute
from ttrpc.codegen._options import Options, OptionsError, parse_options

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PACKAGE = "cgcase"  # the generated messages + stubs live in <tmp>/cgcase

COMMON_PROTO = """
syntax = "proto3";
package acme.common;
message Outer {
  message Inner { string name = 1; }
  Inner inner = 1;
}
message CloseIORequest { string id = 1; bool stdin = 2; }
"""

WIDGETS_PROTO = """
syntax = "proto3";
package acme.widgets.v1;
import "google/protobuf/empty.proto";
import "common.proto";

message Widget { uint32 seq = 1; optional string label = 2; }

// Widgets does everything a service can.
//
// A second paragraph, as containerd's comments have,
//   with an indented line.
service Widgets {
  // Get one widget.
  rpc Get(Widget) returns (Widget);
  /* A block comment
   * over lines.
   */
  rpc CloseIO(acme.common.CloseIORequest) returns (google.protobuf.Empty);
  rpc ResizePty(acme.common.Outer.Inner) returns (acme.common.Outer);
  rpc Upload(stream Widget) returns (Widget);
  rpc Watch(Widget) returns (stream Widget);
  rpc EchoStream(stream Widget) returns (stream Widget);
  rpc ServiceName(google.protobuf.Empty) returns (google.protobuf.Empty);
}

service Second {
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);
}
"""


def _env() -> dict[str, str]:
    # betterproto2-compiler runs `ruff format` on its output: ruff must be on PATH.
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _plugin(tmp: Path) -> Path:
    """A protoc plugin executable that runs this checkout's generator."""
    script = tmp / "protoc-gen-ttrpc-python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m ttrpc.codegen.plugin\n")
    script.chmod(0o755)
    return script


def _protoc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_plugin(tmp: Path, protos: Path, out: Path, opt: str, *files: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result = _protoc(
        tmp,
        f"-I{protos}",
        f"--plugin=protoc-gen-ttrpc-python={_plugin(tmp)}",
        f"--ttrpc-python_out={out}",
        f"--ttrpc-python_opt={opt}",
        *files,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/cgcase: betterproto2 messages plus the stubs, importable as ``cgcase``."""
    tmp = tmp_path_factory.mktemp("codegen")
    protos = tmp / "protos"
    protos.mkdir()
    (protos / "common.proto").write_text(COMMON_PROTO)
    (protos / "widgets.proto").write_text(WIDGETS_PROTO)
    pkg = tmp / "root" / PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    files = [str(protos / "widgets.proto"), str(protos / "common.proto")]
    result = _protoc(
        tmp,
        f"-I{protos}",
        f"--python_betterproto2_out={pkg}",
        "--python_betterproto2_opt=client_generation=none,server_generation=none",
        *files,
    )
    assert result.returncode == 0, result.stderr
    _run_plugin(tmp, protos, pkg, f"messages_package={PACKAGE},regenerate=make protos", *files)
    return pkg


@pytest.fixture
def stubs(generated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(generated.parent))
    try:
        yield importlib.import_module(f"{PACKAGE}.acme.widgets.v1.widgets_ttrpc")
    finally:
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


# --- naming and options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rpc_name", "attribute"),
    [
        ("CloseIO", "close_io"),
        ("ResizePty", "resize_pty"),
        ("EchoStream", "echo_stream"),
        ("Echo", "echo"),
        ("HTTPGet", "http_get"),
        ("GetV2Stats", "get_v2_stats"),
        ("ServiceName", "service_name_"),  # would shadow Service.service_name
        ("Import", "import_"),
        ("already_snake", "already_snake"),
    ],
)
def test_rpc_attribute(rpc_name: str, attribute: str) -> None:
    assert rpc_attribute(rpc_name) == attribute


def test_parse_options() -> None:
    opts = parse_options("messages_package=a.b, layout=flat,Mgoogle.protobuf=my.wkt,regenerate=x")
    assert opts == Options("a.b", {"google.protobuf": "my.wkt"}, "flat", "x")
    assert opts.module_for("google.protobuf") == "my.wkt"
    assert opts.module_for("acme.v1") == "a.b.acme.v1"
    assert parse_options("") == Options()
    assert parse_options("Macme.v1=my.acme").module_for("acme.v1") == "my.acme"


@pytest.mark.parametrize(
    ("parameter", "needle"),
    [
        ("colour=blue", "unknown option 'colour'"),
        ("messages_package", "is not key=value"),
        ("messages_package=not a name", "not a dotted Python name"),
        ("layout=tree", "layout 'tree'"),
        ("Mfoo=1bad", "M<proto.package>=<python.module>"),
        ("messages_package=", "messages_package is empty"),
    ],
)
def test_bad_options_are_clear(parameter: str, needle: str) -> None:
    with pytest.raises(OptionsError, match=needle):
        parse_options(parameter)


def test_messages_without_any_package_need_messages_package() -> None:
    with pytest.raises(OptionsError, match="messages_package"):
        Options().module_for("")
    # Without messages_package the stubs could not import their messages: an error now.
    with pytest.raises(OptionsError, match="give messages_package=<python package>"):
        Options().module_for("acme.v1")


def test_help_prints_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ttrpc.codegen.plugin", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: protoc --ttrpc-python_out=DIR")
    assert "messages_package=PKG" in result.stdout


def test_generate_reports_bad_options_in_the_response() -> None:
    from google.protobuf.compiler import plugin_pb2

    response = generate(plugin_pb2.CodeGeneratorRequest(parameter="nope=1"))
    assert "unknown option 'nope'" in response.error
    assert not response.file


def test_plugin_rejects_garbage_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ttrpc.codegen.plugin"],
        input=b"\xff\xff\xff",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"not a CodeGeneratorRequest" in result.stderr


def test_protoc_shows_the_plugin_error(tmp_path: Path) -> None:
    (tmp_path / "x.proto").write_text('syntax = "proto3";\nservice S { }\n')
    result = _protoc(
        tmp_path,
        f"-I{tmp_path}",
        f"--plugin=protoc-gen-ttrpc-python={_plugin(tmp_path)}",
        f"--ttrpc-python_out={tmp_path}",
        "--ttrpc-python_opt=layout=sideways",
        str(tmp_path / "x.proto"),
    )
    assert result.returncode != 0
    assert "layout 'sideways'" in result.stderr


def test_rpcs_that_collide_in_python_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "c.proto").write_text(
        'syntax = "proto3";\npackage p;\nmessage M {}\n'
        "service S { rpc GetFoo(M) returns (M); rpc Get_Foo(M) returns (M); }\n"
    )
    result = _protoc(
        tmp_path,
        f"-I{tmp_path}",
        f"--plugin=protoc-gen-ttrpc-python={_plugin(tmp_path)}",
        f"--ttrpc-python_out={tmp_path}",
        "--ttrpc-python_opt=messages_package=x",
        str(tmp_path / "c.proto"),
    )
    assert result.returncode != 0
    assert "rpcs GetFoo and Get_Foo would both be the Python method get_foo" in result.stderr


def test_a_package_python_cannot_import_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "k.proto").write_text(
        'syntax = "proto3";\npackage my.import.v1;\nmessage M {}\n'
        "service S { rpc Do(M) returns (M); }\n"
    )
    result = _protoc(
        tmp_path,
        f"-I{tmp_path}",
        f"--plugin=protoc-gen-ttrpc-python={_plugin(tmp_path)}",
        f"--ttrpc-python_out={tmp_path}",
        "--ttrpc-python_opt=messages_package=x",
        str(tmp_path / "k.proto"),
    )
    assert result.returncode != 0
    assert "x.my.import.v1, which Python cannot import ('import')" in result.stderr
    _run_plugin(
        tmp_path,
        tmp_path,
        tmp_path / "out",
        "messages_package=x,Mmy.import.v1=x.my_import_v1",
        str(tmp_path / "k.proto"),
    )
    assert (
        "import x.my_import_v1 as pb_x_my_import_v1"
        in (tmp_path / "out" / "my" / "import" / "v1" / "k_ttrpc.py").read_text()
    )


def test_files_without_services_produce_nothing(tmp_path: Path) -> None:
    (tmp_path / "m.proto").write_text('syntax = "proto3";\npackage p;\nmessage M {}\n')
    out = tmp_path / "out"
    _run_plugin(tmp_path, tmp_path, out, "messages_package=x", str(tmp_path / "m.proto"))
    assert list(out.rglob("*.py")) == []


def test_flat_layout(tmp_path: Path) -> None:
    (tmp_path / "s.proto").write_text(
        'syntax = "proto3";\npackage p.v1;\nmessage M {}\nservice S { rpc Do(M) returns (M); }\n'
    )
    out = tmp_path / "out"
    _run_plugin(
        tmp_path, tmp_path, out, "messages_package=x,layout=flat", str(tmp_path / "s.proto")
    )
    assert [p.relative_to(out).as_posix() for p in out.rglob("*.py")] == ["s_ttrpc.py"]
    assert "import x.p.v1 as pb_p_v1" in (out / "s_ttrpc.py").read_text()


def test_flat_layout_with_same_named_files_says_what_to_do(tmp_path: Path) -> None:
    for version in ("v2", "v3"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "shim.proto").write_text(
            f'syntax = "proto3";\npackage task.{version};\nmessage M {{}}\n'
            "service S { rpc Do(M) returns (M); }\n"
        )
    result = _protoc(
        tmp_path,
        f"-I{tmp_path}",
        f"--plugin=protoc-gen-ttrpc-python={_plugin(tmp_path)}",
        f"--ttrpc-python_out={tmp_path}",
        "--ttrpc-python_opt=messages_package=x,layout=flat",
        "v2/shim.proto",
        "v3/shim.proto",
    )
    assert result.returncode != 0
    assert "v2/shim.proto and v3/shim.proto would both be written as shim_ttrpc.py" in (
        result.stderr
    )
    assert "use layout=package" in result.stderr


# --- the generated module -----------------------------------------------------------------


def test_layout_and_header(generated: Path) -> None:
    stub = generated / "acme" / "widgets" / "v1" / "widgets_ttrpc.py"
    text = stub.read_text()
    assert text.startswith("# Generated by protoc-gen-ttrpc-python")
    assert "# Regenerate with: make protos" in text.splitlines()[:4]
    assert not (generated / "acme" / "common" / "common_ttrpc.py").exists()  # no services


def test_server_base_table(stubs: ModuleType, generated: Path) -> None:
    messages = importlib.import_module(f"{PACKAGE}.acme.widgets.v1")
    common = importlib.import_module(f"{PACKAGE}.acme.common")
    wkt = importlib.import_module(f"{PACKAGE}.google.protobuf")
    base = stubs.WidgetsBase
    assert base.service_name == "acme.widgets.v1.Widgets"
    table = base.ttrpc_methods()
    expected = {
        "Get": ("get", MethodKind.UNARY, messages.Widget, messages.Widget),
        "CloseIO": ("close_io", MethodKind.UNARY, common.CloseIoRequest, wkt.Empty),
        "ResizePty": ("resize_pty", MethodKind.UNARY, common.OuterInner, common.Outer),
        "Upload": ("upload", MethodKind.CLIENT_STREAM, messages.Widget, messages.Widget),
        "Watch": ("watch", MethodKind.SERVER_STREAM, messages.Widget, messages.Widget),
        "EchoStream": ("echo_stream", MethodKind.BIDI_STREAM, messages.Widget, messages.Widget),
        "ServiceName": ("service_name_", MethodKind.UNARY, wkt.Empty, wkt.Empty),
    }
    got = {
        name: (s.attribute, s.kind, s.request_type, s.response_type) for name, s in table.items()
    }
    assert got == expected
    assert stubs.SecondBase.service_name == "acme.widgets.v1.Second"
    assert list(stubs.SecondBase.ttrpc_methods()) == ["Ping"]
    assert stubs.__all__ == [
        "SecondBase",
        "SecondClient",
        "SecondProtocol",
        "SecondStrictBase",
        "WidgetsBase",
        "WidgetsClient",
        "WidgetsEchoStreamClientStream",
        "WidgetsProtocol",
        "WidgetsStrictBase",
        "WidgetsUploadClientStream",
        "WidgetsWatchClientStream",
    ]
    assert stubs.WidgetsBase.get.__doc__ == "Get one widget."
    doc = stubs.WidgetsBase.__doc__ or ""
    assert "Widgets does everything a service can." in doc
    assert "\n    A second paragraph, as containerd's comments have,\n      with an indented" in doc
    assert "not overridden answers Unimplemented at run time" in doc
    assert "as Go's generated servers do" not in doc


def test_strict_base_refuses_an_incomplete_server(stubs: ModuleType) -> None:
    class Partial(stubs.WidgetsStrictBase):  # type: ignore[name-defined,misc]
        async def get(self, request: Any, context: ttrpc.CallContext) -> Any:
            return request

    with pytest.raises(TypeError, match="abstract"):
        Partial()
    names = {
        "close_io",
        "resize_pty",
        "upload",
        "watch",
        "echo_stream",
        "service_name_",
    }

    async def impl(self: Any, request: Any, context: ttrpc.CallContext) -> Any:
        return request

    complete = type("Complete", (Partial,), dict.fromkeys(names, impl))
    server = complete()
    assert set(server.ttrpc_methods()) == set(stubs.WidgetsBase.ttrpc_methods())


@pytest.mark.anyio
async def test_base_methods_answer_unimplemented(stubs: ModuleType) -> None:
    messages = importlib.import_module(f"{PACKAGE}.acme.widgets.v1")
    common = importlib.import_module(f"{PACKAGE}.acme.common")
    service = stubs.WidgetsBase()
    ctx = ttrpc.CallContext("acme.widgets.v1.Widgets", "CloseIO")
    with pytest.raises(TtrpcError) as info:
        await service.close_io(common.CloseIoRequest(id="c1"), ctx)
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method CloseIO")

    async def no_requests() -> Any:
        return
        yield

    with pytest.raises(TtrpcError, match="method Upload"):
        await service.upload(no_requests(), ctx)
    for method, arg in (("watch", messages.Widget()), ("echo_stream", no_requests())):
        with pytest.raises(TtrpcError) as info:
            async for _ in getattr(service, method)(arg, ctx):
                pass
        assert info.value.code == Code.UNIMPLEMENTED


class _RecordingClient:
    """Stands in for ttrpc.Client: records what the stubs ask of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def call(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(("call", *args, kwargs))
        return "reply"

    async def stream(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append(("stream", *args, kwargs))
        return "stream"


@pytest.mark.anyio
async def test_client_stubs_pass_everything_through(stubs: ModuleType) -> None:
    messages = importlib.import_module(f"{PACKAGE}.acme.widgets.v1")
    wkt = importlib.import_module(f"{PACKAGE}.google.protobuf")
    recorder = _RecordingClient()
    stub = stubs.WidgetsClient(cast(ttrpc.Client, recorder))
    w = messages.Widget(seq=3)
    md = {"containerd-namespace-ttrpc": "default"}
    assert await stub.get(w, timeout=1.5, metadata=md) == "reply"
    assert await stub.close_io(w) == "reply"
    assert (await stub.upload()).stream == "stream"
    assert (await stub.watch(w, timeout=2.0)).stream == "stream"
    assert (await stub.echo_stream(metadata=md)).stream == "stream"
    svc = "acme.widgets.v1.Widgets"
    assert recorder.calls == [
        ("call", svc, "Get", w, messages.Widget, {"timeout": 1.5, "metadata": md}),
        ("call", svc, "CloseIO", w, wkt.Empty, {"timeout": None, "metadata": None}),
        (
            "stream",
            svc,
            "Upload",
            MethodKind.CLIENT_STREAM,
            messages.Widget,
            {"timeout": None, "metadata": None},
        ),
        (
            "stream",
            svc,
            "Watch",
            MethodKind.SERVER_STREAM,
            messages.Widget,
            {"request": w, "timeout": 2.0, "metadata": None},
        ),
        (
            "stream",
            svc,
            "EchoStream",
            MethodKind.BIDI_STREAM,
            messages.Widget,
            {"timeout": None, "metadata": md},
        ),
    ]


@pytest.mark.anyio
async def test_client_forwards_a_server_context(stubs: ModuleType) -> None:
    messages = importlib.import_module(f"{PACKAGE}.acme.widgets.v1")
    recorder = _RecordingClient()
    stub = stubs.WidgetsClient(cast(ttrpc.Client, recorder))
    incoming = ttrpc.Metadata({"containerd-namespace-ttrpc": "k8s.io"})
    ctx = ttrpc.CallContext("acme.widgets.v1.Widgets", "Get", incoming, time.monotonic() + 30)
    await stub.get(messages.Widget(), ctx)
    kwargs = recorder.calls[-1][-1]
    assert kwargs["metadata"] is incoming
    assert 0 < kwargs["timeout"] <= 30
    # Explicit arguments win over the context's.
    await stub.get(messages.Widget(), ctx, timeout=1.0, metadata={"a": "b"})
    assert recorder.calls[-1][-1] == {"timeout": 1.0, "metadata": {"a": "b"}}


USER_CODE = f"""
from __future__ import annotations

import ttrpc
from {PACKAGE}.acme.widgets.v1 import Widget
from {PACKAGE}.acme.widgets.v1.widgets_ttrpc import (
    WidgetsBase,
    WidgetsClient,
    WidgetsProtocol,
)
from {PACKAGE}.google.protobuf import Empty


class Server(WidgetsBase):
    pass


async def use(client: ttrpc.Client) -> None:
    stub = WidgetsClient(client)
    either: list[WidgetsProtocol] = [stub, Server()]
    watch = await stub.watch(Widget())
    await watch.send(Widget())  # a server stream has no send
    upload = await stub.upload()
    await upload.send(Empty())  # the wrong request type
    await upload.send(Widget())
    reply: Widget = await upload.close_and_recv()
    del either, reply
"""


def test_stubs_type_check_what_go_checks(generated: Path, tmp_path: Path) -> None:
    """mypy catches a send on a server stream and a wrong request type; both sides fit the
    Protocol."""
    user = tmp_path / "user_code.py"
    user.write_text(USER_CODE)
    result = _mypy(generated, tmp_path, user)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, result.stdout
    assert 'WidgetsWatchClientStream" has no attribute "send"' in errors[0]
    assert 'incompatible type "Empty"; expected "Widget"' in errors[1]


def _mypy(generated: Path, tmp_path: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": f"{generated.parent}{os.pathsep}{REPO}"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",
            f"--cache-dir={tmp_path / 'mypy'}",
            str(target),
        ],
        cwd=generated.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_generated_code_passes_ruff(generated: Path) -> None:
    stub = str(generated / "acme" / "widgets" / "v1" / "widgets_ttrpc.py")
    ruff = str(BIN / "ruff")
    lint = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--no-cache",
            "--line-length=100",
            "--select=E,F,W,I,UP,B,ASYNC,C4,SIM,PT,RUF,PERF",
            "--config",
            f"lint.isort.known-first-party = ['ttrpc', '{PACKAGE}']",
            stub,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [ruff, "format", "--isolated", "--no-cache", "--line-length=100", "--check", stub],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_generated_code_passes_mypy_strict(generated: Path, tmp_path: Path) -> None:
    stub = generated / "acme" / "widgets" / "v1" / "widgets_ttrpc.py"
    result = _mypy(generated, tmp_path, stub)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checked_in_example_stubs_are_up_to_date(tmp_path: Path) -> None:
    """ttrpc/example/example_ttrpc.py is exactly what scripts/gen_example.sh would write."""
    out = tmp_path / "out"
    _run_plugin(
        tmp_path,
        REPO / "ttrpc" / "example",
        out,
        "messages_package=ttrpc.example._gen,layout=flat,regenerate=scripts/gen_example.sh",
        str(REPO / "ttrpc" / "example" / "example.proto"),
    )
    checked_in = (REPO / "ttrpc" / "example" / "example_ttrpc.py").read_text()
    assert (out / "example_ttrpc.py").read_text() == checked_in, "run scripts/gen_example.sh"
