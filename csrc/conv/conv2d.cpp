// conv2d entry for this ISA: runs the algorithm the Python layer chose (and
// checked applicable).
#include "conv/conv2d.h"

#include "conv/direct.h"
#include "conv/gemm_conv.h"

namespace fastconv {
namespace FC_NS {

// Below this many multiply-adds, starting a parallel region costs more than it saves.
constexpr int64_t kMinParallelMacs = 1 << 16;

void conv2d(const Conv2dArgs& args, ConvAlgo algo) {
  if (args.n == 0 || args.c_out == 0) return;
  Conv2dArgs a = args;
  const int64_t macs = a.n * a.c_out * a.h_out * a.w_out * (a.c_in / a.groups) * a.kh * a.kw;
  if (macs < kMinParallelMacs) a.threads = 1;
  switch (algo) {
    case ConvAlgo::direct: conv2d_direct(a); break;
    case ConvAlgo::im2col: conv2d_gemm(a, true); break;
    case ConvAlgo::pointwise: conv2d_gemm(a, false); break;
    case ConvAlgo::depthwise: conv2d_depthwise(a); break;
  }
}

}  // namespace FC_NS
}  // namespace fastconv
