{
  # The engine addon: a persistent ggml threadpool and a timed decode for node-llama-cpp's native
  # context. Built by scripts/build-native.js (npm ci's install step), which first extracts the
  # llama.cpp headers of the exact release node-llama-cpp ships into vendor/. It links to nothing
  # of llama.cpp: every llama/ggml function is looked up at run time in the libraries
  # node-llama-cpp already loaded (CPU, CUDA or a local build alike).
  "targets": [
    {
      "target_name": "llm_engine",
      "sources": ["src/llm_engine.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<(module_root_dir)/../../../node_modules/node-llama-cpp/llama/addon",
        "<(module_root_dir)/vendor/include",
        "<(module_root_dir)/vendor/ggml/include"
      ],
      # Same ABI-relevant settings as node-llama-cpp's own build of its addon.
      "defines": ["NAPI_VERSION=7"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-fexceptions", "-std=c++17", "-O2"],
      "libraries": ["-ldl"]
    }
  ]
}
