#include "core/threading.h"

#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace fastconv {
namespace {
std::atomic<int> g_threads{0};
}

int num_cores() { return omp_get_num_procs(); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : num_cores();
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

}  // namespace fastconv
