#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server (llama-server, CPU) from the exact llama.cpp source that
# node-llama-cpp ships, so that benchmarks compare against the same engine version.
# Cached outside the repository: prints the binary's path. ~10 min on 2 cores the first time.
# LLAMA_SERVER_CUDA=1 builds it with ggml's CUDA backend (for the GPU side-by-side benchmark;
# CUDA_ARCHITECTURES, default: the visible GPUs' compute capability).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
cache="${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-platform}"
rev="$(git bundle list-heads "$bundle" | head -n1 | cut -c1-12)"
variant=""
gpu_flags=()
if [ "${LLAMA_SERVER_CUDA:-0}" = 1 ]; then
  arch="${CUDA_ARCHITECTURES:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')}"
  [ -n "$arch" ] || { echo "LLAMA_SERVER_CUDA=1: no GPU visible; set CUDA_ARCHITECTURES (e.g. 90)" >&2; exit 2; }
  variant="-cuda-sm$arch"
  gpu_flags=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGGML_CUDA_FA_ALL_QUANTS=OFF)
fi
bin="$cache/llama-server-$rev$variant/bin/llama-server"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
src="$cache/llama.cpp-$rev"
mkdir -p "$cache"
if [ ! -d "$src/.git" ]; then
  rm -rf "$src"
  git clone --quiet "$bundle" "$src" >&2
  (cd "$src" && git checkout --quiet "$(git bundle list-heads "$bundle" | head -n1 | cut -d' ' -f1)") >&2
fi
build="$src/build$variant"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF "${gpu_flags[@]}" >&2
cmake --build "$build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$(dirname "$bin")"
cp "$build/bin/llama-server" "$bin"
echo "$bin"
