// 64-byte aligned scratch memory with checked sizes. Defined out of line in
// buffer.cpp (baseline ISA) so that no ISA-specific copy of it can be linked in.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastconv {

// Multiplies non-negative sizes, throwing std::length_error on overflow.
int64_t checked_mul(int64_t a, int64_t b);

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
  float* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace fastconv
