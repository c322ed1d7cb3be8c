"""Suite-wide fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on uvloop."""

from __future__ import annotations

import pytest


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Run async tests under the default loop and under uvloop."""
    return request.param  # type: ignore[no-any-return]
