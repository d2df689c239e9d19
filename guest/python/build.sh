#!/usr/bin/env bash
# Builds py-plugin.wasm, a plugin written in Python, with componentize-py
# (`pip install componentize-py`; 0.25 was used). Not part of CI: the result is 18 MB, and the
# point is to have a large component to measure a cold and a cached start with:
#   pulsewatch run --db events.redb py-plugin.wasm
# The WIT it builds against: wit/world.wit, the repository's feed, and WASI 0.2 from the
# wasmtime-wasi crate the host builds with (in cargo's registry after a host build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wasi=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasmtime-wasi-48.*/src/p2/wit/deps 2>/dev/null | tail -1)
if [ -z "$wasi" ]; then
  echo "build.sh: wasmtime-wasi 48's WIT not found in cargo's registry; build the host first (cargo build)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wit/deps/pulse"
cp "$here/wit/world.wit" "$work/wit/"
cp "$here/../../wit/feed.wit" "$work/wit/deps/pulse/"
for f in "$wasi"/*.wit; do
  name=$(basename "$f" .wit)
  mkdir -p "$work/wit/deps/$name"
  cp "$f" "$work/wit/deps/$name/"
done
cd "$work"
componentize-py -d wit -w pulse:py/plugin-py componentize app -p "$here" -o "$here/py-plugin.wasm"
echo "built $here/py-plugin.wasm"
