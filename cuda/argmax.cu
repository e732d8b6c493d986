// argmax.cu: bounded argmax, `torch.argmax(logits[:, :n_valid], dim=-1)` with NaN rows reported.
//
// For each row r of logits [rows, stride] (row-major, T = float / __half / __nv_bfloat16):
//     index[r] = the lowest i in 0..n_valid with logits[r, i] == max(logits[r, 0..n_valid])
//     max[r]   = that maximum, as float (exact: every T value is a float)       (optional, may be null)
// Entries n_valid..stride (the padded vocabulary) are never read. Ties go to the lowest index, as
// torch.argmax. A row of -inf answers index 0 (torch does too). NaN policy: a row whose valid part
// holds a NaN has no maximum; it gets index -1 (QK_ARGMAX_NAN_ROW) and max NaN, so the caller sees it
// instead of an arbitrary token. The results stay on the device: nothing synchronises.
//
// One block per row (grid = rows), blockDim.x a multiple of 32 (the host uses 1024). Each thread
// scans its strided share of the row once (16-byte vectors when the host found rows aligned, then a
// scalar tail up to n_valid), keeping (value, index, saw_nan); the block combines the per-thread
// results with warp shuffles and shared memory. The combine keeps the larger value and, on equal
// values, the lower index; that is associative and commutative on the exact values, so the answer is
// the same for any block size or order: deterministic and batch invariant.
// Row offsets are 64-bit (rows * stride passes 2^31 at 14134 rows of 151936).
#include "common.cuh"

#include <limits.h>

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

__device__ __forceinline__ ArgBest argmax_warp(ArgBest x) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        ArgBest o;
        o.v = __shfl_xor_sync(0xffffffffu, x.v, offset);
        o.i = __shfl_xor_sync(0xffffffffu, x.i, offset);
        o.nan = __shfl_xor_sync(0xffffffffu, static_cast<int>(x.nan), offset) != 0;
        x = argmax_combine(x, o);
    }
    return x;
}

template <typename T, bool VEC>
__device__ __forceinline__ void argmax_row(const T* __restrict__ logits, int* __restrict__ index,
                                           float* __restrict__ max_out, long long stride, int n_valid) {
    const T* row = logits + static_cast<long long>(blockIdx.x) * stride;
    ArgBest best{-INFINITY, INT_MAX, false};
    int tail_start = 0;
    if (VEC) {
        constexpr int N = Vec16<T>::N;
        const int n_vec = n_valid / N;
        for (int j = threadIdx.x; j < n_vec; j += blockDim.x) {
            const Vec16<T> x = load16(row + static_cast<long long>(j) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) argmax_take(best, to_float(x.v[k]), j * N + k);
        }
        tail_start = n_vec * N;
    }
    for (int i = tail_start + threadIdx.x; i < n_valid; i += blockDim.x) argmax_take(best, to_float(row[i]), i);

    __shared__ float part_v[MAX_BLOCK / WARP];
    __shared__ int part_i[MAX_BLOCK / WARP];
    __shared__ int part_nan[MAX_BLOCK / WARP];
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int n_warps = blockDim.x / WARP;
    best = argmax_warp(best);
    if (lane == 0) {
        part_v[warp] = best.v;
        part_i[warp] = best.i;
        part_nan[warp] = best.nan;
    }
    __syncthreads();
    if (warp == 0) {
        ArgBest x = lane < n_warps ? ArgBest{part_v[lane], part_i[lane], part_nan[lane] != 0}
                                   : ArgBest{-INFINITY, INT_MAX, false};
        x = argmax_warp(x);
        if (lane == 0) {
            index[blockIdx.x] = x.nan ? ARGMAX_NAN_ROW : x.i;
            if (max_out != nullptr) max_out[blockIdx.x] = x.nan ? __int_as_float(0x7fc00000) : x.v;
        }
    }
}

}  // namespace qk

// Entry points: argmax_<dtype>_<path>, path in {vec, scalar}; grid = (rows, 1, 1), block = (threads, 1, 1).
// `max_out` may be null.
#define QK_ARGMAX_ENTRY(NAME, T, VEC)                                                              \
    extern "C" __global__ void argmax_##NAME(const T* __restrict__ logits, int* __restrict__ index, \
                                             float* __restrict__ max_out, long long stride,        \
                                             int n_valid) {                                        \
        qk::argmax_row<T, VEC>(logits, index, max_out, stride, n_valid);                          \
    }

QK_ARGMAX_ENTRY(f32_vec, float, true)
QK_ARGMAX_ENTRY(f32_scalar, float, false)
QK_ARGMAX_ENTRY(f16_vec, __half, true)
QK_ARGMAX_ENTRY(f16_scalar, __half, false)
QK_ARGMAX_ENTRY(bf16_vec, __nv_bfloat16, true)
QK_ARGMAX_ENTRY(bf16_scalar, __nv_bfloat16, false)
