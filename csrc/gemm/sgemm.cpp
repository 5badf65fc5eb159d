// Public SGEMM entry for this ISA: strided operands, fused epilogue.
#include "gemm/sgemm.h"

#include "gemm/driver.h"

namespace fastconv {
namespace FC_NS {

void fill_epilogue(float* c, int64_t ldc, int64_t m, int64_t n, const Epilogue& epi) {
  constexpr int L = VecF::kWidth;
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < n; j += L) {
      const int lanes = static_cast<int>(imin(L, n - j));
      const VecF r = apply_epilogue(VecF::zero(), epi, i, j, lanes);
      r.store_partial(row + j, lanes);
    }
  }
}

void sgemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    fill_epilogue(g.c, g.ldc, g.m, g.n, g.epi);
    return;
  }
  gemm_parallel(g.m, g.n, g.k, PackAStrided{g.a, g.a_rs, g.a_cs}, PackBStrided{g.b, g.b_rs, g.b_cs}, g.c, g.ldc, g.epi,
                g.threads);
}

}  // namespace FC_NS
}  // namespace fastconv
