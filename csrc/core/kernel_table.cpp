// This ISA's entry in the dispatch table (compiled once per ISA).
#include "conv/conv.h"
#include "core/dispatch.h"
#include "gemm/gemm.h"

namespace fastconv {
namespace FC_NS {

template <class T>
static KernelSet<T> kernel_set() {
  KernelSet<T> s;
  s.gemm = &gemm<T>;
  s.conv_forward = &conv_forward<T>;
  s.conv_backward = &conv_backward<T>;
  return s;
}

}  // namespace FC_NS

const KernelTable* FC_CAT(kernel_table_, FASTCONV_ISA)() {
  static const KernelTable table = {FC_XCAT_STR(FASTCONV_ISA), FC_NS::kernel_set<float>(),
                                    FC_NS::kernel_set<double>()};
  return &table;
}

}  // namespace fastconv
