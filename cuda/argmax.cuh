// argmax.cuh: argmax.cu's rule for combining candidates (the larger value, on equal values the
// lower index; a NaN marks the row), shared by argmax.cu and the lm_head epilogue of decode.cu.
#pragma once

#include "common.cuh"

namespace qk {

constexpr int ARGMAX_NAN_ROW = -1;

struct ArgBest {
    float v;
    int i;
    bool nan;
};

// Fold candidate (v, i) into best. Candidates of one thread arrive in increasing i.
__device__ __forceinline__ void argmax_take(ArgBest& best, float v, int i) {
    if (v != v) {
        best.nan = true;
    } else if (v > best.v || (v == best.v && i < best.i)) {
        best.v = v;
        best.i = i;
    }
}

__device__ __forceinline__ ArgBest argmax_combine(ArgBest a, ArgBest b) {
    ArgBest out = (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
    out.nan = a.nan || b.nan;
    return out;
}

}  // namespace qk
