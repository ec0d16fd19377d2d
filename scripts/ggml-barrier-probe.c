// How long ggml's CPU threads wait for each other, in this server and in llama-server alike: a
// library preloaded into either (LD_PRELOAD) that stands in for ggml's `ggml_barrier` (every op of
// a graph ends at one) and reports, when the process exits, how many waits took how long and the
// time spent in them. ggml's barrier spins (`pause`) until the last thread arrives; a wait of
// hundreds of microseconds or more is a thread that was preempted in the middle of a graph (by
// Node's main thread, an HTTP thread, the benchmark's client...) while the other spun, so the
// time in long waits is the compute lost to sharing the cores with other threads.
//
// Build and use (both servers load the same pinned ggml build, node-llama-cpp 3.21.1's):
//   gcc -O2 -shared -fPIC -o /tmp/ggml-barrier-probe.so scripts/ggml-barrier-probe.c -ldl
//   LD_PRELOAD=/tmp/ggml-barrier-probe.so BARRIER_PROBE_FILE=/tmp/ours.txt npm start
//   LD_PRELOAD=/tmp/ggml-barrier-probe.so BARRIER_PROBE_FILE=/tmp/llama.txt llama-server ...
// then stop each server normally (SIGINT/SIGTERM; the report is written at exit).
//
// Every call site of ggml_barrier in libggml-cpu goes through its PLT (114 of them in 3.21.1's
// builds, none direct), so the preloaded definition replaces all of them. The replacement keeps
// ggml's algorithm and reads the threadpool's fields at the offsets that build uses (n_graph's low
// 16 bits = threads at 0x68, n_barrier at 0x80, n_barrier_passed at 0xc0); it checks the original
// function's first instructions for exactly those offsets on its first call and, on any other
// build, only forwards to the original (and says so in the report).
//
// BARRIER_SLEEP_AFTER_US=N (an experiment, not a fix): a waiting thread spins N us, then sleeps
// on a futex until the barrier opens, so that a preempted thread can get the core back. Measured
// on a 2-core Firecracker VM (docs/PERFORMANCE.md, 2026-12-03 closing night): slower at 20, 150 and 400 us
// (wake-ups of a halted vCPU take long enough that sleeping turned short waits into long ones).

#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

#define N_GRAPH(tp) ((_Atomic int*)((char*)(tp) + 0x68))
#define N_BARRIER(tp) ((_Atomic int*)((char*)(tp) + 0x80))
#define N_PASSED(tp) ((_Atomic int*)((char*)(tp) + 0xc0))
#define BUCKETS 24

typedef void (*barrier_fn)(void*);
void ggml_barrier(void* tp);

static barrier_fn g_original;
static _Atomic int g_state;  // 0 = not checked, 1 = checking, 2 = probing, 3 = forwarding
static long g_sleep_after_ns = -1;
static _Atomic long g_count[BUCKETS];
static _Atomic long g_ns[BUCKETS];
static _Atomic long g_sleeps;
static _Atomic int g_sleepers[64];

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

/** The pinned build's barrier, byte for byte up to its fields (the je displacement left out). */
static int matches_pinned_layout(const unsigned char* code) {
  static const unsigned char head[] = {0x8b, 0x47, 0x68, 0x0f, 0xb7, 0xf0, 0x66, 0x83, 0xf8, 0x01, 0x74};
  static const unsigned char fields[] = {0x8b, 0x97, 0xc0, 0x00, 0x00, 0x00, 0x48, 0x8d, 0x8f, 0xc0, 0x00, 0x00,
                                         0x00, 0x48, 0x8d, 0x87, 0x80, 0x00, 0x00, 0x00};
  if (code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && code[3] == 0xfa) code += 4;  // endbr64
  return memcmp(code, head, sizeof head) == 0 && memcmp(code + sizeof head + 1, fields, sizeof fields) == 0;
}

static int find_original(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  (void)data;
  const char* name = info->dlpi_name;
  if (name == NULL || *name == '\0') return 0;
  const char* base = strrchr(name, '/');
  base = base != NULL ? base + 1 : name;
  if (strncmp(base, "libggml-cpu", 11) != 0) return 0;
  void* handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == NULL) return 0;
  g_original = (barrier_fn)dlsym(handle, "ggml_barrier");
  dlclose(handle);  // RTLD_NOLOAD took a reference; ggml still holds its own
  if (g_original == ggml_barrier) g_original = NULL;
  return g_original != NULL;
}

static void check_once(void) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&g_state, &expected, 1)) {
    while (atomic_load(&g_state) == 1) CPU_RELAX();
    return;
  }
  // ggml loads its CPU backend with RTLD_LOCAL, so RTLD_NEXT does not see it: ask the library.
  dl_iterate_phdr(find_original, NULL);
  if (g_original == NULL) {
    fprintf(stderr, "ggml-barrier-probe: no libggml-cpu defines ggml_barrier; cannot stand in for it\n");
    abort();
  }
  const char* sleep = getenv("BARRIER_SLEEP_AFTER_US");
  if (sleep != NULL && *sleep != '\0') g_sleep_after_ns = (long)(atof(sleep) * 1000);
  atomic_store(&g_state, matches_pinned_layout((const unsigned char*)g_original) ? 2 : 3);
}

static void record(long waited) {
  int b = 0;
  while (b < BUCKETS - 1 && waited >= (1000L << b)) b++;
  atomic_fetch_add_explicit(&g_count[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_ns[b], waited, memory_order_relaxed);
}

void ggml_barrier(void* tp) {
  if (atomic_load_explicit(&g_state, memory_order_acquire) < 2) check_once();
  if (atomic_load_explicit(&g_state, memory_order_relaxed) == 3) {
    g_original(tp);
    return;
  }
  const int n_threads = atomic_load_explicit(N_GRAPH(tp), memory_order_relaxed) & 0xffff;
  if (n_threads == 1) return;
  const int n_passed = atomic_load_explicit(N_PASSED(tp), memory_order_relaxed);
  const int n_barrier = atomic_fetch_add_explicit(N_BARRIER(tp), 1, memory_order_seq_cst);
  _Atomic int* sleepers = &g_sleepers[((uintptr_t)tp >> 6) & 63];
  if (n_barrier == n_threads - 1) {
    // The last thread opens the barrier (as ggml does), then wakes any thread that went to sleep.
    atomic_store_explicit(N_BARRIER(tp), 0, memory_order_relaxed);
    atomic_fetch_add_explicit(N_PASSED(tp), 1, memory_order_seq_cst);
    if (g_sleep_after_ns >= 0 && atomic_load_explicit(sleepers, memory_order_seq_cst) > 0) {
      syscall(SYS_futex, N_PASSED(tp), FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
    return;
  }
  const long start = now_ns();
  for (;;) {
    for (int i = 0; i < 32; i++) {
      if (atomic_load_explicit(N_PASSED(tp), memory_order_relaxed) != n_passed) goto passed;
      CPU_RELAX();
    }
    if (g_sleep_after_ns >= 0 && now_ns() - start > g_sleep_after_ns) break;
  }
  atomic_fetch_add_explicit(&g_sleeps, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(sleepers, 1, memory_order_seq_cst);
  while (atomic_load_explicit(N_PASSED(tp), memory_order_seq_cst) == n_passed) {
    // A timeout, so that a lost wake-up could never hang a graph.
    struct timespec limit = {0, 1000000};
    syscall(SYS_futex, N_PASSED(tp), FUTEX_WAIT_PRIVATE, n_passed, &limit, NULL, 0);
  }
  atomic_fetch_sub_explicit(sleepers, 1, memory_order_relaxed);
passed:
  record(now_ns() - start);
  atomic_thread_fence(memory_order_seq_cst);
}

__attribute__((destructor)) static void report(void) {
  const int state = atomic_load(&g_state);
  if (state == 0) return;  // no graph ran with two or more threads
  const char* path = getenv("BARRIER_PROBE_FILE");
  FILE* out = path != NULL && *path != '\0' ? fopen(path, "a") : NULL;
  if (out == NULL) out = stderr;
  if (state == 3) {
    fprintf(out, "ggml-barrier-probe: pid %d: this ggml build's barrier has another layout; nothing measured\n", getpid());
  } else {
    long waits = 0, ns = 0, long_waits = 0, long_ns = 0;
    for (int b = 0; b < BUCKETS; b++) {
      waits += g_count[b];
      ns += g_ns[b];
      if (b >= 8) {  // 128 us and more
        long_waits += g_count[b];
        long_ns += g_ns[b];
      }
    }
    fprintf(out, "ggml-barrier-probe: pid %d: %ld waits, %.1f ms in them; %ld of 128 us or more, %.1f ms in those; %ld slept\n", getpid(), waits,
            ns / 1e6, long_waits, long_ns / 1e6, (long)g_sleeps);
    for (int b = 0; b < BUCKETS; b++) {
      if (g_count[b] == 0) continue;
      fprintf(out, "  %s%6ld us: %8ld waits, %9.1f ms\n", b == BUCKETS - 1 ? ">=" : "< ", b == BUCKETS - 1 ? (1L << (b - 1)) : (1L << b), (long)g_count[b],
              g_ns[b] / 1e6);
    }
  }
  if (out != stderr) fclose(out);
}
