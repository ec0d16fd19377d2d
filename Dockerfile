# syntax=docker/dockerfile:1.7
# LLM serving platform: one image per compute variant.
#   docker build -t llm-api .                                   # CPU (default)
#   docker build -t llm-api:cuda --build-arg VARIANT=cuda .     # NVIDIA, node-llama-cpp's prebuilt CUDA backend
#   docker build -t llm-api:cuda --build-arg VARIANT=cuda --build-arg CUDA_SOURCE_BUILD=true \
#                --build-arg CUDA_ARCHITECTURES=90 .            # CUDA backend compiled here (older drivers)
# Models are not baked in (except the 1 MB test model): mount them at /models and set MODEL_PATH.

# Global build arguments (those used in FROM lines must be declared before the first stage).
ARG VARIANT=cpu
ARG CUDA_SOURCE_BUILD=false
ARG NODE_IMAGE=node:20-bookworm-slim
# The prebuilt CUDA backend of node-llama-cpp 3.21.1 is compiled with CUDA 13.1: the runtime
# libraries must be 13.1+ and the host driver must support CUDA 13.1 (README, "Docker").
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.1.0-runtime-ubuntu24.04
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:13.1.0-devel-ubuntu24.04

# ---- build: all dependencies, compile TypeScript, then drop dev dependencies -----------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# node-llama-cpp uses its prebuilt binaries (optional dependencies); never build or download at install.
ENV NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY apps ./apps
COPY libs ./libs
COPY scripts ./scripts
# The engine addon (persistent ggml threadpool): npm ci ran before the sources were here. In the
# image it must build (--strict); on other machines the server falls back without it.
RUN node scripts/build-native.js --strict \
 && npm run build && npm prune --omit=dev --no-audit --no-fund

# ---- CPU: no GPU libraries at all ------------------------------------------------------------
FROM build AS deps-cpu
RUN rm -rf node_modules/@node-llama-cpp/*cuda* node_modules/@node-llama-cpp/*vulkan* \
           node_modules/@node-llama-cpp/linux-arm* node_modules/@node-llama-cpp/mac* node_modules/@node-llama-cpp/win*

# ---- CUDA: the prebuilt backend, optionally replaced by one compiled from the same sources ----
FROM build AS deps-cuda-prebuilt
RUN rm -rf node_modules/@node-llama-cpp/*vulkan* node_modules/@node-llama-cpp/linux-arm* \
           node_modules/@node-llama-cpp/mac* node_modules/@node-llama-cpp/win*

FROM ${CUDA_DEVEL_IMAGE} AS ggml-cuda
ARG CUDA_ARCHITECTURES=90
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake ninja-build git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /app/node_modules/node-llama-cpp/llama/gitRelease.bundle /src/llama.bundle
# ggml's CUDA backend from the llama.cpp release node-llama-cpp 3.21.1 ships (same ABI).
RUN git clone -q /src/llama.bundle /src/llama && touch /src/llama/ggml/ggml.pc.in \
 && cmake -S /src/llama/ggml -B /src/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" -DGGML_CUDA_FA_ALL_QUANTS=OFF \
      -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF \
 && ninja -C /src/build ggml-cuda \
 && cp "$(find /src/build -name libggml-cuda.so | head -1)" /src/libggml-cuda.so

FROM deps-cuda-prebuilt AS deps-cuda-source
COPY --from=ggml-cuda /src/libggml-cuda.so node_modules/@node-llama-cpp/linux-x64-cuda/bins/linux-x64-cuda/libggml-cuda.so

FROM deps-cuda-prebuilt AS deps-cuda-false
FROM deps-cuda-source AS deps-cuda-true
FROM deps-cuda-${CUDA_SOURCE_BUILD} AS deps-cuda

# ---- runtime bases -----------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS base-cpu
ENV GPU=cpu

FROM ${CUDA_RUNTIME_IMAGE} AS base-cuda
RUN apt-get update && apt-get install -y --no-install-recommends libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/node /usr/local/bin/node
ENV GPU=auto NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---- runtime: production dependencies, compiled code, non-root --------------------------------
FROM deps-${VARIANT} AS deps
FROM base-${VARIANT} AS runtime
ARG VARIANT
ENV NODE_ENV=production \
    PORT=8000 \
    HOST=0.0.0.0 \
    DATA_DIR=/data \
    MODEL_PATH=/app/models/stories260K.gguf \
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
RUN groupadd --system --gid 10001 llm \
 && useradd --system --uid 10001 --gid llm --home-dir /app --shell /usr/sbin/nologin llm \
 && mkdir -p /data /models && chown llm:llm /data /models
WORKDIR /app
COPY --from=deps --chown=root:root /app/package.json ./package.json
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=deps --chown=root:root /app/dist ./dist
COPY --from=deps --chown=root:root /app/libs/inference/native/build/Release/llm_engine.node ./libs/inference/native/build/Release/llm_engine.node
COPY --chown=root:root models/stories260K.gguf models/README.md ./models/
LABEL org.opencontainers.image.title="llm-serving-platform" org.opencontainers.image.description="NestJS gateway over in-process llama.cpp (${VARIANT})"
USER 10001:10001
VOLUME ["/data", "/models"]
EXPOSE 8000
# Liveness only: a loading model is alive (readiness is the load balancer's business).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/health/live').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Node is PID 1 here: it handles SIGTERM itself (drain, then exit 0); run with --init
# (Compose: init: true) so that the GPU probe's children are reaped whatever happens.
STOPSIGNAL SIGTERM
CMD ["node", "dist/apps/api/src/main.js"]
