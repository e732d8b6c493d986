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
// Two stages, so that one row (batch 1 at decode: 151665 f32 = 593 KiB) is read by many SMs at once:
//   argmax_partial_<dtype>_<path>: grid (ARGMAX_CHUNKS, rows), 256 threads. Block
//     (c, r) scans entries [c * chunk, min((c + 1) * chunk, n_valid)) of row r, chunk = n_valid /
//     ARGMAX_CHUNKS rounded up to a multiple of 8 (the host computes it), so every chunk starts on a
//     16-byte boundary when the row does: 16-byte vectors over the chunk, then a scalar tail. It
//     writes the chunk's (value, index) to part_v / part_i [rows, ARGMAX_CHUNKS], index -1 if the
//     chunk saw a NaN; an empty chunk writes (-inf, INT_MAX).
//   argmax_finish: grid rows, block ARGMAX_CHUNKS: thread c reads chunk c's result, the block
//     combines them and writes index[r] and (optionally) max[r].
// Both combine with the same rule: the larger value and, on equal values, the lower index. That is
// associative and commutative on the exact values, so the answer does not depend on the block size,
// the chunking or the order: deterministic and batch invariant. Nothing synchronises with the host;
// the partials live in the caller's ArgmaxOutput, allocated once, so the step can be graph-captured.
// Row offsets are 64-bit (rows * stride passes 2^31 at 14134 rows of 151936).
#include "argmax.cuh"

#include <limits.h>

namespace qk {

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

constexpr int ARGMAX_CHUNKS = 256;

// The block-wide combine of `best`, returned to thread 0. blockDim.x a multiple of 32, <= 1024.
__device__ __forceinline__ ArgBest argmax_block(ArgBest best) {
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
    ArgBest x{-INFINITY, INT_MAX, false};
    if (warp == 0) {
        if (lane < n_warps) x = ArgBest{part_v[lane], part_i[lane], part_nan[lane] != 0};
        x = argmax_warp(x);
    }
    return x;
}

template <typename T, bool VEC>
__device__ __forceinline__ void argmax_partial(const T* __restrict__ logits, float* __restrict__ part_v,
                                               int* __restrict__ part_i, long long stride, int n_valid,
                                               int chunk) {
    const T* row = logits + static_cast<long long>(blockIdx.y) * stride;
    const int begin = blockIdx.x * chunk;  // chunk * ARGMAX_CHUNKS < n_valid + 8 * ARGMAX_CHUNKS: no overflow
    const int end = min(begin + chunk, n_valid);
    ArgBest best{-INFINITY, INT_MAX, false};
    int tail = begin;
    if (VEC && begin < end) {
        constexpr int N = Vec16<T>::N;
        const int n_vec = (end - begin) / N;
        for (int j = threadIdx.x; j < n_vec; j += blockDim.x) {
            const int i0 = begin + j * N;
            const Vec16<T> x = load16(row + i0);
#pragma unroll
            for (int k = 0; k < N; ++k) argmax_take(best, to_float(x.v[k]), i0 + k);
        }
        tail = begin + n_vec * N;
    }
    for (int i = tail + threadIdx.x; i < end; i += blockDim.x) argmax_take(best, to_float(row[i]), i);
    best = argmax_block(best);
    if (threadIdx.x == 0) {
        const long long at = static_cast<long long>(blockIdx.y) * ARGMAX_CHUNKS + blockIdx.x;
        part_v[at] = best.v;
        part_i[at] = best.nan ? ARGMAX_NAN_ROW : best.i;
    }
}

__device__ __forceinline__ void argmax_finish_row(const float* __restrict__ part_v, const int* __restrict__ part_i,
                                                  int* __restrict__ index, float* __restrict__ max_out) {
    const long long at = static_cast<long long>(blockIdx.x) * ARGMAX_CHUNKS + threadIdx.x;
    const int i = part_i[at];
    ArgBest best = i == ARGMAX_NAN_ROW ? ArgBest{-INFINITY, INT_MAX, true} : ArgBest{part_v[at], i, false};
    best = argmax_block(best);
    if (threadIdx.x == 0) {
        index[blockIdx.x] = best.nan ? ARGMAX_NAN_ROW : best.i;
        if (max_out != nullptr) max_out[blockIdx.x] = best.nan ? __int_as_float(0x7fc00000) : best.v;
    }
}

}  // namespace qk

// Entry points. argmax_partial_<dtype>_<path> (path in {vec, scalar}): grid = (ARGMAX_CHUNKS, rows),
// block = (threads, 1, 1), threads a multiple of 32. argmax_finish: grid = (rows, 1, 1),
// block = (ARGMAX_CHUNKS, 1, 1); `max_out` may be null.
#define QK_ARGMAX_ENTRY(NAME, T, VEC)                                                              \
    extern "C" __global__ void argmax_partial_##NAME(const T* __restrict__ logits,                 \
                                                     float* __restrict__ part_v,                   \
                                                     int* __restrict__ part_i, long long stride,   \
                                                     int n_valid, int chunk) {                     \
        qk::argmax_partial<T, VEC>(logits, part_v, part_i, stride, n_valid, chunk);                \
    }

QK_ARGMAX_ENTRY(f32_vec, float, true)
QK_ARGMAX_ENTRY(f32_scalar, float, false)
QK_ARGMAX_ENTRY(f16_vec, __half, true)
QK_ARGMAX_ENTRY(f16_scalar, __half, false)
QK_ARGMAX_ENTRY(bf16_vec, __nv_bfloat16, true)
QK_ARGMAX_ENTRY(bf16_scalar, __nv_bfloat16, false)

extern "C" __global__ void argmax_finish(const float* __restrict__ part_v, const int* __restrict__ part_i,
                                         int* __restrict__ index, float* __restrict__ max_out) {
    qk::argmax_finish_row(part_v, part_i, index, max_out);
}
