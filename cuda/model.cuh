// model.cuh: the decode step's position update for one row (model.cu's decode_advance describes
// it), shared by model.cu and the fused step's last kernel in decode.cu.
#pragma once

#include "common.cuh"

namespace qk {

__device__ __forceinline__ void decode_advance_row(int b, int* __restrict__ positions, int* __restrict__ lens,
                                                   int* __restrict__ slot_mapping,
                                                   const int* __restrict__ block_tables, int max_pages,
                                                   int page_size) {
    const int p = positions[b] + 1;
    positions[b] = p;
    lens[b] += 1;
    const int i = p >= 0 ? p / page_size : max_pages;
    const int page = i < max_pages ? block_tables[static_cast<long long>(b) * max_pages + i] : -1;
    slot_mapping[b] = page >= 0 ? page * page_size + p % page_size : 0x7fffffff;
}

}  // namespace qk
