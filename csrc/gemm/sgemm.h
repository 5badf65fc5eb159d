#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

void sgemm(const GemmArgs& g);
// C = epilogue(0) for an empty reduction (k == 0).
void fill_epilogue(float* c, int64_t ldc, int64_t m, int64_t n, const Epilogue& epi);

}  // namespace FC_NS
}  // namespace fastconv
