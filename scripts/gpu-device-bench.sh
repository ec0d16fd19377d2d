#!/usr/bin/env bash
# The GPU side-by-side benchmark of issue 13 in ONE command on a lent GPU machine (no network,
# no Node.js, CUDA toolkit and driver installed; ../shared/gpu/README.md): this server against
# llama-server built with CUDA from the very llama.cpp source that node-llama-cpp 3.21.1 ships,
# the synthetic 1.1B F16 model, 64/32/16/8/1 streams, every layer on the GPU.
#
#   here, after `npm ci` and `npm run build`:   bash scripts/gpu-device-bench.sh pack [DIR]
#   there, as the one device command:           bash scripts/gpu-device-bench.sh run [DIR]
#
# DIR (default .gpu, git-ignored; carry it) holds node, the production node_modules, dist, the
# engine addon and llama.cpp's source, xz-compressed (under the device tool's 64 MiB carry).
# `run` builds ggml's CUDA backend and llama-server in one CMake tree (ggml-cuda is compiled
# once, ~3-4 min on 16 cores for one architecture), installs that backend in place of
# node-llama-cpp's prebuilt one (which needs a CUDA 13.1 driver), generates the model, and runs
# `bench serve`. Everything it learns goes to $OUT (default /tmp/gpu-bench-out) as it goes, so a
# run cut short still returns its log. The CPU parts can be checked without a GPU:
# `GPU_BENCH_CPU=1 bash scripts/gpu-device-bench.sh run` skips CUDA and benches the 110M model
# on the CPU at 2 and 1 clients (a check of the packing and the wiring, not a measurement).
set -euo pipefail
mode=${1:?usage: gpu-device-bench.sh pack|run [DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${2:-$root/.gpu}

case "$mode" in
pack)
  bundle=$root/node_modules/node-llama-cpp/llama/gitRelease.bundle
  [ -f "$bundle" ] || { echo "no $bundle: run npm ci first" >&2; exit 2; }
  [ -f "$root/dist/apps/cli/src/main.js" ] || { echo "no dist/: run npm run build first" >&2; exit 2; }
  rm -rf "$dir" && mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  cd "$root"
  cp package.json package-lock.json "$stage/"
  cp -a dist "$stage/"
  # The production packages only (npm's own list), without what the benchmark never loads: other
  # platforms' and GPU flavours' binaries, the prebuilt CUDA backend (rebuilt there), the source
  # bundle (unpacked below without its history) and LanceDB's native library (155 MB; the
  # retrieval routes import it on first use, and the benchmark calls none of them), TypeScript
  # (node-llama-cpp's optional peer, for its own CLI) and better-sqlite3's build leftovers.
  # (npm ls exits non-zero on any peer or optional-dependency complaint while still listing the tree.)
  { npm ls --omit=dev --all --parseable 2>/dev/null || true; } | sed -n "s|^$root/||p" | grep '^node_modules/' \
    | grep -Ev '^node_modules/(@node-llama-cpp/(linux-arm64|linux-armv7l|linux-x64-vulkan|linux-x64-cuda-ext)|@lancedb/lancedb-linux-x64-gnu)$' \
    | sort -u > "$stage/.packages"
  grep -q '^node_modules/node-llama-cpp$' "$stage/.packages" || { echo "npm ls listed no production packages" >&2; exit 2; }
  tar -cf - --exclude=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda/libggml-cuda.so \
    --exclude=node_modules/node-llama-cpp/llama/gitRelease.bundle --exclude=node_modules/typescript \
    --exclude='node_modules/better-sqlite3/build/Release/obj*' --exclude=node_modules/better-sqlite3/build/Release/sqlite3.a \
    --exclude=node_modules/better-sqlite3/deps --files-from="$stage/.packages" | tar -xf - -C "$stage"
  rm "$stage/.packages"
  mkdir -p "$stage/models" "$stage/libs/inference/native/build/Release"
  cp models/stories260K.gguf "$stage/models/"
  if [ -f libs/inference/native/build/Release/llm_engine.node ]; then
    cp libs/inference/native/build/Release/llm_engine.node "$stage/libs/inference/native/build/Release/"
  else
    echo "warning: the engine addon is not built: the server there will run without it" >&2
  fi
  (
    cd "$stage"
    rev=$(git bundle list-heads "$bundle" | head -n1 | cut -d' ' -f1)
    git clone -q "$bundle" llama-src && git -C llama-src checkout -q "$rev"
    echo "$rev" > llama-src/.revision
    # What the CUDA backend and llama-server do not need to build.
    rm -rf llama-src/.git llama-src/models llama-src/docs llama-src/media llama-src/gguf-py \
      llama-src/tests llama-src/examples llama-src/.devops llama-src/ci
    mkdir -p llama-src/tests llama-src/examples
    tar -cf - . | xz -9 -T"$(nproc)" > "$dir/runtime.tar.xz"
  )
  xz -9 -T"$(nproc)" -c "$(command -v node)" > "$dir/node.xz"
  du -sh "$dir"/*
  total=$(du -sm "$dir" | cut -f1)
  echo "$dir: ${total} MiB (the device tool carries 64 MiB in all)"
  [ "$total" -lt 64 ] || { echo "too big to carry" >&2; exit 3; }
  ;;

run)
  dir=$(cd "$dir" && pwd)
  out=${OUT:-/tmp/gpu-bench-out}
  mkdir -p "$out"
  rt=${GPU_BENCH_RT:-/tmp/rt}
  cpu_only=${GPU_BENCH_CPU:-0}
  start=$SECONDS
  log() { echo "[$(date -u +%T) +$((SECONDS - start))s] $*" | tee -a "$out/run.log" >&2; }
  # xz may be missing there: python3's lzma unpacks.
  unxz_to() { python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; }
  log "unpacking $dir into $rt"
  rm -rf "$rt" && mkdir -p "$rt"
  unxz_to "$dir/node.xz" > "$rt/node" && chmod +x "$rt/node"
  unxz_to "$dir/runtime.tar.xz" | tar -xf - -C "$rt"
  export PATH="$rt:$PATH"
  cd "$rt"
  { uname -a; nproc; free -g | head -2; "$rt/node" --version; } > "$out/machine.txt" 2>&1 || true
  rev=$(cat llama-src/.revision)
  build=/tmp/llama-build
  generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
  flags=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=ON -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF
    -DGGML_CPU=OFF -DCMAKE_PLATFORM_NO_VERSIONED_SONAME=ON -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON)
  # No CPU backend of its own: llama-server loads node-llama-cpp's CPU variant libraries, copied
  # next to it below, so both servers run the same CPU kernels (as scripts/build-llama-server.sh).
  targets=(llama-server)
  cpu_bins=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda
  if [ "$cpu_only" = 1 ]; then
    arch=none
    cpu_bins=node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
    flags+=("-DCMAKE_INSTALL_RPATH=\$ORIGIN")
  else
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || { log "nvidia-smi failed: no GPU here"; exit 2; }
    arch=${CUDA_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')}
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    [ -x "$nvcc" ] || { log "no nvcc"; exit 2; }
    # The toolkit's folder as nvcc itself sees it (an nvcc on PATH may be a wrapper script).
    cuda=$("$nvcc" --dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/.*TOP=\([^ ]*\).*/\1/p' | head -1)
    cuda=$(cd "${cuda:-$(dirname "$(readlink -f "$nvcc")")/..}" && pwd)
    nvcc=$cuda/bin/nvcc
    "$nvcc" --version | tail -2 >> "$out/machine.txt"
    # The backend finds the toolkit's runtime (libcudart, libcublas) and, installed next to
    # node-llama-cpp's own libggml-base.so, that one ($ORIGIN), as `gpu build` sets it up.
    flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch" -DGGML_CUDA_FA_ALL_QUANTS=OFF
      "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_INSTALL_RPATH=\$ORIGIN;$cuda/lib64;$cuda/lib")
    targets+=(ggml-cuda)
    export LD_LIBRARY_PATH="$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  # The issue's goal level first: a run cut short by the device tool's 10-minute limit still has it
  # (bench.log gets each round's figures as it goes).
  if [ "$cpu_only" = 1 ]; then
    model_args=(--preset 110m) model=models/synth-110m.gguf bench=(--concurrency 2,1 --requests 8)
  else
    model_args=(--preset 1.1b) model=models/synth-1.1b.gguf
    bench=(--slots 64 --concurrency "${GPU_BENCH_LEVELS:-64,32,16,8,1}" --reference-threads "$(nproc)")
  fi
  # The model (2.2 GB, ~25 s) is written while the build runs.
  log "generating $model"
  "$rt/node" dist/apps/cli/src/main.js model synth "${model_args[@]}" > "$out/synth.log" 2>&1 &
  synth=$!
  # ggml's CMake configures this file; the llama.cpp tree node-llama-cpp bundles lacks it.
  touch llama-src/ggml/ggml.pc.in
  log "configuring llama.cpp ${rev:0:12} for sm_$arch"
  cmake -S llama-src -B "$build" "${generator[@]}" "${flags[@]}" > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log" >&2; exit 3; }
  log "building ${targets[*]} with $(nproc) jobs"
  cmake --build "$build" --target "${targets[@]}" -j "$(nproc)" > "$out/build.log" 2>&1 || { tail -40 "$out/build.log" >&2; exit 4; }
  server=$build/bin/llama-server
  cp "$cpu_bins"/libggml-cpu-*.so "$build/bin/"
  log "built $server"
  if [ "$cpu_only" != 1 ]; then
    bins=node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda
    cp "$(find "$build" -name libggml-cuda.so | head -1)" "$bins/libggml-cuda.so"
    printf '{\n  "architectures": "%s",\n  "nvcc": "%s",\n  "llamaCppRevision": "%s",\n  "builtAt": "%s",\n  "seconds": %d\n}\n' \
      "$arch" "$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')" "$rev" "$(date -u +%FT%TZ)" "$((SECONDS - start))" \
      > "$bins/llm-platform-cuda-build.json"
    "$rt/node" dist/apps/cli/src/main.js gpu status > "$out/gpu-status.txt" 2>&1 || true
    log "$(grep -i probe "$out/gpu-status.txt" || echo 'gpu status failed')"
    # Without the GPU this server would bench a 1.1B F16 model on the CPU: minutes of device time for nothing.
    grep -q '^GPU probe: ok' "$out/gpu-status.txt" || { log "the GPU probe failed (gpu-status.txt): not benching"; exit 7; }
  fi
  wait "$synth" || { log "model synth failed"; cat "$out/synth.log" >&2; exit 5; }
  log "generated $model"
  log "bench serve ${bench[*]}"
  "$rt/node" dist/apps/cli/src/main.js bench serve --model "$model" --llama-server "$server" --rounds "${GPU_BENCH_ROUNDS:-1}" "${bench[@]}" \
    > "$out/bench.txt" 2> "$out/bench.log" || { log "bench serve failed (exit $?)"; tail -20 "$out/bench.log" >&2; exit 6; }
  cat "$out/bench.txt"
  log "done"
  ;;
*)
  echo "usage: gpu-device-bench.sh pack|run [DIR]" >&2
  exit 2
  ;;
esac
