#!/usr/bin/env bash
# Regenerate the messages of the generated-codec tests (tests/ttrpc/codec/allkinds.proto):
# betterproto2 messages into tests/ttrpc/codec/_gen/, then the fast codecs appended by
# python -m ttrpc.codegen.codecs. Needs the dev extras (grpcio-tools, betterproto2-compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
py=.venv/bin/python
gen=tests/ttrpc/codec/_gen
rm -rf "$gen"
mkdir -p "$gen"
repo=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# From an empty directory: betterproto2-compiler skips any package __init__.py that exists
# relative to its working directory.
if ! log=$(cd "$scratch" && "$repo/$py" -m grpc_tools.protoc -I "$repo/tests/ttrpc/codec" \
  --python_betterproto2_out="$repo/$gen" \
  --python_betterproto2_opt=client_generation=none,server_generation=none \
  "$repo/tests/ttrpc/codec/allkinds.proto" 2>&1); then
  echo "$log" >&2
  exit 1
fi
find "$gen" -name '*.py' -print0 | while IFS= read -r -d '' f; do
  { echo "# Generated; regenerate with: scripts/gen_codec_tests.sh"; cat "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"
done
"$py" -m ttrpc.codegen.codecs tests.ttrpc.codec._gen
echo "gen_codec_tests: ok"
