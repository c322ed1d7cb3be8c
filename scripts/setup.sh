#!/usr/bin/env bash
# Set up everything this project needs on a fresh Debian machine, idempotently:
# Debian packages (containerd 1.6 + runc for the end-to-end tests, the CNI plugins and gcc
# for the CRI tests, Go + Debian's ttrpc 1.1.1 sources for the interop tests) when running
# as root; containerd 2.3.4 built from source by ../shared/tools/build-containerd.sh (cached
# in /var/cache/runwasi-py/containerd-2.3.4, about a minute the first time); then a
# virtualenv in .venv with the project installed in editable mode with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containerd/ttrpc ] || need_pkgs+=(golang-github-containerd-ttrpc-dev)
[ -x /usr/lib/cni/bridge ] || need_pkgs+=(containernetworking-plugins)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
# Debian's own python3 is the interpreter of choice (below); its venv module is a package.
if [ -x /usr/bin/python3 ] && command -v dpkg >/dev/null 2>&1 \
  && ! dpkg -s python3-venv >/dev/null 2>&1; then
  need_pkgs+=(python3-venv)
fi
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

# containerd 2.3 for the version matrix; the script prints its bin folder and does nothing
# when the build is already cached.
build_containerd=../shared/tools/build-containerd.sh
if [ "$(id -u)" = 0 ] && [ -f "$build_containerd" ]; then
  if c8d23=$(bash "$build_containerd" 2>/tmp/runwasi-py-build-containerd.log | tail -n 1); then
    echo "setup: containerd 2.3.4 in $c8d23"
  else
    echo "setup: building containerd 2.3.4 failed (log: /tmp/runwasi-py-build-containerd.log)" >&2
    tail -n 20 /tmp/runwasi-py-build-containerd.log >&2 || true
    exit 1
  fi
elif [ ! -f "$build_containerd" ]; then
  echo "setup: $build_containerd not found: the containerd 2.3 tests will be skipped (fail in CI)" >&2
fi

# The interpreter: $PYTHON if set, else the distribution's /usr/bin/python3 (what a node
# runs; Debian builds it with PGO and LTO), else the first python3 on PATH. Measured here:
# Debian's 3.11 runs this project's ttrpc server path ~25% faster than a pyenv 3.11 built
# without --enable-optimizations. Any CPython >= 3.11 with venv works.
usable() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
candidates=()
for candidate in ${PYTHON:-/usr/bin/python3 python3}; do
  if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
    candidates+=("$(command -v "$candidate")")
  fi
done
if [ ${#candidates[@]} -eq 0 ]; then
  echo "setup: no usable Python >= 3.11 with venv (tried ${PYTHON:-/usr/bin/python3 python3})" >&2
  exit 1
fi
if [ -x .venv/bin/python ]; then
  have=$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null || true)
  want=$("${candidates[0]}" -c 'import os, sys; print(os.path.realpath(sys.executable))')
  if [ "$have" != "$want" ]; then
    echo "setup: .venv was made with ${have:-an unknown interpreter}; rebuilding it with $want"
    rm -rf .venv
  fi
fi
for PY in "${candidates[@]}"; do
  [ -x .venv/bin/python ] && break
  # A distribution may ship venv without its pip wheels: then try the next interpreter.
  "$PY" -m venv .venv || { echo "setup: $PY -m venv failed; trying the next" >&2; rm -rf .venv; }
done
[ -x .venv/bin/python ] || { echo "setup: could not create .venv" >&2; exit 1; }
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# compat mode puts the checkout on sys.path through a .pth file: the default editable
# finder costs ~20 ms at every interpreter start, and containerd starts the shim binary
# several times per container.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' \
  --config-settings editable_mode=compat
# containerd runs the shim binary for every start and delete: replace pip's console script
# by the lean one (the interpreter without site for those two; runwasi_py/_launch/entry.py).
.venv/bin/runwasi-py shim-entry >/dev/null
# Write bytecode now: with PYTHONDONTWRITEBYTECODE set (as on these machines) every shim
# process would otherwise compile the project's modules from source again.
.venv/bin/python -m compileall -q -j 0 ttrpc runwasi_py .venv/lib/python3*/site-packages >/dev/null || true
echo "setup: ready (.venv)"
