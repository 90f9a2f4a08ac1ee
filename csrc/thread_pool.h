// Parallel regions of all CPU kernels, on one of two backends (picked once, at the first parallel call):
//  * "openmp": the OpenMP runtime already loaded in the process (torch's libgomp / libiomp5 / libomp),
//    found at run time (dl_iterate_phdr + dlsym of GOMP_parallel), neither linked nor included. The
//    kernels then run on the very threads torch's own ops use, which are still spinning after torch's
//    last op, so no second set of threads competes for the cores.
//  * "pool": a small persistent std::thread pool (thread_pool.cpp), used when no OpenMP runtime is
//    loaded, when NYBBLE_CPU_THREADS_BACKEND=pool, and in the child of a fork() made after this
//    library was loaded (the parent's OpenMP team threads do not exist there).
// NYBBLE_CPU_THREADS_BACKEND=auto|openmp|pool (default auto: openmp if found, else pool);
// nybble_threads_set_backend() (extern "C", for Python through ctypes) overrides it at run time.
#pragma once
#include <type_traits>
// Note: this header is included by the per-ISA translation units. Everything defined here has
// internal linkage (static / templates over TU-local types) so that no inline function compiled
// with AVX512 flags can be picked by the linker for a caller on another path.

namespace nybble {

using TaskFn = void (*)(void* ctx, int tid, int nthreads);

// Runs fn(ctx, tid, nthreads) for tid in [0, nthreads): tid 0 on the calling thread, the others on
// the backend's workers. nthreads is the number the fn calls see (the OpenMP runtime may give fewer
// than asked for, e.g. under OMP_THREAD_LIMIT; fn always gets the team's real size).
// skippable: fn hands out its work dynamically (any one call may do all of it), so the pool backend
// skips (does not wait for) the calls of workers that have not started when the caller's own call
// returns; the OpenMP backend always joins its team.
void parallel_run_raw(int nthreads, TaskFn fn, void* ctx, bool skippable);

// parallel_run(n, lambda(tid, nthreads)): every tid runs (static splits may rely on that).
template <class Fn>
static inline void parallel_run(int nthreads, Fn&& fn, bool skippable = false) {
  using T = typename std::remove_reference<Fn>::type;
  parallel_run_raw(nthreads, [](void* c, int tid, int n) { (*static_cast<T*>(c))(tid, n); },
                   const_cast<void*>(static_cast<const void*>(&fn)), skippable);
}

// parallel_dynamic(n, lambda()): fn takes its work from a shared counter until none is left; the
// caller returns as soon as the work is done (workers not yet started are skipped).
template <class Fn>
static inline void parallel_dynamic(int nthreads, Fn&& fn) {
  parallel_run(nthreads, [&](int, int) { fn(); }, true);
}

// Dynamic split: threads take chunks [lo, hi) of [0, total) from a shared counter until none is
// left, so a thread that the OS delays (shared cores) does not hold the others up.
// fn(lo, hi). Uses the __atomic builtins (no out-of-line std:: code in the ISA units).
template <class Fn>
static inline void parallel_chunks(int nthreads, long long total, long long chunk, Fn&& fn) {
  long long next = 0;
  if (chunk < 1) chunk = 1;
  const long long nchunks = (total + chunk - 1) / chunk;
  if (nthreads > nchunks) nthreads = static_cast<int>(nchunks < 1 ? 1 : nchunks);
  parallel_dynamic(nthreads, [&] {
    for (;;) {
      const long long lo = __atomic_fetch_add(&next, chunk, __ATOMIC_RELAXED);
      if (lo >= total) break;
      fn(lo, lo + chunk < total ? lo + chunk : total);
    }
  });
}

// Owned-range split: [0, total) is cut into nthreads contiguous ranges of whole chunks (equal
// work per thread); each thread takes chunks [lo, hi) in order from its own range first, so that it
// streams one long contiguous run of memory, then helps with the other ranges (taking their
// remaining chunks from the front), so that a thread the OS delays does not hold the others up
// and a team smaller than nthreads still does all the work. fn(lo, hi).
template <class Fn>
static inline void parallel_owned_chunks(int nthreads, long long total, long long chunk, Fn&& fn) {
  if (chunk < 1) chunk = 1;
  const long long nchunks = (total + chunk - 1) / chunk;
  if (nthreads > nchunks) nthreads = static_cast<int>(nchunks < 1 ? 1 : nchunks);
  if (nthreads > 64) nthreads = 64;
  struct alignas(64) Range {
    long long next, end;
  };
  Range ranges[64];
  for (int r = 0; r < nthreads; ++r) {
    ranges[r].next = nchunks * r / nthreads * chunk;
    const long long e = nchunks * (r + 1) / nthreads * chunk;
    ranges[r].end = e < total ? e : total;
  }
  const int nr = nthreads;
  parallel_run(nthreads, [&](int tid, int) {
    for (int q = 0; q < nr; ++q) {
      Range& rg = ranges[(tid + q) % nr];
      for (;;) {
        const long long lo = __atomic_fetch_add(&rg.next, chunk, __ATOMIC_RELAXED);
        if (lo >= rg.end) break;
        fn(lo, lo + chunk < rg.end ? lo + chunk : rg.end);
      }
    }
  }, true);
}

// Splits [0, total) into nthreads contiguous parts, in units of `align`; part tid -> [lo, hi).
static inline void split_range(long long total, int tid, int nthreads, long long align, long long* lo, long long* hi) {
  const long long units = (total + align - 1) / align;
  const long long per = units / nthreads, rem = units % nthreads;
  const long long u0 = tid * per + (tid < rem ? tid : rem);
  const long long u1 = u0 + per + (tid < rem ? 1 : 0);
  *lo = u0 * align < total ? u0 * align : total;
  *hi = u1 * align < total ? u1 * align : total;
}

}  // namespace nybble
