// gemv.cuh: the decode GEMV's core, shared by gemv.cu (the plain projection) and decode.cu (the
// fused decode-step kernels), so that every one of them sums a row's products in the same order.
//
// gemv_dots: one warp computes NOUT output features (weight rows wrow[j], [K] each, Hugging Face's
// [out, in] layout) for rows 0..rows-1 of x [rows, K]. Lane l reads each weight row in 16-byte
// vectors l, l + 32, l + 64, ... and, for each row r, x's vector at the same k, accumulating with
// one fmaf per product in increasing k; the 32 lane sums are then added in a butterfly's order
// (pairs 16 apart, then 8, 4, 2, 1), by lane r for row r. Which products a lane sums and the order of every
// addition depend on K alone, never on the number of rows or a row's place among them: a row's
// result is the same bit for bit whatever the batch. The scalar path (K not a multiple of the
// vector, or an unaligned base) maps element k to lane (k / VEC) % 32 and sums in increasing k as
// well, so both paths give the same bits.
//
// decode.cu's kernels with a norm prologue stage the normalised rows in shared memory and call
// gemv_dots on them there.
#pragma once

#include "common.cuh"

namespace qk {

constexpr int GEMV_MAX_ROWS = 16;
constexpr int GEMV_WARPS = 8;
constexpr int GEMV_THREADS = GEMV_WARPS * WARP;

// x may be global or shared memory (gemv_stage_norm's rows). On return, out[j] in lane r < rows is
// the total of output j for row r.
template <typename T, bool VEC, int NOUT>
__device__ __forceinline__ void gemv_dots(const T* __restrict__ x, const T* const (&wrow)[NOUT], int rows, int k,
                                          float (&out)[NOUT]) {
    const int lane = threadIdx.x % WARP;
    constexpr int V = Vec16<T>::N;
    float acc[NOUT][GEMV_MAX_ROWS];
#pragma unroll
    for (int j = 0; j < NOUT; ++j) {
#pragma unroll
        for (int r = 0; r < GEMV_MAX_ROWS; ++r) acc[j][r] = 0.0f;
    }
    if (VEC) {
        const int nv = k / V;
        for (int v = lane; v < nv; v += WARP) {
            Vec16<T> wv[NOUT];
#pragma unroll
            for (int j = 0; j < NOUT; ++j) wv[j] = load16(wrow[j] + v * V);
#pragma unroll
            for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
                if (r < rows) {
                    const Vec16<T> xv = load16(x + static_cast<long long>(r) * k + v * V);
#pragma unroll
                    for (int e = 0; e < V; ++e) {
                        const float xe = to_float(xv.v[e]);
#pragma unroll
                        for (int j = 0; j < NOUT; ++j) acc[j][r] = fmaf(xe, to_float(wv[j].v[e]), acc[j][r]);
                    }
                }
            }
        }
    } else {
        const int nv = (k + V - 1) / V;
        for (int v = lane; v < nv; v += WARP) {
            const int k1 = min(v * V + V, k);
            for (int kk = v * V; kk < k1; ++kk) {
                float wk[NOUT];
#pragma unroll
                for (int j = 0; j < NOUT; ++j) wk[j] = to_float(wrow[j][kk]);
#pragma unroll
                for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
                    if (r < rows) {
                        const float xe = to_float(x[static_cast<long long>(r) * k + kk]);
#pragma unroll
                        for (int j = 0; j < NOUT; ++j) acc[j][r] = fmaf(xe, wk[j], acc[j][r]);
                    }
                }
            }
        }
    }
    // The 32 lane sums of each row, through shared memory: lane r adds row r's in the butterfly's
    // order (pairs 16 apart, then 8, 4, 2, 1: the bits warp_sum would leave in every lane), so
    // one warp barrier a output replaces 5 shuffles a row and output. Rows padded to 33 floats:
    // the writes (one row, 32 lanes) and the reads (32 rows, one element) are conflict free.
    __shared__ float red[GEMV_WARPS][GEMV_MAX_ROWS][WARP + 1];
    const int warp = threadIdx.x / WARP;
#pragma unroll
    for (int j = 0; j < NOUT; ++j) {
#pragma unroll
        for (int r = 0; r < GEMV_MAX_ROWS; ++r) {
            if (r < rows) red[warp][r][lane] = acc[j][r];
        }
        __syncwarp();
        float t[WARP];
        if (lane < rows) {
#pragma unroll
            for (int i = 0; i < WARP; ++i) t[i] = red[warp][lane][i];
#pragma unroll
            for (int i = 0; i < 16; ++i) t[i] += t[i + 16];
#pragma unroll
            for (int i = 0; i < 8; ++i) t[i] += t[i + 8];
#pragma unroll
            for (int i = 0; i < 4; ++i) t[i] += t[i + 4];
            t[0] += t[2];
            t[1] += t[3];
            t[0] += t[1];
        }
        out[j] = lane < rows ? t[0] : 0.0f;
        __syncwarp();  // red is rewritten for the next output
    }
}

}  // namespace qk
