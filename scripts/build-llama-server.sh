#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server (llama-server) from the exact llama.cpp source that
# node-llama-cpp ships, so that benchmarks compare against the same engine version.
# Cached outside the repository: prints the binary's path. ~10 min on 2 cores the first time.
#
# CPU: like node-llama-cpp's own build (GGML_NATIVE=OFF, GGML_OPENMP=OFF, backends loaded at run
# time), with no CPU backend of its own: it loads node-llama-cpp's CPU backend library for this
# machine (libggml-cpu-zen4.so, -sapphirerapids.so, ...), so both servers run the very same
# kernels and ggml's own threadpool. (A GGML_NATIVE=ON build is not the same code: seen here, on a
# VM that advertises AMX, its AMX kernels died with SIGILL at the first decode. It is the
# fallback when node-llama-cpp's CPU library cannot be found.)
# LLAMA_SERVER_CUDA=1 builds it with ggml's CUDA backend (for the GPU side-by-side benchmark;
# CUDA_ARCHITECTURES, default: the visible GPUs' compute capability).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bundle="$root/node_modules/node-llama-cpp/llama/gitRelease.bundle"
cache="${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-platform}"
rev="$(git bundle list-heads "$bundle" | head -n1 | cut -c1-12)"

# The CPU variant node-llama-cpp loads here (libggml-cpu-<variant>.so), asked of node-llama-cpp itself.
probe="$root/.llama-variant-probe.mjs"
cat > "$probe" <<'JS'
const { getLlama } = await import('node-llama-cpp');
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath: 'models/stories260K.gguf' });
const maps = (await import('node:fs')).readFileSync('/proc/self/maps', 'utf8');
process.stdout.write((/libggml-cpu-([a-z0-9_]+)\.so/.exec(maps) ?? [, ''])[1]);
await model.dispose();
await llama.dispose();
JS
cpu_variant="$(cd "$root" && node "$probe" 2>/dev/null || true)"
rm -f "$probe"

src="$cache/llama.cpp-$rev"
mkdir -p "$cache"
if [ ! -d "$src/.git" ]; then
  rm -rf "$src"
  git clone --quiet "$bundle" "$src" >&2
  (cd "$src" && git checkout --quiet "$(git bundle list-heads "$bundle" | head -n1 | cut -d' ' -f1)") >&2
fi

variant=""
flags=(-DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF)
cpu_library=""
if [ -n "$cpu_variant" ]; then
  # node-llama-cpp's own CPU backend library (the same file, not a rebuild), loaded at run time
  # by a llama-server built with dynamically loaded backends and no CPU backend of its own.
  cpu_library="$(ls "$root"/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-cpu-"$cpu_variant".so 2>/dev/null | head -1)"
fi
if [ -n "$cpu_library" ]; then
  variant="-nlc-$cpu_variant"
  flags=(-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU=OFF -DBUILD_SHARED_LIBS=ON)
fi
if [ "${LLAMA_SERVER_CUDA:-0}" = 1 ]; then
  arch="${CUDA_ARCHITECTURES:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '.')}"
  [ -n "$arch" ] || { echo "LLAMA_SERVER_CUDA=1: no GPU visible; set CUDA_ARCHITECTURES (e.g. 90)" >&2; exit 2; }
  variant="$variant-cuda-sm$arch"
  flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DGGML_CUDA_FA_ALL_QUANTS=OFF)
fi
out="$cache/llama-server-$rev$variant/bin"
if [ -x "$out/llama-server" ]; then echo "$out/llama-server"; exit 0; fi
build="$src/build$variant"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON "${flags[@]}" >&2
cmake --build "$build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$out"
cp "$build/bin/llama-server" "$out/"
# Its shared libraries next to it (found through its RUNPATH or the folder ggml searches), and
# for a backend-DL build node-llama-cpp's CPU backend itself.
find "$build/bin" -maxdepth 1 -name '*.so*' -exec cp -P {} "$out/" \;
if [ -n "$cpu_library" ]; then cp "$cpu_library" "$out/"; fi
echo "$out/llama-server"
