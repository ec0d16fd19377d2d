/*
 * Times every llama_decode call of a llama-server (or any program linked to libllama.so), for
 * comparing its steps with this server's STEP_TRACE_FILE (docs/PERFORMANCE.md). Preloaded, it
 * wraps llama_decode and appends one line per call to $DECODE_TRACE_FILE
 * (default /tmp/llama-decode-trace.log):
 *
 *   <start, ms of CLOCK_MONOTONIC> <duration ms> <tokens in the batch> <tokens that want logits>
 *
 * A decode-only step of k streams is "k k"; a step with prompt tokens has more tokens than logits.
 * Build and use (the bench's llama-server links libllama.so dynamically):
 *
 *   gcc -O2 -shared -fPIC -o /tmp/llama-decode-trace.so scripts/llama-decode-trace.c -ldl
 *   DECODE_TRACE_FILE=/tmp/llama.trace LD_PRELOAD=/tmp/llama-decode-trace.so llama-server ...
 *   node scripts/step-trace-summary.mjs /tmp/llama.trace
 *
 * Lines are buffered and flushed every 64 calls and at exit (stop the server with SIGTERM or
 * SIGINT, not SIGKILL). Measurement only: not built by npm ci, not used by the product.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* llama_batch as llama.h declares it (by value in llama_decode's signature). */
typedef struct {
  int32_t n_tokens;
  void* token;
  void* embd;
  void* pos;
  void* n_seq_id;
  void* seq_id;
  int8_t* logits;
} llama_batch;

typedef int32_t (*decode_fn)(void*, llama_batch);

static decode_fn real_decode;
static FILE* out;
static unsigned calls;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
  real_decode = (decode_fn)dlsym(RTLD_NEXT, "llama_decode");
  const char* path = getenv("DECODE_TRACE_FILE");
  out = fopen(path ? path : "/tmp/llama-decode-trace.log", "a");
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int32_t llama_decode(void* ctx, llama_batch batch) {
  pthread_once(&once, init);
  const double start = now_ms();
  const int32_t r = real_decode(ctx, batch);
  const double ms = now_ms() - start;
  if (out) {
    int logits = 0;
    if (batch.logits) {
      for (int32_t i = 0; i < batch.n_tokens; i++) logits += batch.logits[i] != 0;
    } else {
      logits = 1; /* no logits array: llama.cpp returns the last token's */
    }
    fprintf(out, "%.3f %.3f %d %d\n", start, ms, batch.n_tokens, logits);
    if (++calls % 64 == 0) fflush(out);
  }
  return r;
}
