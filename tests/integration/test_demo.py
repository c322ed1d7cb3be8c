"""``runwasi-py demo``: the bundled hello runs and its output appears, saying which path."""

from __future__ import annotations

import subprocess

import pytest

from runwasi_py.cli import main
from runwasi_py.examples._demo import scripts_dir
from tests.integration._require import require_containerd, require_shim

GREETING = "Hello from WebAssembly, running as a containerd container!\n"


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    require_shim()
    assert main(["demo", "--mode", "in-process", "one", "two words"]) == 0
    out, err = capsys.readouterr()
    assert out == GREETING + "arg: one\narg: two words\n"
    assert "path: in-process driver" in err


@pytest.mark.containerd
def test_demo_through_real_containerd() -> None:
    require_containerd()
    require_shim()
    res = subprocess.run(
        [str(scripts_dir() / "runwasi-py"), "demo"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert "path: real containerd" in res.stderr
    assert (res.returncode, res.stdout) == (0, GREETING), res.stderr
