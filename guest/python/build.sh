#!/usr/bin/env bash
# Builds a Python plugin with componentize-py (`pip install componentize-py==0.25.1`):
#   guest/python/build.sh MODULE OUT.wasm [DIR]
# MODULE is the plugin's module (kind_counts), found in DIR (default: examples/), whose `Run`
# is `pulsewatch.command(...)`; the SDK (pulsewatch/) is found beside this script. A module
# that itself imports pulsewatch.transform is built as a transform: its world imports
# pulse:watch/output as well, which the host grants only to a plugin given outputs. The WIT it
# builds against: wit/world.wit, the repository's feed, and WASI 0.2 from the wasmtime-wasi
# crate the host builds with (in cargo's registry after a host build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=${1:?usage: build.sh MODULE OUT.wasm [DIR]}
out=$(realpath -m "${2:?usage: build.sh MODULE OUT.wasm [DIR]}")
dir=$(realpath "${3:-$here/examples}")
wasi=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wasmtime-wasi-48.*/src/p2/wit/deps 2>/dev/null | sort -V | tail -1)
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
world=plugin-py
if grep -qE '^[[:space:]]*((import|from)[[:space:]]+pulsewatch\.transform([[:space:],]|$)|from[[:space:]]+pulsewatch[[:space:]]+import[^#]*[^[:alnum:]_]transform([^[:alnum:]_]|$))' "$dir/$module.py" 2>/dev/null; then
  world=transform-py
fi
cd "$work"
componentize-py -d wit -w "pulse:py/$world" componentize "$module" -p "$dir" -p "$here" -o "$out"
