// fastconv's thread count: one atomic value read at the start of each call and
// passed to OpenMP's num_threads clause, so no OpenMP global state is mutated.
#pragma once
#include <cstddef>

namespace fastconv {

int num_cores();
int get_num_threads();
// Throws std::invalid_argument for n < 1.
void set_num_threads(int n);

// memcpy split into one contiguous slab per thread (fastconv's thread count): the
// benchmark's probe of the machine's copy bandwidth, the limit of memory-bound ops.
void parallel_copy(void* dst, const void* src, std::size_t bytes);

}  // namespace fastconv
