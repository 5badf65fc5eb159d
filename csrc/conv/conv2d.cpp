// conv2d entry for this ISA: runs the algorithm the Python layer chose (and
// checked applicable).
#include "conv/conv2d.h"

#include "conv/direct.h"
#include "conv/gemm_conv.h"

namespace fastconv {
namespace FC_NS {

void conv2d(const Conv2dArgs& a, ConvAlgo algo) {
  if (a.n == 0 || a.c_out == 0) return;
  switch (algo) {
    case ConvAlgo::direct: conv2d_direct(a); break;
    case ConvAlgo::im2col: conv2d_gemm(a, true); break;
    case ConvAlgo::pointwise: conv2d_gemm(a, false); break;
    case ConvAlgo::depthwise: conv2d_depthwise(a); break;
  }
}

}  // namespace FC_NS
}  // namespace fastconv
