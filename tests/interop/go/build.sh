#!/usr/bin/env bash
# Build the Go interop/benchmark peer (tests/interop/go/ttrpcpeer) against Debian's
# containerd/ttrpc 1.1.1 (golang-github-containerd-ttrpc-dev) in GOPATH mode; print the
# binary's path. Usage: build.sh [OUT_DIR]   (default: <repo>/.work/go, git-ignored)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-$repo/.work/go}"
mkdir -p "$out/gopath" "$out/cache"
command -v go >/dev/null || { echo "build.sh: go not found (apt-get install golang-go)" >&2; exit 3; }
[ -d /usr/share/gocode/src/github.com/containerd/ttrpc ] || {
  echo "build.sh: /usr/share/gocode has no containerd/ttrpc (apt-get install golang-github-containerd-ttrpc-dev)" >&2
  exit 3
}
cd "$here/ttrpcpeer"
GO111MODULE=off GOPATH="$out/gopath:/usr/share/gocode" GOCACHE="$out/cache" GOFLAGS= \
  go build -o "$out/ttrpcpeer" .
echo "$out/ttrpcpeer"
