// Cross-op weight prefetch for the decode path (included by module.cpp only; no PyTorch headers).
//
// During decode the int4 linears stream their weights from DRAM, and between two of them the main
// thread runs non-linear work (the compiled graph's own kernels, attention, Python) while the DRAM
// sits idle. This unit learns, by itself, which linear follows which: every A16W4 / A8W4 call notes
// its weight arrays (packed codes, scales, zero points, compensation sums: address + byte size) and
// records "the call that followed the previous call" in a small direct-mapped table keyed by the
// previous call's code address (updated on every call, so a changed call order is re-learnt at the
// next call). When a call finishes, the weights of the call that followed it last time are handed to
// a background prefetch thread (one persistent thread per CPU of the process's affinity mask, up to
// kMaxThreads, each pinned to its CPU; the caller wakes one that is pinned to another CPU than its
// own) that issues software prefetch instructions over the first `cap` bytes of them (the cap split
// over the two halves of every array, where the kernels' two threads start their owned ranges), so
// the next call finds those lines in L2 / L3 instead of DRAM. The next call's entry cancels a
// prefetch still running (the op's own threads then stream the rest).
//
// Safety: only prefetch instructions touch remembered addresses (they never fault, so an address of
// weights freed since is harmless; no load ever reads them), and the prefetch does not change any
// result (tests check bit-identical outputs with it on and off).
//
// Measured on the 2-vCPU AMD EPYC VM (benchmarks/cpu/eighth-e2e/NOTES-prefetch.md): it does NOT pay
// there, so it is OFF by default. (1) Waking a sleeping thread on the other vCPU costs the waker
// 6-7 us (a futex wake = an IPI = a VM exit) and the thread starts 11-22 us later, against gaps of
// ~15-60 us between two linears. (2) torch's OpenMP worker spins on the other core between parallel
// regions; while the prefetch thread holds that core, every OpenMP region in the gap (decode
// attention, inductor's parallel kernels) waits for its worker: the compiled 0.85B model decoded
// 22% slower with it on (83 vs 107 tok/s, fast DRAM). (3) Unpaced bursts of prefetches from one core
// are mostly dropped (1 MiB issued in 12 us, read afterwards barely faster than cold); paced at
// 20-40 GB/s they land (512 KiB read in 4 us instead of 14 in a standalone test), hence pace_gbps;
// yet in the decode-chain micro-benchmark (busy-wait gaps, no OpenMP work in them) unpaced 4 MiB
// gained 6% and paced (32 GB/s) 1-3% in slow-DRAM phases, and unpaced lost 3-7% in fast ones. It may pay on a machine with spare cores (no competition for the prefetching core).
//
// Switches: NYBBLE_CPU_PREFETCH=1 turns it on (read once, at the first call; prefetch_configure()
// changes it at run time), NYBBLE_CPU_PREFETCH_BYTES (cap per call, default kDefaultCap),
// NYBBLE_CPU_PREFETCH_HINT (t0 | t1 | t2 | nta | w), NYBBLE_CPU_PREFETCH_SPIN_US (how long an idle
// prefetch thread spins for the next job before it sleeps on a futex; default 0),
// NYBBLE_CPU_PREFETCH_PACE_GBPS (issue-rate cap, default 0 = unpaced).
#pragma once
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <thread>

namespace nybble {
namespace prefetch {

constexpr int kMaxRegions = 4;  // codes, scales, zero points, compensation sums
constexpr int kTableSize = 1024;  // direct-mapped: a collision only loses a prediction
constexpr int kMaxThreads = 4;
constexpr int64_t kDefaultCap = 2 << 20;
constexpr int64_t kLine = 64;

enum Hint : int { kT0 = 0, kT1 = 1, kT2 = 2, kNta = 3, kW = 4 };

struct Region {
  uintptr_t p = 0;
  int64_t bytes = 0;
};

// The weight arrays of one call.
struct OpWeights {
  Region r[kMaxRegions];
  int n = 0;
  uintptr_t key() const { return n ? r[0].p : 0; }
  void add(uintptr_t p, int64_t bytes) {
    if (p && bytes > 0 && n < kMaxRegions) r[n++] = Region{p, bytes};
  }
};

struct Config {
  bool enabled = false;  // off by default: it slowed the 0.85B e2e decode by 22% (see the header)
  int64_t cap = kDefaultCap;
  int hint = kT1;
  int spin_us = 0;
  double pace_gbps = 0.0;  // issue-rate cap in GB/s (0 = none; see the header)
  int64_t max_m = 4;  // calls with more rows (prefill) neither post nor cancel... they record only
};

struct Stats {
  std::atomic<long long> calls{0}, predicted{0}, posted{0}, done{0}, cancelled{0}, lines{0}, no_thread{0}, busy_ns{0};
};

inline void issue(const char* p, int hint) {
  switch (hint) {
    case kT0: __builtin_prefetch(p, 0, 3); break;
    case kT1: __builtin_prefetch(p, 0, 2); break;
    case kT2: __builtin_prefetch(p, 0, 1); break;
    case kNta: __builtin_prefetch(p, 0, 0); break;
    default:
#if defined(__x86_64__)
      asm volatile("prefetchw (%0)" ::"r"(p));  // never faults, like the others
#else
      __builtin_prefetch(p, 1, 3);
#endif
      break;
  }
}

inline long futex(std::atomic<uint32_t>* addr, int op, uint32_t val) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, nullptr, nullptr, 0);
}

struct Job {
  OpWeights w;
  int64_t cap = 0;
  int hint = kT1;
  double pace_gbps = 0;
  uint64_t epoch = 0;
};

class Prefetcher {
 public:
  static Prefetcher& get() {
    static Prefetcher* p = new Prefetcher();  // never destroyed: threads may outlive static dtors
    return *p;
  }

  // Entry of a GEMV call with rows m: cancels a running prefetch, learns "prev -> this".
  void on_entry(const OpWeights& w, int64_t m) {
    if (!cfg_.enabled || !w.n) return;
    stats_.calls.fetch_add(1, std::memory_order_relaxed);
    epoch_.fetch_add(1, std::memory_order_acq_rel);  // stops a prefetch in flight
    if (m > cfg_.max_m) return;
    std::lock_guard<std::mutex> lk(mu_);
    if (last_) {
      Entry& e = table_[slot(last_)];
      e.key = last_;
      e.next = w;
    }
    last_ = w.key();
  }

  // Exit of a GEMV call: prefetch the weights of the call that followed this one last time.
  void on_exit(const OpWeights& w, int64_t m) {
    if (!cfg_.enabled || !w.n || m > cfg_.max_m) return;
    Job job;
    {
      std::lock_guard<std::mutex> lk(mu_);
      const Entry& e = table_[slot(w.key())];
      if (e.key != w.key() || !e.next.n) return;
      job.w = e.next;
    }
    stats_.predicted.fetch_add(1, std::memory_order_relaxed);
    if (cfg_.cap <= 0) return;
    job.cap = cfg_.cap;
    job.hint = cfg_.hint;
    job.pace_gbps = cfg_.pace_gbps;
    job.epoch = epoch_.load(std::memory_order_acquire);
    post(job);
  }

  void configure(int enabled, long long cap, int hint, int spin_us, double pace_gbps) {
    std::lock_guard<std::mutex> lk(mu_);
    if (pace_gbps >= 0) cfg_.pace_gbps = pace_gbps;
    if (enabled >= 0) cfg_.enabled = enabled != 0;
    if (cap >= 0) cfg_.cap = cap;
    if (hint >= 0 && hint <= kW) cfg_.hint = hint;
    if (spin_us >= 0) cfg_.spin_us = spin_us;
    epoch_.fetch_add(1, std::memory_order_acq_rel);
  }

  void reset() {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& e : table_) e = Entry{};
    last_ = 0;
    epoch_.fetch_add(1, std::memory_order_acq_rel);
  }

  const Config& config() const { return cfg_; }
  const Stats& stats() const { return stats_; }
  int threads() const { return nthreads_; }
  // the learnt successor of the call whose code address is key (0: none)
  uintptr_t next_of(uintptr_t key) {
    std::lock_guard<std::mutex> lk(mu_);
    const Entry& e = table_[slot(key)];
    return e.key == key ? e.next.key() : 0;
  }

  // Wait until no prefetch job is running (tests / benchmarks).
  void drain() {
    for (int i = 0; i < nthreads_; ++i)
      while (workers_[i].busy.load(std::memory_order_acquire)) std::this_thread::yield();
  }

 private:
  struct Entry {
    uintptr_t key = 0;
    OpWeights next;
  };
  struct alignas(64) Worker {
    std::atomic<uint32_t> word{0};   // bumped per job (futex word)
    std::atomic<bool> sleeping{false};
    std::atomic<bool> busy{false};
    int cpu = -1;
    std::mutex mu;
    Job job;
  };

  Prefetcher() {
    const char* e = std::getenv("NYBBLE_CPU_PREFETCH");
    if (e && (!std::strcmp(e, "1") || !std::strcmp(e, "on") || !std::strcmp(e, "true"))) cfg_.enabled = true;
    if ((e = std::getenv("NYBBLE_CPU_PREFETCH_PACE_GBPS")) && *e) cfg_.pace_gbps = std::atof(e);
    if ((e = std::getenv("NYBBLE_CPU_PREFETCH_BYTES")) && *e) cfg_.cap = std::atoll(e);
    if ((e = std::getenv("NYBBLE_CPU_PREFETCH_SPIN_US")) && *e) cfg_.spin_us = std::atoi(e);
    if ((e = std::getenv("NYBBLE_CPU_PREFETCH_HINT")) && *e) {
      const std::string h(e);
      cfg_.hint = h == "t0" ? kT0 : h == "t1" ? kT1 : h == "t2" ? kT2 : h == "nta" ? kNta : h == "w" ? kW : cfg_.hint;
    }
  }

  static int slot(uintptr_t key) { return static_cast<int>((key >> 6) * 0x9E3779B97F4A7C15ull >> 54) & (kTableSize - 1); }

  void start_threads() {  // under start_mu_
    if (owner_pid_ == getpid()) return;
    owner_pid_ = getpid();  // (a forked child starts its own)
    nthreads_ = 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return;
    for (int c = 0; c < CPU_SETSIZE && nthreads_ < kMaxThreads; ++c) {
      if (!CPU_ISSET(c, &set)) continue;
      Worker& wk = *new (&workers_[nthreads_]) Worker();  // fresh state (a forked child's copy may be mid-job)
      wk.cpu = c;
      std::thread t(&Prefetcher::worker_loop, this, &wk);
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      pthread_setaffinity_np(t.native_handle(), sizeof(one), &one);
      t.detach();
      ++nthreads_;
    }
    if (nthreads_ < 2) nthreads_ = 0;  // one CPU: nothing to overlap with
  }

  void post(const Job& job) {
    if (owner_pid_ != getpid()) {
      std::lock_guard<std::mutex> lk(start_mu_);
      start_threads();
    }
    const int cur = sched_getcpu();
    Worker* wk = nullptr;
    for (int i = 0; i < nthreads_; ++i)
      if (workers_[i].cpu != cur) {
        wk = &workers_[i];
        break;
      }
    if (!wk) {
      stats_.no_thread.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(wk->mu);
      wk->job = job;
    }
    stats_.posted.fetch_add(1, std::memory_order_relaxed);
    wk->word.fetch_add(1, std::memory_order_acq_rel);
    if (wk->sleeping.load(std::memory_order_acquire)) futex(&wk->word, FUTEX_WAKE_PRIVATE, 1);
  }

  void worker_loop(Worker* wk) {
    uint32_t seen = wk->word.load(std::memory_order_acquire);
    for (;;) {
      // wait for a new job: spin for spin_us, then sleep on the futex
      if (wk->word.load(std::memory_order_acquire) == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        const int spin = cfg_.spin_us;
        for (int i = 0; spin > 0 && wk->word.load(std::memory_order_acquire) == seen; ++i) {
#if defined(__x86_64__)
          __builtin_ia32_pause();
#endif
          if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(spin)) break;
        }
        while (wk->word.load(std::memory_order_acquire) == seen) {
          wk->sleeping.store(true, std::memory_order_seq_cst);
          if (wk->word.load(std::memory_order_seq_cst) == seen) futex(&wk->word, FUTEX_WAIT_PRIVATE, seen);
          wk->sleeping.store(false, std::memory_order_relaxed);
        }
      }
      seen = wk->word.load(std::memory_order_acquire);
      Job job;
      {
        std::lock_guard<std::mutex> lk(wk->mu);
        job = wk->job;
      }
      wk->busy.store(true, std::memory_order_release);
      const auto t0 = std::chrono::steady_clock::now();
      run(job);
      stats_.busy_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count(),
                               std::memory_order_relaxed);
      wk->busy.store(false, std::memory_order_release);
    }
  }

  // The first `cap` bytes of the call's arrays, split alike over every array and over its two
  // halves, line by line in both halves alternately; stops when a newer call has started.
  void run(const Job& job) {
    int64_t total = 0;
    for (int i = 0; i < job.w.n; ++i) total += job.w.r[i].bytes;
    if (total <= 0) return;
    const double frac = job.cap >= total ? 1.0 : static_cast<double>(job.cap) / static_cast<double>(total);
    long long issued = 0;
    bool cancelled = false;
    const auto t0 = std::chrono::steady_clock::now();
    int64_t sent = 0;  // bytes issued so far (pacing)
    for (int i = 0; i < job.w.n && !cancelled; ++i) {
      const Region& r = job.w.r[i];
      const int64_t half = ((r.bytes / 2) + kLine - 1) & ~(kLine - 1);
      const int64_t len = static_cast<int64_t>(static_cast<double>(half) * frac + kLine - 1) & ~(kLine - 1);
      const char* a = reinterpret_cast<const char*>(r.p);
      const char* b = a + half;
      for (int64_t off = 0; off < len; off += 16 * kLine) {
        if (epoch_.load(std::memory_order_relaxed) != job.epoch) {
          cancelled = true;
          break;
        }
        if (job.pace_gbps > 0) {  // no faster than pace_gbps: wait until the lines issued so far may have arrived
          const double due_ns = static_cast<double>(sent) / job.pace_gbps;
          while (std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() < due_ns) {
            if (epoch_.load(std::memory_order_relaxed) != job.epoch) break;
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
          }
        }
        const int64_t end = off + 16 * kLine < len ? off + 16 * kLine : len;
        sent += (end - off) * 2;
        for (int64_t o = off; o < end; o += kLine) {
          issue(a + o, job.hint);
          if (half + o < r.bytes) issue(b + o, job.hint);
        }
        issued += (end - off) / kLine * 2;
      }
    }
    stats_.lines.fetch_add(issued, std::memory_order_relaxed);
    (cancelled ? stats_.cancelled : stats_.done).fetch_add(1, std::memory_order_relaxed);
  }

  Config cfg_;
  Stats stats_;
  std::mutex mu_, start_mu_;
  Entry table_[kTableSize];
  uintptr_t last_ = 0;
  std::atomic<uint64_t> epoch_{0};
  Worker workers_[kMaxThreads];
  int nthreads_ = 0;
  pid_t owner_pid_ = 0;
};

}  // namespace prefetch
}  // namespace nybble
