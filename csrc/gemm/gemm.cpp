// Public GEMM entry for this ISA: strided operands, fused epilogue.
#include "gemm/gemm.h"

#include "gemm/driver.h"
#include "gemm/skinny.h"

namespace fastconv {
namespace FC_NS {

// C = epilogue(0) (or epilogue(C)) for an empty reduction (k == 0).
template <class T>
static void fill_epilogue(const GemmArgsT<T>& g) {
  using V = Vec<T>;
  constexpr int L = V::kWidth;
  for (int64_t i = 0; i < g.m; ++i) {
    T* row = g.c + i * g.ldc;
    for (int64_t j = 0; j < g.n; j += L) {
      const int lanes = static_cast<int>(imin(L, g.n - j));
      const V start = g.accumulate ? V::load_partial(row + j, lanes) : V::zero();
      apply_epilogue(start, g.epi, i, j, lanes).store_partial(row + j, lanes);
    }
  }
}

template <class T>
void gemm(const GemmArgsT<T>& g) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    fill_epilogue(g);
    return;
  }
  if (skinny_applies(g)) {
    skinny_gemm(g);
    return;
  }
  gemm_parallel(g.m, g.n, g.k, PackAStrided<T>{g.a, g.a_rs, g.a_cs}, PackBStrided<T>{g.b, g.b_rs, g.b_cs}, g.c, g.ldc,
                g.epi, g.threads, g.accumulate);
}

template void gemm<float>(const GemmArgsT<float>&);
template void gemm<double>(const GemmArgsT<double>&);

}  // namespace FC_NS
}  // namespace fastconv
