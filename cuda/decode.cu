// decode.cu: the fused decode step. Each kernel is a GEMV of gemv.cuh (8 output units a block, or 32
// in a wide block; up to 32 rows of x on tensor cores for f16/bf16 and 16 on CUDA cores for f32,
// every weight byte read once for all rows, the reduction order fixed by K alone) with the work
// around it folded into a prologue and an epilogue, so that a decoder layer is five or six
// launches instead of twelve:
//
//   dec_qkv       xn = rmsnorm(resid) on the fly (input_layernorm), [q|k|v] = xn Wqkv^T + b, RoPE
//                 on q and k, q to q_out, k and v to the paged KV cache at the row's slot
//   (attention)   attention.cu's split kernel, and its combine when a row has several splits
//   dec_residual  resid += attn Wo^T (o_proj; also down_proj below)
//   dec_gate_up   xn = rmsnorm(resid) on the fly (post_attention_layernorm), act = silu(xn Wg^T) *
//                 (xn Wu^T): gate row i and up row i in one warp
//   dec_residual  resid += act Wdown^T
// and once a step, after the last layer:
//   dec_head      xn = rmsnorm(resid) (the final norm), logits = xn lm_head^T (f32), and each
//                 tile's bounded argmax of its 8 logits per row (the argmax's first stage)
//   dec_finish    the argmax's second stage over the tiles' candidates, then the row's position,
//                 length and next cache slot (model.cu's decode_advance), and the step's report
//                 (model.cuh: the tokens and status words, packed for one copy to the host)
//
// Rounding points, exactly transformers' Qwen2 code in the storage dtype T (and the unfused kernels'):
//   xn      = T(w * T(r * inv))                    rmsnorm.cu; inv summed in rmsnorm.cu's order
//   y       = T(sum_k xn_k W_nk + b_n)            FP32 products and sums, the bias in FP32, one rounding
//   q, k    = rope.cuh's rope_pair on (y_i, y_i+d/2), (cos, sin) rounded to T
//   act     = swiglu.cuh's swiglu_one(T(gate), T(up))
//   resid   = T(resid + T(y))                      the decoder layer's `residual + hidden_states`
//   logits  = FP32 sum (no rounding to T), as the f32 lm_head the model uses
// so the normalised activations, projections, rotated q/k, cache rows, activations and residuals
// equal, bit for bit, what rmsnorm/add_rmsnorm, gemv, rope_qkv and swiglu_fused compute one launch
// at a time. Rows are the decode batch; nothing a row computes depends on the other rows.
//
// Launches: grid (ceil(units / (8 NT)), 1, 1), block (256, 1, 1), NT = GEMV_WIDE for dec_head and
// the _wide entries, else 1; a unit is one output feature (a pair of features for dec_qkv: i and i + d/2 of one
// head; for dec_gate_up: gate i and up i). The norm prologue (every thread of the block) runs
// before any warp leaves: it stages x's rows in dynamic shared memory (rows * hidden elements,
// read from global memory once per block), finds each row's 1 / rms there and normalises them in
// place, which every warp's dot products then read. Dynamic shared memory: those rows, and at
// least gemv_mma_exchange_bytes(NOUT, NT) for f16/bf16 (the warps' partials, written over the
// staged rows once every warp has read them; NOUT = 2 for dec_qkv and dec_gate_up, 1 otherwise).
// Every warp of a block takes part in its dot products, a warp past the last unit with no weight
// row.
// dec_finish: grid (rows, 1, 1), block (256, 1, 1). Offsets are 64-bit.
#include "args.h"
#include "argmax.cuh"
#include "gemv.cuh"
#include "model.cuh"
#include "rope.cuh"
#include "rmsnorm.cuh"
#include "swiglu.cuh"

#include <limits.h>

namespace qk {

// The norm prologue. A kernel with one first copies x's rows into dynamic shared memory
// (gemv_stage_rows: the block's one read of them from global memory), then finds each row's 1 / rms
// there (gemv_norm_prologue, which sums the squares in rmsnorm.cu's order: its block of
// row_block_threads(items) threads, emulated here), then normalises the staged rows in place,
// x'[r, k] = T(w_norm[k] * T(x[r, k] * inv[r])) (gemv_norm_staged: rmsnorm.cu's output exactly,
// once per block, not once per output), where gemv_block_dots reads them. So its normalised
// activations equal the rmsnorm kernel's bit for bit.

// Where row r's item i (a 16-byte vector on the vector path, an element on the scalar one; items
// a row) is staged: in gemv.cuh's swizzled layout (staged_vector) where the tensor cores read them.
template <typename T, bool VEC>
__device__ __forceinline__ int staged_item(int r, int i, int items) {
    return staged_swizzle<T, VEC>() ? staged_vector(r, i, items) : i;
}

// xs[r, staged_item(r, i)] = x[r, i] for r < rows: the rows, as they are, in shared memory (16-byte
// aligned; rows * k elements), visible to every thread on return.
template <typename T, bool VEC>
__device__ __forceinline__ void gemv_stage_rows(const T* __restrict__ x, int rows, int k, T* xs) {
    constexpr int V = VEC ? Vec16<T>::N : 1;
    const int items = k / V;
    for (int idx = threadIdx.x; idx < rows * items; idx += blockDim.x) {
        const int r = idx / items, i = idx - r * items;
        const long long row = static_cast<long long>(r) * k;
        const long long to = row + static_cast<long long>(staged_item<T, VEC>(r, i, items)) * V;
        if (VEC) {
            *reinterpret_cast<Vec16<T>*>(xs + to) = load16(x + row + static_cast<long long>(i) * V);
        } else {
            xs[to] = x[row + i];
        }
    }
    __syncthreads();
}

// inv[r] = 1 / sqrt(mean(x[r, :]^2) + eps) for r < rows (shared memory, read after the barrier this
// ends with) from the staged rows xs, summed exactly as rmsnorm.cu sums one row: its block of B =
// row_block_threads(items) threads (items = K / VEC vectors on the vector path, K elements on the
// scalar one; B <= 1024) each summing items t, t + B, ... with fmaf, then block_sum's order (a
// butterfly per warp, then the warp sums by a butterfly in warp 0). This block of GEMV_THREADS
// plays B's thread t as thread t % GEMV_THREADS in pass t / GEMV_THREADS. Every thread of the
// block must call it.
template <typename T, bool VEC>
__device__ __forceinline__ void gemv_norm_prologue(const T* xs, int rows, int k, float eps, float* inv) {
    __shared__ float partial[MAX_BLOCK / WARP];
    constexpr int V = VEC ? Vec16<T>::N : 1;
    const int items = k / V;
    const int threads = min(max((items + WARP - 1) / WARP, 1), MAX_BLOCK / WARP) * WARP;
    const int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
    for (int r = 0; r < rows; ++r) {
        const T* xr = xs + static_cast<long long>(r) * k;
        for (int base = 0; base < threads; base += GEMV_THREADS) {
            const int t = base + static_cast<int>(threadIdx.x);
            float s = 0.0f;
            if (t < threads) {
                for (int i = t; i < items; i += threads) {
                    const T* item = xr + static_cast<long long>(staged_item<T, VEC>(r, i, items)) * V;
                    if (VEC) {
                        const Vec16<T> xv = *reinterpret_cast<const Vec16<T>*>(item);
#pragma unroll
                        for (int e = 0; e < Vec16<T>::N; ++e) {
                            const float f = to_float(xv.v[e]);
                            s = fmaf(f, f, s);
                        }
                    } else {
                        const float f = to_float(*item);
                        s = fmaf(f, f, s);
                    }
                }
            }
            s = warp_sum(s);
            if (lane == 0 && t < threads) partial[t / WARP] = s;
        }
        __syncthreads();
        if (warp == 0) {
            float y = lane < threads / WARP ? partial[lane] : 0.0f;
            y = warp_sum(y);
            if (lane == 0) inv[r] = inv_rms(y, k, eps);
        }
        __syncthreads();  // inv[r] is read by every warp; partial is rewritten for row r + 1
    }
}

// xs[r, i] = T(w_norm[i] * T(xs[r, i] * inv[r])) for r < rows, i < k, in place (each item where
// gemv_stage_rows put it), visible to every thread on return.
template <typename T, bool VEC>
__device__ __forceinline__ void gemv_norm_staged(const T* __restrict__ w_norm, const float* inv, int rows, int k,
                                                 T* xs) {
    constexpr int V = VEC ? Vec16<T>::N : 1;
    const int items = k / V;
    for (int idx = threadIdx.x; idx < rows * items; idx += blockDim.x) {
        const int r = idx / items, i = idx - r * items;
        T* at = xs + static_cast<long long>(r) * k + static_cast<long long>(staged_item<T, VEC>(r, i, items)) * V;
        const float ir = inv[r];
        if (VEC) {
            const Vec16<T> xv = *reinterpret_cast<const Vec16<T>*>(at), wv = load16(w_norm + static_cast<long long>(i) * V);
            Vec16<T> out;
#pragma unroll
            for (int e = 0; e < Vec16<T>::N; ++e) out.v[e] = from_float<T>(to_float(wv.v[e]) * round_to<T>(to_float(xv.v[e]) * ir));
            *reinterpret_cast<Vec16<T>*>(at) = out;
        } else {
            *at = from_float<T>(to_float(w_norm[i]) * round_to<T>(to_float(*at) * ir));
        }
    }
    __syncthreads();
}

// The whole norm prologue: rows 0..rows-1 of x normalised into dynamic shared memory (rows *
// hidden elements; the host sizes it), visible to every thread on return. Every thread calls it.
template <typename T, bool VEC>
__device__ __forceinline__ const T* normed_rows(const T* __restrict__ x, const T* __restrict__ w_norm, float eps,
                                                int rows, int hidden) {
    __shared__ float inv[GEMV_MAX_ROWS];
    T* xs = dynamic_shared<T>();
    gemv_stage_rows<T, VEC>(x, rows, hidden, xs);
    gemv_norm_prologue<T, VEC>(xs, rows, hidden, eps, inv);
    gemv_norm_staged<T, VEC>(w_norm, inv, rows, hidden, xs);
    return xs;
}

// q/k/v with the input norm, bias, RoPE and the cache write (rope.cu's rope_qkv semantics: a row
// whose position is outside 0..pos_limit or whose slot is at or past n_slots is flagged in *status
// and writes nothing; a negative slot skips the cache write only).
template <typename T, bool VEC>
__device__ __forceinline__ void dec_qkv(const T* __restrict__ x, const T* __restrict__ w_norm, float eps,
                                        const T* __restrict__ w, const T* __restrict__ b, int rows,
                                        int hidden, int heads, int kv_heads, int half,
                                        const int* __restrict__ positions, const int* __restrict__ slot_mapping,
                                        const float* __restrict__ inv_freq, unsigned* __restrict__ status,
                                        T* __restrict__ q_out, T* __restrict__ k_cache, T* __restrict__ v_cache,
                                        int pos_limit, int n_slots, int page_size, long long page_stride,
                                        long long head_stride, long long row_stride) {
    const T* xs = normed_rows<T, VEC>(x, w_norm, eps, rows, hidden);
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int unit = blockIdx.x * GEMV_WARPS + warp;
    const bool valid = unit < (heads + 2 * kv_heads) * half;  // past the last, the warp only takes part
    const int h = unit / half, i = unit % half, d = 2 * half;
    const long long n0 = static_cast<long long>(h) * d + i, n1 = n0 + half;
    const T* const wrow[1][2] = {{valid ? w + n0 * hidden : nullptr, valid ? w + n1 * hidden : nullptr}};
    float dots[1][2];
    gemv_block_dots<T, VEC, 2, true>(xs, wrow, rows, hidden, dots);
    const float (&acc)[2] = dots[0];
    if (!valid || lane >= rows) return;
    const int r = lane;
    const int pos = positions[r], slot = slot_mapping[r];
    const bool bad_pos = pos < 0 || pos >= pos_limit, bad_slot = slot >= n_slots;
    if (bad_pos || bad_slot) {
        if (unit == 0) atomicOr(status, (bad_pos ? ROPE_BAD_POSITION : 0u) | (bad_slot ? ROPE_BAD_SLOT : 0u));
        return;
    }
    const T y0 = from_float<T>(acc[0] + to_float(b[n0]));
    const T y1 = from_float<T>(acc[1] + to_float(b[n1]));
    float c = 0.0f, s = 0.0f;  // q and k heads rotate; v heads do not
    if (h < heads + kv_heads) rope_cos_sin<T>(pos, inv_freq[i], c, s);
    if (h < heads) {
        T* q = q_out + static_cast<long long>(r) * heads * d + static_cast<long long>(h) * d;
        rope_pair(y0, y1, c, s, q[i], q[i + half]);
        return;
    }
    if (slot < 0) return;  // padding: no cache write
    const long long page_base =
        static_cast<long long>(slot / page_size) * page_stride + static_cast<long long>(slot % page_size) * row_stride;
    if (h < heads + kv_heads) {
        T* kc = k_cache + page_base + static_cast<long long>(h - heads) * head_stride;
        rope_pair(y0, y1, c, s, kc[i], kc[i + half]);
    } else {
        T* vc = v_cache + page_base + static_cast<long long>(h - heads - kv_heads) * head_stride;
        vc[i] = y0;
        vc[i + half] = y1;
    }
}

// resid[r, n] = T(resid[r, n] + T(sum_k x[r, k] W[n, k])): o_proj and down_proj with the residual add.
template <typename T, bool VEC>
__device__ __forceinline__ void dec_residual(const T* __restrict__ x, const T* __restrict__ w,
                                             T* __restrict__ resid, int rows, int k, int n) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int out = blockIdx.x * GEMV_WARPS + warp;
    const bool valid = out < n;
    const T* const wrow[1][1] = {{valid ? w + static_cast<long long>(out) * k : nullptr}};
    float dots[1][1];
    gemv_block_dots<T, VEC, 1>(x, wrow, rows, k, dots);
    const float (&acc)[1] = dots[0];
    if (!valid || lane >= rows) return;
    T* y = resid + static_cast<long long>(lane) * n + out;
    *y = from_float<T>(to_float(*y) + round_to<T>(acc[0]));
}

// act[r, i] = swiglu(T(xn Wgu[i]^T), T(xn Wgu[I + i]^T)) with the post-attention norm, Wgu = [gate; up];
// NT tiles of 8 units a block (gemv.cuh).
template <typename T, bool VEC, int NT>
__device__ __forceinline__ void dec_gate_up(const T* __restrict__ x, const T* __restrict__ w_norm, float eps,
                                            const T* __restrict__ w, T* __restrict__ act, int rows, int hidden,
                                            int inter) {
    const T* xs = normed_rows<T, VEC>(x, w_norm, eps, rows, hidden);
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int first = blockIdx.x * GEMV_WARPS * NT + warp;  // the warp's unit in tile 0
    const T* wrow[NT][2];
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
        const int i = first + jj * GEMV_WARPS;
        wrow[jj][0] = i < inter ? w + static_cast<long long>(i) * hidden : nullptr;
        wrow[jj][1] = i < inter ? w + static_cast<long long>(inter + i) * hidden : nullptr;
    }
    float dots[NT][2];
    gemv_block_dots<T, VEC, 2, true, NT>(xs, wrow, rows, hidden, dots);
    if (lane >= rows) return;
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
        const int i = first + jj * GEMV_WARPS;
        const float (&acc)[2] = dots[jj];
        if (i < inter) act[static_cast<long long>(lane) * inter + i] = swiglu_one(from_float<T>(acc[0]), from_float<T>(acc[1]));
    }
}

// logits[r, n] = sum_k xn[r, k] W[n, k] (FP32) with the final norm, and per tile of 8 features
// (NT a block) and row the bounded argmax of the tile's logits (n < n_valid) into part_v / part_i
// [rows, ceil(n / 8)] (index ARGMAX_NAN_ROW when one was NaN; (-inf, INT_MAX) when the tile has no
// valid feature).
template <typename T, bool VEC, int NT>
__device__ __forceinline__ void dec_head(const T* __restrict__ x, const T* __restrict__ w_norm, float eps,
                                         const T* __restrict__ w, float* __restrict__ logits, int rows, int hidden,
                                         int n, int n_valid, float* __restrict__ part_v, int* __restrict__ part_i) {
    __shared__ float s_v[GEMV_WARPS][GEMV_MAX_ROWS];
    __shared__ int s_i[GEMV_WARPS][GEMV_MAX_ROWS];
    const T* xs = normed_rows<T, VEC>(x, w_norm, eps, rows, hidden);
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int first = blockIdx.x * GEMV_WARPS * NT + warp;  // the warp's feature in tile 0
    const int parts = (n + GEMV_WARPS - 1) / GEMV_WARPS;    // tiles in all: the candidates' row length
    const T* wrow[NT][1];
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
        const int out = first + jj * GEMV_WARPS;
        wrow[jj][0] = out < n ? w + static_cast<long long>(out) * hidden : nullptr;
    }
    float dots[NT][1];
    gemv_block_dots<T, VEC, 1, true, NT>(xs, wrow, rows, hidden, dots);  // every warp takes part
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
        const int out = first + jj * GEMV_WARPS;
        ArgBest best{-INFINITY, INT_MAX, false};
        if (out < n && lane < rows) {
            const float v = dots[jj][0];
            logits[static_cast<long long>(lane) * n + out] = v;
            if (out < n_valid) argmax_take(best, v, out);
        }
        if (lane < rows) {
            s_v[warp][lane] = best.v;
            s_i[warp][lane] = best.nan ? ARGMAX_NAN_ROW : best.i;
        }
        __syncthreads();
        const int tile = blockIdx.x * NT + jj;
        if (static_cast<int>(threadIdx.x) < rows && tile < parts) {
            const int r = threadIdx.x;
            ArgBest b{-INFINITY, INT_MAX, false};
            for (int j = 0; j < GEMV_WARPS; ++j) {
                b = s_i[j][r] == ARGMAX_NAN_ROW ? ArgBest{b.v, b.i, true} : argmax_combine(b, ArgBest{s_v[j][r], s_i[j][r], false});
            }
            const long long at = static_cast<long long>(r) * parts + tile;
            part_v[at] = b.v;
            part_i[at] = b.nan ? ARGMAX_NAN_ROW : b.i;
        }
        if (jj + 1 < NT) __syncthreads();  // s_v and s_i are rewritten for the next tile
    }
}

constexpr int FINISH_THREADS = 256;

// Row blockIdx.x: the argmax over its `parts` candidates into index[r]; then, when `advance`, the
// row's position, length and slot move on (decode_advance_row), and with `report` the row's part
// of the step's report is written (step_report_row).
__device__ __forceinline__ void dec_finish(const float* __restrict__ part_v, const int* __restrict__ part_i,
                                           int parts, int* __restrict__ index, int* __restrict__ positions,
                                           int* __restrict__ lens, int* __restrict__ slot_mapping,
                                           const int* __restrict__ block_tables, int max_pages, int page_size,
                                           int advance, unsigned* __restrict__ report,
                                           unsigned* __restrict__ embed_status, unsigned* __restrict__ rope_status,
                                           const unsigned* __restrict__ decode_status) {
    __shared__ float s_v[FINISH_THREADS];
    __shared__ int s_i[FINISH_THREADS];
    __shared__ int s_nan[FINISH_THREADS];
    const int r = blockIdx.x, t = threadIdx.x;
    ArgBest best{-INFINITY, INT_MAX, false};
    for (int c = t; c < parts; c += FINISH_THREADS) {
        const long long at = static_cast<long long>(r) * parts + c;
        const int i = part_i[at];
        best = i == ARGMAX_NAN_ROW ? ArgBest{best.v, best.i, true} : argmax_combine(best, ArgBest{part_v[at], i, false});
    }
    s_v[t] = best.v;
    s_i[t] = best.i;
    s_nan[t] = best.nan;
    __syncthreads();
    for (int stride = FINISH_THREADS / 2; stride > 0; stride /= 2) {
        if (t < stride) {
            const ArgBest o = argmax_combine(ArgBest{s_v[t], s_i[t], s_nan[t] != 0},
                                             ArgBest{s_v[t + stride], s_i[t + stride], s_nan[t + stride] != 0});
            s_v[t] = o.v;
            s_i[t] = o.i;
            s_nan[t] = o.nan;
        }
        __syncthreads();
    }
    if (t == 0) {
        const int token = s_nan[0] != 0 ? ARGMAX_NAN_ROW : s_i[0];
        index[r] = token;
        if (advance != 0) decode_advance_row(r, positions, lens, slot_mapping, block_tables, max_pages, page_size);
        step_report_row(r, token, report, embed_status, rope_status, decode_status);
    }
}

// The weight rows each kernel's block reads, hinted into L2 before its wait (prefetch_rows_l2).
// dec_qkv: the pairs (n0, n0 + d/2) of the block's first unit onwards (a block whose units cross
// a head hints some rows it does not read: a hint, never a read).
template <typename T> __device__ __forceinline__ void prefetch_qkv(const QkDecQkvArgs& a) {
    const long long unit = static_cast<long long>(blockIdx.x) * GEMV_WARPS, d = 2LL * a.half;
    const long long n0 = unit / a.half * d + unit % a.half, width = (a.heads + 2LL * a.kv_heads) * d;
    prefetch_rows_l2(static_cast<const T*>(a.w), n0, GEMV_WARPS, width, a.hidden);
    prefetch_rows_l2(static_cast<const T*>(a.w), n0 + a.half, GEMV_WARPS, width, a.hidden);
}
template <typename T, int NT> __device__ __forceinline__ void prefetch_gate_up(const QkDecGateUpArgs& a) {
    const T* w = static_cast<const T*>(a.w);
    const long long first = static_cast<long long>(blockIdx.x) * GEMV_WARPS * NT;
    prefetch_rows_l2(w, first, GEMV_WARPS * NT, a.inter, a.hidden);
    prefetch_rows_l2(w + static_cast<long long>(a.inter) * a.hidden, first, GEMV_WARPS * NT, a.inter, a.hidden);
}

}  // namespace qk

// Entry points: dec_<kernel>_<dtype>_<path>, path in {vec, scalar} (vec: every row of x and W and
// the norm weight 16-byte aligned and K a multiple of the vector), their wide blocks
// dec_gate_up_<f16|bf16>_<path>_wide (4 tiles of 8 units a block, gemv.cuh: for more than 8 rows;
// dec_head is always so wide; not q/k/v, o or down, whose 576 to 1536 units would leave a wide grid
// 18 to 48 blocks for 132 SMs), and dec_finish. Each takes its argument struct (args.h) by value, and each may be
// a programmatic dependent launch (ptx.cuh): every thread first hints its block's weight rows into
// L2 (they are nobody's output), then waits for the kernel before it, then lets the next one start.
#define QK_DECODE_ENTRY(NAME, T, VEC)                                                                    \
    extern "C" __global__ void dec_qkv_##NAME(const QkDecQkvArgs a) {                                   \
        qk::prefetch_qkv<T>(a);                                                                         \
        qk::grid_dependency_wait();                                                                     \
        qk::grid_dependents_launch();                                                                   \
        qk::dec_qkv<T, VEC>(static_cast<const T*>(a.x), static_cast<const T*>(a.w_norm), a.eps,          \
                            static_cast<const T*>(a.w), static_cast<const T*>(a.b), a.rows, a.hidden,     \
                            a.heads, a.kv_heads, a.half, a.positions, a.slot_mapping, a.inv_freq, a.status, \
                            static_cast<T*>(a.q_out), static_cast<T*>(a.k_cache), static_cast<T*>(a.v_cache), \
                            a.cache.pos_limit, a.cache.n_slots, a.cache.page_size, a.cache.page_stride,   \
                            a.cache.head_stride, a.cache.row_stride);                                     \
    }                                                                                                   \
    extern "C" __global__ void dec_residual_##NAME(const QkDecResidualArgs a) {                         \
        qk::prefetch_rows_l2(static_cast<const T*>(a.w), blockIdx.x * 8LL, qk::GEMV_WARPS, a.n, a.k);   \
        qk::grid_dependency_wait();                                                                     \
        qk::grid_dependents_launch();                                                                   \
        qk::dec_residual<T, VEC>(static_cast<const T*>(a.x), static_cast<const T*>(a.w),                \
                                 static_cast<T*>(a.resid), a.rows, a.k, a.n);                            \
    }                                                                                                   \
    QK_DECODE_GATE_UP_ENTRY(NAME, T, VEC, 1)                                                            \
    QK_DECODE_HEAD_ENTRY(NAME, T, VEC, qk::GEMV_WIDE)

// gate_up and head, NT tiles of 8 units a block (the head's always GEMV_WIDE; gate_up's NAME ends
// in _wide where NT is GEMV_WIDE).
#define QK_DECODE_GATE_UP_ENTRY(NAME, T, VEC, NT)                                                        \
    extern "C" __global__ void dec_gate_up_##NAME(const QkDecGateUpArgs a) {                            \
        qk::prefetch_gate_up<T, NT>(a);                                                                 \
        qk::grid_dependency_wait();                                                                     \
        qk::grid_dependents_launch();                                                                   \
        qk::dec_gate_up<T, VEC, NT>(static_cast<const T*>(a.x), static_cast<const T*>(a.w_norm), a.eps,      \
                                static_cast<const T*>(a.w), static_cast<T*>(a.act), a.rows, a.hidden,    \
                                a.inter);                                                                \
    }
#define QK_DECODE_HEAD_ENTRY(NAME, T, VEC, NT)                                                           \
    extern "C" __global__ void dec_head_##NAME(const QkDecHeadArgs a) {                                 \
        qk::prefetch_rows_l2(static_cast<const T*>(a.w), blockIdx.x * 8LL * NT, qk::GEMV_WARPS * NT, a.n, a.hidden); \
        qk::grid_dependency_wait();                                                                     \
        qk::grid_dependents_launch();                                                                   \
        qk::dec_head<T, VEC, NT>(static_cast<const T*>(a.x), static_cast<const T*>(a.w_norm), a.eps,         \
                             static_cast<const T*>(a.w), a.logits, a.rows, a.hidden, a.n, a.n_valid,      \
                             a.part_v, a.part_i);                                                        \
    }

QK_DECODE_ENTRY(f32_vec, float, true)
QK_DECODE_ENTRY(f32_scalar, float, false)
QK_DECODE_ENTRY(f16_vec, __half, true)
QK_DECODE_ENTRY(f16_scalar, __half, false)
QK_DECODE_ENTRY(bf16_vec, __nv_bfloat16, true)
QK_DECODE_ENTRY(bf16_scalar, __nv_bfloat16, false)
QK_DECODE_GATE_UP_ENTRY(f16_vec_wide, __half, true, qk::GEMV_WIDE)
QK_DECODE_GATE_UP_ENTRY(f16_scalar_wide, __half, false, qk::GEMV_WIDE)
QK_DECODE_GATE_UP_ENTRY(bf16_vec_wide, __nv_bfloat16, true, qk::GEMV_WIDE)
QK_DECODE_GATE_UP_ENTRY(bf16_scalar_wide, __nv_bfloat16, false, qk::GEMV_WIDE)

extern "C" __global__ void dec_finish(const QkDecFinishArgs a) {
    qk::grid_dependency_wait();
    qk::grid_dependents_launch();
    qk::dec_finish(a.part_v, a.part_i, a.parts, a.index, a.adv.positions, a.adv.lens, a.adv.slot_mapping,
                   a.adv.block_tables, a.adv.max_pages, a.adv.page_size, a.advance, a.report.out,
                   a.report.embed_status, a.report.rope_status, a.report.decode_status);
}
