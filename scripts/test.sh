#!/usr/bin/env bash
# Run the whole test suite: lint, types, then pytest (unit, property, Go interop and real
# containerd end-to-end tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check ttrpc runwasi_py tests benchmarks
.venv/bin/ruff format --check ttrpc runwasi_py tests benchmarks
.venv/bin/mypy ttrpc runwasi_py tests
exec .venv/bin/pytest "$@"
