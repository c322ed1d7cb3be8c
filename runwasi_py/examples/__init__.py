"""Example WebAssembly programs shipped with runwasi-py (``runwasi-py demo`` runs ``hello``).

Example:
    >>> from runwasi_py.examples import example_path
    >>> example_path("hello").name
    'hello.wat'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_path"]


def example_path(name: str) -> Path:
    """The path of the bundled example ``<name>.wat``; FileNotFoundError if there is none."""
    path = Path(str(resources.files(__name__).joinpath(f"{name}.wat")))
    if not path.is_file():
        raise FileNotFoundError(f"no bundled example {name!r}")
    return path
