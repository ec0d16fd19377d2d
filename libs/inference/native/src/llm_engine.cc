// The engine addon: what node-llama-cpp 3.21.1's binding does not offer and the serving loop
// needs to run at llama.cpp's own speed.
//
// - A persistent ggml threadpool attached to the context. node-llama-cpp never attaches one,
//   so ggml-cpu creates and joins fresh worker threads inside every decode call when threads >
//   1; llama.cpp's server attaches one (common_threadpools::init). Measured on 2 cores: a
//   2-thread decode went from 11-17 ms to 5.9 ms per token (docs/PERFORMANCE.md).
// - Threads per decode call (llama_set_n_threads), so that the scheduler can pick them per step.
// - A decode call that reports how long llama_decode itself took, so that the per-step host
//   overhead (everything in a step that is not llama.cpp) can be measured and exported.
// - One native call per scheduler step: build the batch of every slot's tokens, decode, and
//   sample each slot with its node-llama-cpp sampler, on one worker thread. node-llama-cpp's
//   binding needs an addToBatch call per slot, a decode call, and then a sampleToken call per
//   slot, each sampling call its own thread-pool job and promise.
// - Sampling without a copy and sort of the whole vocabulary when the chain is plain (greedy, or
//   a top-k of at most 128 after at most a token bias): 27-33 us a slot instead of 53-58 us with
//   32k tokens, measured in the server on 2 cores (FastSample).
// - A run's last step lets the context go before it is reported, so that the scheduler starts
//   the next run from that report instead of from the run's promise (RunWorker).
// - Prompts handed to a run in flight (feed): the loop takes them in at its next step boundary,
//   dropping the slot's stale KV cells there on its own thread, as llama.cpp's server takes new
//   tasks between two batches; the scheduler no longer stops and restarts the loop for every
//   request that arrives while others stream (RunWorker::TakeFed).
//
// Nothing of llama.cpp is linked: the context object is node-llama-cpp's (napi_unwrap gives its
// AddonContext*, whose layout comes from the pinned package's own header), and every llama/ggml
// function is looked up in the shared libraries node-llama-cpp already loaded, so the CPU
// prebuilt, the CUDA prebuilt and a locally built backend all work alike. A layout mismatch is
// caught by a sanity check (the context must point back at its model and report its size)
// before anything else is touched.

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "napi.h"
#include "uv.h"
#include "llama.h"
#include "ggml-backend.h"
#include "AddonContext.h"
#include "AddonModel.h"
#include "AddonSampler.h"
#include "AddonGrammarEvaluationState.h"

namespace {

struct Api {
  uint32_t (*n_ctx)(const llama_context*) = nullptr;
  const llama_model* (*get_model)(const llama_context*) = nullptr;
  void (*attach)(llama_context*, ggml_threadpool_t, ggml_threadpool_t) = nullptr;
  void (*detach)(llama_context*) = nullptr;
  void (*set_n_threads)(llama_context*, int32_t, int32_t) = nullptr;
  int32_t (*n_threads)(llama_context*) = nullptr;
  int32_t (*decode)(llama_context*, llama_batch) = nullptr;
  void (*synchronize)(llama_context*) = nullptr;
  ggml_threadpool_params (*params_default)(int) = nullptr;
  ggml_backend_dev_t (*dev_by_type)(enum ggml_backend_dev_type) = nullptr;
  ggml_backend_reg_t (*dev_backend_reg)(ggml_backend_dev_t) = nullptr;
  void* (*reg_proc)(ggml_backend_reg_t, const char*) = nullptr;
  llama_batch (*batch_init)(int32_t, int32_t, int32_t) = nullptr;
  void (*batch_free)(llama_batch) = nullptr;
  float* (*get_logits)(llama_context*) = nullptr;
  float* (*get_logits_ith)(llama_context*, int32_t) = nullptr;
  const llama_vocab* (*model_get_vocab)(const llama_model*) = nullptr;
  int32_t (*vocab_n_tokens)(const llama_vocab*) = nullptr;
  bool (*vocab_is_eog)(const llama_vocab*, llama_token) = nullptr;
  llama_memory_t (*get_memory)(const llama_context*) = nullptr;
  bool (*memory_seq_rm)(llama_memory_t, llama_seq_id, llama_pos, llama_pos) = nullptr;
  // Optional (gap filling is off without them).
  llama_pos (*memory_seq_pos_max)(llama_memory_t, llama_seq_id) = nullptr;
  uint32_t (*n_ctx_seq)(const llama_context*) = nullptr;
  int32_t (*model_n_swa)(const llama_model*) = nullptr;
  bool (*model_is_recurrent)(const llama_model*) = nullptr;
  bool (*model_is_hybrid)(const llama_model*) = nullptr;
  // node-llama-cpp's own sampler (its addon exports these C++ members): sampling stays exactly
  // what its sampleToken does, grammar and token bias included.
  void (*sampler_rebuild)(AddonSampler*) = nullptr;
  void (*sampler_sample)(AddonSampler*, llama_context*, int32_t, llama_token_data_array&, bool) = nullptr;
  void (*sampler_accept)(AddonSampler*, llama_token) = nullptr;
  void (*sampler_apply)(llama_sampler*, llama_token_data_array*) = nullptr;
  float* (*sampled_probs_ith)(llama_context*, int32_t) = nullptr;
  float* (*sampled_logits_ith)(llama_context*, int32_t) = nullptr;
  // Optional (detokenizeAfter() answers null without it).
  int32_t (*detokenize)(const llama_vocab*, const llama_token*, int32_t, char*, int32_t, bool, bool) = nullptr;
  ggml_threadpool_t (*pool_new)(ggml_threadpool_params*) = nullptr;
  void (*pool_free)(ggml_threadpool_t) = nullptr;
  void (*pool_pause)(ggml_threadpool_t) = nullptr;
  std::string error;
  std::vector<std::string> libraries;
};

Api g_api;
std::once_flag g_api_once;

int CollectLibrary(struct dl_phdr_info* info, size_t, void* data) {
  auto* list = static_cast<std::vector<std::string>*>(data);
  const char* name = info->dlpi_name;
  if (name == nullptr || *name == '\0') return 0;
  const char* base = std::strrchr(name, '/');
  base = base ? base + 1 : name;
  if (std::strncmp(base, "libllama", 8) == 0 || std::strncmp(base, "libggml", 7) == 0 || std::strcmp(base, "llama-addon.node") == 0) {
    list->emplace_back(name);
  }
  return 0;
}

/** The first definition of `symbol` among the llama/ggml libraries already in the process. */
void* Find(const char* symbol) {
  for (const auto& path : g_api.libraries) {
    void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    void* fn = dlsym(handle, symbol);
    dlclose(handle);  // RTLD_NOLOAD took a reference; node-llama-cpp still holds its own.
    if (fn != nullptr) return fn;
  }
  return nullptr;
}

template <typename T>
bool Resolve(T& slot, const char* symbol) {
  slot = reinterpret_cast<T>(Find(symbol));
  if (slot == nullptr && g_api.error.empty()) g_api.error = std::string("symbol not found in the loaded llama.cpp libraries: ") + symbol;
  return slot != nullptr;
}

void LoadApi() {
  dl_iterate_phdr(CollectLibrary, &g_api.libraries);
  if (g_api.libraries.empty()) {
    g_api.error = "no llama.cpp library is loaded (node-llama-cpp must load the model first)";
    return;
  }
  bool ok = Resolve(g_api.n_ctx, "llama_n_ctx") & Resolve(g_api.get_model, "llama_get_model") &
            Resolve(g_api.attach, "llama_attach_threadpool") & Resolve(g_api.detach, "llama_detach_threadpool") &
            Resolve(g_api.set_n_threads, "llama_set_n_threads") & Resolve(g_api.n_threads, "llama_n_threads") &
            Resolve(g_api.decode, "llama_decode") & Resolve(g_api.synchronize, "llama_synchronize") &
            Resolve(g_api.params_default, "ggml_threadpool_params_default") &
            Resolve(g_api.dev_by_type, "ggml_backend_dev_by_type") &
            Resolve(g_api.dev_backend_reg, "ggml_backend_dev_backend_reg") &
            Resolve(g_api.reg_proc, "ggml_backend_reg_get_proc_address") &
            Resolve(g_api.batch_init, "llama_batch_init") & Resolve(g_api.batch_free, "llama_batch_free") &
            Resolve(g_api.get_logits, "llama_get_logits") & Resolve(g_api.get_logits_ith, "llama_get_logits_ith") &
            Resolve(g_api.model_get_vocab, "llama_model_get_vocab") & Resolve(g_api.vocab_n_tokens, "llama_vocab_n_tokens") &
            Resolve(g_api.vocab_is_eog, "llama_vocab_is_eog") &
            Resolve(g_api.get_memory, "llama_get_memory") & Resolve(g_api.memory_seq_rm, "llama_memory_seq_rm") &
            Resolve(g_api.sampler_rebuild, "_ZN12AddonSampler20rebuildChainIfNeededEv") &
            Resolve(g_api.sampler_sample, "_ZN12AddonSampler6sampleEP13llama_contextiR22llama_token_data_arrayb") &
            Resolve(g_api.sampler_accept, "_ZN12AddonSampler11acceptTokenEi") &
            Resolve(g_api.sampler_apply, "llama_sampler_apply") &
            Resolve(g_api.sampled_probs_ith, "llama_get_sampled_probs_ith") &
            Resolve(g_api.sampled_logits_ith, "llama_get_sampled_logits_ith");
  if (!ok) return;
  g_api.memory_seq_pos_max = reinterpret_cast<llama_pos (*)(llama_memory_t, llama_seq_id)>(Find("llama_memory_seq_pos_max"));
  g_api.n_ctx_seq = reinterpret_cast<uint32_t (*)(const llama_context*)>(Find("llama_n_ctx_seq"));
  g_api.model_n_swa = reinterpret_cast<int32_t (*)(const llama_model*)>(Find("llama_model_n_swa"));
  g_api.model_is_recurrent = reinterpret_cast<bool (*)(const llama_model*)>(Find("llama_model_is_recurrent"));
  g_api.model_is_hybrid = reinterpret_cast<bool (*)(const llama_model*)>(Find("llama_model_is_hybrid"));
  g_api.detokenize = reinterpret_cast<int32_t (*)(const llama_vocab*, const llama_token*, int32_t, char*, int32_t, bool, bool)>(Find("llama_detokenize"));
  // The CPU backend is a dynamically loaded variant (zen4, haswell, ...): its threadpool
  // functions are reached through its registry, as llama.cpp's common code does.
  ggml_backend_dev_t cpu = g_api.dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  ggml_backend_reg_t reg = cpu ? g_api.dev_backend_reg(cpu) : nullptr;
  if (reg == nullptr) {
    g_api.error = "no CPU backend is registered";
    return;
  }
  g_api.pool_new = reinterpret_cast<ggml_threadpool_t (*)(ggml_threadpool_params*)>(g_api.reg_proc(reg, "ggml_threadpool_new"));
  g_api.pool_free = reinterpret_cast<void (*)(ggml_threadpool_t)>(g_api.reg_proc(reg, "ggml_threadpool_free"));
  // Not in the registry's list; exported by the CPU variant library itself.
  g_api.pool_pause = reinterpret_cast<void (*)(ggml_threadpool_t)>(Find("ggml_threadpool_pause"));
  if (g_api.pool_new == nullptr || g_api.pool_free == nullptr || g_api.pool_pause == nullptr) {
    g_api.error = "the CPU backend has no threadpool functions";
  }
}

const Api& GetApi(Napi::Env env) {
  std::call_once(g_api_once, LoadApi);
  if (!g_api.error.empty()) throw Napi::Error::New(env, g_api.error);
  return g_api;
}

/** node-llama-cpp's AddonContext behind its JS context object, checked before use. */
AddonContext* Unwrap(const Napi::Env& env, const Napi::Value& value) {
  const Api& api = GetApi(env);
  if (!value.IsObject()) throw Napi::TypeError::New(env, "expected node-llama-cpp's native context object");
  void* raw = nullptr;
  if (napi_unwrap(env, value, &raw) != napi_ok || raw == nullptr) {
    throw Napi::TypeError::New(env, "the object does not wrap a native context");
  }
  auto* context = static_cast<AddonContext*>(static_cast<Napi::ObjectWrap<AddonContext>*>(raw));
  if (context->disposed || context->ctx == nullptr) throw Napi::Error::New(env, "the context is disposed");
  // Layout check: a wrong AddonContext layout would read garbage here, never matching both.
  if (context->model == nullptr || api.get_model(context->ctx) != context->model->model ||
      api.n_ctx(context->ctx) != context->context_params.n_ctx) {
    throw Napi::Error::New(env, "node-llama-cpp's native context layout differs from the headers this addon was built with");
  }
  return context;
}

/**
 * The persistent pools of one context, one per thread count in use (created on first use): a
 * step that runs on fewer threads gets a smaller pool attached, and the larger one is paused so
 * that its idle workers sleep instead of spinning on cores the step or Node need.
 */
struct Pools {
  std::vector<ggml_threadpool_t> byThreads;  // index = thread count; nullptr until used
  int max = 0;
  int current = 0;
  uint32_t poll = 50;
  /** Threads asked for while a run was in flight (0 = none): the run switches before its next step. */
  std::shared_ptr<std::atomic<int>> wanted = std::make_shared<std::atomic<int>>(0);
  /** setDecodeSplit(): the next steps run a small decode step as one llama_decode per token (SplitsDecode). */
  std::shared_ptr<std::atomic<bool>> split = std::make_shared<std::atomic<bool>>(false);
  /** setDecodePad(): the width the next decode steps are padded to (PadFills); 0 = none. */
  std::shared_ptr<std::atomic<int32_t>> pad = std::make_shared<std::atomic<int32_t>>(0);
};
std::unordered_map<llama_context*, Pools> g_pools;

/** Switches the context to the pool of `threads` (created on first use); false when ggml cannot create it. */
bool UsePoolQuiet(llama_context* ctx, Pools& pools, int threads) {
  if (threads == pools.current) return true;
  if (pools.byThreads[threads] == nullptr) {
    ggml_threadpool_params params = g_api.params_default(threads);
    params.poll = pools.poll;
    pools.byThreads[threads] = g_api.pool_new(&params);
    if (pools.byThreads[threads] == nullptr) return false;
  }
  ggml_threadpool_t next = pools.byThreads[threads];
  if (pools.current > 1 && pools.byThreads[pools.current] != nullptr) g_api.pool_pause(pools.byThreads[pools.current]);
  g_api.attach(ctx, next, next);
  g_api.set_n_threads(ctx, threads, threads);
  pools.current = threads;
  return true;
}

void UsePool(Napi::Env env, llama_context* ctx, Pools& pools, int threads) {
  if (!UsePoolQuiet(ctx, pools, threads)) throw Napi::Error::New(env, "ggml_threadpool_new failed");
}

void FreePools(Pools& pools) {
  for (auto* pool : pools.byThreads) {
    if (pool != nullptr) g_api.pool_free(pool);
  }
  pools.byThreads.assign(pools.byThreads.size(), nullptr);
}

/**
 * Threads that sample the slots of one step in parallel (each slot has its own sampler; the
 * logits are only read). node-llama-cpp's binding samples slots in parallel too, one thread-pool
 * job per slot; here one step's slots are shared out over a few persistent threads and the step's
 * own worker, with no job or promise per slot. Sized once, from the first attach.
 */
class SamplingPool {
 public:
  explicit SamplingPool(int threads) {
    for (int i = 0; i < threads; i++) workers_.emplace_back([this] { Work(); });
  }
  ~SamplingPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  size_t size() const { return workers_.size(); }

  /**
   * Runs fn(0..n-1) over the pool and the calling thread; returns when every call returned.
   * False (nothing run) when another step holds the pool (several models stepping at once).
   */
  bool TryRun(size_t n, const std::function<void(size_t)>& fn) {
    std::unique_lock<std::mutex> owner(owner_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      count_ = n;
      next_.store(0);
      busy_ = workers_.size();
      generation_++;
    }
    wake_.notify_all();
    Drain(fn, n);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void Drain(const std::function<void(size_t)>& fn, size_t n) {
    for (size_t i = next_.fetch_add(1); i < n; i = next_.fetch_add(1)) fn(i);
  }
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(size_t)>* job;
      size_t n;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        n = count_;
      }
      Drain(*job, n);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex owner_;  // one step at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(size_t)>* job_ = nullptr;
  size_t count_ = 0;
  std::atomic<size_t> next_{0};
  size_t busy_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};
std::unique_ptr<SamplingPool> g_sampling;
/**
 * One long-lived thread per context that drives its runs (run()'s loop: every llama_decode and
 * the sampling after it). A run used to step on whichever libuv pool thread took its job, one
 * that had often slept for seconds; the kernel woke it on the core where ggml's persistent pool
 * worker was spinning, and the two busy threads took turns on that core for 4-8 ms while the other
 * core idled (perf sched: every one-client prompt step of 37-43 ms, none of those of 29-31 ms).
 * llama.cpp's server drives every decode from one thread, which stays apart from its workers; so
 * does this (perf sched again, THREADS=2: the two threads on different cores in all 40 prompt
 * steps, none above 32 ms; with the default thread policy 13 of 96 above 35 ms instead of 24 of
 * 96). The libuv job only waits for the driver. Drivers are never freed (a detached thread
 * that sleeps between runs): a process exiting in the middle of a run must not wait for it.
 */
class Driver {
 public:
  Driver() { std::thread([this] { Loop(); }).detach(); }

  /** Runs fn on the driver thread; returns when it has returned, rethrowing what it threw. */
  void Run(const std::function<void()>& fn) {
    Job job{&fn, nullptr, false};
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return job_ == nullptr; });
    job_ = &job;
    wake_.notify_all();
    idle_.wait(lock, [&job] { return job.done; });
    lock.unlock();
    if (job.error) std::rethrow_exception(job.error);
  }

  /** The thread ends once idle (the context is gone); the object itself is never freed. */
  void Stop() {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    wake_.notify_all();
  }

 private:
  struct Job {
    const std::function<void()>* fn;
    std::exception_ptr error;
    bool done;
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return stop_ || job_ != nullptr; });
      if (job_ == nullptr) return;
      Job* job = job_;
      lock.unlock();
      try {
        (*job->fn)();
      } catch (...) {
        job->error = std::current_exception();
      }
      lock.lock();
      job->done = true;
      job_ = nullptr;
      idle_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  Job* job_ = nullptr;
  bool stop_ = false;
};
std::mutex g_driversMutex;
/** Leaked on purpose (see Driver): no destructor runs at exit. */
auto* g_drivers = new std::unordered_map<llama_context*, Driver*>();

Driver& DriverFor(llama_context* ctx) {
  std::lock_guard<std::mutex> lock(g_driversMutex);
  Driver*& driver = (*g_drivers)[ctx];
  if (driver == nullptr) driver = new Driver();
  return *driver;
}

/** Fewer sampling items than this are sampled on the step's own thread (waking threads costs more). */
constexpr size_t kParallelSamplingMin = 3;

/**
 * In the native loop, a step of at least this many items leaves its decode pool running after the
 * decode (its worker polls for the next graph, as llama-server's does), where a one-item step
 * pauses it (RunOneStep), so that the sampler and Node's woken thread have the cores. A paused
 * worker is woken by the next graph's kickoff, and on 2 cores where Node's thread had just been
 * woken to take the step, every step waited for it at ggml's first barrier. Measured in alternated
 * rounds, step traces on (docs/PERFORMANCE.md, 2026-12-02 night, a zen3 EPYC run as `haswell`):
 * - eight clients: paused and woken at the kickoff 186.6 / 197.2 tok/s; woken right after sampling
 *   (786ec4c) 187.3 / 182.7 / 187.8; woken just before the decode call 194.5 / 192.5 / 179.5 / 205.2;
 *   never paused (this) 202.7 against that 179.5, then 199.7 against 205.2: the same step either
 *   way (eight-stream compute + host 29.80 against 29.75 ms a step over both runs' traces; the
 *   host part 0.96 against 0.64 ms, the worker polling beside the sampler and Node's thread);
 * - four clients 165.9 against 147.8 tok/s (woken before the decode call);
 * - two clients 136.7 against 123.5, then 134.8 against 129.7 (llama-server -t 2 130.3 in the same
 *   rounds): two-stream steps 13.05 against 14.24 ms with their host part, 11.61 against 12.50 ms
 *   median compute;
 * - one client keeps the pause: never paused, its one-token steps computed 6.93 against 7.24 ms
 *   median but the host overhead went 0.19 -> 0.60 ms, 107.0 against 111.1 tok/s (and -6% on a
 *   zen5 VM, 2026-12-02).
 * On the zen5 VM before, never pausing wide steps made +4.7-5.4% over the pause at eight clients,
 * as much as waking after sampling did. The run's last step pauses the pool (CoolPool).
 */
constexpr size_t kWarmPoolMinItems = 2;

/** The batch step() fills, kept per context and grown when a step needs more room. */
struct StepBatch {
  llama_batch batch{};
  int32_t capacity = 0;
  /** A step or run owns the context (read on the main thread, released by a run's worker). */
  std::atomic<bool> busy{false};
};
std::unordered_map<llama_context*, StepBatch> g_batches;
/** Per context: a run in flight can be asked to stop after its current step. */
std::unordered_map<llama_context*, std::shared_ptr<std::atomic<bool>>> g_interrupts;
/**
 * Contexts whose runs take fed prompts in alone (see RunWorker::TakeFed), by setPromptAlone();
 * off by default. Per context: one process may hold a model on a GPU and another on the CPU.
 * Main thread only (a run reads its context's setting when it starts).
 */
std::unordered_map<llama_context*, bool> g_promptAlone;
/** Contexts whose runs pack the fed prompts when the generating sequences are about to end (setDrainPack). */
std::unordered_map<llama_context*, bool> g_drainPack;
class RunWorker;
/** Per context: the run in flight, to feed it prompts (main thread only; a worker unregisters itself when it is deleted). */
std::unordered_map<llama_context*, RunWorker*> g_runs;

/** probe(context) -> { contextSize, threads, libraries }: checks the layout and the symbols. */
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  Napi::Object out = Napi::Object::New(env);
  out.Set("contextSize", Napi::Number::New(env, g_api.n_ctx(context->ctx)));
  out.Set("threads", Napi::Number::New(env, g_api.n_threads(context->ctx)));
  Napi::Array libs = Napi::Array::New(env, g_api.libraries.size());
  for (size_t i = 0; i < g_api.libraries.size(); i++) libs.Set(i, g_api.libraries[i]);
  out.Set("libraries", libs);
  return out;
}

/**
 * attachThreadpool(context, threads, poll): persistent pools for up to `threads` workers, for
 * generation and prompt batches alike, starting with all `threads`. `poll` is ggml's busy-wait
 * level between graphs (0 = sleep at once, 50 = llama.cpp's default, 100 = spin hardest).
 * Replaces pools attached before.
 */
Napi::Value AttachThreadpool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  const int threads = info[1].As<Napi::Number>().Int32Value();
  const int poll = info[2].As<Napi::Number>().Int32Value();
  if (threads < 1 || threads > GGML_MAX_N_THREADS) throw Napi::RangeError::New(env, "threads out of range");
  if (poll < 0 || poll > 100) throw Napi::RangeError::New(env, "poll must be 0..100");
  const int samplingThreads = info.Length() > 3 ? info[3].As<Napi::Number>().Int32Value() : threads - 1;
  if (!g_sampling && samplingThreads > 0) g_sampling = std::make_unique<SamplingPool>(std::min(samplingThreads, 64));
  Pools fresh;
  fresh.byThreads.assign(threads + 1, nullptr);
  fresh.max = threads;
  fresh.poll = static_cast<uint32_t>(poll);
  UsePool(env, context->ctx, fresh, threads);
  auto previous = g_pools.find(context->ctx);
  if (previous != g_pools.end()) FreePools(previous->second);
  g_pools[context->ctx] = std::move(fresh);
  return env.Undefined();
}

/** detachThreadpool(context): back to per-call threads; frees the pools. Call before disposing. */
Napi::Value DetachThreadpool(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  auto it = g_pools.find(context->ctx);
  if (it == g_pools.end()) return Napi::Boolean::New(env, false);
  g_api.detach(context->ctx);
  FreePools(it->second);
  g_pools.erase(it);
  return Napi::Boolean::New(env, true);
}

/** release(context): frees what step() allocated for this context. Call before disposing it. */
Napi::Value Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  auto it = g_batches.find(context->ctx);
  if (it == g_batches.end()) return Napi::Boolean::New(env, false);
  if (it->second.busy) throw Napi::Error::New(env, "a step is still running on this context");
  g_api.batch_free(it->second.batch);
  g_batches.erase(it);
  g_interrupts.erase(context->ctx);
  g_promptAlone.erase(context->ctx);
  g_drainPack.erase(context->ctx);
  {
    std::lock_guard<std::mutex> lock(g_driversMutex);
    auto driver = g_drivers->find(context->ctx);
    if (driver != g_drivers->end()) {
      driver->second->Stop();
      g_drivers->erase(driver);
    }
  }
  return Napi::Boolean::New(env, true);
}

/**
 * setThreads(context, threads): threads of the next decode calls. With pools attached, switches
 * to the pool of that size (at most the attached maximum) and pauses the one in use before.
 */
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  int threads = info[1].As<Napi::Number>().Int32Value();
  if (threads < 1) throw Napi::RangeError::New(env, "threads must be >= 1");
  auto it = g_pools.find(context->ctx);
  if (it == g_pools.end()) {
    g_api.set_n_threads(context->ctx, threads, threads);
    return env.Undefined();
  }
  auto batch = g_batches.find(context->ctx);
  if (batch != g_batches.end() && batch->second.busy) {
    it->second.wanted->store(std::min(threads, it->second.max));  // the worker switches before its next step
    return env.Undefined();
  }
  it->second.wanted->store(0);
  UsePool(env, context->ctx, it->second, std::min(threads, it->second.max));
  return env.Undefined();
}

/** One item of a step: a slot's tokens at its next positions, and how it samples. */
struct StepItem {
  int32_t seq = 0;
  int32_t position = 0;
  std::vector<int32_t> tokens;
  /** The sampler of an item whose last token's logits are sampled; nullptr = no sampling. */
  AddonSampler* sampler = nullptr;
  /** Raw log-probabilities wanted: -1 = none, else how many alternatives (0..20). */
  int32_t top = -1;
  /** run() only: tokens this item's slot may still sample, this step's included. */
  int32_t budget = 1;
  /** run() only: an end-of-generation token ends the slot's generation. */
  bool stopOnEog = true;
};

constexpr int kTop = 20;

/** What one step produced, per sampling item in order (tokens: -1 = the sampler gave none). */
struct StepOutcome {
  std::vector<llama_token> tokens;
  /** k * 20 + i: the i-th best token of sampling item k (when it asked for logprobs). */
  std::vector<int32_t> lpTokens;
  /** k * 21: the sampled token's logprob; k * 21 + 1 + i: the i-th best token's. */
  std::vector<float> lpValues;
  bool logprobs = false;
  double computeMs = 0;
  int threads = 0;
  /** steady_clock milliseconds when the step (decode + sampling) ended. */
  double doneAt = 0;
  /** Throwaway tokens the step carried to close holes between busy sequences (GapFills). */
  int32_t filled = 0;
  /** run() only: generating sequences this step held back for the next one (a prompt went alone). */
  int32_t held = 0;
  /** The step ran as one llama_decode per token (SplitsDecode). */
  bool split = false;
  /** The width the step was padded to (PadFills), 0 = not padded; its edge tokens count in `filled`. */
  int32_t padTo = 0;
};

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/** Log-softmax of row `row`'s logits over the whole vocabulary. */
void Distribution(llama_context* ctx, int32_t row, std::vector<float>& logprobs) {
  const float* logits = g_api.get_logits_ith(ctx, row);
  const int32_t n = g_api.vocab_n_tokens(g_api.model_get_vocab(g_api.get_model(ctx)));
  logprobs.resize(n);
  float max = -INFINITY;
  for (int32_t i = 0; i < n; i++) max = std::max(max, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < n; i++) sum += std::exp(static_cast<double>(logits[i] - max));
  const float logSum = static_cast<float>(std::log(sum));
  for (int32_t i = 0; i < n; i++) logprobs[i] = logits[i] - max - logSum;
}

void Logprobs(StepOutcome& out, size_t k, int32_t top, llama_token token, const std::vector<float>& logprobs) {
  const int n = std::min<int>(std::min(top, kTop), static_cast<int>(logprobs.size()));
  const float floor = -9999.0f;  // JSON has no -Infinity; OpenAI's own floor
  auto clamp = [&](float v) { return std::isfinite(v) ? std::max(v, floor) : floor; };
  out.lpValues[k * (kTop + 1)] = token >= 0 && token < static_cast<llama_token>(logprobs.size()) ? clamp(logprobs[token]) : floor;
  if (n <= 0) return;
  std::vector<int32_t> order(logprobs.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = static_cast<int32_t>(i);
  std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
    return logprobs[a] > logprobs[b] || (logprobs[a] == logprobs[b] && a < b);
  });
  for (int i = 0; i < n; i++) {
    out.lpTokens[k * kTop + i] = order[i];
    out.lpValues[k * (kTop + 1) + 1 + i] = clamp(logprobs[order[i]]);
  }
}

/**
 * Calls visit(i) for each i in [from, n), skipping blocks of 16 values that are all below
 * `threshold` (all at most it when `inclusive` is false), four SSE2 compares a block; `threshold`
 * is read again before each block, so visit may raise it.
 */
template <typename Visit>
void ScanAbove(const float* values, int32_t from, int32_t n, const float& threshold, bool inclusive, Visit visit) {
  int32_t i = from;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16) {
    const __m128 t = _mm_set1_ps(threshold);
    const __m128 a = _mm_loadu_ps(values + i), b = _mm_loadu_ps(values + i + 4);
    const __m128 c = _mm_loadu_ps(values + i + 8), d = _mm_loadu_ps(values + i + 12);
    const __m128 any = inclusive ? _mm_or_ps(_mm_or_ps(_mm_cmpge_ps(a, t), _mm_cmpge_ps(b, t)), _mm_or_ps(_mm_cmpge_ps(c, t), _mm_cmpge_ps(d, t)))
                                 : _mm_or_ps(_mm_or_ps(_mm_cmpgt_ps(a, t), _mm_cmpgt_ps(b, t)), _mm_or_ps(_mm_cmpgt_ps(c, t), _mm_cmpgt_ps(d, t)));
    if (_mm_movemask_ps(any) == 0) continue;
    for (int32_t j = i; j < i + 16; j++) visit(j);
  }
#endif
  for (; i < n; i++) visit(i);
}

/** The largest value of each block of 16 (the last block may be shorter). */
void BlockMaxima(const float* values, int32_t n, std::vector<float>& maxima) {
  maxima.resize((n + 15) / 16);
  int32_t i = 0;
  size_t block = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16, block++) {
    __m128 m = _mm_max_ps(_mm_max_ps(_mm_loadu_ps(values + i), _mm_loadu_ps(values + i + 4)),
                          _mm_max_ps(_mm_loadu_ps(values + i + 8), _mm_loadu_ps(values + i + 12)));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    m = _mm_max_ps(m, _mm_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    maxima[block] = _mm_cvtss_f32(m);
  }
#endif
  for (; i < n; i += 16, block++) {
    float m = values[i];
    for (int32_t j = i + 1; j < std::min(i + 16, n); j++) m = values[j] > m ? values[j] : m;
    maxima[block] = m;
  }
}

/** The largest top-k the fast path takes (llama.cpp's own top-k uses a bucket sort above it). */
constexpr int32_t kFastTopK = 128;

/**
 * Samples `row` as node-llama-cpp's AddonSampler::sample would, without its copy and partial
 * sort of the whole vocabulary, when the sampler's chain is plain: nothing before its first
 * stage but a token bias (no penalties, DRY or grammar; no backend-sampled candidates), and that
 * stage is greedy (the first highest logit, as llama.cpp's greedy sampler picks it) or a top-k
 * of at most 128. For a top-k, the chain itself (bias, top-k, top-p, min-p, XTC, temperature,
 * seeded draw) runs on a few candidates, in token order, that surely hold the k best: every
 * logit at least the k-th largest of the maxima of blocks of 16 (at least k logits are that
 * high, so the k-th best is too). Its top-k stage then keeps the same k tokens in the same order
 * as over the whole vocabulary, so the draw for the same seed picks the same token (only exactly
 * equal logits could be ordered otherwise). False = not plain (or fewer than k blocks): the
 * caller samples the usual way. True with token -1 = the chain selected nothing.
 */
bool FastSample(AddonSampler* sampler, llama_context* ctx, int32_t row, int32_t nVocab, llama_token& token) {
  if (sampler->repeatPenaltySampler != nullptr || sampler->dryRepeatPenaltySampler != nullptr) return false;
  if (sampler->grammarEvaluationState != nullptr && sampler->grammarEvaluationState->sampler != nullptr) return false;
  const bool greedy = sampler->greedySampler != nullptr && sampler->xtcSampler == nullptr;
  const bool topK = sampler->greedySampler == nullptr && sampler->topKSampler != nullptr && sampler->topKSampler_topK >= 1 &&
                    sampler->topKSampler_topK <= kFastTopK;
  if (!greedy && !topK) return false;
  const int32_t k = topK ? std::min(sampler->topKSampler_topK, nVocab) : 1;
  if (topK && (nVocab + 15) / 16 < k) return false;
  if (g_api.sampled_probs_ith(ctx, row) != nullptr || g_api.sampled_logits_ith(ctx, row) != nullptr) return false;
  float* logits = g_api.get_logits_ith(ctx, row);
  if (logits == nullptr || nVocab <= 0) return false;
  // The chain's logit-bias stage (ignore_eos, logit_bias) comes first, so selection is on the
  // biased logits: the biases are added in place for the scans and taken off again at once.
  thread_local std::vector<std::pair<int32_t, float>> saved;
  saved.clear();
  if (sampler->tokenBiasSampler != nullptr) {
    const auto& biases = sampler->tokenBiasSampler_biases;
    if (biases.size() > 64) return false;
    for (size_t i = 0; i < biases.size(); i++) {
      // A token listed twice is biased twice over the whole vocabulary but once in a subset.
      for (size_t j = i + 1; j < biases.size(); j++) if (biases[i].token == biases[j].token) return false;
    }
    for (const auto& b : biases) {
      if (b.token < 0 || b.token >= nVocab) continue;
      saved.emplace_back(b.token, logits[b.token]);
      logits[b.token] += b.bias;
    }
  }
  const auto restore = [&]() {
    for (const auto& [id, value] : saved) logits[id] = value;
  };
  token = -1;
  if (greedy) {
    int32_t best = 0;
    float max = logits[0];
    ScanAbove(logits, 1, nVocab, max, false, [&](int32_t i) {
      if (logits[i] > max) max = logits[best = i];
    });
    restore();
    token = best;
    return true;
  }
  // The k-th largest block maximum, found in two levels: the maxima of the blocks of maxima
  // narrow the block maxima down to a few more than k (one selection over 2,000 values costs
  // ~20 us of mispredicted branches; over ~150, ~1 us).
  thread_local std::vector<float> maxima, maxima2, picked;
  thread_local std::vector<llama_token_data> candidates;
  BlockMaxima(logits, nVocab, maxima);
  const int32_t blocks = static_cast<int32_t>(maxima.size());
  for (float m : maxima) {
    if (m != m) {  // NaN: no order to select by
      restore();
      return false;
    }
  }
  BlockMaxima(maxima.data(), blocks, maxima2);
  float floor2 = -INFINITY;
  if (static_cast<int32_t>(maxima2.size()) >= k) {
    std::nth_element(maxima2.begin(), maxima2.begin() + (k - 1), maxima2.end(), std::greater<float>());
    floor2 = maxima2[k - 1];
  }
  // At least k block maxima reach floor2 (each of the k best blocks of blocks has its maximum there).
  picked.clear();
  ScanAbove(maxima.data(), 0, blocks, floor2, true, [&](int32_t b) {
    if (maxima[b] >= floor2) picked.push_back(maxima[b]);
  });
  std::nth_element(picked.begin(), picked.begin() + (k - 1), picked.end(), std::greater<float>());
  const float floor = picked[k - 1];
  candidates.clear();
  ScanAbove(maxima.data(), 0, blocks, floor, true, [&](int32_t b) {
    if (maxima[b] < floor) return;
    for (int32_t i = b * 16; i < std::min(b * 16 + 16, nVocab); i++) {
      if (logits[i] >= floor) candidates.push_back(llama_token_data{i, 0.0f, 0.0f});
    }
  });
  restore();
  // Raw logits: the chain adds the biases itself.
  for (auto& c : candidates) c.logit = logits[c.id];
  llama_token_data_array curP{candidates.data(), candidates.size(), -1, false};
  g_api.sampler_apply(sampler->chain, &curP);
  if (curP.selected >= 0 && curP.selected < static_cast<int64_t>(curP.size)) token = curP.data[curP.selected].id;
  return true;
}

/**
 * Longest run of idle sequences between two busy ones that a step fills with a throwaway token
 * each (0 = never); see GapFills. Set by setGapFill().
 */
std::atomic<int32_t> g_gapFill{1};
/** Throwaway tokens added so far (all contexts). */
std::atomic<uint64_t> g_gapFillTokens{0};

/**
 * Whether throwaway tokens may be added to idle sequences of this context (GapFills, PadFills):
 * one KV stream per sequence (with a unified cache nothing is split) of plain attention (a
 * recurrent state cannot give a token back; a sliding-window cache may drop cells that a later,
 * shorter prefix needs). Sets the cells of a stream.
 */
bool TakesThrowawayTokens(llama_context* ctx, uint32_t& perSeq) {
  if (g_api.memory_seq_pos_max == nullptr || g_api.n_ctx_seq == nullptr || g_api.model_n_swa == nullptr || g_api.model_is_recurrent == nullptr ||
      g_api.model_is_hybrid == nullptr) {
    return false;
  }
  const llama_model* model = g_api.get_model(ctx);
  perSeq = g_api.n_ctx_seq(ctx);
  return perSeq > 0 && perSeq < g_api.n_ctx(ctx) && g_api.model_n_swa(model) == 0 && !g_api.model_is_recurrent(model) && !g_api.model_is_hybrid(model);
}

/**
 * node-llama-cpp's contexts keep one KV stream per sequence (it never sets kv_unified), and with
 * several streams llama.cpp cuts a batch into one micro-batch per run of consecutive sequence
 * ids (llama_batch_allocr::split_equal, `sequential`): a step whose busy slots have a hole (a
 * stream ended while its neighbours go on) costs one more pass over the weights. One token of
 * the idle sequence, at the position after its cached cells and without logits (but in a padded
 * step, see RunOneStep), closes the hole; its cell is removed again after the decode, so the slot's cached prefix is as it was.
 * Measured on 2 cores (110M Q8_0, 2 threads, 100 cells a sequence, 2026-12-01): 7 decode tokens
 * around a hole 42.2 ms, the same 7 plus one throwaway token 29.5 ms; two busy slots 7 apart,
 * 17.3 ms split against 29.5 filled, so only short holes are filled. Only for plain attention
 * caches: a recurrent state cannot give a token back, and a sliding-window cache may drop cells
 * that a later, shorter prefix needs. Returns the (sequence, position) of each token to add
 * before item k (gaps[k]); empty when nothing is filled.
 */
std::vector<std::vector<std::pair<llama_seq_id, llama_pos>>> GapFills(llama_context* ctx, const std::vector<StepItem>& items, int32_t capacity) {
  std::vector<std::vector<std::pair<llama_seq_id, llama_pos>>> gaps;
  const int32_t maxRun = g_gapFill.load(std::memory_order_relaxed);
  if (maxRun < 1 || items.size() < 2) return gaps;
  // Most steps have no hole (slot order, no gap): nothing to look up or allocate for them.
  bool hole = false;
  for (size_t k = 1; k < items.size(); k++) {
    const llama_seq_id gap = items[k].seq - items[k - 1].seq - 1;
    if (gap < 0) return gaps;  // not in slot order: llama.cpp would split this step anyway
    if (gap > 0 && gap <= maxRun) hole = true;
  }
  if (!hole) return gaps;
  uint32_t perSeq = 0;
  if (!TakesThrowawayTokens(ctx, perSeq)) return gaps;
  int32_t tokens = 0;
  for (const StepItem& item : items) tokens += static_cast<int32_t>(item.tokens.size());
  llama_memory_t memory = g_api.get_memory(ctx);
  bool any = false;
  gaps.resize(items.size());
  for (size_t k = 1; k < items.size(); k++) {
    const llama_seq_id from = items[k - 1].seq + 1, to = items[k].seq;
    if (to - from > maxRun || to == from) continue;
    if (tokens + (to - from) > capacity) break;
    std::vector<std::pair<llama_seq_id, llama_pos>> fill;
    for (llama_seq_id seq = from; seq < to; seq++) {
      const llama_pos position = g_api.memory_seq_pos_max(memory, seq) + 1;
      // A full stream has no cell for it (the decode would fail): leave this hole.
      if (position + 1 >= static_cast<llama_pos>(perSeq)) {
        fill.clear();
        break;
      }
      fill.emplace_back(seq, position);
    }
    if (fill.empty()) continue;
    tokens += static_cast<int32_t>(fill.size());
    gaps[k] = std::move(fill);
    any = true;
  }
  if (!any) gaps.clear();
  return gaps;
}

/**
 * Throwaway tokens that pad a decode step to `width` tokens (setDecodePad): on some CPUs ggml's
 * matrix kernels take a batch of 8 columns in less time than one of 5 to 7 (a 2-core zen5 VM,
 * 110M Q8_0, 2 threads, 2026-12-02: 5 / 6 / 7 / 8 decode tokens 20.2 / 20.5 / 22.4 / 18.2 ms;
 * the fifteenth VM's zen4 22.7 / 23.5 / 23.8 / 21.9). Like GapFills' tokens, each goes to an idle
 * sequence at the position after its cached cells and its cell is removed after the decode (it
 * asks for logits, see RunOneStep); they go next to the step's run of sequences (after its last, then before its
 * first), so that the step stays one pass. Only a decode step (every item one token) of more
 * than width / 2 items and at most width tokens, holes included, whose sequences (with the holes
 * GapFills closes) are one run with enough idle neighbours; otherwise nothing is added. Whether
 * it pays is the caller's measurement (the thread policy's pad variants). `before` and `after`
 * get the (sequence, position) of each token to add before the first item and after the last.
 * Returns `width` when the step is padded (a step whose hole fills already make it `width` wide
 * is, with nothing added: its throwaway tokens then ask for logits as padding does), else 0.
 */
int32_t PadFills(llama_context* ctx, const std::vector<StepItem>& items, const std::vector<std::vector<std::pair<llama_seq_id, llama_pos>>>& gaps,
                 int32_t capacity, int32_t width, std::vector<std::pair<llama_seq_id, llama_pos>>& before,
                 std::vector<std::pair<llama_seq_id, llama_pos>>& after) {
  before.clear();
  after.clear();
  if (width < 2 || items.empty()) return 0;
  int32_t tokens = 0;
  for (size_t k = 0; k < items.size(); k++) {
    if (items[k].tokens.size() != 1) return 0;
    tokens += 1 + (gaps.empty() ? 0 : static_cast<int32_t>(gaps[k].size()));
    // One run: every hole closed by GapFills.
    if (k > 0 && items[k].seq - items[k - 1].seq - 1 != (gaps.empty() ? 0 : static_cast<llama_seq_id>(gaps[k].size()))) return 0;
  }
  // Counted in items, as the thread policy's kinds of step are: four streams around a filled hole
  // are a step of four, not one to pad.
  if (static_cast<int32_t>(items.size()) * 2 <= width || tokens > width || width > capacity || (tokens == width && gaps.empty())) return 0;
  uint32_t perSeq = 0;
  if (!TakesThrowawayTokens(ctx, perSeq)) return 0;
  const llama_seq_id streams = static_cast<llama_seq_id>(g_api.n_ctx(ctx) / perSeq);
  llama_memory_t memory = g_api.get_memory(ctx);
  int32_t need = width - tokens;
  // A sequence whose stream is full has no cell for it (the decode would fail): the side stops there.
  const auto room = [&](llama_seq_id seq, llama_pos& position) {
    position = g_api.memory_seq_pos_max(memory, seq) + 1;
    return position + 1 < static_cast<llama_pos>(perSeq);
  };
  for (llama_seq_id seq = items.back().seq + 1; need > 0 && seq < streams; seq++, need--) {
    llama_pos position = 0;
    if (!room(seq, position)) break;
    after.emplace_back(seq, position);
  }
  for (llama_seq_id seq = items.front().seq - 1; need > 0 && seq >= 0; seq--, need--) {
    llama_pos position = 0;
    if (!room(seq, position)) break;
    before.emplace(before.begin(), seq, position);
  }
  // Part of the way is no better (6 of 8 can cost more than 5): all or nothing.
  if (need > 0) {
    before.clear();
    after.clear();
    return 0;
  }
  return width;
}

/**
 * One step on the calling (worker) thread: fill the batch with every item's tokens, llama_decode,
 * synchronize, then sample each sampling item with its node-llama-cpp sampler (rebuild the chain
 * if needed, sample, accept: exactly what its sampleToken does), in parallel over the sampling
 * pool when there are several. Returns an error message, empty on success.
 */
/** The most tokens of a decode step that setDecodeSplit() splits. */
constexpr size_t kSplitMax = 4;

/**
 * Whether a step may run as one llama_decode per token (setDecodeSplit): a small decode step,
 * every item one token that samples. On CPUs ggml multiplies a one-token batch with its
 * matrix-vector kernels and a batch of two or more with its matrix-matrix ones, which for a few
 * columns cost more per token than the vector kernel: on a 2-core zen4 VM (110M Q8_0, 2
 * threads) one token took 5.6 ms, two in one call 12.9 ms, two as separate passes 10.8-11.3;
 * with 1 thread 7.2 against 19.5-23 ms, and splitting still won at four tokens
 * (docs/PERFORMANCE.md, 2026-12-02). Whether it wins depends on the kernels, the thread count
 * and the machine, so the caller decides by measurement (the thread policy's split variants).
 */
bool SplitsDecode(const std::vector<StepItem>& items) {
  if (items.size() < 2 || items.size() > kSplitMax) return false;
  for (const StepItem& item : items) {
    if (item.tokens.size() != 1 || item.sampler == nullptr) return false;
  }
  return true;
}

std::string RunOneStep(llama_context* ctx, StepBatch& batch, ggml_threadpool_t decodePool, const std::vector<StepItem>& items, StepOutcome& out,
                       bool split = false, int32_t pad = 0, bool keepPool = false);

/**
 * A step as one decode (and its sampling) per item, in order (SplitsDecode): the same tokens and
 * log-probabilities as one call, since each item's logits depend only on its own sequence. Each
 * item is sampled before the next decode overwrites the logits. The pool is paused only after
 * the last decode (between two, its workers are about to be needed again), and not even then
 * with keepPool (a native-loop step of several items, kWarmPoolMinItems).
 */
std::string RunSplitStep(llama_context* ctx, StepBatch& batch, ggml_threadpool_t decodePool, const std::vector<StepItem>& items, StepOutcome& out,
                         bool keepPool) {
  out.tokens.assign(items.size(), -1);
  out.logprobs = false;
  out.computeMs = 0;
  std::vector<StepItem> one(1);
  for (size_t k = 0; k < items.size(); k++) {
    one[0] = items[k];
    StepOutcome part;
    const bool last = k + 1 == items.size();
    const std::string error = RunOneStep(ctx, batch, last ? decodePool : nullptr, one, part, false, 0, last && keepPool);
    if (!error.empty()) return error;
    out.computeMs += part.computeMs;
    out.tokens[k] = part.tokens[0];
    if (part.logprobs) {
      if (!out.logprobs) {
        out.logprobs = true;
        out.lpTokens.assign(items.size() * kTop, -1);
        out.lpValues.assign(items.size() * (kTop + 1), 0.0f);
      }
      std::copy(part.lpTokens.begin(), part.lpTokens.begin() + kTop, out.lpTokens.begin() + static_cast<std::ptrdiff_t>(k * kTop));
      std::copy(part.lpValues.begin(), part.lpValues.begin() + kTop + 1, out.lpValues.begin() + static_cast<std::ptrdiff_t>(k * (kTop + 1)));
    }
  }
  out.filled = 0;
  out.padTo = 0;
  out.split = true;
  out.doneAt = NowMs();
  return "";
}

std::string RunOneStep(llama_context* ctx, StepBatch& batch, ggml_threadpool_t decodePool, const std::vector<StepItem>& items, StepOutcome& out,
                       bool split, int32_t pad, bool keepPool) {
  if (split && SplitsDecode(items)) return RunSplitStep(ctx, batch, decodePool, items, out, keepPool);
  llama_batch& b = batch.batch;
  b.n_tokens = 0;
  std::vector<int32_t> logitRows;
  std::vector<const StepItem*> sampling;
  bool logprobs = false;
  const auto gaps = GapFills(ctx, items, batch.capacity);
  std::vector<std::pair<llama_seq_id, llama_pos>> padBefore, padAfter;
  const int32_t padTo = pad > 0 ? PadFills(ctx, items, gaps, batch.capacity, pad, padBefore, padAfter) : 0;
  // A padded step's throwaway tokens (its hole fills too) ask for logits that nobody reads: the
  // output projection (a fifth of a 110M model's weights) then multiplies `pad` columns too, not
  // the narrower count that padding is there to avoid (7 decode tokens padded to 8 without their
  // logits: 20.9 ms against 18.2 for 8 real ones on the 2-core zen5 VM).
  const bool throwawayLogits = padTo > 0;
  const auto addThrowaway = [&](llama_seq_id seq, llama_pos position, llama_token token) {
    const int32_t row = b.n_tokens++;
    b.token[row] = token;
    b.pos[row] = position;
    b.n_seq_id[row] = 1;
    b.seq_id[row][0] = seq;
    b.logits[row] = throwawayLogits;
  };
  for (const auto& [seq, position] : padBefore) addThrowaway(seq, position, items.front().tokens[0]);
  size_t filled = 0;
  for (size_t k = 0; k < items.size(); k++) {
    const StepItem& item = items[k];
    if (!gaps.empty()) {
      for (const auto& [seq, position] : gaps[k]) {
        addThrowaway(seq, position, item.tokens[0]);
        filled++;
      }
    }
    const int32_t count = static_cast<int32_t>(item.tokens.size());
    for (int32_t t = 0; t < count; t++) {
      const int32_t row = b.n_tokens++;
      b.token[row] = item.tokens[t];
      b.pos[row] = item.position + t;
      b.n_seq_id[row] = 1;
      b.seq_id[row][0] = item.seq;
      b.logits[row] = item.sampler != nullptr && t == count - 1;
      if (b.logits[row]) logitRows.push_back(row);
    }
    if (item.sampler != nullptr) {
      sampling.push_back(&item);
      if (item.top >= 0) logprobs = true;
    }
  }
  for (const auto& [seq, position] : padAfter) addThrowaway(seq, position, items.back().tokens.back());
  const auto start = std::chrono::steady_clock::now();
  const int32_t r = g_api.decode(ctx, b);
  const size_t padded = padBefore.size() + padAfter.size();
  if (padded > 0) {
    // As the gap fills below: the padding's cells go at once. A cut that fails (it cannot for
    // these caches) leaves a stale cell that the slot's next assignment cuts.
    llama_memory_t memory = g_api.get_memory(ctx);
    for (const auto* side : {&padBefore, &padAfter}) {
      for (const auto& [seq, position] : *side) g_api.memory_seq_rm(memory, seq, position, -1);
    }
  }
  out.padTo = padTo;
  if (filled > 0) {
    // The throwaway cells go at once (before any error return): the slot's cached prefix is what
    // the scheduler's bookkeeping says. A cut that fails (it cannot for these caches) stops the
    // filling; the cell is then cut when the slot is next assigned (its stale cells are).
    llama_memory_t memory = g_api.get_memory(ctx);
    for (const auto& fill : gaps) {
      for (const auto& [seq, position] : fill) {
        if (!g_api.memory_seq_rm(memory, seq, position, -1)) g_gapFill.store(0);
      }
    }
    g_gapFillTokens.fetch_add(filled, std::memory_order_relaxed);
  }
  out.filled = static_cast<int32_t>(filled + padded);
  if (r != 0) {
    return r == 1 ? "could not find a KV slot for the batch (try reducing the size of the batch or increase the context)"
                  : "llama_decode failed with status " + std::to_string(r);
  }
  g_api.synchronize(ctx);
  out.computeMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  // The decode's other ggml threads now spin waiting for the next graph (for milliseconds at
  // ggml's default poll level), on the cores that the samplers and then the main thread, woken to
  // take this step, need: put them to sleep; the next decode wakes them (ggml's kickoff resumes a
  // paused pool). With the pool spinning, the woken main thread took the loop thread's own core
  // and the next step waited for it: 1.2 ms a step at 8 streams (parallel sampling, where this
  // pause began), 0.8-1.0 ms a step at one stream (2 cores, 2026-12-01, docs/PERFORMANCE.md).
  // Steps of several items leave it running (keepPool, see kWarmPoolMinItems).
  if (decodePool != nullptr && !keepPool) g_api.pool_pause(decodePool);
  out.tokens.assign(sampling.size(), -1);
  out.logprobs = logprobs;
  if (logprobs) {
    out.lpTokens.assign(sampling.size() * kTop, -1);
    out.lpValues.assign(sampling.size() * (kTop + 1), 0.0f);
  }
  if (sampling.empty()) {
    out.doneAt = NowMs();
    return "";
  }
  if (g_api.get_logits(ctx) == nullptr) return "This model does not support token generation";
  std::mutex failure;
  std::string error;
  const int32_t nVocab = g_api.vocab_n_tokens(g_api.model_get_vocab(g_api.get_model(ctx)));
  const std::function<void(size_t)> sampleOne = [&](size_t k) {
    try {
      const StepItem& item = *sampling[k];
      g_api.sampler_rebuild(item.sampler);
      // The raw logits' distribution, read before the usual path samples (it may change its
      // copy); the fast path only reads the logits.
      std::vector<float> distribution;
      if (item.top >= 0) Distribution(ctx, logitRows[k], distribution);
      llama_token token = -1;
      if (!FastSample(item.sampler, ctx, logitRows[k], nVocab, token)) {
        llama_token_data_array candidates;
        g_api.sampler_sample(item.sampler, ctx, logitRows[k], candidates, false);
        if (candidates.size > 0 && candidates.selected >= 0 && candidates.selected < static_cast<int64_t>(candidates.size)) {
          token = candidates.data[candidates.selected].id;
        }
      }
      if (token < 0) return;
      g_api.sampler_accept(item.sampler, token);
      out.tokens[k] = token;
      if (item.top >= 0) Logprobs(out, k, item.top, token, distribution);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(failure);
      if (error.empty()) error = e.what();
    }
  };
  bool parallel = false;
  if (g_sampling && g_sampling->size() > 0 && sampling.size() >= kParallelSamplingMin) {
    parallel = g_sampling->TryRun(sampling.size(), sampleOne);
  }
  if (!parallel) {
    for (size_t k = 0; k < sampling.size(); k++) sampleOne(k);
  }
  out.doneAt = NowMs();
  return error.empty() ? "" : "sampling failed: " + error;
}

/** The ggml pool a context decodes on now when that is more than one thread (nullptr otherwise). */
ggml_threadpool_t CurrentDecodePool(llama_context* ctx) {
  auto pools = g_pools.find(ctx);
  if (pools != g_pools.end() && pools->second.current > 1) return pools->second.byThreads[pools->second.current];
  return nullptr;
}

/**
 * Reads a step spec (Int32Array [sequence, firstPosition, tokenCount, sample 0|1, ...tokens]...)
 * and the samplers of its sampling items into items, validating everything on the main thread so
 * that the worker cannot overrun the batch or the context.
 */
std::vector<StepItem> ReadItems(Napi::Env env, AddonContext* context, Napi::Int32Array specArray, size_t specLength, Napi::Array samplerArray) {
  if (specLength > specArray.ElementLength()) throw Napi::RangeError::New(env, "spec length exceeds the array");
  const int32_t* spec = specArray.Data();
  const int32_t n_ctx = static_cast<int32_t>(context->context_params.n_ctx);
  const int32_t n_seq = static_cast<int32_t>(context->context_params.n_seq_max);
  std::vector<StepItem> items;
  int64_t tokens = 0;
  uint32_t sampling = 0;
  for (size_t i = 0; i < specLength;) {
    if (i + 4 > specLength) throw Napi::RangeError::New(env, "truncated step spec");
    const int32_t seq = spec[i], position = spec[i + 1], count = spec[i + 2];
    if (seq < 0 || seq >= n_seq || position < 0 || count < 1 || position + count > n_ctx || i + 4 + count > specLength) {
      throw Napi::RangeError::New(env, "bad item in step spec");
    }
    StepItem item;
    item.seq = seq;
    item.position = position;
    item.tokens.assign(spec + i + 4, spec + i + 4 + count);
    if (spec[i + 3] != 0) {
      if (sampling >= samplerArray.Length()) throw Napi::RangeError::New(env, "one sampler per sampling item");
      void* raw = nullptr;
      Napi::Value value = samplerArray.Get(sampling);
      if (!value.IsObject() || napi_unwrap(env, value, &raw) != napi_ok || raw == nullptr) {
        throw Napi::TypeError::New(env, "samplers must be node-llama-cpp AddonSampler objects");
      }
      auto* sampler = static_cast<AddonSampler*>(static_cast<Napi::ObjectWrap<AddonSampler>*>(raw));
      if (sampler->disposed) throw Napi::Error::New(env, "a sampler is disposed");
      item.sampler = sampler;
      sampling++;
    }
    tokens += count;
    items.push_back(std::move(item));
    i += 4 + static_cast<size_t>(count);
  }
  if (tokens == 0) throw Napi::RangeError::New(env, "empty step");
  if (tokens > static_cast<int64_t>(context->context_params.n_batch)) throw Napi::RangeError::New(env, "step exceeds the batch size");
  if (sampling != samplerArray.Length()) throw Napi::RangeError::New(env, "one sampler per sampling item");
  return items;
}

/** The context's step batch, allocated at the batch size on first use; throws when a step is running. */
StepBatch& BatchFor(Napi::Env env, AddonContext* context) {
  StepBatch& batch = g_batches[context->ctx];
  if (batch.busy) throw Napi::Error::New(env, "a step is already running on this context");
  if (batch.capacity == 0) {
    const int32_t capacity = static_cast<int32_t>(context->context_params.n_batch);
    batch.batch = g_api.batch_init(capacity, 0, 1);
    batch.capacity = capacity;
  }
  return batch;
}

/** Optional logprob requests (Int32Array, one entry per sampling item, -1 = none) onto the items. */
void ReadTop(Napi::Env env, std::vector<StepItem>& items, const Napi::Value& value) {
  if (!value.IsTypedArray()) return;
  Napi::Int32Array top = value.As<Napi::Int32Array>();
  size_t k = 0;
  for (StepItem& item : items) {
    if (item.sampler == nullptr) continue;
    if (k >= top.ElementLength()) throw Napi::RangeError::New(env, "logprobs: top needs one entry per sampling item");
    item.top = std::min(top[k++], kTop);
  }
}

/** A run's plan (Int32Array [budget, stopOnEog 0|1] per sampling item) onto its items. */
void ReadPlan(Napi::Env env, std::vector<StepItem>& items, Napi::Int32Array plan) {
  size_t k = 0;
  for (StepItem& item : items) {
    if (item.sampler == nullptr) continue;
    if (plan.ElementLength() < 2 * (k + 1)) throw Napi::RangeError::New(env, "plan needs [budget, stopOnEog] per sampling item");
    item.budget = plan[2 * k];
    item.stopOnEog = plan[2 * k + 1] != 0;
    if (item.budget < 1) throw Napi::RangeError::New(env, "a sampling item's budget must be >= 1");
    k++;
  }
}

/**
 * step(context, spec, samplers, out, specLength?, top?, lpTokens?, lpValues?, info?) -> Promise<number>:
 * one scheduler step in one call (RunOneStep on a worker thread). Writes the k-th sampled token
 * to out[k] (-1 when the sampler gave none) and resolves with the milliseconds llama_decode took
 * (sampling excluded). With `top`, the item's raw distribution (log-softmax of the logits over
 * the whole vocabulary, before temperature, top-k/p, penalties, biases and grammar: OpenAI's
 * meaning): the sampled token's logprob in lpValues[k * 21], the best tokens in lpTokens[k * 20 +
 * i] and lpValues[k * 21 + 1 + i]. `info` (Int32Array): info[0] = throwaway tokens the step
 * carried to close holes between busy sequences (GapFills), info[1] = 1 when the step ran as one
 * decode per token (setDecodeSplit), info[2] = the width it was padded to, 0 = none (setDecodePad;
 * its edge tokens count in info[0]).
 */
class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, AddonContext* context, StepBatch* batch, std::vector<StepItem> items, Napi::Int32Array out)
      : Napi::AsyncWorker(env, "LlmEngineStep"), context_(context), batch_(batch), items_(std::move(items)), deferred_(Napi::Promise::Deferred::New(env)) {
    out_ = Napi::Persistent(out);
    context_->Ref();
    for (auto& item : items_) if (item.sampler) item.sampler->Ref();
    batch_->busy = true;
  }
  ~StepWorker() override {
    batch_->busy = false;
    for (auto& item : items_) if (item.sampler) item.sampler->Unref();
    context_->Unref();
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void SetLogprobOutputs(Napi::Int32Array tokens, Napi::Float32Array values) {
    lpTokensRef_ = Napi::Persistent(tokens);
    lpValuesRef_ = Napi::Persistent(values);
  }
  void SetDecodePool(ggml_threadpool_t pool) { decodePool_ = pool; }
  void SetInfoOutput(Napi::Int32Array info) { infoRef_ = Napi::Persistent(info); }

 protected:
  void Execute() override {
    auto pools = g_pools.find(context_->ctx);
    bool split = false;
    int32_t pad = 0;
    if (pools != g_pools.end()) {
      const int wanted = pools->second.wanted->exchange(0);
      if (wanted > 0) {
        UsePoolQuiet(context_->ctx, pools->second, std::min(wanted, pools->second.max));
        decodePool_ = CurrentDecodePool(context_->ctx);
      }
      split = pools->second.split->load();
      pad = pools->second.pad->load();
    }
    const std::string error = RunOneStep(context_->ctx, *batch_, decodePool_, items_, outcome_, split, pad);
    if (!error.empty()) SetError(error);
  }
  void OnOK() override {
    Napi::Int32Array out = out_.Value().As<Napi::Int32Array>();
    for (size_t k = 0; k < outcome_.tokens.size() && k < out.ElementLength(); k++) out[k] = outcome_.tokens[k];
    if (outcome_.logprobs && !lpTokensRef_.IsEmpty()) {
      Napi::Int32Array lpTokens = lpTokensRef_.Value().As<Napi::Int32Array>();
      Napi::Float32Array lpValues = lpValuesRef_.Value().As<Napi::Float32Array>();
      for (size_t i = 0; i < outcome_.lpTokens.size() && i < lpTokens.ElementLength(); i++) lpTokens[i] = outcome_.lpTokens[i];
      for (size_t i = 0; i < outcome_.lpValues.size() && i < lpValues.ElementLength(); i++) lpValues[i] = outcome_.lpValues[i];
    }
    if (!infoRef_.IsEmpty()) {
      Napi::Int32Array info = infoRef_.Value().As<Napi::Int32Array>();
      if (info.ElementLength() > 0) info[0] = outcome_.filled;
      if (info.ElementLength() > 1) info[1] = outcome_.split ? 1 : 0;
      if (info.ElementLength() > 2) info[2] = outcome_.padTo;
    }
    deferred_.Resolve(Napi::Number::New(Env(), outcome_.computeMs));
  }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  AddonContext* context_;
  StepBatch* batch_;
  std::vector<StepItem> items_;
  StepOutcome outcome_;
  ggml_threadpool_t decodePool_ = nullptr;
  Napi::Reference<Napi::Int32Array> out_;
  Napi::Reference<Napi::Int32Array> lpTokensRef_;
  Napi::Reference<Napi::Float32Array> lpValuesRef_;
  Napi::Reference<Napi::Int32Array> infoRef_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  if (!info[1].IsTypedArray() || !info[2].IsArray() || !info[3].IsTypedArray()) {
    throw Napi::TypeError::New(env, "step(context, Int32Array spec, samplers[], Int32Array out)");
  }
  Napi::Int32Array specArray = info[1].As<Napi::Int32Array>();
  Napi::Int32Array out = info[3].As<Napi::Int32Array>();
  const size_t specLength = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Uint32Value() : specArray.ElementLength();
  std::vector<StepItem> items = ReadItems(env, context, specArray, specLength, info[2].As<Napi::Array>());
  const size_t sampling = info[2].As<Napi::Array>().Length();
  if (out.ElementLength() < sampling) throw Napi::RangeError::New(env, "one out slot per sampling item");
  const bool withLogprobs = info.Length() > 7 && info[5].IsTypedArray();
  if (withLogprobs) {
    ReadTop(env, items, info[5]);
    if (!info[6].IsTypedArray() || !info[7].IsTypedArray() || info[6].As<Napi::Int32Array>().ElementLength() < sampling * kTop ||
        info[7].As<Napi::Float32Array>().ElementLength() < sampling * (kTop + 1)) {
      throw Napi::RangeError::New(env, "logprobs outputs are too small (20 tokens and 21 values per sampling item)");
    }
  }
  StepBatch& batch = BatchFor(env, context);
  auto* worker = new StepWorker(env, context, &batch, std::move(items), out);
  if (withLogprobs) worker->SetLogprobOutputs(info[6].As<Napi::Int32Array>(), info[7].As<Napi::Float32Array>());
  worker->SetDecodePool(CurrentDecodePool(context->ctx));
  // info[0] after the step: the throwaway tokens it carried (GapFills).
  if (info.Length() > 8 && info[8].IsTypedArray()) worker->SetInfoOutput(info[8].As<Napi::Int32Array>());
  worker->Queue();
  return worker->Promise();
}


/**
 * run(context, spec, samplers, plan, onStep, specLength?, top?) -> Promise<number>: steps back to
 * back on one worker thread, without coming back to JavaScript between them (llama.cpp's server
 * loop). The first step is `spec` as in step(); after each step every sampling item whose slot
 * goes on (a token was sampled, it is not an end-of-generation token unless plan says to ignore
 * those, and its budget is not spent) becomes a one-token decode item of the next step, with the
 * token just sampled. The run ends when no item goes on, after a step that had an item that did
 * not sample (a prompt chunk: JavaScript must give the next one), when interrupt(context) was
 * called, or on an error (the promise rejects; the KV state of that step is unknown).
 *
 * `plan` (Int32Array, two entries per sampling item): [budget, stopOnEog 0|1]; budget = tokens
 * the slot may still sample, this step's included. onStep(items, computeMs, threads, doneAt,
 * final, lpTokens?, lpValues?, filled, held, split, padTo) is called on the main thread for every step, in order, while the next
 * step already runs: items is an Int32Array of [sequence, firstPosition, tokenCount, sampled]
 * per item (sampled: the token, -1 = none, -2 = the item did not sample); doneAt is the step's
 * end in the steady clock's milliseconds; final is true when the run ends with this step. A
 * final step has already let the context go: onStep may start the next run at once, without
 * waiting for the promise, which settles only after the main thread has also written this
 * step's tokens out (measured on 2 cores at 8 streams: ~3 ms of idle engine per run). A run
 * interrupted too late to know it at its last step ends without a final step. Resolves (after
 * the last onStep) with the number of steps. setThreads() during a run takes effect at the
 * next step. feed() hands the run more prompts while it goes; a run with fed prompts left does
 * not end for lack of items.
 */
class RunWorker : public Napi::AsyncWorker {
 public:
  RunWorker(const Napi::Function& onStep, AddonContext* context, StepBatch* batch, std::vector<StepItem> items,
            std::shared_ptr<std::atomic<bool>> interrupt)
      : Napi::AsyncWorker(onStep, "LlmEngineRun"),
        context_(context),
        batch_(batch),
        items_(std::move(items)),
        interrupt_(std::move(interrupt)),
        deferred_(Napi::Promise::Deferred::New(onStep.Env())),
        stepContext_(onStep.Env(), "LlmEngineRunStep") {
    // Steps are handed to the main thread through a plain libuv async handle rather than N-API's
    // thread-safe function (AsyncProgressQueueWorker): that one signals while holding its queue
    // mutex, so on a busy machine the woken main thread first blocks on that mutex and must be
    // woken a second time (a contended futex after every step, seen with strace).
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(onStep.Env(), &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(onStep.Env(), "no event loop for the run");
    }
    wake_ = new uv_async_t;
    wake_->data = this;
    uv_async_init(loop, wake_, [](uv_async_t* handle) {
      auto* self = static_cast<RunWorker*>(handle->data);
      if (self == nullptr) return;
      Napi::HandleScope scope(self->Env());
      self->Deliver();
    });
    context_->Ref();
    // Every sampler a later step may use is one of the first step's.
    for (auto& item : items_) if (item.sampler) item.sampler->Ref();
    for (auto& item : items_) if (item.sampler) samplers_.push_back(item.sampler);
    batch_->busy = true;
    interrupt_->store(false);
    auto alone = g_promptAlone.find(context_->ctx);
    promptAlone_ = alone != g_promptAlone.end() && alone->second;
    auto drain = g_drainPack.find(context_->ctx);
    drainPack_ = drain != g_drainPack.end() && drain->second;
  }
  ~RunWorker() override {
    // Main thread, after OnOK/OnError: the loop thread has returned, nothing signals any more.
    wake_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(wake_), [](uv_handle_t* handle) { delete reinterpret_cast<uv_async_t*>(handle); });
    auto registered = g_runs.find(context_->ctx);
    if (registered != g_runs.end() && registered->second == this) g_runs.erase(registered);
    if (!released_) batch_->busy = false;
    for (auto* sampler : samplers_) sampler->Unref();
    context_->Unref();
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  /**
   * Main thread: queues whole prompts (each item samples) for the loop to take in at a later
   * step boundary, in order, as many a step as fit within `pack` prompt tokens (the first always
   * goes) and the batch. False, with nothing queued, once the run has decided to end: the
   * caller then owns the context again (the loop no longer touches it).
   */
  bool Feed(std::vector<StepItem> items, int32_t pack) {
    std::lock_guard<std::mutex> lock(fedMutex_);
    if (closed_) return false;
    for (StepItem& item : items) {
      item.sampler->Ref();
      samplers_.push_back(item.sampler);
      fed_.push_back(std::move(item));
    }
    pack_ = std::max(1, pack);
    return true;
  }

 protected:
  struct Record {
    std::vector<int32_t> items;
    StepOutcome outcome;
    bool final = false;
  };

  void Execute() override {
    // On the context's own long-lived thread (see Driver); this pool thread only waits.
    DriverFor(context_->ctx).Run([this] { Loop(); });
  }

  void Loop() {
    const int32_t n_ctx = static_cast<int32_t>(context_->context_params.n_ctx);
    const llama_vocab* vocab = g_api.model_get_vocab(g_api.get_model(context_->ctx));
    auto poolsIt = g_pools.find(context_->ctx);
    Pools* pools = poolsIt == g_pools.end() ? nullptr : &poolsIt->second;
    for (bool first = true;; first = false) {
      if (!first) {
        // Backpressure: at most kMaxAhead steps the main thread has not taken yet. A tiny model
        // steps far faster than the streams can be written; unbounded, the loop would keep
        // generating for a client that left long before its disconnect could be seen.
        std::unique_lock<std::mutex> lock(leadMutex_);
        while (!interrupt_->load() && steps_ - delivered_ > kMaxAhead) leadCv_.wait_for(lock, std::chrono::milliseconds(5));
      }
      if (!first && interrupt_->load()) break;
      if (!first && !TakeFed()) break;
      if (pools != nullptr) {
        const int wanted = pools->wanted->exchange(0);
        if (wanted > 0 && !UsePoolQuiet(context_->ctx, *pools, std::min(wanted, pools->max))) {
          SetError("ggml_threadpool_new failed");
          break;
        }
      }
      auto record = std::make_unique<Record>();
      const bool split = pools != nullptr && pools->split->load();
      const int32_t pad = pools != nullptr ? pools->pad->load() : 0;
      ggml_threadpool_t decodePool = CurrentDecodePool(context_->ctx);
      // A step of several items leaves its pool running for the next one (kWarmPoolMinItems).
      const bool keepPool = items_.size() >= kWarmPoolMinItems;
      warmPool_ = keepPool ? decodePool : nullptr;
      const std::string error = RunOneStep(context_->ctx, *batch_, decodePool, items_, record->outcome, split, pad, keepPool);
      if (!error.empty()) {
        SetError(error);
        break;
      }
      record->outcome.threads = g_api.n_threads(context_->ctx);
      record->outcome.held = static_cast<int32_t>(held_.size());
      promptLast_ = false;
      for (const StepItem& item : items_) promptLast_ = promptLast_ || item.tokens.size() >= 2;
      std::vector<StepItem> next;
      bool chunk = false;
      size_t k = 0;
      for (const StepItem& item : items_) {
        const int32_t count = static_cast<int32_t>(item.tokens.size());
        int32_t sampled = -2;
        if (item.sampler != nullptr) {
          sampled = record->outcome.tokens[k++];
          const int32_t position = item.position + count;
          const bool goesOn = sampled >= 0 && !(item.stopOnEog && g_api.vocab_is_eog(vocab, sampled)) && item.budget > 1 && position < n_ctx;
          if (goesOn) {
            StepItem follow = item;
            follow.position = position;
            follow.tokens.assign(1, sampled);
            follow.budget = item.budget - 1;
            next.push_back(std::move(follow));
          }
        } else {
          chunk = true;
        }
        record->items.insert(record->items.end(), {item.seq, item.position, count, sampled});
      }
      // Known now (an interrupt usually comes while the step computes): the run ends here, and
      // the context is let go before the step is reported, so that the main thread can start
      // the next run from onStep. Nothing below touches the context or the batch.
      bool ends;
      {
        // Under the feed lock: a prompt fed after this is refused, so none is left behind.
        std::lock_guard<std::mutex> lock(fedMutex_);
        ends = chunk || interrupt_->load() || (next.empty() && fed_.empty() && held_.empty());
        if (ends) closed_ = true;
      }
      if (ends) {
        // The context (and its pools) may belong to the next run once released: a pool left
        // running is paused first.
        CoolPool();
        record->final = true;
        released_ = true;
        batch_->busy = false;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        records_.push_back(std::move(record));
      }
      // Outside the lock: the main thread it wakes takes the records without waiting for us.
      uv_async_send(wake_);
      {
        std::lock_guard<std::mutex> lock(leadMutex_);
        steps_++;
      }
      if (ends) break;
      items_ = std::move(next);
    }
    if (!released_) CoolPool();
    {
      // Ended without a final step (an error, or an interrupt seen only at a boundary): prompts fed
      // and not taken stay with the caller, who finds them unreported.
      std::lock_guard<std::mutex> lock(fedMutex_);
      closed_ = true;
    }
    // Every step goes to JavaScript through the async handle, each its own entry, before the run
    // ends: the ones left to OnOK would be handed over inside the work's one callback scope, where
    // what a step's consumers queue (microtasks) runs only after the next step is reported (seen
    // once in test/engine-run.e2e-spec.ts, when the work's completion came before the handle's
    // last wake-up). Bounded, for a main thread that no longer turns (the process exiting).
    std::unique_lock<std::mutex> lock(leadMutex_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (delivered_ < steps_ && leadCv_.wait_until(lock, deadline) != std::cv_status::timeout) {
    }
  }

  /** Pauses the pool the last step left running (its worker sleeps until the next kickoff). */
  void CoolPool() {
    if (warmPool_ != nullptr) g_api.pool_pause(warmPool_);
    warmPool_ = nullptr;
  }

  /**
   * Loop thread, at a step boundary: moves fed prompts into the coming step (oldest first, within
   * the pack limit and the batch), each after dropping its slot's KV cells from its position on
   * (stale cells of the slot's previous request). False when a slot's cells cannot be dropped
   * (memory that cannot cut a sequence in the middle): the run ends there, and the caller
   * truncates those slots itself.
   *
   * With setPromptAlone(context, true), a step that takes a prompt of two or more tokens in leaves the
   * generating sequences (one token each) to the next step, unless the step before evaluated a
   * prompt (as a step that held them always did: they never wait two steps in a row). With one KV stream per sequence, llama.cpp splits
   * a step into micro-batches that hold the same number of tokens of each of their sequences
   * (llama_batch_allocr::split_equal): seven decode tokens and a 38-token prompt are two passes
   * over the weights, one of 8 tokens (the decode tokens and the prompt's first) and one of 37,
   * costing what the two steps cost apart (112.7 ms against 31.3 + 79.9 on 2 cores, 2026-12-01).
   * Taking the prompt alone first is the same work in the same passes, and the new request's
   * first token comes one decode pass sooner; the running streams get their next token after
   * the prompt's pass either way. Not right after another prompt: a held step puts the new
   * stream one step closer to the others, and prompts taken on consecutive steps (requests that
   * arrived together) would then generate in step and end together, their next requests coming
   * as a wave whose prompts wait for each other (measured: time to first token +28% at four
   * closed-loop clients). Where a pass costs about the same whatever its few tokens (a
   * GPU), it would be one more step of host work for a decode pass of a few milliseconds: the
   * adapter leaves it off there.
   */
  bool TakeFed() {
    std::lock_guard<std::mutex> lock(fedMutex_);
    // Sequences held back by the previous step go now.
    const bool heldBefore = !held_.empty();
    if (heldBefore) {
      for (StepItem& item : held_) items_.push_back(std::move(item));
      held_.clear();
    }
    if (fed_.empty()) {
      if (heldBefore) SortBySeq(items_);
      return true;
    }
    const size_t running = items_.size();
    const int32_t n_batch = static_cast<int32_t>(context_->context_params.n_batch);
    int32_t tokens = 0;
    for (const StepItem& item : items_) tokens += static_cast<int32_t>(item.tokens.size());
    int32_t packed = 0;
    bool took = false;
    bool longPrompt = false;
    const int32_t limit = DrainPacks(running) ? n_batch : pack_;
    while (!fed_.empty()) {
      StepItem& item = fed_.front();
      const int32_t n = static_cast<int32_t>(item.tokens.size());
      if (took && packed + n > limit) break;
      if (tokens + n > n_batch) break;
      for (const StepItem& other : items_) {
        if (other.seq == item.seq) {
          SetError("a prompt was fed for a slot that is still generating in the run");
          return false;
        }
      }
      if (!g_api.memory_seq_rm(g_api.get_memory(context_->ctx), item.seq, item.position, -1)) return false;
      longPrompt = longPrompt || n >= 2;
      items_.push_back(std::move(item));
      fed_.pop_front();
      tokens += n;
      packed += n;
      took = true;
    }
    if (took && longPrompt && !promptLast_ && running > 0 && promptAlone_) {
      // items_[0, running) are the generating sequences (one token each): the next step's.
      const auto end = items_.begin() + static_cast<std::ptrdiff_t>(running);
      held_.assign(std::make_move_iterator(items_.begin()), std::make_move_iterator(end));
      items_.erase(items_.begin(), end);
    }
    // Slot order keeps llama.cpp from splitting the step into several micro-batches.
    if (took || heldBefore) SortBySeq(items_);
    return true;
  }

  /**
   * Whether the coming step takes in every fed prompt the batch holds rather than those within
   * the pack limit (setDrainPack): when two or more prompts wait and each generating sequence
   * ends within as many steps as prompts wait (its token budget). Taken one a step, those prompts
   * would each share their step with a decode pass of the few streams still running (on one KV
   * stream per sequence that pass is a pass of its own over the weights, see the setPromptAlone
   * note), and the streams they start would join later, smaller passes: short answers (an
   * agent's tool call, a classification) made most decode passes a few tokens wide. Packed, the
   * waiting prompts cost what they cost apart, and the next passes decode them all at once, as
   * llama-server's lockstep waves do. Streams with many tokens left keep the limit: a long prompt
   * step would only stall them.
   */
  bool DrainPacks(size_t running) const {
    if (!drainPack_ || running == 0 || fed_.size() < 2) return false;
    const int32_t waiting = static_cast<int32_t>(fed_.size());
    for (size_t i = 0; i < running; i++) {
      if (items_[i].budget > waiting) return false;
    }
    return true;
  }

  static void SortBySeq(std::vector<StepItem>& items) {
    std::sort(items.begin(), items.end(), [](const StepItem& a, const StepItem& b) { return a.seq < b.seq; });
  }

  void OnOK() override {
    Deliver();
    if (!callbackError_.IsEmpty()) {
      deferred_.Reject(callbackError_.Value());
      return;
    }
    deferred_.Resolve(Napi::Number::New(Env(), steps_));
  }
  void OnError(const Napi::Error& error) override {
    Deliver();
    deferred_.Reject(error.Value());
  }

 private:
  /** Hands the steps finished so far to onStep, oldest first. */
  void Deliver() {
    Napi::Env env = Env();
    for (;;) {
      std::unique_ptr<Record> record;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (records_.empty()) return;
        record = std::move(records_.front());
        records_.pop_front();
      }
      if (!callbackError_.IsEmpty()) {
        // Dropped after a callback threw (the run is stopping); counted, as the loop waits for it.
        std::lock_guard<std::mutex> lock(leadMutex_);
        delivered_++;
        leadCv_.notify_one();
        continue;
      }
      Napi::HandleScope scope(env);
      Napi::Int32Array items = Napi::Int32Array::New(env, record->items.size());
      std::copy(record->items.begin(), record->items.end(), items.Data());
      const StepOutcome& o = record->outcome;
      std::vector<napi_value> args = {items, Napi::Number::New(env, o.computeMs), Napi::Number::New(env, o.threads), Napi::Number::New(env, o.doneAt),
                                      Napi::Boolean::New(env, record->final)};
      if (o.logprobs) {
        Napi::Int32Array lpTokens = Napi::Int32Array::New(env, o.lpTokens.size());
        std::copy(o.lpTokens.begin(), o.lpTokens.end(), lpTokens.Data());
        Napi::Float32Array lpValues = Napi::Float32Array::New(env, o.lpValues.size());
        std::copy(o.lpValues.begin(), o.lpValues.end(), lpValues.Data());
        args.push_back(lpTokens);
        args.push_back(lpValues);
      } else {
        args.push_back(env.Undefined());
        args.push_back(env.Undefined());
      }
      args.push_back(Napi::Number::New(env, o.filled));
      args.push_back(Napi::Number::New(env, o.held));
      args.push_back(Napi::Boolean::New(env, o.split));
      args.push_back(Napi::Number::New(env, o.padTo));
      try {
        // MakeCallback: as a libuv callback this is a top-level entry into JavaScript, so the
        // microtasks and ticks onStep queues run right after it, as they would after any event.
        Callback().MakeCallback(Receiver().Value(), args, stepContext_);
      } catch (const Napi::Error& e) {
        // The run's promise rejects with it once the run ends; the run stops at its next step.
        callbackError_ = Napi::Reference<Napi::Value>::New(e.Value(), 1);
        interrupt_->store(true);
      }
      {
        std::lock_guard<std::mutex> lock(leadMutex_);
        delivered_++;
      }
      leadCv_.notify_one();
    }
  }

  /** Steps the loop may run ahead of the ones the main thread has taken (one computing, one waiting). */
  static constexpr int32_t kMaxAhead = 2;

  AddonContext* context_;
  StepBatch* batch_;
  std::vector<StepItem> items_;
  std::vector<AddonSampler*> samplers_;
  std::shared_ptr<std::atomic<bool>> interrupt_;
  /** The final step let the context go (the next run may own it before this worker is gone). */
  bool released_ = false;
  /** The pool the last step left running (kWarmPoolMinItems), or nullptr. */
  ggml_threadpool_t warmPool_ = nullptr;
  /** Prompts fed and not taken yet, the pack limit, and whether the run still takes any (fedMutex_). */
  std::mutex fedMutex_;
  std::deque<StepItem> fed_;
  /** Generating sequences a step that took a prompt in left to the next step (TakeFed). */
  std::vector<StepItem> held_;
  /** This context's setPromptAlone() when the run started. */
  bool promptAlone_ = false;
  /** This context's setDrainPack() when the run started. */
  bool drainPack_ = false;
  /** The step just computed evaluated a prompt (an item of two tokens or more): the next one holds nothing back. */
  bool promptLast_ = false;
  int32_t pack_ = 1;
  bool closed_ = false;
  Napi::Promise::Deferred deferred_;
  Napi::AsyncContext stepContext_;
  /** Wakes the main thread for finished steps (closed by the destructor, freed by libuv). */
  uv_async_t* wake_ = nullptr;
  std::mutex mutex_;
  std::deque<std::unique_ptr<Record>> records_;
  Napi::Reference<Napi::Value> callbackError_;
  std::mutex leadMutex_;
  std::condition_variable leadCv_;
  /** Steps finished and steps handed to onStep (both under leadMutex_). */
  int32_t steps_ = 0;
  int32_t delivered_ = 0;
};

/** The items of run() and feed(): (context, spec, samplers, plan, <4th>, specLength?, top?). */
std::vector<StepItem> ReadRunItems(Napi::Env env, AddonContext* context, const Napi::CallbackInfo& info) {
  Napi::Int32Array specArray = info[1].As<Napi::Int32Array>();
  const size_t specLength = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().Uint32Value() : specArray.ElementLength();
  std::vector<StepItem> items = ReadItems(env, context, specArray, specLength, info[2].As<Napi::Array>());
  ReadPlan(env, items, info[3].As<Napi::Int32Array>());
  if (info.Length() > 6) ReadTop(env, items, info[6]);
  return items;
}

Napi::Value Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  if (!info[1].IsTypedArray() || !info[2].IsArray() || !info[3].IsTypedArray() || !info[4].IsFunction()) {
    throw Napi::TypeError::New(env, "run(context, Int32Array spec, samplers[], Int32Array plan, onStep)");
  }
  std::vector<StepItem> items = ReadRunItems(env, context, info);
  StepBatch& batch = BatchFor(env, context);
  auto& interrupt = g_interrupts[context->ctx];
  if (!interrupt) interrupt = std::make_shared<std::atomic<bool>>(false);
  auto* worker = new RunWorker(info[4].As<Napi::Function>(), context, &batch, std::move(items), interrupt);
  g_runs[context->ctx] = worker;
  worker->Queue();
  return worker->Promise();
}

/**
 * feed(context, spec, samplers, plan, pack, specLength?, top?) -> boolean: hands the run in
 * flight whole prompts (spec as in step(), every item sampling; plan and top as in run()). The
 * loop takes them in at its next step boundaries, oldest first, as many a step as fit within
 * `pack` prompt tokens (the first always goes) and the batch, after dropping each slot's KV cells
 * from the item's position on. Each then goes on as the run's other items do. False when no run
 * is in flight or it has decided to end: nothing was taken and the context is the caller's
 * again. A prompt fed and never reported (the run ended first, by interrupt(), a prompt chunk in
 * its first step, or a slot whose cells could not be dropped) was not evaluated; its slot's cells
 * from its position on may or may not have been dropped.
 */
Napi::Value Feed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  if (!info[1].IsTypedArray() || !info[2].IsArray() || !info[3].IsTypedArray() || !info[4].IsNumber()) {
    throw Napi::TypeError::New(env, "feed(context, Int32Array spec, samplers[], Int32Array plan, pack)");
  }
  auto run = g_runs.find(context->ctx);
  if (run == g_runs.end()) return Napi::Boolean::New(env, false);
  std::vector<StepItem> items = ReadRunItems(env, context, info);
  for (const StepItem& item : items) {
    if (item.sampler == nullptr) throw Napi::RangeError::New(env, "fed prompts must be whole (every item samples)");
  }
  return Napi::Boolean::New(env, run->second->Feed(std::move(items), info[4].As<Napi::Number>().Int32Value()));
}

/** interrupt(context): a run in flight on the context stops after its current step. */
Napi::Value Interrupt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  auto it = g_interrupts.find(context->ctx);
  if (it != g_interrupts.end()) it->second->store(true);
  return env.Undefined();
}
/**
 * setGapFill(maxRun): fill holes of up to maxRun idle sequences between busy ones with a
 * throwaway token (0 = never; default 1). Returns the throwaway tokens added so far.
 */
Napi::Value SetGapFill(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    const int32_t n = info[0].As<Napi::Number>().Int32Value();
    if (n < 0 || n > 64) throw Napi::RangeError::New(env, "gap fill must be 0..64");
    g_gapFill.store(n);
  }
  return Napi::Number::New(env, static_cast<double>(g_gapFillTokens.load()));
}

/** A per-context boolean setting (context, on?): sets it when `on` is given; returns the context's value (default off). */
Napi::Value ContextFlag(const Napi::CallbackInfo& info, std::unordered_map<llama_context*, bool>& flags) {
  AddonContext* context = Unwrap(info.Env(), info[0]);
  if (info.Length() > 1 && !info[1].IsUndefined()) flags[context->ctx] = info[1].ToBoolean().Value();
  auto it = flags.find(context->ctx);
  return Napi::Boolean::New(info.Env(), it != flags.end() && it->second);
}

/**
 * setDecodeSplit(context, on?): the context's next steps (a run in flight from its next step) run a
 * small decode step (two to four items of one token, each sampling) as one llama_decode per token
 * (SplitsDecode); default off. Each step reports whether it split (run()'s onStep, step()'s
 * info[1]). Returns the setting; false when the context has no threadpool attached.
 */
Napi::Value SetDecodeSplit(const Napi::CallbackInfo& info) {
  AddonContext* context = Unwrap(info.Env(), info[0]);
  auto it = g_pools.find(context->ctx);
  if (it == g_pools.end()) return Napi::Boolean::New(info.Env(), false);
  if (info.Length() > 1 && !info[1].IsUndefined()) it->second.split->store(info[1].ToBoolean().Value());
  return Napi::Boolean::New(info.Env(), it->second.split->load());
}

/**
 * setDecodePad(context, width?): the context's next steps (a run in flight from its next step) pad
 * a decode step of more than width / 2 items and fewer than `width` tokens to `width` with throwaway
 * tokens on the idle sequences next to its run (PadFills); 0 (default) = never. Each step reports
 * the width it was padded to, 0 = none (run()'s onStep, step()'s info[2]). Returns the setting; 0 when
 * the context has no threadpool attached.
 */
Napi::Value SetDecodePad(const Napi::CallbackInfo& info) {
  AddonContext* context = Unwrap(info.Env(), info[0]);
  auto it = g_pools.find(context->ctx);
  if (it == g_pools.end()) return Napi::Number::New(info.Env(), 0);
  if (info.Length() > 1 && !info[1].IsUndefined()) it->second.pad->store(std::max(0, std::min(4096, info[1].ToNumber().Int32Value())));
  return Napi::Number::New(info.Env(), it->second.pad->load());
}

/**
 * setPromptAlone(context, on?): in the context's next runs, a step that takes prompts in leaves
 * the generating sequences to the next step (see RunWorker::TakeFed); default off. Returns the
 * context's setting.
 */
Napi::Value SetPromptAlone(const Napi::CallbackInfo& info) {
  return ContextFlag(info, g_promptAlone);
}

/** Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
bool ValidUtf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    const int n = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : -1;
    if (n < 0 || end - p <= n) return false;
    uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1F : n == 2 ? c & 0x0F : c & 0x07;
    for (int i = 1; i <= n; i++) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n + 1;
  }
  return true;
}

/**
 * detokenizeAfter(context, tokens Int32Array, contextCount, count, special) -> string | null: the
 * text of tokens[contextCount, contextCount + count) after the context tokens before them, exactly
 * as node-llama-cpp's LlamaModel.detokenize(tokens, special, context) makes it (its last three
 * context tokens, their text cut off the front), in one call and without the two typed arrays,
 * two calls and the string slicing that costs a streamed token on Node's thread. Null where the
 * result could differ from that (the context's text not valid UTF-8, so the JavaScript string
 * comparison it makes is not a byte comparison; a token id out of range; no llama_detokenize):
 * the caller then asks node-llama-cpp.
 */
Napi::Value DetokenizeAfter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AddonContext* context = Unwrap(env, info[0]);
  if (!info[1].IsTypedArray() || !info[2].IsNumber() || !info[3].IsNumber()) {
    throw Napi::TypeError::New(env, "detokenizeAfter(context, Int32Array tokens, contextCount, count, special)");
  }
  if (g_api.detokenize == nullptr) return env.Null();
  Napi::Int32Array tokens = info[1].As<Napi::Int32Array>();
  const size_t contextCount = info[2].As<Napi::Number>().Uint32Value();
  const size_t count = info[3].As<Napi::Number>().Uint32Value();
  const bool special = info.Length() > 4 && info[4].ToBoolean().Value();
  if (contextCount + count > tokens.ElementLength()) throw Napi::RangeError::New(env, "contextCount + count exceeds the tokens");
  if (count == 0) return Napi::String::New(env, "");
  const llama_vocab* vocab = g_api.model_get_vocab(g_api.get_model(context->ctx));
  const int32_t vocabSize = g_api.vocab_n_tokens(vocab);
  const llama_token* data = tokens.Data();
  for (size_t i = 0; i < contextCount + count; i++) {
    if (data[i] < 0 || data[i] >= vocabSize) return env.Null();
  }
  // node-llama-cpp's maxRecentDetokenizerTokens.
  const size_t added = std::min<size_t>(contextCount, 3);
  const llama_token* own = data + contextCount;
  // As node-llama-cpp's AddonModel::Detokenize: special tokens kept, rendered when `special`.
  auto detokenize = [&](const llama_token* t, size_t n) {
    std::string out;
    out.resize(std::max<size_t>(out.capacity(), n));
    int32_t chars = g_api.detokenize(vocab, t, static_cast<int32_t>(n), out.data(), static_cast<int32_t>(out.size()), false, special);
    if (chars < 0) {
      out.resize(static_cast<size_t>(-chars));
      chars = g_api.detokenize(vocab, t, static_cast<int32_t>(n), out.data(), static_cast<int32_t>(out.size()), false, special);
    }
    out.resize(chars < 0 ? 0 : static_cast<size_t>(chars));
    return out;
  };
  if (added == 0) return Napi::String::New(env, detokenize(own, count));
  const std::string before = detokenize(own - added, added);
  if (before.empty()) return Napi::String::New(env, detokenize(own, count));
  // A replacement character in valid text could stand where the joined text has an invalid byte.
  if (!ValidUtf8(before) || before.find("\xEF\xBF\xBD") != std::string::npos) return env.Null();
  const std::string joined = detokenize(own - added, added + count);
  // `before` ends on a character boundary, so the joined string starts with its text exactly
  // when its bytes start with before's, and the rest decodes alone as it does after them.
  if (joined.compare(0, before.size(), before) == 0) return Napi::String::New(env, joined.substr(before.size()));
  return Napi::String::New(env, detokenize(own, count));
}

/**
 * setDrainPack(context, on?): in the context's next runs, a step packs every fed prompt the
 * batch holds when the generating sequences end within as many steps as prompts wait (see
 * RunWorker::DrainPacks); default off. Returns the context's setting.
 */
Napi::Value SetDrainPack(const Napi::CallbackInfo& info) {
  return ContextFlag(info, g_drainPack);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setDrainPack", Napi::Function::New(env, SetDrainPack));
  exports.Set("detokenizeAfter", Napi::Function::New(env, DetokenizeAfter));
  exports.Set("setGapFill", Napi::Function::New(env, SetGapFill));
  exports.Set("setPromptAlone", Napi::Function::New(env, SetPromptAlone));
  exports.Set("setDecodeSplit", Napi::Function::New(env, SetDecodeSplit));
  exports.Set("setDecodePad", Napi::Function::New(env, SetDecodePad));
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("attachThreadpool", Napi::Function::New(env, AttachThreadpool));
  exports.Set("detachThreadpool", Napi::Function::New(env, DetachThreadpool));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("step", Napi::Function::New(env, Step));
  exports.Set("release", Napi::Function::New(env, Release));
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("interrupt", Napi::Function::New(env, Interrupt));
  exports.Set("feed", Napi::Function::New(env, Feed));
  return exports;
}

}  // namespace

NODE_API_MODULE(llm_engine, Init)
