// fastconv's thread count: one atomic value read at the start of each call and
// passed to OpenMP's num_threads clause, so no OpenMP global state is mutated.
#pragma once

namespace fastconv {

int num_cores();
int get_num_threads();
// Throws std::invalid_argument for n < 1.
void set_num_threads(int n);

}  // namespace fastconv
