// Public GEMM entry for this ISA: strided operands, fused epilogue.
#include "gemm/gemm.h"

#include "gemm/driver.h"
#include "gemm/skinny.h"

namespace fastconv {
namespace FC_NS {

template <class T>
void gemm(const GemmArgsT<T>& g) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    epilogue_columns(g, 0, g.n, g.accumulate);  // an empty reduction: epilogue(0) or epilogue(C)
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
