"""Test a shim without containerd: OCI bundles, a Task API driver, an in-process or subprocess shim.

Example:
    >>> from runwasi_py import testing
    >>> callable(testing.run)
    True
"""

from __future__ import annotations

from runwasi_py.testing.bundles import Bundle, Output, make_bundle
from runwasi_py.testing.driver import RunResult, TaskDriver
from runwasi_py.testing.events_server import RecordedEvent, RecordingEventsServer
from runwasi_py.testing.serve import ShimUnderTest, run, serve_shim

__all__ = [
    "Bundle",
    "Output",
    "RecordedEvent",
    "RecordingEventsServer",
    "RunResult",
    "ShimUnderTest",
    "TaskDriver",
    "make_bundle",
    "run",
    "serve_shim",
]
