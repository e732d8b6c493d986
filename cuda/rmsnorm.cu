// rmsnorm.cu: RMSNorm and fused residual-add + RMSNorm, as transformers' Qwen2RMSNorm computes them.
//
// PyTorch (transformers/models/qwen2/modeling_qwen2.py, Qwen2RMSNorm.forward):
//     input_dtype = hidden_states.dtype
//     hidden_states = hidden_states.to(torch.float32)
//     variance = hidden_states.pow(2).mean(-1, keepdim=True)
//     hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
//     return self.weight * hidden_states.to(input_dtype)
// and the decoder layer's residual add before it, in the storage dtype:
//     hidden_states = residual + hidden_states
//
// Shapes (row-major, T = storage dtype, one of float / __half / __nv_bfloat16):
//     x        [rows, hidden]   input
//     residual [rows, hidden]   fused variant only: read, replaced by T(x + residual), then normalised
//     weight   [hidden]
//     y        [rows, hidden]   output
//
// Per row:  r = fused ? T(x + residual) : x                   (T(.) = round to nearest even in T)
//           sum = sum over the row of float(r)^2              (FP32, one fmaf a square)
//           inv = 1 / sqrt(sum / hidden + eps)                (FP64, rounded once to FP32: rmsnorm.cuh)
//           y = T(float(w) * float(T(float(r) * inv)))         (two roundings, as PyTorch does in 16-bit)
// In f32 storage every T(.) is the identity.
//
// Overflow, as PyTorch: the sum of squares is an FP32 sum. When it passes FLT_MAX (at or above
// 2^128 - 2^103 after rounding) it is +inf, inv = 1 / sqrt(inf) = 0, and the row is
// y = T(w * T(r * 0)) = +-0; a row holding an inf gives inf * 0 = NaN. transformers' FP32
// pow(2).mean() does the same, so this is the contract, not a scaled sum that would stay finite
// (src/spec/rmsnorm.rs gives the reasons and the boundary; the reference mirrors it). It takes an
// RMS of sqrt(FLT_MAX / hidden) (~4.7e17 at hidden 1536) to get there: bf16 and f32 inputs can, f16
// cannot. A row whose sum lies within the reduction's rounding error of the threshold may go
// either way, depending on the order of the partial sums.
//
// One block per row; blockDim.x = the row's work items (16-byte vectors or scalars) rounded up to a
// multiple of 32, at most 1024, so the reduction order is a function of `hidden` alone: a row gives
// bit-identical results whatever the number of rows in the launch. The vector path is used by the host
// only when hidden * sizeof(T) is a multiple of 16 and every pointer is 16-byte aligned.
// Row offsets are 64-bit (rows * hidden may pass 2^31).
#include "rmsnorm.cuh"

namespace qk {

template <typename T, bool VEC, bool FUSED>
__device__ __forceinline__ void rmsnorm_row(const T* __restrict__ x, T* __restrict__ residual,
                                            const T* __restrict__ weight, T* __restrict__ y,
                                            int hidden, float eps) {
    const size_t row_offset = static_cast<size_t>(blockIdx.x) * static_cast<size_t>(hidden);
    x += row_offset;
    y += row_offset;
    if (FUSED) residual += row_offset;

    // Pass 1: (fused) r = T(x + residual) written back to residual; sum of squares of r in FP32.
    float sum_sq = 0.0f;
    if (VEC) {
        constexpr int N = Vec16<T>::N;
        const int n_vec = hidden / N;
        for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
            Vec16<T> r = load16(x + static_cast<size_t>(i) * N);
            if (FUSED) {
                const Vec16<T> res = load16(residual + static_cast<size_t>(i) * N);
#pragma unroll
                for (int j = 0; j < N; ++j) r.v[j] = from_float<T>(to_float(r.v[j]) + to_float(res.v[j]));
                store16(residual + static_cast<size_t>(i) * N, r);
            }
#pragma unroll
            for (int j = 0; j < N; ++j) {
                const float f = to_float(r.v[j]);
                sum_sq = fmaf(f, f, sum_sq);
            }
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            T r = x[i];
            if (FUSED) {
                r = from_float<T>(to_float(r) + to_float(residual[i]));
                residual[i] = r;
            }
            const float f = to_float(r);
            sum_sq = fmaf(f, f, sum_sq);
        }
    }
    const float inv = inv_rms(block_sum(sum_sq), hidden, eps);  // 0 when the FP32 sum overflowed

    // Pass 2: y = T(w * T(r * inv)). In the fused variant r is re-read from residual: each thread
    // reads back exactly the elements it wrote in pass 1, so no barrier is needed for them.
    const T* src = FUSED ? residual : x;
    if (VEC) {
        constexpr int N = Vec16<T>::N;
        const int n_vec = hidden / N;
        for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
            const Vec16<T> r = load16(src + static_cast<size_t>(i) * N);
            const Vec16<T> w = load16(weight + static_cast<size_t>(i) * N);
            Vec16<T> out;
#pragma unroll
            for (int j = 0; j < N; ++j) {
                out.v[j] = from_float<T>(to_float(w.v[j]) * round_to<T>(to_float(r.v[j]) * inv));
            }
            store16(y + static_cast<size_t>(i) * N, out);
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            y[i] = from_float<T>(to_float(weight[i]) * round_to<T>(to_float(src[i]) * inv));
        }
    }
}

}  // namespace qk

// Entry points: rmsnorm_<dtype>_<path> and add_rmsnorm_<dtype>_<path>, path in {vec, scalar}.
// grid = (rows, 1, 1), block = (threads, 1, 1) as described above.
#define QK_RMSNORM_ENTRY(NAME, T, VEC)                                                              \
    extern "C" __global__ void rmsnorm_##NAME(const T* __restrict__ x, const T* __restrict__ weight, \
                                              T* __restrict__ y, int hidden, float eps) {          \
        qk::rmsnorm_row<T, VEC, false>(x, nullptr, weight, y, hidden, eps);                        \
    }                                                                                              \
    extern "C" __global__ void add_rmsnorm_##NAME(const T* __restrict__ x, T* __restrict__ residual, \
                                                  const T* __restrict__ weight, T* __restrict__ y, \
                                                  int hidden, float eps) {                         \
        qk::rmsnorm_row<T, VEC, true>(x, residual, weight, y, hidden, eps);                        \
    }

QK_RMSNORM_ENTRY(f32_vec, float, true)
QK_RMSNORM_ENTRY(f32_scalar, float, false)
QK_RMSNORM_ENTRY(f16_vec, __half, true)
QK_RMSNORM_ENTRY(f16_scalar, __half, false)
QK_RMSNORM_ENTRY(bf16_vec, __nv_bfloat16, true)
QK_RMSNORM_ENTRY(bf16_scalar, __nv_bfloat16, false)
