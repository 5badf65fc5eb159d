#pragma once
#include "core/params.h"
#include "simd/vec.h"

namespace fastconv {
namespace FC_NS {

void conv2d(const Conv2dArgs& a, ConvAlgo algo);

}  // namespace FC_NS
}  // namespace fastconv
