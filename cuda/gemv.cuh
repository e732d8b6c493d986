// gemv.cuh: the decode GEMV's core, shared by gemv.cu (the plain projection) and decode.cu (the
// fused decode-step kernels), so that every one of them sums a row's products in the same order.
//
// A block of GEMV_WARPS (8) warps computes 8 NT units (NT = 1, or 4 for a wide block; below); a
// unit is NOUT output features (weight rows wrow[j], [K] each, Hugging Face's [out, in] layout),
// for rows 0..rows-1 of x [rows, K]. Warp u owns the block's units u, u + 8, ..., u + 8 (NT - 1):
// tile jj of the block is units 8 jj .. 8 jj + 7. Every warp calls gemv_block_dots with its units'
// rows (null past the last unit: it then reads no weight) and gets back, in lane r < rows, unit
// 8 jj + u's total for row r in out[jj][j]. Two cores:
//
// gemv_mma_dots (f16, bf16; up to GEMV_MMA_MAX_ROWS = 32 rows): tensor cores. A tile's 8 units
// are the n = 8 columns of mma.m16n8k16, x's rows its m = 16 rows (one or two m tiles), and K is
// cut in chunks of 32 that the warps take in turn (warp w: chunks w, w + 8, ...). In a chunk,
// thread (g = lane / 4, t = lane % 4) loads 16 bytes of unit g's weight row (of each tile) and of
// x rows g and g + 8 at the same k = 32 c + 8 t, and the chunk is two mma a tile: the first
// multiplies elements 8t + 0..3 of the 32, the second 8t + 4..7 (the mma's k order is a
// permutation of the chunk's, the same for x and W, so each mma still sums 16 true products).
// Each warp accumulates its chunks in its FP32 accumulators; the 8 warps' partials then meet in
// shared memory, where lane r of warp u adds its units' 8 partials for row r in a fixed tree.
// Which products an mma sums, the order of the mma and of the tree depend on K alone: never on
// the number of rows, a row's place among them, the grid or NT, so a row's result is the same bit
// for bit whatever the batch (the mma computes each output element from its own row and column;
// its rounding inside is the hardware's, the same for every row). With tensor cores the products
// of 32 rows cost next to nothing: the weights are read once a launch and the launch stays bound
// by their bytes.
//
// A wide block (NT = 4: gate/up past 8 rows of f16/bf16, the head always; src/ops/decode.rs
// chooses and says why) exists for the activations: every block reads all of x's rows (a norm
// prologue stages them) against its own units' weights, so at 32 rows a block of 8 units reads 4
// times as many bytes of x as of weight (2 for gate/up's two rows a unit); on tensor cores four
// tiles share each x fragment among 4 (or 8) weight fragments and cut that to a quarter, and a
// norm prologue runs once for 32 units. On CUDA cores (f32) a warp takes its 4 units one after
// another. A unit's sums are those of the narrow block, so the two give the same bits.
//
// gemv_fma_dots (f32, where a tensor core would round x and W to tf32; up to GEMV_FMA_MAX_ROWS =
// 16 rows): one warp per unit on CUDA cores. Lane l reads each weight row in 16-byte vectors l,
// l + 32, l + 64, ... and, for each row r, x's vector at the same k, accumulating with one fmaf
// per product in increasing k; the 32 lane sums are then added in a butterfly's order (pairs 16
// apart, then 8, 4, 2, 1), by lane r for row r. Again the order depends on K alone.
//
// Both have a scalar path (K not a multiple of the vector, or an unaligned base) that puts each
// element where the vector path puts it and sums in the same order, so the paths give the same
// bits. decode.cu's kernels with a norm prologue stage the normalised rows in shared memory and
// call gemv_block_dots on them there.
#pragma once

#include "common.cuh"

namespace qk {

constexpr int GEMV_WARPS = 8;
constexpr int GEMV_THREADS = GEMV_WARPS * WARP;
constexpr int GEMV_FMA_MAX_ROWS = 16;
constexpr int GEMV_MMA_MAX_ROWS = 32;
constexpr int GEMV_BATCH = 4;  // chunks of 32 k whose loads a narrow block's warp issues together
constexpr int GEMV_WIDE = 4;   // tiles of 8 units in a wide block (tensor cores)
// Rows one launch of any dtype takes at most (shared arrays indexed by row are this long).
constexpr int GEMV_MAX_ROWS = GEMV_MMA_MAX_ROWS;

// The shared memory gemv_mma_dots exchanges the warps' partials through, at the start of the
// launch's dynamic shared memory: [warp][j][tile][unit][MMA_ROW_STRIDE] floats. A unit's 32 rows
// are padded to 36 floats, so that the fragment stores (unit 2t or 2t + 1, row g: bank 8t + g) and
// the lane-per-row reads are free of bank conflicts.
constexpr int MMA_ROW_STRIDE = 36;
constexpr int gemv_mma_exchange_bytes(int nout, int nt) { return GEMV_WARPS * nout * nt * GEMV_WARPS * MMA_ROW_STRIDE * 4; }

// ---- the staged rows' layout --------------------------------------------------------------------

// decode.cu's kernels with a norm prologue stage x's normalised rows in shared memory, where the
// tensor-core path reads them 16 bytes a thread: thread (g, t) reads rows g and g + 8 at the same
// k. At the models' widths (896 and 1536 16-bit elements) a staged row is a multiple of 128 bytes,
// so rows g and g + 1, which share a quarter warp's phase, would meet in the same 16 banks: a
// 2-way conflict on every load past one row. So on that path the staged rows are swizzled: row r's
// 16-byte vector v is stored at vector v ^ 4 (r & 1) inside each full group of 8 vectors (128
// bytes), which puts the two rows of a phase in opposite halves of the banks; a last, partial
// group stays in place. The f32 path (a warp reads one row's consecutive vectors) and the scalar
// path stage and read rows unswizzled.
template <typename T, bool VEC>
__device__ __forceinline__ constexpr bool staged_swizzle() {
    return VEC && sizeof(T) == 2;
}
// Where row r's vector v (of nv) is stored when the rows are swizzled.
__device__ __forceinline__ int staged_vector(int r, int v, int nv) { return v < (nv & ~7) ? v ^ ((r & 1) << 2) : v; }

// ---- f32: CUDA cores ----------------------------------------------------------------------------

// x may be global or shared memory (gemv_stage_norm's rows). On return, out[j] in lane r < rows is
// the total of output j for row r.
template <typename T, bool VEC, int NOUT>
__device__ __forceinline__ void gemv_fma_dots(const T* __restrict__ x, const T* const (&wrow)[NOUT], int rows, int k,
                                              float (&out)[NOUT]) {
    const int lane = threadIdx.x % WARP;
    constexpr int V = Vec16<T>::N;
    float acc[NOUT][GEMV_FMA_MAX_ROWS];
#pragma unroll
    for (int j = 0; j < NOUT; ++j) {
#pragma unroll
        for (int r = 0; r < GEMV_FMA_MAX_ROWS; ++r) acc[j][r] = 0.0f;
    }
    if (VEC) {
        const int nv = k / V;
        for (int v = lane; v < nv; v += WARP) {
            Vec16<T> wv[NOUT];
#pragma unroll
            for (int j = 0; j < NOUT; ++j) wv[j] = load16(wrow[j] + v * V);
#pragma unroll
            for (int r = 0; r < GEMV_FMA_MAX_ROWS; ++r) {
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
                for (int r = 0; r < GEMV_FMA_MAX_ROWS; ++r) {
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
    __shared__ float red[GEMV_WARPS][GEMV_FMA_MAX_ROWS][WARP + 1];
    const int warp = threadIdx.x / WARP;
#pragma unroll
    for (int j = 0; j < NOUT; ++j) {
#pragma unroll
        for (int r = 0; r < GEMV_FMA_MAX_ROWS; ++r) {
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

// ---- f16 / bf16: tensor cores -------------------------------------------------------------------

// Elements k0 .. k0 + 7 of `row` as four 32-bit words (element 2i in word i's low half), zero
// where k0 + e >= k or row is null. The vector path needs k a multiple of 8 (so a vector is all
// inside or all past k) and a 16-byte aligned row.
template <typename T, bool VEC>
__device__ __forceinline__ void load8(const T* __restrict__ row, int k0, int k, uint32_t (&w)[4]) {
    static_assert(sizeof(T) == 2, "16-bit elements");
    if (VEC) {
        if (row != nullptr && k0 < k) {
            const Vec16<T> v = load16(row + k0);
            memcpy(w, &v, 16);
        } else {
            w[0] = w[1] = w[2] = w[3] = 0u;
        }
    } else {
        T e[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) e[i] = row != nullptr && k0 + i < k ? row[k0 + i] : from_float<T>(0.0f);
        memcpy(w, e, 16);
    }
}

// A warp's chunks of 32 k (w, w + 8, w + 16, ...) for NT tiles of units and MT m tiles of rows
// (2 past 16 rows; a template, so that the unrolled loops test nothing per tile); SWZ: x is staged
// rows, swizzled.
template <typename T, bool VEC, int NOUT, int NT, int MT, bool SWZ>
__device__ __forceinline__ void mma_chunks(const T* __restrict__ x, const T* const (&wg)[NT][NOUT], int rows, int k,
                                           float (&acc)[NT][NOUT][2][4]) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    // BATCH chunks a pass: all their loads are issued before the first of their mma, so a warp has
    // BATCH chunks of weights in flight (one alone would leave the DRAM stream waiting on each
    // round trip); a wide block's chunk already loads NT weight vectors, so it takes GEMV_BATCH /
    // NT chunks a pass and keeps the same bytes in flight. The chunks still meet the accumulators
    // in order: w, w + 8, w + 16, ...
    constexpr int BATCH = GEMV_BATCH / NT > 0 ? GEMV_BATCH / NT : 1;
    const int chunks = (k + 31) / 32;
    for (int c0 = warp; c0 < chunks; c0 += BATCH * GEMV_WARPS) {
        uint32_t wv[BATCH][NT][NOUT][4], xv[BATCH][MT][2][4];  // xv: [chunk][m tile][row g, g + 8]
#pragma unroll
        for (int u = 0; u < BATCH; ++u) {
            const int k0 = (c0 + u * GEMV_WARPS) * 32 + 8 * t;  // past k: zeros, nothing read
#pragma unroll
            for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
                for (int j = 0; j < NOUT; ++j) load8<T, VEC>(wg[jj][j], k0, k, wv[u][jj][j]);
            }
#pragma unroll
            for (int m = 0; m < MT; ++m) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = m * 16 + h * 8 + g;
                    const int kx = SWZ && k0 < k ? 8 * staged_vector(r, k0 / 8, k / 8) : k0;
                    load8<T, VEC>(r < rows ? x + static_cast<long long>(r) * k : nullptr, kx, k, xv[u][m][h]);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < BATCH; ++u) {
            if (c0 + u * GEMV_WARPS >= chunks) break;  // the warp's last chunks: uniform
#pragma unroll
            for (int m = 0; m < MT; ++m) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {  // elements 8t + 4 half + 0..3
                    const uint32_t a[4] = {xv[u][m][0][2 * half], xv[u][m][1][2 * half], xv[u][m][0][2 * half + 1],
                                           xv[u][m][1][2 * half + 1]};
#pragma unroll
                    for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
                        for (int j = 0; j < NOUT; ++j)
                            mma_m16n8k16<T>(acc[jj][j][m], a, wv[u][jj][j][2 * half], wv[u][jj][j][2 * half + 1]);
                    }
                }
            }
        }
    }
}

// The block's 8 NT units on tensor cores (header). Every thread of the block must call it (it has
// three block barriers); `red` is dynamic shared memory of gemv_mma_exchange_bytes(NOUT, NT) bytes,
// which may be the memory x is staged in (x is last read before the second barrier here); SWZ: x
// is staged rows, swizzled (staged_vector).
template <typename T, bool VEC, int NOUT, int NT, bool SWZ>
__device__ __forceinline__ void gemv_mma_dots(const T* __restrict__ x, const T* const (&wrow)[NT][NOUT], int rows,
                                              int k, float* red, float (&out)[NT][NOUT]) {
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    // Every warp needs every unit's rows: warp u publishes its units'. Stored unit-minor, so that
    // the 8 lanes' reads of one tile's pointers are 64 consecutive bytes (no bank conflict).
    __shared__ const T* s_wrow[NT][NOUT][GEMV_WARPS];
    if (lane == 0) {
#pragma unroll
        for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
            for (int j = 0; j < NOUT; ++j) s_wrow[jj][j][warp] = wrow[jj][j];
        }
    }
    __syncthreads();
    const T* wg[NT][NOUT];
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
        for (int j = 0; j < NOUT; ++j) wg[jj][j] = s_wrow[jj][j][g];
    }
    const int mtiles = rows > 16 ? 2 : 1;
    float acc[NT][NOUT][2][4];
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
        for (int j = 0; j < NOUT; ++j) {
#pragma unroll
            for (int m = 0; m < 2; ++m) acc[jj][j][m][0] = acc[jj][j][m][1] = acc[jj][j][m][2] = acc[jj][j][m][3] = 0.0f;
        }
    }
    if (mtiles == 2) {
        mma_chunks<T, VEC, NOUT, NT, 2, SWZ>(x, wg, rows, k, acc);
    } else {
        mma_chunks<T, VEC, NOUT, NT, 1, SWZ>(x, wg, rows, k, acc);
    }
    __syncthreads();  // every warp is past its reads of x, which may share red's memory
    // Fragment c: c[0], c[1] = (row g, units 2t, 2t + 1 of the tile); c[2], c[3] = (row g + 8, the
    // same units).
#pragma unroll
    for (int j = 0; j < NOUT; ++j) {
#pragma unroll
        for (int jj = 0; jj < NT; ++jj) {
            float* part = red + ((warp * NOUT + j) * NT + jj) * GEMV_WARPS * MMA_ROW_STRIDE;
#pragma unroll
            for (int m = 0; m < 2; ++m) {
                if (m < mtiles) {
                    const int r = m * 16 + g;
                    part[(2 * t) * MMA_ROW_STRIDE + r] = acc[jj][j][m][0];
                    part[(2 * t + 1) * MMA_ROW_STRIDE + r] = acc[jj][j][m][1];
                    part[(2 * t) * MMA_ROW_STRIDE + r + 8] = acc[jj][j][m][2];
                    part[(2 * t + 1) * MMA_ROW_STRIDE + r + 8] = acc[jj][j][m][3];
                }
            }
        }
    }
    __syncthreads();
    // Lane r of warp u: unit 8 jj + u's 8 partials for row r, added in a fixed tree (4 apart, 2, 1).
#pragma unroll
    for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
        for (int j = 0; j < NOUT; ++j) {
            float p[GEMV_WARPS];
            if (lane < rows) {
#pragma unroll
                for (int w = 0; w < GEMV_WARPS; ++w)
                    p[w] = red[(((w * NOUT + j) * NT + jj) * GEMV_WARPS + warp) * MMA_ROW_STRIDE + lane];
#pragma unroll
                for (int i = 0; i < 4; ++i) p[i] += p[i + 4];
                p[0] += p[2];
                p[1] += p[3];
                p[0] += p[1];
            }
            out[jj][j] = lane < rows ? p[0] : 0.0f;
        }
    }
}

// ---- the weights ahead of the wait --------------------------------------------------------------

// The L2 lines of weight rows [first, first + rows) of a [n, k] matrix (clamped to n), the block's
// threads taking every blockDim.x-th 128-byte line. A kernel calls it before it waits for the
// kernel ahead (griddepcontrol.wait): no kernel writes a weight, so the hint is safe while that
// kernel runs, and under a programmatic launch the weights' DRAM reads overlap its tail.
template <typename T>
__device__ __forceinline__ void prefetch_rows_l2(const T* w, long long first, int rows, long long n, long long k) {
    const long long last = min(first + rows, n);
    if (w == nullptr || first >= last) return;
    const char* p = reinterpret_cast<const char*>(w + first * k);
    const long long bytes = (last - first) * k * static_cast<long long>(sizeof(T));
    for (long long off = 128LL * threadIdx.x; off < bytes; off += 128LL * blockDim.x) prefetch_l2(p + off);
}

// ---- the one entry ------------------------------------------------------------------------------

// Warp u's units 8 jj + u (wrow[jj]: their NOUT weight rows, null past the last unit) for rows
// 0..rows-1 of x; out[jj][j] in lane r < rows. Every thread of the block must call it. f16/bf16
// read gemv_mma_exchange_bytes(NOUT, NT) bytes of dynamic shared memory. STAGED: x is rows staged
// by decode.cu's norm prologue (in the staged layout above), else x is plain [rows, k]. On CUDA
// cores (f32) a warp's units are one after another, each summed as in a narrow block.
template <typename T, bool VEC, int NOUT, bool STAGED = false, int NT = 1>
__device__ __forceinline__ void gemv_block_dots(const T* __restrict__ x, const T* const (&wrow)[NT][NOUT], int rows,
                                                int k, float (&out)[NT][NOUT]) {
    if constexpr (sizeof(T) == 4) {
#pragma unroll
        for (int jj = 0; jj < NT; ++jj) {
#pragma unroll
            for (int j = 0; j < NOUT; ++j) out[jj][j] = 0.0f;
            if (wrow[jj][0] != nullptr) gemv_fma_dots<T, VEC, NOUT>(x, wrow[jj], rows, k, out[jj]);  // warp-uniform
        }
    } else {
        gemv_mma_dots<T, VEC, NOUT, NT, STAGED && staged_swizzle<T, VEC>()>(x, wrow, rows, k, dynamic_shared<float>(), out);
    }
}

}  // namespace qk
