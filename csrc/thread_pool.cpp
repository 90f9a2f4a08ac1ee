// The two backends of parallel_run_raw (see thread_pool.h): the process's OpenMP runtime, found at
// run time (never linked), or our own persistent worker threads.
//
// Pool: a job is published by bumping an atomic generation; workers spin
// for a short while (kSpinUs) after each job before sleeping on a condition variable, so that
// back-to-back kernel calls (decode: one call per layer) do not pay a futex wake-up each.
#include "thread_pool.h"

#include <dlfcn.h>
#include <pthread.h>
#include <link.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NYBBLE_PAUSE() _mm_pause()
#else
#define NYBBLE_PAUSE() ((void)0)
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

namespace nybble {
namespace {

constexpr int kSpinUs = 100;

template <class Pred>
inline bool spin_until(Pred done) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (done()) return true;
    NYBBLE_PAUSE();
    if ((i & 63) == 63 &&
        std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSpinUs))
      return false;
  }
}

// state_ packs the job generation (high bits) and the number of worker slots of that job not yet
// claimed (low kSlotBits bits). A worker claims a slot with a CAS tagged by the generation, so a
// worker that wakes late can never run a job that has already returned. For a job whose work is
// handed out dynamically (``skippable``) the caller, once it has run out of work itself, closes the
// unclaimed slots and returns without waiting for workers the OS has not scheduled yet (on shared
// cores a worker can sit behind another process, e.g. torch's spinning OpenMP threads, for
// milliseconds).
constexpr int kSlotBits = 16;
constexpr unsigned long long kSlotMask = (1ull << kSlotBits) - 1;

class Pool {
 public:
  void run(int nthreads, TaskFn fn, void* ctx, bool skippable) {
    std::lock_guard<std::mutex> call_lock(call_mu_);
    if (nthreads <= 1) {
      fn(ctx, 0, 1);
      return;
    }
    if (owner_pid_ != getpid()) {  // forked child: the parent's workers do not exist here
      workers_started_ = 0;
      owner_pid_ = getpid();
    }
    while (workers_started_ < nthreads - 1) {
      ++workers_started_;
      std::thread(&Pool::worker, this, state_.load() >> kSlotBits).detach();
    }
    job_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    job_threads_.store(nthreads, std::memory_order_relaxed);
    pending_.store(nthreads - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);  // no lost wake-up for a worker about to sleep
      const unsigned long long gen = (state_.load(std::memory_order_relaxed) >> kSlotBits) + 1;
      state_.store((gen << kSlotBits) | static_cast<unsigned long long>(nthreads - 1), std::memory_order_release);
    }
    cv_.notify_all();
    fn(ctx, 0, nthreads);
    if (skippable) {
      unsigned long long s = state_.load(std::memory_order_acquire);
      while (!state_.compare_exchange_weak(s, s & ~kSlotMask, std::memory_order_acq_rel)) {
      }
      const int unclaimed = static_cast<int>(s & kSlotMask);
      if (unclaimed) pending_.fetch_sub(unclaimed, std::memory_order_acq_rel);
    }
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
      NYBBLE_PAUSE();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSpinUs)) {
        std::unique_lock<std::mutex> lk(mu_);
        done_cv_.wait(lk, [&] { return pending_.load(std::memory_order_acquire) == 0; });
        break;
      }
    }
  }

 private:
  unsigned long long generation() const { return state_.load(std::memory_order_acquire) >> kSlotBits; }

  void worker(unsigned long long seen) {
    for (;;) {
      if (!spin_until([&] { return generation() != seen; })) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation() != seen; });
      }
      unsigned long long s = state_.load(std::memory_order_acquire);
      const unsigned long long gen = s >> kSlotBits;
      seen = gen;
      bool claimed = false;
      while ((s >> kSlotBits) == gen && (s & kSlotMask) != 0) {
        if (state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel)) {
          claimed = true;
          break;
        }
      }
      if (!claimed) continue;  // closed by its caller, or a newer job: picked up by the next loop
      // holding a slot, the caller cannot return, so the job fields still belong to `gen`
      const int n = job_threads_.load(std::memory_order_relaxed);
      const int tid = n - static_cast<int>(s & kSlotMask);  // slots n-1..1 -> tids 1..n-1
      job_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), tid, n);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);
        done_cv_.notify_one();
      }
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::atomic<TaskFn> job_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int> job_threads_{0}, pending_{0};
  std::atomic<unsigned long long> state_{0};
  int workers_started_ = 0;
  pid_t owner_pid_ = getpid();
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: detached workers may outlive static destruction
  return *p;
}

// ---- the OpenMP backend ----------------------------------------------------------------------
// GOMP_parallel(fn, data, num_threads, flags) is the entry point GCC emits for `#pragma omp parallel`;
// libgomp exports it, and so do Intel's libiomp5 and LLVM's libomp (their GNU compatibility layer).
// The team's thread 0 is the calling thread; the region ends with a join of the team.

using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);
using OmpIntFn = int (*)();

struct OmpRuntime {
  GompParallelFn parallel = nullptr;
  OmpIntFn thread_num = nullptr, num_threads = nullptr;
  std::string path;  // the loaded library's file name ("" when none was found)
};

// dl_iterate_phdr callback: a loaded object whose file name looks like an OpenMP runtime. A copy
// under a ".../torch/lib/" directory (the one torch's ops run on) wins over any other.
int find_omp_cb(struct dl_phdr_info* info, size_t, void* data) {
  const char* name = info->dlpi_name;
  if (!name || !*name) return 0;
  const char* base = std::strrchr(name, '/');
  base = base ? base + 1 : name;
  const bool omp = std::strstr(base, "libgomp") || std::strstr(base, "libiomp") || !std::strncmp(base, "libomp", 6);
  if (!omp) return 0;
  auto* out = static_cast<std::string*>(data);
  if (out->empty() || (std::strstr(name, "/torch/lib/") && !std::strstr(out->c_str(), "/torch/lib/"))) *out = name;
  return 0;
}

OmpRuntime find_omp_runtime() {
  OmpRuntime rt;
  std::string path;
  dl_iterate_phdr(find_omp_cb, &path);
  if (path.empty()) return rt;
  // RTLD_NOLOAD: a handle to the copy already mapped, never a second load. The handle is kept
  // (never dlclose'd), so the runtime cannot be unloaded under us.
  void* h = dlopen(path.c_str(), RTLD_NOLOAD | RTLD_LAZY | RTLD_LOCAL);
  if (!h) return rt;
  rt.parallel = reinterpret_cast<GompParallelFn>(dlsym(h, "GOMP_parallel"));
  rt.thread_num = reinterpret_cast<OmpIntFn>(dlsym(h, "omp_get_thread_num"));
  rt.num_threads = reinterpret_cast<OmpIntFn>(dlsym(h, "omp_get_num_threads"));
  if (!rt.parallel || !rt.thread_num || !rt.num_threads) return OmpRuntime{};
  rt.path = path;
  return rt;
}

struct OmpJob {
  TaskFn fn;
  void* ctx;
  OmpIntFn thread_num, num_threads;
};

void omp_trampoline(void* data) {
  const OmpJob* j = static_cast<const OmpJob*>(data);
  j->fn(j->ctx, j->thread_num(), j->num_threads());
}

// ---- backend choice ----------------------------------------------------------------------------
enum Backend : int { kAuto = 0, kOpenMP = 1, kPool = 2 };

std::mutex backend_mu;
std::atomic<int> active_backend{-1};  // kOpenMP / kPool once resolved, -1 before
int requested_backend = -1;           // kAuto / kOpenMP / kPool; -1: from NYBBLE_CPU_THREADS_BACKEND
OmpRuntime omp_rt;                    // written under backend_mu before active_backend is published
// Set in the child of every fork() after this library was loaded (pthread_atfork), never reset.
std::atomic<bool> forked_child{false};
struct AtFork {
  AtFork() { pthread_atfork(nullptr, nullptr, [] { forked_child.store(true); }); }
} at_fork;
bool omp_searched = false;
std::string backend_note;             // why the requested backend was not taken

int parse_backend(const char* s) {
  if (!s || !*s || !std::strcmp(s, "auto")) return kAuto;
  if (!std::strcmp(s, "openmp")) return kOpenMP;
  if (!std::strcmp(s, "pool")) return kPool;
  return -1;
}

// The backend to use (call under backend_mu): the request, else the environment, else auto.
int resolve_backend_locked() {
  int want = requested_backend;
  backend_note.clear();
  if (want < 0) {
    const char* env = std::getenv("NYBBLE_CPU_THREADS_BACKEND");
    want = parse_backend(env);
    if (want < 0) {
      backend_note = std::string("NYBBLE_CPU_THREADS_BACKEND=") + env + " is not auto, openmp or pool; using auto";
      want = kAuto;
    }
  }
  if (want == kPool) return kPool;
  if (!omp_searched) {
    omp_rt = find_omp_runtime();
    omp_searched = true;
  }
  if (omp_rt.parallel) return kOpenMP;
  if (want == kOpenMP) backend_note = "no OpenMP runtime (libgomp/libiomp5/libomp exporting GOMP_parallel) is loaded; using pool";
  return kPool;
}

int backend() {
  int b = active_backend.load(std::memory_order_acquire);
  if (b >= 0) return b;
  std::lock_guard<std::mutex> lk(backend_mu);
  b = active_backend.load(std::memory_order_relaxed);
  if (b < 0) {
    b = resolve_backend_locked();
    active_backend.store(b, std::memory_order_release);
  }
  return b;
}

}  // namespace

void parallel_run_raw(int nthreads, TaskFn fn, void* ctx, bool skippable) {
  if (nthreads <= 1) {
    fn(ctx, 0, 1);
    return;
  }
  // In a forked child the OpenMP runtime's team threads of the parent do not exist (GNU libgomp
  // waits for them forever): the child uses the pool, which starts its own workers there.
  if (backend() == kOpenMP && !forked_child.load(std::memory_order_relaxed)) {
    OmpJob job{fn, ctx, omp_rt.thread_num, omp_rt.num_threads};
    omp_rt.parallel(omp_trampoline, &job, static_cast<unsigned>(nthreads), 0);
    return;
  }
  pool().run(nthreads, fn, ctx, skippable);
}

}  // namespace nybble

// ---- C entry points for Python (ctypes on the extension's own file; see nybble.kernels.cpu) -----
extern "C" {

// The backend parallel regions use now ("openmp" or "pool"), resolving it if none is yet.
__attribute__((visibility("default"))) const char* nybble_threads_backend() {
  return nybble::backend() == nybble::kOpenMP && !nybble::forked_child.load() ? "openmp" : "pool";
}

// The OpenMP runtime's file name ("" if none was found, or none was searched for yet).
__attribute__((visibility("default"))) const char* nybble_threads_omp_library() {
  std::lock_guard<std::mutex> lk(nybble::backend_mu);
  return nybble::omp_rt.path.c_str();
}

// Why the requested backend was not taken ("" if it was).
__attribute__((visibility("default"))) const char* nybble_threads_backend_note() {
  std::lock_guard<std::mutex> lk(nybble::backend_mu);
  return nybble::backend_note.c_str();
}

// Requests a backend: "auto", "openmp" or "pool"; NULL or "" goes back to NYBBLE_CPU_THREADS_BACKEND.
// Returns 0, or -1 for an unknown name. Searches for the OpenMP runtime again (it may have been
// loaded since). Not while a kernel runs on another thread.
__attribute__((visibility("default"))) int nybble_threads_set_backend(const char* name) {
  int want = -1;
  if (name && *name) {
    want = nybble::parse_backend(name);
    if (want < 0) return -1;
  }
  std::lock_guard<std::mutex> lk(nybble::backend_mu);
  nybble::requested_backend = want;
  nybble::omp_searched = false;
  nybble::active_backend.store(nybble::resolve_backend_locked(), std::memory_order_release);
  return 0;
}

}  // extern "C"

// For tests: runs one parallel region of `nthreads` (every tid runs, as static splits need) that
// records who ran. *team: the thread count the calls saw; *distinct: how many different OS threads
// made a call; *on_caller: 1 if tid 0 ran on the calling thread. Returns the number of calls.
extern "C" __attribute__((visibility("default"))) int nybble_threads_probe(int nthreads, int* team, int* distinct,
                                                                          int* on_caller) {
  constexpr int kMax = 256;
  struct Probe {
    std::atomic<int> calls{0};
    std::atomic<int> team{0};
    pthread_t who[kMax];
    int tid[kMax];
  } p;
  nybble::parallel_run_raw(
      nthreads,
      [](void* c, int tid, int n) {
        auto* pr = static_cast<Probe*>(c);
        const int i = pr->calls.fetch_add(1);
        pr->team.store(n);
        if (i < kMax) {
          pr->who[i] = pthread_self();
          pr->tid[i] = tid;
        }
      },
      &p, false);
  const int calls = p.calls.load();
  const int stored = calls < kMax ? calls : kMax;
  int d = 0, caller = 0;
  for (int i = 0; i < stored; ++i) {
    bool seen = false;
    for (int j = 0; j < i; ++j) seen |= pthread_equal(p.who[i], p.who[j]) != 0;
    d += !seen;
    if (p.tid[i] == 0 && pthread_equal(p.who[i], pthread_self())) caller = 1;
  }
  *team = p.team.load();
  *distinct = d;
  *on_caller = caller;
  return calls;
}
