#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// Max pooling; `indices` (may be null) receives each maximum's flat position
// within its input plane, as PyTorch reports it. NaN wins (and propagates). A
// dilated window with no tap inside the input gives -inf at index -1.
template <class T>
void max_pool_forward(const PoolArgs& a, const T* x, T* y, int64_t* indices);
// grad_x = 0, then grad_x[plane][indices] += grad_y (index -1 is skipped). Returns false (having
// written only in-bounds entries) if an index lies outside its plane.
template <class T>
bool max_pool_backward(const PoolArgs& a, const T* grad_y, const int64_t* indices, T* grad_x);
// Average pooling with PyTorch's divisor rules (count_include_pad, divisor_override).
template <class T>
void avg_pool_forward(const PoolArgs& a, const T* x, T* y);
template <class T>
void avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x);
// Adaptive pooling: output o's window along an axis is [floor(o * in / out), ceil((o + 1) * in / out)).
template <class T>
void adaptive_pool_forward(const PoolArgs& a, bool max, const T* x, T* y, int64_t* indices);
template <class T>
void adaptive_avg_pool_backward(const PoolArgs& a, const T* grad_y, T* grad_x);

}  // namespace FC_NS
}  // namespace fastconv
