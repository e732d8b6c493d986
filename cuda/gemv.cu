// gemv.cu: the decode projections, y = x W^T (+ b), for up to 32 rows of x (f16, bf16; 16 for f32)
// in one launch, every weight byte read once for all of them.
//
//   x [R, K] (T), W [N, K] (T, Hugging Face's [out, in]), b [N] (T, optional), y [R, N] (T, or f32)
//   y[r, n] = round_y( sum_k x[r, k] W[n, k]  +  b[n] )     FP32 products and sums, one rounding
//
// Block 256 (GEMV_WARPS = 8 features a block, warp u's feature blockIdx.x * 8 + u), grid
// ceil(N / 8); the sums are gemv.cuh's gemv_block_dots: tensor cores for f16/bf16 (the warps split
// K, their partials meet in a fixed tree), CUDA cores for f32 (one warp a feature, lanes split K,
// a butterfly's order). The order of every addition depends on K alone, never on R, on the row's
// place among them or on the grid, so a row's y is the same bit for bit whatever the batch (cuBLAS
// promises no such thing). f16/bf16 launches take gemv_mma_exchange_bytes(1, 1) = 9,216 bytes of
// dynamic shared memory.
#include "args.h"
#include "gemv.cuh"

namespace qk {

template <typename T, typename TY, bool VEC>
__device__ __forceinline__ void gemv(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                     TY* __restrict__ y, int rows, int k, int n) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int out = blockIdx.x * GEMV_WARPS + warp;
    const bool valid = out < n;  // past N a warp still takes part in the block's exchange
    const T* const wrow[1][1] = {{valid ? w + static_cast<long long>(out) * k : nullptr}};
    float sum[1][1];
    gemv_block_dots<T, VEC, 1>(x, wrow, rows, k, sum);
    if (valid && lane < rows) {
        const float bias = b == nullptr ? 0.0f : to_float(b[out]);
        y[static_cast<long long>(lane) * n + out] = from_float<TY>(sum[0][0] + bias);
    }
}

}  // namespace qk

// Entry points: gemv_<dtype>_<out>_<path>(QkGemvArgs: args.h), grid (ceil(N / 8), 1, 1), block
// (256, 1, 1), dynamic shared memory 9,216 bytes for f16/bf16; `b` may be null; rows in 1..=32
// (f32: 1..=16); a programmatic dependent launch is allowed
// (ptx.cuh: each thread hints its block's weight rows into L2, then waits for the kernel before
// it). No __launch_bounds__: with it ptxas holds the f32
// vector variant to 64 registers on sm_80 and spills 8 bytes (tests/kernels_build.rs); without,
// 64-72 and no spill.
#define QK_GEMV_ENTRY(NAME, T, TY, VEC)                                                                   \
    extern "C" __global__ void gemv_##NAME(const QkGemvArgs a) {                                          \
        qk::prefetch_rows_l2(static_cast<const T*>(a.w), blockIdx.x * 8LL, qk::GEMV_WARPS, a.n, a.k);     \
        qk::grid_dependency_wait();                                                                       \
        qk::grid_dependents_launch();                                                                     \
        qk::gemv<T, TY, VEC>(static_cast<const T*>(a.x), static_cast<const T*>(a.w),                      \
                             static_cast<const T*>(a.b), static_cast<TY*>(a.y), a.rows, a.k, a.n);        \
    }

QK_GEMV_ENTRY(f32_f32_vec, float, float, true)
QK_GEMV_ENTRY(f32_f32_scalar, float, float, false)
QK_GEMV_ENTRY(f16_f16_vec, __half, __half, true)
QK_GEMV_ENTRY(f16_f16_scalar, __half, __half, false)
QK_GEMV_ENTRY(f16_f32_vec, __half, float, true)
QK_GEMV_ENTRY(f16_f32_scalar, __half, float, false)
QK_GEMV_ENTRY(bf16_bf16_vec, __nv_bfloat16, __nv_bfloat16, true)
QK_GEMV_ENTRY(bf16_bf16_scalar, __nv_bfloat16, __nv_bfloat16, false)
QK_GEMV_ENTRY(bf16_f32_vec, __nv_bfloat16, float, true)
QK_GEMV_ENTRY(bf16_f32_scalar, __nv_bfloat16, float, false)
