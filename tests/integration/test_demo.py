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
    with subprocess.Popen(
        [str(scripts_dir() / "runwasi-py"), "demo"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=50)
        except subprocess.TimeoutExpired:
            # SIGTERM: the demo then stops its private containerd and cleans up.
            proc.terminate()
            out, err = proc.communicate(timeout=8)
    assert "path: real containerd" in err
    assert (proc.returncode, out) == (0, GREETING), err
