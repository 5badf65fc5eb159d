#pragma once
#include <cstdint>

#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// y = f(x) over n elements; `alpha` is leaky_relu's negative slope.
template <class T>
void activation_forward(EltwiseKind kind, int64_t n, const T* x, T* y, double alpha, int threads);
// grad_x = f'(.) * grad_y. `saved` is the forward's output for sigmoid and tanh,
// its input for the others.
template <class T>
void activation_backward(EltwiseKind kind, int64_t n, const T* saved, const T* grad_y, T* grad_x, double alpha,
                         int threads);

// Softmax (or log-softmax) over the middle axis of x laid out (outer, dim, inner).
template <class T>
void softmax_forward(int64_t outer, int64_t dim, int64_t inner, const T* x, T* y, bool log, int threads);
// grad_x from the forward's output y: softmax y * (g - sum(g * y)); log-softmax g - exp(y) * sum(g).
template <class T>
void softmax_backward(int64_t outer, int64_t dim, int64_t inner, const T* y, const T* grad_y, T* grad_x, bool log,
                      int threads);

// Per-sample cross-entropy of logits (n, c, inner) against class indices (n, inner):
// (1 - eps) * -log p[target] + eps / c * sum(-log p). Ignored samples get 0.
// Returns false if a target is neither a class nor ignore_index.
template <class T>
bool cross_entropy_forward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target, T* loss,
                           int64_t ignore_index, double label_smoothing, int threads);
// grad_logits = (softmax - (1 - eps) * onehot - eps / c) * grad_loss per sample.
template <class T>
void cross_entropy_backward(int64_t n, int64_t c, int64_t inner, const T* logits, const int64_t* target,
                            const T* grad_loss, T* grad_logits, int64_t ignore_index, double label_smoothing,
                            int threads);

// Dropout with a counter-based generator: element i is kept iff hash(seed, i) >= p,
// so the mask depends on the seed alone, never on the thread count.
template <class T>
void dropout_forward(int64_t n, const T* x, T* y, uint8_t* mask, double p, uint64_t seed, int threads);
template <class T>
void dropout_backward(int64_t n, const T* grad_y, const uint8_t* mask, T* grad_x, double scale, int threads);

template <class T>
void add(int64_t n, const T* a, const T* b, T* y, int threads);

// One SGD step on n parameters p in place, with gradient `grad` and (with momentum)
// the momentum buffer `buf`, in one pass: torch.optim.SGD's rule, the
// hyper-parameters cast to T as numpy casts Python floats.
template <class T>
void sgd_step(int64_t n, T* p, const T* grad, T* buf, const SgdArgs& s, int threads);

}  // namespace FC_NS
}  // namespace fastconv
