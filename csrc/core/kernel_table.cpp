// This ISA's entry in the dispatch table (compiled once per ISA).
#include "conv/conv.h"
#include "core/dispatch.h"
#include "eltwise/eltwise.h"
#include "gemm/gemm.h"
#include "norm/batch_norm.h"
#include "pool/pool.h"

namespace fastconv {
namespace FC_NS {

template <class T>
static KernelSet<T> kernel_set() {
  KernelSet<T> s;
  s.gemm = &gemm<T>;
  s.conv_forward = &conv_forward<T>;
  s.conv_backward = &conv_backward<T>;
  s.conv_winograd_filters = &conv_winograd_filters<T>;
  s.max_pool_forward = &max_pool_forward<T>;
  s.max_pool_backward = &max_pool_backward<T>;
  s.avg_pool_forward = &avg_pool_forward<T>;
  s.avg_pool_backward = &avg_pool_backward<T>;
  s.adaptive_pool_forward = &adaptive_pool_forward<T>;
  s.adaptive_avg_pool_backward = &adaptive_avg_pool_backward<T>;
  s.batch_norm_forward = &batch_norm_forward<T>;
  s.batch_norm_backward = &batch_norm_backward<T>;
  s.activation_forward = &activation_forward<T>;
  s.activation_backward = &activation_backward<T>;
  s.softmax_forward = &softmax_forward<T>;
  s.softmax_backward = &softmax_backward<T>;
  s.cross_entropy_forward = &cross_entropy_forward<T>;
  s.cross_entropy_backward = &cross_entropy_backward<T>;
  s.dropout_forward = &dropout_forward<T>;
  s.dropout_backward = &dropout_backward<T>;
  s.add = &add<T>;
  s.sgd_step = &sgd_step<T>;
  return s;
}

}  // namespace FC_NS

const KernelTable* FC_CAT(kernel_table_, FASTCONV_ISA)() {
  static const KernelTable table = {FC_XCAT_STR(FASTCONV_ISA), FC_NS::kernel_set<float>(),
                                    FC_NS::kernel_set<double>()};
  return &table;
}

}  // namespace fastconv
