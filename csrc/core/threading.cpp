#include "core/threading.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

namespace fastconv {
namespace {
std::atomic<int> g_threads{0};

// GNU OpenMP's thread pool does not survive fork(): a child whose parent ran a
// parallel region waits forever in its next one. A child process therefore runs
// fastconv's kernels on one thread (a one-thread region does not use the pool).
const bool g_fork_handler = [] {
  pthread_atfork(nullptr, nullptr, [] { g_threads.store(1, std::memory_order_relaxed); });
  return true;
}();
}  // namespace

int num_cores() { return omp_get_num_procs(); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : num_cores();
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

void parallel_copy(void* dst, const void* src, std::size_t bytes) {
  const int threads = static_cast<int>(std::max<std::size_t>(1, std::min<std::size_t>(get_num_threads(), bytes >> 16)));
#pragma omp parallel num_threads(threads)
  {
    const std::size_t t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
    // Slab boundaries on 64-byte lines, so no two threads write one cache line.
    const std::size_t lines = (bytes + 63) / 64;
    const std::size_t begin = std::min(bytes, lines * t / nt * 64), end = std::min(bytes, lines * (t + 1) / nt * 64);
    // memcpy in 128 KiB pieces: glibc switches to non-temporal stores for large copies,
    // which on some machines (this project's Zen 4 VMs) run below the cached-store rate.
    constexpr std::size_t kPiece = std::size_t(1) << 17;
    for (std::size_t off = begin; off < end; off += kPiece)
      std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off, std::min(kPiece, end - off));
  }
}

}  // namespace fastconv
