// Persistent worker threads. A job is published by bumping an atomic generation; workers spin
// for a short while (kSpinUs) after each job before sleeping on a condition variable, so that
// back-to-back kernel calls (decode: one call per layer) do not pay a futex wake-up each.
#include "thread_pool.h"

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
#include <mutex>
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

}  // namespace

void parallel_run_raw(int nthreads, TaskFn fn, void* ctx, bool skippable) {
  pool().run(nthreads, fn, ctx, skippable);
}

}  // namespace nybble
