#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// Runs the algorithm the Python layer chose (and checked applicable). float32
// 2-D convolutions have the direct and depthwise kernels; everything else (and
// float64 whatever the request) runs on the GEMM.
template <class T>
void conv_forward(const ConvForward<T>& f, ConvAlgo algo);

// The gradients that are asked for (non-null outputs). `depthwise` uses the
// dedicated 2-D depthwise kernel; otherwise the GEMM.
template <class T>
void conv_backward(const ConvBackward<T>& b, ConvAlgo algo);

// The floats of f's 3x3 filters transformed for the Winograd kernel (ConvForward::winograd_filters),
// and with `u` not null, writes them there (with streaming stores where they are large and `u` is
// 64-byte aligned). f needs only the channels, the weight and the threads. The layout is this
// ISA's; float64 has none (-1).
template <class T>
int64_t conv_winograd_filters(const ConvForward<T>& f, T* u);

}  // namespace FC_NS
}  // namespace fastconv
