#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine, idempotently:
# Debian packages (containerd + runc for the end-to-end tests, Go + Debian's ttrpc 1.1.1
# sources for the interop tests) when running as root, then a virtualenv in .venv with the
# project installed in editable mode with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containerd/ttrpc ] || need_pkgs+=(golang-github-containerd-ttrpc-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing ${need_pkgs[*]}; as root run: apt-get install ${need_pkgs[*]}" >&2
    echo "setup: the tests that need them will be skipped" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# compat mode puts the checkout on sys.path through a .pth file: the default editable
# finder costs ~20 ms at every interpreter start, and containerd starts the shim binary
# several times per container.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' \
  --config-settings editable_mode=compat
# Write bytecode now: with PYTHONDONTWRITEBYTECODE set (as on these machines) every shim
# process would otherwise compile the project's modules from source again.
.venv/bin/python -m compileall -q -j 0 ttrpc runwasi_py .venv/lib/python3*/site-packages >/dev/null || true
echo "setup: ready (.venv)"
