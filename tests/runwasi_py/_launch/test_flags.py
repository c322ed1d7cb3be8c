"""Go-style flag parsing of containerd's shim command line."""

from __future__ import annotations

import pytest

from runwasi_py._launch.flags import Flags, UsageError, parse_flags

# --- flag parsing -----------------------------------------------------------------------


def test_containerd_16_start_argv() -> None:
    argv = "-namespace default -address /run/containerd/containerd.sock "
    argv += "-publish-binary /usr/bin/containerd -id probe1 -debug start"
    flags = parse_flags(argv.split())
    assert flags == Flags(
        namespace="default",
        address="/run/containerd/containerd.sock",
        publish_binary="/usr/bin/containerd",
        id="probe1",
        debug=True,
        action="start",
    )


def test_delete_argv_with_bundle() -> None:
    flags = parse_flags(["-namespace", "ns", "-id", "c1", "-bundle", "/b", "delete"])
    assert (flags.bundle, flags.action) == ("/b", "delete")


def test_equals_and_double_dash_forms() -> None:
    flags = parse_flags(["--namespace=ns", "-id=c1", "--address", "-weird", "-debug=false"])
    assert flags.namespace == "ns"
    assert flags.id == "c1"
    assert flags.address == "-weird"  # a string flag takes the next word, whatever it is
    assert flags.debug is False
    assert flags.action == ""


def test_value_with_equals_sign() -> None:
    assert parse_flags(["-id=a=b"]).id == "a=b"


def test_bool_values() -> None:
    assert parse_flags(["-debug=true"]).debug is True
    assert parse_flags(["-debug=1"]).debug is True
    assert parse_flags(["-v"]).v is True
    assert parse_flags(["-info"]).info is True
    with pytest.raises(UsageError, match='invalid boolean value "yes"'):
        parse_flags(["-debug=yes"])


def test_bool_flag_does_not_take_next_word() -> None:
    flags = parse_flags(["-debug", "start", "extra"])
    assert flags.debug is True
    assert flags.action == "start"
    assert flags.args == ["extra"]


def test_terminator_and_positional() -> None:
    flags = parse_flags(["-id", "x", "--", "-namespace"])
    assert flags.action == "-namespace"
    assert flags.namespace == ""
    assert parse_flags(["-", "start"]).action == "-"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["-id"], "flag needs an argument: -id"),
        (["---id", "x"], "bad flag syntax: ---id"),
        (["-=x"], "bad flag syntax: -=x"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_flags(argv)
    assert str(info.value) == message
