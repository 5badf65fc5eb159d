#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// training: normalise with the batch's mean and biased variance, write them to
// save_mean / save_invstd, and (when running_* are given) update the running
// statistics with the unbiased variance. eval: use the running statistics.
// weight / bias may be null (1 and 0).
template <class T>
void batch_norm_forward(const BatchNormArgs& a, bool training, const T* x, const T* weight, const T* bias,
                        T* running_mean, T* running_var, T* y, T* save_mean, T* save_invstd);

// Gradients given the statistics the forward normalised with (the batch's in
// training, the running ones in eval). Any output may be null.
template <class T>
void batch_norm_backward(const BatchNormArgs& a, bool training, const T* grad_y, const T* x, const T* weight,
                         const T* mean, const T* invstd, T* grad_x, T* grad_w, T* grad_b);

}  // namespace FC_NS
}  // namespace fastconv
