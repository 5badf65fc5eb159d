#include "core/buffer.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace fastconv {

int64_t checked_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) throw std::length_error("fastconv: negative size");
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    throw std::length_error("fastconv: size overflows 64-bit arithmetic");
  return a * b;
}

namespace {

constexpr int64_t kAlign = 64;
constexpr int64_t kPage = 4096;

int64_t round_up_to(int64_t v, int64_t m) {
  if (v > std::numeric_limits<int64_t>::max() - (m - 1)) throw std::length_error("fastconv: buffer size overflows");
  return (v + m - 1) / m * m;
}

void* raw_alloc(int64_t bytes) { return std::aligned_alloc(kAlign, static_cast<size_t>(bytes)); }

// The idle blocks, by size class. Each class's list is in release order, so its
// front is its oldest block and its back the most recently used (warmest) one.
class BlockCache {
 public:
  void* take(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = idle_.find(bytes);
    if (it == idle_.end() || it->second.empty()) {
      ++misses_;
      return nullptr;
    }
    void* p = it->second.back().p;
    it->second.pop_back();
    cached_ -= bytes;
    --blocks_;
    ++hits_;
    return p;
  }

  // Keeps p (false: the limit leaves no room, the caller frees it).
  bool keep(void* p, int64_t bytes) {
    std::vector<void*> evicted;
    bool kept = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes <= limit_) {
        shrink_to(limit_ - bytes, evicted);
        try {
          idle_[bytes].push_back(Idle{p, ++clock_});
          cached_ += bytes;
          ++blocks_;
          kept = true;
        } catch (const std::bad_alloc&) {  // no room for the bookkeeping: free the block
        }
      }
    }
    for (void* q : evicted) std::free(q);
    return kept;
  }

  // Sets the limit to new_limit (a negative one keeps it) and releases idle
  // blocks down to min(limit, target) bytes.
  void trim(int64_t new_limit, int64_t target) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (new_limit >= 0) limit_ = new_limit;
      shrink_to(std::min(limit_, target), evicted);
    }
    for (void* q : evicted) std::free(q);
  }

  CacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return CacheStats{limit_, cached_, blocks_, hits_, misses_};
  }

  // fork() holds the lock across the fork, so that the child never inherits it
  // taken by a thread that the child does not have.
  void before_fork() { mu_.lock(); }
  void after_fork() { mu_.unlock(); }

 private:
  struct Idle {
    void* p;
    uint64_t stamp;
  };

  // Drops the oldest idle blocks until at most `target` bytes are idle (mu_ held).
  void shrink_to(int64_t target, std::vector<void*>& evicted) {
    while (cached_ > target) {
      auto oldest = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it)
        if (!it->second.empty() && (oldest == idle_.end() || it->second.front().stamp < oldest->second.front().stamp))
          oldest = it;
      evicted.push_back(oldest->second.front().p);
      oldest->second.erase(oldest->second.begin());
      cached_ -= oldest->first;
      --blocks_;
      if (oldest->second.empty()) idle_.erase(oldest);
    }
  }

  std::mutex mu_;
  std::unordered_map<int64_t, std::vector<Idle>> idle_;
  int64_t limit_ = default_cache_limit();
  int64_t cached_ = 0, blocks_ = 0, hits_ = 0, misses_ = 0;
  uint64_t clock_ = 0;
};

// Never destroyed: arrays that Python frees during interpreter shutdown still
// return their blocks here.
BlockCache& cache() {
  static BlockCache* c = [] {
    auto* made = new BlockCache();
    pthread_atfork([] { cache().before_fork(); }, [] { cache().after_fork(); }, [] { cache().after_fork(); });
    return made;
  }();
  return *c;
}

std::atomic<bool> poison{false};

}  // namespace

void set_fill_poison(bool on) { poison.store(on); }
bool fill_poison() { return poison.load(); }

int64_t default_cache_limit() {
#if defined(FASTCONV_SANITIZE)
  return 0;
#else
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const int64_t cap = int64_t{4} << 30;
  if (pages <= 0 || page <= 0) return cap;
  return std::min(cap, static_cast<int64_t>(pages) / 4 * page);
#endif
}

int64_t block_bytes(int64_t bytes) {
  if (bytes < 0) throw std::length_error("fastconv: negative size");
  if (bytes < kCacheMinBytes) return round_up_to(std::max<int64_t>(bytes, 1), kAlign);
  int64_t top = kCacheMinBytes;  // the largest power of two <= bytes
  while (top <= bytes / 2) top *= 2;
  return round_up_to(bytes, std::max(kPage, top / 8));
}

void* cache_alloc(int64_t bytes) {
  const int64_t b = block_bytes(bytes);
  void* p = b >= kCacheMinBytes ? cache().take(b) : nullptr;
  if (!p) p = raw_alloc(b);
  if (!p && b >= kCacheMinBytes) {  // idle blocks of other sizes may be what is missing
    empty_cache();
    p = raw_alloc(b);
  }
  if (!p) throw std::bad_alloc();
  if (fill_poison()) std::memset(p, 0xFF, static_cast<size_t>(b));
  return p;
}

void cache_free(void* p, int64_t bytes) noexcept {
  if (!p) return;
  const int64_t b = block_bytes(bytes);
  if (b >= kCacheMinBytes && cache().keep(p, b)) return;
  std::free(p);
}

CacheStats cache_stats() { return cache().stats(); }

void set_cache_limit(int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("the cache limit must be >= 0 bytes, got " + std::to_string(bytes));
  cache().trim(bytes, bytes);
}

void empty_cache() { cache().trim(-1, 0); }

AlignedBuffer::AlignedBuffer(int64_t count, bool zero) {
  if (count <= 0) return;
  const int64_t bytes = checked_mul(count, static_cast<int64_t>(sizeof(float)));
  void* p = cache_alloc(bytes);
  if (zero) std::memset(p, 0, static_cast<size_t>(bytes));
  data_ = static_cast<float*>(p);
  size_ = count;
}

void AlignedBuffer::release() noexcept {
  cache_free(data_, size_ * static_cast<int64_t>(sizeof(float)));
  data_ = nullptr;
  size_ = 0;
}

AlignedBuffer::~AlignedBuffer() { release(); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

}  // namespace fastconv
