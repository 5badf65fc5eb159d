#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// training: normalise with the batch's mean and biased variance, write them to
// save_mean / save_invstd, and (when running_* are given) update the running
// statistics with the unbiased variance. eval: use the running statistics.
// weight / bias may be null (1 and 0). `act` (ReLU or ReLU6) is applied to y
// in the same pass.
template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd, Activation act);

// Gradients given the statistics the forward normalised with (the batch's in
// training, the running ones in eval). Any output may be null. With `act`, the
// forward applied that activation and `y` is its output: grad_y passes only
// where the activation's slope is 1 (ReLU: y > 0; ReLU6: 0 < y < 6).
template <class T>
void batch_norm_backward(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b, Activation act,
                         const T* y);

}  // namespace FC_NS
}  // namespace fastconv
