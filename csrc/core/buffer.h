// 64-byte aligned memory with checked sizes, and the process-wide cache of large
// blocks behind it. Defined out of line in buffer.cpp (baseline ISA) so that no
// ISA-specific copy of it can be linked in.
//
// Why a cache: a training step allocates the same large arrays (activations,
// gradients, im2col and phase buffers) on every step. From the C library each
// such block is a fresh mmap whose pages the kernel must fault in and zero on
// first touch, about as costly as a memory-bound kernel's whole pass over them
// (ReLU's backward, max pooling's backward). Blocks of at least kCacheMinBytes
// are therefore kept on free and handed out again for the same size class;
// smaller ones go straight to the C library, whose heap already recycles them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastconv {

// Multiplies non-negative sizes, throwing std::length_error on overflow.
int64_t checked_mul(int64_t a, int64_t b);

// Blocks from this size up are cached.
constexpr int64_t kCacheMinBytes = int64_t{128} << 10;

// The size actually reserved for a request of `bytes`: a multiple of 64, and for
// cached sizes the next size class (classes are 1/8 of a power of two apart, at
// least a 4 KiB page), so that nearby sizes share blocks at ≤ 12.5 % waste.
int64_t block_bytes(int64_t bytes);

// A 64-byte aligned block of at least `bytes` bytes (its contents are undefined).
// Throws std::length_error for impossible sizes and std::bad_alloc when out of memory
// (after releasing the cache and trying again).
void* cache_alloc(int64_t bytes);
// Returns a block from cache_alloc(bytes) (the same `bytes`). Kept for reuse while
// the idle cached bytes stay within the limit; the oldest idle blocks are released
// to make room.
void cache_free(void* p, int64_t bytes) noexcept;

struct CacheStats {
  int64_t limit;          // the most idle bytes the cache keeps
  int64_t cached_bytes;   // idle bytes held now
  int64_t cached_blocks;  // idle blocks held now
  int64_t hits;           // cacheable requests served from the cache
  int64_t misses;         // cacheable requests that went to the C library
};
CacheStats cache_stats();
// Sets the limit (0 turns caching off) and releases idle blocks beyond it.
void set_cache_limit(int64_t bytes);
// The default limit: a quarter of physical memory, at most 4 GiB (0 in sanitizer
// builds, so that AddressSanitizer sees every use after free).
int64_t default_cache_limit();
// Releases every idle block to the C library.
void empty_cache();

// Testing aid: while set, every block cache_alloc hands out (cached or new) is
// filled with 0xFF bytes, a NaN in every float and double, so that a kernel that
// reads memory it never wrote shows up in its results.
void set_fill_poison(bool on);
bool fill_poison();

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Allocates `count` floats, zero-initialised if `zero` is set.
  // Throws std::length_error for impossible sizes and std::bad_alloc when out of memory.
  explicit AlignedBuffer(int64_t count, bool zero = false);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;

  float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  void release() noexcept;
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace fastconv
