#include "core/buffer.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

namespace fastconv {

int64_t checked_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) throw std::length_error("fastconv: negative size");
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    throw std::length_error("fastconv: size overflows 64-bit arithmetic");
  return a * b;
}

AlignedBuffer::AlignedBuffer(int64_t count, bool zero) {
  if (count <= 0) return;
  const int64_t bytes = checked_mul(count, static_cast<int64_t>(sizeof(float)));
  constexpr int64_t kAlign = 64;
  if (bytes > std::numeric_limits<int64_t>::max() - kAlign)
    throw std::length_error("fastconv: buffer size overflows");
  const auto rounded = static_cast<size_t>((bytes + kAlign - 1) / kAlign * kAlign);
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) throw std::bad_alloc();
  if (zero) std::memset(p, 0, rounded);
  data_ = static_cast<float*>(p);
  size_ = count;
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

}  // namespace fastconv
