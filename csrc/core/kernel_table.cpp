// This ISA's entry in the dispatch table (compiled once per ISA).
#include "conv/conv2d.h"
#include "core/dispatch.h"
#include "gemm/sgemm.h"

namespace fastconv {

const KernelTable* FC_CAT(kernel_table_, FASTCONV_ISA)() {
  static const KernelTable table = {FC_XCAT_STR(FASTCONV_ISA), &FC_NS::sgemm, &FC_NS::conv2d};
  return &table;
}

}  // namespace fastconv
