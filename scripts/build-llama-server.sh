#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server (llama-server) from the exact llama.cpp source that
# node-llama-cpp ships, so that benchmarks compare against the same engine version.
# Cached outside the repository: prints the binary's path. ~10 min on 2 cores the first time.
#
# CPU: with the instruction-set features of the CPU variant node-llama-cpp loads on this machine
# (e.g. zen4, sapphirerapids, as ggml's CMakeLists defines them) and, like node-llama-cpp's own
# build, GGML_NATIVE=OFF and GGML_OPENMP=OFF: both servers run the same kernels and ggml's own
# threadpool. (GGML_NATIVE=ON is not the same code: seen here, on a VM that advertises AMX, its
# AMX kernels died with SIGILL at the first decode. It is the fallback when the variant is unknown.)
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
flags=(-DGGML_NATIVE=ON)
# That variant's instruction-set features, as ggml's own CMakeLists lists them, e.g.
#   ggml_add_cpu_backend_variant(zen4 SSE42 AVX F16C FMA AVX2 BMI2 AVX512 ...)
features="$( [ -n "$cpu_variant" ] && grep -oE "ggml_add_cpu_backend_variant\($cpu_variant( +[A-Z0-9_]+)+\)" "$src/ggml/src/CMakeLists.txt" | head -1 | tr -d '()' | cut -d' ' -f2- | xargs -n1 | tail -n +2 || true)"
if [ -n "$features" ]; then
  variant="-$cpu_variant"
  flags=(-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF)
  for f in $features; do flags+=("-DGGML_$f=ON"); done
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
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF "${flags[@]}" >&2
cmake --build "$build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$out"
cp "$build/bin/llama-server" "$out/"
echo "$out/llama-server"
