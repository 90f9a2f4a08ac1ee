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

inline bool spin_until(const std::atomic<unsigned long long>& v, unsigned long long not_equal_to) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (v.load(std::memory_order_acquire) != not_equal_to) return true;
    NYBBLE_PAUSE();
    if ((i & 63) == 63 &&
        std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSpinUs))
      return false;
  }
}

class Pool {
 public:
  void run(int nthreads, TaskFn fn, void* ctx) {
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
      const int tid = ++workers_started_;
      std::thread(&Pool::worker, this, tid, generation_.load()).detach();
    }
    job_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    job_threads_.store(nthreads, std::memory_order_relaxed);
    pending_.store(nthreads - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(mu_);  // no lost wake-up for a worker about to sleep
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(ctx, 0, nthreads);
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
  void worker(int tid, unsigned long long seen) {
    for (;;) {
      if (!spin_until(generation_, seen)) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      // read the job consistently with its generation (a worker not taking part in a job may lag)
      unsigned long long g;
      TaskFn job;
      void* ctx;
      int n;
      do {
        g = generation_.load(std::memory_order_acquire);
        job = job_.load(std::memory_order_relaxed);
        ctx = ctx_.load(std::memory_order_relaxed);
        n = job_threads_.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
      } while (g != generation_.load(std::memory_order_relaxed));
      seen = g;
      if (tid >= n) continue;
      job(ctx, tid, n);
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
  std::atomic<unsigned long long> generation_{0};
  int workers_started_ = 0;
  pid_t owner_pid_ = getpid();
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: detached workers may outlive static destruction
  return *p;
}

}  // namespace

void parallel_run_raw(int nthreads, TaskFn fn, void* ctx) { pool().run(nthreads, fn, ctx); }

}  // namespace nybble
