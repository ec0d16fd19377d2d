#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server (llama-server, CPU) from the exact llama.cpp source that
# node-llama-cpp ships, so that benchmarks compare against the same engine version.
# Cached outside the repository: prints the binary's path. ~10 min on 2 cores the first time.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
cache="${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-platform}"
rev="$(git bundle list-heads "$bundle" | head -n1 | cut -c1-12)"
bin="$cache/llama-server-$rev/bin/llama-server"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
src="$cache/llama.cpp-$rev"
mkdir -p "$cache"
if [ ! -d "$src/.git" ]; then
  rm -rf "$src"
  git clone --quiet "$bundle" "$src" >&2
  (cd "$src" && git checkout --quiet "$(git bundle list-heads "$bundle" | head -n1 | cut -d' ' -f1)") >&2
fi
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$src/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$(dirname "$bin")"
cp "$src/build/bin/llama-server" "$bin"
echo "$bin"
