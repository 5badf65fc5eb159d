#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

// C = epilogue(A * B) (or C += A * B with g.accumulate), float or double.
template <class T>
void gemm(const GemmArgsT<T>& g);

}  // namespace FC_NS
}  // namespace fastconv
