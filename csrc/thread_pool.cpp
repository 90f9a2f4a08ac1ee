#include "thread_pool.h"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace nybble {
namespace {

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
    {
      std::unique_lock<std::mutex> lk(mu_);
      while (workers_started_ < nthreads - 1) {
        const int tid = ++workers_started_;
        std::thread(&Pool::worker, this, tid, generation_).detach();
      }
      job_ = fn;
      ctx_ = ctx;
      job_threads_ = nthreads;
      pending_ = nthreads - 1;
      ++generation_;
    }
    cv_.notify_all();
    fn(ctx, 0, nthreads);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void worker(int tid, unsigned long long seen) {
    for (;;) {
      TaskFn job;
      void* ctx;
      int n;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (tid >= job_threads_) continue;
        job = job_;
        ctx = ctx_;
        n = job_threads_;
      }
      job(ctx, tid, n);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  std::mutex call_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  TaskFn job_ = nullptr;
  void* ctx_ = nullptr;
  int job_threads_ = 0, pending_ = 0, workers_started_ = 0;
  unsigned long long generation_ = 0;
  pid_t owner_pid_ = getpid();
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: detached workers may outlive static destruction
  return *p;
}

}  // namespace

void parallel_run_raw(int nthreads, TaskFn fn, void* ctx) { pool().run(nthreads, fn, ctx); }

}  // namespace nybble
