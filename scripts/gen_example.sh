#!/usr/bin/env bash
# Regenerate the Example service's Python code from ttrpc/example/example.proto:
# betterproto2 messages into ttrpc/example/_gen/ and ttrpc stubs into
# ttrpc/example/example_ttrpc.py (with protoc-gen-ttrpc-python, i.e. ttrpc.codegen).
# Needs the dev extras (grpcio-tools, betterproto2-compiler==0.10.1).
set -euo pipefail
cd "$(dirname "$0")/.."
# betterproto2-compiler runs `ruff format` on its output: take ruff from the venv.
export PATH="$PWD/.venv/bin:$PATH"
py=.venv/bin/python
gen=ttrpc/example/_gen
cmd="scripts/gen_example.sh"

rm -rf "$gen"
mkdir -p "$gen"
# It runs from an empty directory because it skips writing any package __init__.py that
# exists relative to its working directory (here: the repo's own ttrpc/__init__.py).
# Its "Writing <file>" chatter on stderr is shown only when it fails.
repo=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! log=$(cd "$scratch" && "$repo/$py" -m grpc_tools.protoc -I "$repo/ttrpc/example" \
  --python_betterproto2_out="$repo/$gen" \
  --python_betterproto2_opt=client_generation=none,server_generation=none \
  "$repo/ttrpc/example/example.proto" 2>&1); then
  echo "$log" >&2
  exit 1
fi
# betterproto2 writes no regeneration command; put it on top of each of its files.
find "$gen" -name '*.py' -print0 | while IFS= read -r -d '' f; do
  { echo "# Generated; regenerate with: $cmd"; cat "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"
done
# Fast per-message parse/__bytes__ (byte-identical to betterproto2's), appended to each module.
"$py" -m ttrpc.codegen.codecs ttrpc.example._gen

"$py" -m grpc_tools.protoc -I ttrpc/example \
  --plugin=protoc-gen-ttrpc-python=.venv/bin/protoc-gen-ttrpc-python \
  --ttrpc-python_out=ttrpc/example \
  --ttrpc-python_opt=messages_package=ttrpc.example._gen,layout=flat,regenerate=$cmd \
  ttrpc/example/example.proto
.venv/bin/ruff format -q ttrpc/example/example_ttrpc.py --check
echo "gen_example: ok"
