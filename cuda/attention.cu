// attention.cu: GQA attention with FP32 logits and softmax, prefill (causal) and decode (KV cache).
//
// PyTorch (transformers/models/qwen2/modeling_qwen2.py, eager_attention_forward), per query head h
// with kv head h / group (group = heads / kv_heads, repeat_kv):
//     attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling      # scaling = D^-0.5
//     attn_weights = attn_weights + causal_mask
//     attn_weights = softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
//     attn_output = torch.matmul(attn_weights, value_states)
// Eager rounds q k^T to the storage dtype before scaling (in FP16 that product overflows on
// VibeThinker's layer 0) and rounds p and p v. Here every intermediate is FP32 and the output is
// rounded once:
//     logit[s] = f32(q . k_s) * D^-0.5        s <= position of the query (causal)
//     o        = T( sum_s exp(logit[s] - max) v_s / sum_s exp(logit[s] - max) )
// expf (not __expf), IEEE division. Query t of T new tokens sits at position S - T + t.
//
// Layouts (row-major, T = storage dtype, element offsets 64-bit):
//     q, o         [rows, heads, D]           rows = new tokens (prefill) or sequences (decode)
//     k, v         key s of kv head g at k + key_row(s) + g * head_stride, where
//                  contiguous prefill k [S, kv_heads, D] (no block table): key_row(s) = s * kv_heads D
//                  paged cache (spec/kv_cache.rs, HND or NHD): with the row's block table `table`,
//                  key_row(s) = table[s / page_size] * page_stride + (s % page_size) * row_stride
//     metadata     block_tables [batch, max_pages], seq_lens [batch], cu_seqlens [batch + 1], i32 on
//                  the device (vLLM's flash-attention convention)
//
// The metadata lives on the device and is checked there, never trusted: a row whose length is
// outside [1, max_pages * page_size] (or, ragged, whose cu_seqlens are not an increasing range
// ending by cu_seqlens[batch] <= rows, or whose new tokens outnumber its length) reads nothing; a key whose page is
// outside [0, num_pages) is not read. Such rows get NaN in every output element and set a bit in
// the status word (1 = a page, 2 = a length, 4 = cu_seqlens). Never an access outside the cache.
//
// Two kernel families:
//
// 1. attn_split_* (SIMT, any dtype, D 64/128, any group): flash-decoding. grid = (rows, kv_heads *
//    head_blocks, max_splits), 128 threads. A block takes one row (sequence or query token),
//    `heads_per_block` query heads of one kv head (up to 8: the whole group for group <= 8, so
//    each K/V row is read once for it; a decode with few blocks takes 1, so that batch 1 spreads
//    over more SMs) and one split of `chunk` keys. Inside, tiles of 64 keys: q.k by groups of
//    lanes (16-byte K loads, four passes' loads issued before their math, shuffle reduction),
//    logits to shared memory, online softmax (running max and sum), then p.v with 16-byte V
//    loads: each thread keeps rescaled FP32 sums of 16 bytes' worth of output elements over its
//    share of the tile's keys (a tile's loads independent, in flight together), folded once at
//    the end in a fixed order (a butterfly inside each warp, then warp by warp). A row with one
//    split writes o directly; otherwise each split writes (max, sum, unnormalised acc) in FP32 to
//    the workspace, and the split that finishes last (a counter per row and head block, in the
//    workspace) merges them in split order: M = max m_i, o = sum_i acc_i e^(m_i - M) / sum_i l_i
//    e^(m_i - M). One launch, no combine kernel. The split structure is a function of the row's own length and `chunk` only
//    (never of the batch or heads_per_block), and every sum runs in a fixed order: a row's result
//    does not depend on the launch it is in.
//    Decode: row b reads seq_lens[b] (the new token's key is at len - 1) and its block table
//    row; the status word is ws[0] and the split counters follow it (the host clears both before
//    each decode step; the last split leaves its counter at zero again), and the host reads the
//    word with attention::decode_status. Per 64-key tile, 64 threads translate the tile's keys
//    through the block table into shared memory first (one division and one table read per key),
//    so the q.k and p.v loops read rows by offset whatever the page size: the sums, and so the
//    results, are bit-identical for every page size and layout.
//    Ragged prefill (cu_seqlens given; the SIMT path for f32): row t is a new token of the
//    sequence b with cu_seqlens[b] <= t < cu_seqlens[b + 1], at position seq_lens[b] -
//    (cu_seqlens[b + 1] - t); rows at or past cu_seqlens[batch] are padding, left as they are.
//    Contiguous prefill (no table, no cu_seqlens): row t has len = S - T + t + 1.
//
// 2. attn_prefill_mma_* (f16/bf16, D 64/128, any group): FlashAttention-2 style. grid = (ceil(T/64),
//    heads), 4 warps; warp w owns query rows 16w..16w+15 of the block's 64; Q fragments stay in
//    registers. Per tile of 64 keys (K and V copied to shared memory with cp.async, two buffers so
//    tile i + 1 lands while tile i computes; rows padded by 8 elements so the ldmatrix fragment
//    loads are bank-conflict free): S = Q K^T with mma.sync m16n8k16 (FP32 accumulation; products of
//    two 16-bit values are exact in FP32, so nothing is ever rounded to 16 bits before the scale),
//    logit = S * D^-0.5 in FP32, causal mask, online softmax in FP32, then O += P V with mma.sync.
//    P must be a 16-bit mma operand. FlashAttention rounds P once to the storage dtype: relative
//    error u_T (2^-11 f16, 2^-8 bf16) on every weight, so up to u_T V_d on o_d (V_d = max |v_sd|).
//    The contract (`table::attention` with `error_scale`) allows u32 V_d (2 (D + 2) L + 3 S + 12)
//    for that part, which covers u_T V_d only when 2 (D + 2) L + 3 S + 12 >= 2^13 (f16) or 2^16
//    (bf16): not for short rows or small logits (decode1, prefill16). So here P is split into
//    16-bit terms, P = P1 + P2 (+ P3), each the rounding of what the previous ones leave, and each
//    term gets its own mma, so the weights reach the FP32 accumulator with
//        f16:  2 terms, error <= 2^-22 p + 2^-25   (2^-25: P2 may be an f16 subnormal)
//        bf16: 3 terms, error <= 2^-24 p        (each rounding to 8 bits leaves 2^-8 of its input)
//    i.e. within a few u32 of FP32 weights (derivation and the tolerance term in
//    ops/attention.rs, `mma_extra_error`). The row sum l uses the FP32 p. Cost: P V runs 2 (f16)
//    or 3 (bf16) mma per tile instead of 1.
#include "common.cuh"
#include "ptx.cuh"

namespace qk {

// ================================================================================================
// 1. SIMT split kernels
// ================================================================================================

constexpr int SPLIT_THREADS = 128;
constexpr int SPLIT_TILE = 64;       // keys per tile (logits held in shared memory)
constexpr int MAX_HEADS_PER_BLOCK = 8;

constexpr unsigned STATUS_BAD_PAGE = 1u;
constexpr unsigned STATUS_BAD_LEN = 2u;
constexpr unsigned STATUS_BAD_CU = 4u;

// Where a row's keys are: its block table (nullptr: contiguous keys) and the cache's geometry.
struct KeyRows {
    const int* table;
    int num_pages;
    int page_size;
    long long page_stride;
    long long row_stride;
};

// Element offset of key s's row (kv head 0); sets `bad` instead of reading a page outside the cache.
__device__ __forceinline__ long long key_row(const KeyRows& kr, int s, bool& bad) {
    if (kr.table == nullptr) return static_cast<long long>(s) * kr.row_stride;
    const int page = kr.table[s / kr.page_size];
    if (page < 0 || page >= kr.num_pages) {
        bad = true;
        return 0;
    }
    return static_cast<long long>(page) * kr.page_stride + static_cast<long long>(s % kr.page_size) * kr.row_stride;
}

// The sequence b of ragged row t: the last b in [0, batch) with cu_seqlens[b] <= t (binary search;
// the caller checks the range it finds, so unsorted cu_seqlens cannot send it astray).
__device__ __forceinline__ int ragged_sequence(const int* cu_seqlens, int batch, int t) {
    int lo = 0, hi = batch - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (cu_seqlens[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// The row's metadata for the SIMT kernels. Returns 0 for a valid row (len, kr.table set), -1 for a
// ragged padding row (nothing to compute), else the status bits of what was wrong.
__device__ __forceinline__ int row_meta(const int* block_tables, const int* seq_lens, const int* cu_seqlens,
                                        int batch, int max_pages, int page_size, int context, int tokens,
                                        int row, const int*& table, int& len) {
    table = nullptr;
    len = 0;
    if (block_tables == nullptr) {   // contiguous prefill
        len = context - tokens + row + 1;
        return 0;
    }
    const long long max_len = static_cast<long long>(max_pages) * page_size;
    if (cu_seqlens == nullptr) {     // decode: row b is sequence b
        table = block_tables + static_cast<long long>(row) * max_pages;
        len = seq_lens[row];
        return len >= 1 && len <= max_len ? 0 : static_cast<int>(STATUS_BAD_LEN);
    }
    if (row >= cu_seqlens[batch]) return -1;   // padding past the last sequence
    const int b = ragged_sequence(cu_seqlens, batch, row);
    const int q0 = cu_seqlens[b], q1 = cu_seqlens[b + 1];
    if (!(0 <= q0 && q0 <= row && row < q1 && q1 <= cu_seqlens[batch])) return static_cast<int>(STATUS_BAD_CU);
    const int seq_len = seq_lens[b];
    if (seq_len < q1 - q0 || seq_len > max_len) return static_cast<int>(STATUS_BAD_LEN);
    table = block_tables + static_cast<long long>(b) * max_pages;
    len = seq_len - (q1 - row) + 1;
    return 0;
}

// Element d of one head's output from its splits' partials (acc [splits, D], (max, sum)
// [splits, 2]): M = max m_i, o = sum_i acc_i e^(m_i - M) / sum_i l_i e^(m_i - M), summed in split
// order. Loads through L2 (__ldcg): other blocks of the launch wrote them.
template <int D>
__device__ __forceinline__ float combine_splits(const float* ws_acc, const float* ws_ml, int n_splits, int d) {
    float m = -INFINITY;
    for (int i = 0; i < n_splits; ++i) m = fmaxf(m, __ldcg(ws_ml + i * 2));
    float total = 0.0f, acc = 0.0f;
    for (int i = 0; i < n_splits; ++i) {
        const float w = expf(__ldcg(ws_ml + i * 2) - m);
        total = fmaf(__ldcg(ws_ml + i * 2 + 1), w, total);
        acc = fmaf(__ldcg(ws_acc + static_cast<size_t>(i) * D + d), w, acc);
    }
    return acc / total;
}

template <typename T, int D>
__device__ __forceinline__ void attn_split(const T* __restrict__ q, const T* __restrict__ k,
                                           const T* __restrict__ v, T* __restrict__ o,
                                           float* __restrict__ ws, unsigned* __restrict__ status,
                                           const int* __restrict__ block_tables,
                                           const int* __restrict__ seq_lens,
                                           const int* __restrict__ cu_seqlens, int batch, int heads,
                                           int group, int num_pages, int page_size, int max_pages,
                                           int context, int tokens, long long page_stride,
                                           long long head_stride, long long row_stride, int chunk,
                                           int max_splits, int heads_per_block, float scale) {
    constexpr int VEC = Vec16<T>::N;               // elements per 16-byte load
    constexpr int LANES_PER_KEY = D / VEC;          // 8..32 lanes cover one K row
    constexpr int KEYS_PER_PASS = SPLIT_THREADS / LANES_PER_KEY;
    constexpr int V_LANES = D / VEC;                // p.v: threads covering one V row (4..32)
    constexpr int V_PARTS = SPLIT_THREADS / V_LANES;   // p.v: key parts of a tile (4..32)
    constexpr int PASSES = SPLIT_TILE / KEYS_PER_PASS;   // q.k passes a tile (4..16)
    constexpr int KEY_LOADS = PASSES < 4 ? PASSES : 4;   // K loads in flight a thread
    static_assert(LANES_PER_KEY <= WARP && WARP % LANES_PER_KEY == 0, "a K row within one warp");
    static_assert(SPLIT_TILE % KEYS_PER_PASS == 0 && SPLIT_TILE % V_PARTS == 0, "tile shape");
    static_assert(V_LANES <= WARP && WARP % V_LANES == 0, "a V row within one warp");
    static_assert(PASSES % KEY_LOADS == 0, "whole groups of passes");
    static_assert(SPLIT_THREADS % D == 0, "the output mapping: thread d of element d");

    __shared__ float s_p[MAX_HEADS_PER_BLOCK][SPLIT_TILE];   // logits, then weights, of one tile
    __shared__ float s_max[MAX_HEADS_PER_BLOCK];
    __shared__ float s_sum[MAX_HEADS_PER_BLOCK];
    __shared__ float s_alpha[MAX_HEADS_PER_BLOCK];
    __shared__ float s_red[SPLIT_THREADS / WARP][MAX_HEADS_PER_BLOCK][D];   // p.v: each warp's sums
    __shared__ long long s_row[SPLIT_TILE];   // element offset of each key row of the tile
    __shared__ unsigned s_bad;                      // a key of this split had a page outside the cache
    __shared__ unsigned s_last;                     // this block is its heads' last split to finish

    const int row = blockIdx.x;
    // heads_per_block (1..MAX_HEADS_PER_BLOCK, the launch's choice) changes which block computes
    // a head, never how: every per-head sum below runs the same lanes in the same order.
    const int head_blocks = (group + heads_per_block - 1) / heads_per_block;
    const int kv_head = blockIdx.y / head_blocks;
    const int g0 = (blockIdx.y % head_blocks) * heads_per_block;   // first head within the group
    const int n_heads = min(heads_per_block, group - g0);
    const int split = blockIdx.z;
    const int tid = threadIdx.x;

    // Decode passes no status pointer: its word is the workspace's element 0.
    if (status == nullptr) status = reinterpret_cast<unsigned*>(ws);
    const int* table;
    int len;
    const int meta = row_meta(block_tables, seq_lens, cu_seqlens, batch, max_pages, page_size, context,
                              tokens, row, table, len);
    const bool valid = meta == 0;
    const int n_splits = valid ? (len + chunk - 1) / chunk : 1;
    if (split >= n_splits) return;

    // q, o: [rows, heads, D]; this block's heads are kv_head * group + g0 + j, j < n_heads.
    const size_t head0 = static_cast<size_t>(row) * heads + static_cast<size_t>(kv_head) * group + g0;
    if (!valid) {
        if (meta < 0) return;   // ragged padding: left as it is
        for (int i = tid; i < n_heads * D; i += SPLIT_THREADS) o[head0 * D + i] = from_float<T>(__int_as_float(0x7fc00000));
        if (tid == 0) atomicOr(status, static_cast<unsigned>(meta));
        return;
    }
    const KeyRows kr{table, num_pages, page_size, page_stride, row_stride};
    const int key_begin = split * chunk;
    const int key_end = min(len, key_begin + chunk);
    const T* k_head = k + static_cast<size_t>(kv_head) * head_stride;
    const T* v_head = v + static_cast<size_t>(kv_head) * head_stride;

    // q . k: lane `part` of a key group holds elements part*VEC .. part*VEC+VEC-1 of each q head.
    const int part = tid % LANES_PER_KEY;
    const int key_slot = tid / LANES_PER_KEY;
    float qr[MAX_HEADS_PER_BLOCK][VEC];
#pragma unroll
    for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
        if (j < n_heads) {
            const Vec16<T> x = load16(q + (head0 + j) * D + part * VEC);
#pragma unroll
            for (int e = 0; e < VEC; ++e) qr[j][e] = to_float(x.v[e]);
        } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) qr[j][e] = 0.0f;
        }
    }
    if (tid < MAX_HEADS_PER_BLOCK) {
        s_max[tid] = -INFINITY;
        s_sum[tid] = 0.0f;
    }
    if (tid == 0) s_bad = 0;
    __syncthreads();   // s_bad is raised by any thread below
    // p.v: thread owns output elements d0 .. d0 + VEC - 1 of every head (one 16-byte V load a
    // key) and keys vp, vp + V_PARTS, ... of each tile; the parts are folded at the end.
    const int d0 = (tid % V_LANES) * VEC;
    const int vp = tid / V_LANES;
    float pv[MAX_HEADS_PER_BLOCK][VEC];
#pragma unroll
    for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) pv[j][e] = 0.0f;
    }

    const int warp = tid / WARP;
    const int lane = tid % WARP;
    for (int tile = key_begin; tile < key_end; tile += SPLIT_TILE) {
        const int tile_n = min(SPLIT_TILE, key_end - tile);
        // The tile's key rows through the block table (the previous tile's reads of s_row ended
        // at its trailing barrier).
        if (tid < tile_n) {
            bool bad = false;
            s_row[tid] = key_row(kr, tile + tid, bad);
            if (bad) atomicOr(&s_bad, 1u);
        }
        __syncthreads();
        if (s_bad != 0) break;   // uniform: read after the barrier by every thread
        // Logits of the tile (keys past tile_n: -inf). Every lane runs every pass (shuffles). The
        // K rows of KEY_LOADS passes are loaded before any of their dot products, so that many
        // 16-byte loads a thread are in flight at once instead of one.
#pragma unroll 1
        for (int kl0 = key_slot; kl0 < SPLIT_TILE; kl0 += KEY_LOADS * KEYS_PER_PASS) {
            Vec16<T> kx[KEY_LOADS];
#pragma unroll
            for (int p = 0; p < KEY_LOADS; ++p) {
                const int kl = kl0 + p * KEYS_PER_PASS;
                if (kl < tile_n) {
                    kx[p] = load16(k_head + s_row[kl] + part * VEC);
                } else {
#pragma unroll
                    for (int e = 0; e < VEC; ++e) kx[p].v[e] = from_float<T>(0.0f);
                }
            }
#pragma unroll
            for (int p = 0; p < KEY_LOADS; ++p) {
                const int kl = kl0 + p * KEYS_PER_PASS;
#pragma unroll
                for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
                    if (j >= n_heads) break;   // uniform over the block: the shuffles stay whole
                    float s = 0.0f;
#pragma unroll
                    for (int e = 0; e < VEC; ++e) s = fmaf(qr[j][e], to_float(kx[p].v[e]), s);
#pragma unroll
                    for (int off = LANES_PER_KEY / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
                    if (part == 0) s_p[j][kl] = kl < tile_n ? s * scale : -INFINITY;
                }
            }
        }
        __syncthreads();
        // Online softmax: warp w takes heads w, w + 4; each lane two keys.
        for (int j = warp; j < n_heads; j += SPLIT_THREADS / WARP) {
            const float a = s_p[j][lane], b = s_p[j][lane + WARP];
            float m = fmaxf(a, b);
#pragma unroll
            for (int off = WARP / 2; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
            const float m_old = s_max[j];
            const float m_new = fmaxf(m_old, m);   // finite: the tile has at least one key
            const float pa = expf(a - m_new), pb = expf(b - m_new);
            s_p[j][lane] = pa;
            s_p[j][lane + WARP] = pb;
            const float tile_sum = warp_sum(pa + pb);
            // Every lane has read s_max[j] (m_old) above; lane 0 now replaces it. The shuffles
            // between keep the lanes in step but are not a memory barrier: __syncwarp is.
            __syncwarp();
            if (lane == 0) {
                const float alpha = expf(m_old - m_new);   // 0 on the first tile
                s_alpha[j] = alpha;
                s_sum[j] = s_sum[j] * alpha + tile_sum;
                s_max[j] = m_new;
            }
        }
        __syncthreads();
        // pv = pv * alpha + sum over the part's keys of the tile of p v (V rows read once for all
        // heads, 16 bytes a load; a tile's loads of one thread are independent: in flight together).
#pragma unroll
        for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
            const float alpha = j < n_heads ? s_alpha[j] : 0.0f;
#pragma unroll
            for (int e = 0; e < VEC; ++e) pv[j][e] *= alpha;
        }
#pragma unroll
        for (int i = 0; i < SPLIT_TILE / V_PARTS; ++i) {
            const int kl = vp + i * V_PARTS;
            if (kl < tile_n) {
                const Vec16<T> x = load16(v_head + s_row[kl] + d0);
#pragma unroll
                for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
                    if (j >= n_heads) break;
                    const float p = s_p[j][kl];
#pragma unroll
                    for (int e = 0; e < VEC; ++e) pv[j][e] = fmaf(p, to_float(x.v[e]), pv[j][e]);
                }
            }
        }
        __syncthreads();   // s_p is rewritten by the next tile
    }
    // Fold the key parts in a fixed order: inside each warp by a butterfly over the parts (lanes
    // V_LANES, 2 V_LANES, ... apart; both partners get the same sum), then the warps' sums through
    // shared memory, warp 0 + warp 1 + ... by thread d of output element d.
#pragma unroll
    for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
        if (j >= n_heads) break;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
#pragma unroll
            for (int off = V_LANES; off < WARP; off *= 2) pv[j][e] += __shfl_xor_sync(0xffffffffu, pv[j][e], off);
        }
    }
    if ((tid % WARP) < V_LANES) {   // the warp's first part holds its sums
#pragma unroll
        for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
            if (j >= n_heads) break;
#pragma unroll
            for (int e = 0; e < VEC; ++e) s_red[tid / WARP][j][d0 + e] = pv[j][e];
        }
    }
    __syncthreads();
    // From here thread d < D owns output element d of every head (kp == 0; the others only
    // take part in the barriers).
    const int d = tid % D;
    const int kp = tid / D;
    float acc[MAX_HEADS_PER_BLOCK];
#pragma unroll
    for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
        acc[j] = 0.0f;
        if (j < n_heads) {
#pragma unroll
            for (int w = 0; w < SPLIT_THREADS / WARP; ++w) acc[j] += s_red[w][j][d];
        }
    }
    // A key with a page outside the cache: nothing past it was read; the split's result (and so
    // the row's, through the merge) is NaN.
    const bool bad = s_bad != 0;
    if (bad && tid == 0) atomicOr(status, STATUS_BAD_PAGE);
    const float nan = __int_as_float(0x7fc00000);
    if (n_splits == 1) {
        if (kp != 0) return;
#pragma unroll
        for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
            if (j < n_heads) o[(head0 + j) * D + d] = from_float<T>(bad ? nan : acc[j] / s_sum[j]);
        }
        return;
    }
    // Workspace (FP32; decode_workspace_len): the status word, one counter per (row, head)
    // [rows, heads] (u32, zero between launches), acc [rows, heads, max_splits, D], then (max,
    // sum) [rows, heads, max_splits, 2].
    const size_t rows = gridDim.x;
    unsigned* counters = reinterpret_cast<unsigned*>(ws + 1);
    float* ws_acc = ws + 1 + rows * heads;
    float* ws_ml = ws_acc + rows * heads * max_splits * D;
    if (kp == 0) {
#pragma unroll
        for (int j = 0; j < MAX_HEADS_PER_BLOCK; ++j) {
            if (j >= n_heads) break;
            const size_t part_index = (head0 + j) * max_splits + split;
            ws_acc[part_index * D + d] = bad ? nan : acc[j];
            if (d == 0) {
                ws_ml[part_index * 2] = bad ? nan : s_max[j];
                ws_ml[part_index * 2 + 1] = bad ? nan : s_sum[j];
            }
        }
    }
    // The last of the row's splits to finish merges them (no combine launch): each block makes
    // its partials visible device-wide, then counts itself on its first head's counter; the
    // block that completes the count reads every split's partials (through L2: other blocks
    // wrote them) and resets the counter for the next launch. The merge runs in split order,
    // so which block comes last changes nothing.
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        const unsigned done = atomicAdd(counters + head0, 1u) + 1u;
        s_last = done == static_cast<unsigned>(n_splits);
        if (s_last) atomicExch(counters + head0, 0u);
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int i = tid; i < n_heads * D; i += SPLIT_THREADS) {
        const size_t head = head0 + i / D;
        o[head * D + i % D] = from_float<T>(combine_splits<D>(ws_acc + head * max_splits * D, ws_ml + head * max_splits * 2, n_splits, i % D));
    }
}

// ================================================================================================
// 2. Tensor-core prefill
// ================================================================================================

constexpr int MMA_WARPS = 4;
constexpr int MMA_THREADS = MMA_WARPS * WARP;
constexpr int BLOCK_M = 16 * MMA_WARPS;   // query rows per block
constexpr int BLOCK_N = 64;               // keys per tile
constexpr int SMEM_PAD = 8;               // elements of padding per shared row (16 bytes)
constexpr int STAGES = 2;                 // K/V tiles in flight: tile i computes while i + 1 lands

// Dynamic shared memory of the tensor-core prefill: STAGES x (K, V) tiles of BLOCK_N rows of
// D + SMEM_PAD 16-bit elements (D 64: 36 KiB, D 128: 68 KiB; the host raises the 48 KiB default).
constexpr int mma_smem_bytes(int d) { return STAGES * 2 * BLOCK_N * (d + SMEM_PAD) * 2; }

template <typename T> struct Mma;

template <> struct Mma<__half> {
    static constexpr int P_TERMS = 2;
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    __device__ __forceinline__ static float2 unpack(uint32_t x) {
        return __half22float2(*reinterpret_cast<__half2*>(&x));
    }
};

template <> struct Mma<__nv_bfloat16> {
    static constexpr int P_TERMS = 3;
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t*>(&h);
    }
    __device__ __forceinline__ static float2 unpack(uint32_t x) {
        return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
    }
};

// mma.m16n8k16 fragments (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major):  a[0] = (row g,   k 2t..2t+1)   a[1] = (row g+8, k 2t..2t+1)
//                            a[2] = (row g,   k 2t+8..+9)   a[3] = (row g+8, k 2t+8..+9)
//   B (16 x 8, "col"):       b0 = (k 2t..2t+1, col g)        b1 = (k 2t+8..+9, col g)
//   C (16 x 8, FP32):        c[0..1] = (row g, col 2t..2t+1)  c[2..3] = (row g+8, col 2t..2t+1)
// (lower k or column in the low 16 bits). The C fragments of two neighbouring 8-key blocks of S
// are exactly the A fragment of P for the 16 keys they cover, so P never leaves registers.
template <typename T, int D>
__device__ __forceinline__ void attn_prefill_mma(const T* __restrict__ q, const T* __restrict__ k,
                                                 const T* __restrict__ v, T* __restrict__ o,
                                                 unsigned* __restrict__ status,
                                                 const int* __restrict__ block_tables,
                                                 const int* __restrict__ seq_lens,
                                                 const int* __restrict__ cu_seqlens, int rows,
                                                 int num_pages, int page_size, int max_pages, int tokens,
                                                 int context, int heads, int group, long long page_stride,
                                                 long long head_stride, long long row_stride, float scale) {
    constexpr int KS = D / 16;          // k-steps of Q K^T
    constexpr int NB = BLOCK_N / 8;     // 8-key blocks of S per tile
    constexpr int ND = D / 8;           // 8-column blocks of O
    constexpr int LD = D + SMEM_PAD;    // shared row length (elements); LD * 2 bytes is a multiple of 16
    constexpr int VEC = Vec16<T>::N;
    // smem: [STAGES][K, V][BLOCK_N][LD]
    T* const smem = dynamic_shared<T>();

    __shared__ unsigned s_bad;   // a key of this block had a page outside the cache

    // Longest (last) query tiles first: causal work grows with the tile index.
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BLOCK_M;
    const int head = blockIdx.y;
    // Ragged (cu_seqlens given): block z takes sequence z, its new tokens cu_seqlens[z] ..
    // cu_seqlens[z + 1] - 1 of q and o, at the end of its seq_lens[z] keys; else one sequence of
    // `tokens` new tokens after context - tokens cached ones, keys contiguous.
    const int* table = nullptr;
    if (cu_seqlens != nullptr) {
        const int b = blockIdx.z;
        const int c0 = cu_seqlens[b], c1 = cu_seqlens[b + 1];
        const bool range_ok = 0 <= c0 && c0 <= c1 && c1 <= rows;
        const int len = seq_lens[b];
        unsigned bad = 0;
        if (!range_ok || c1 > cu_seqlens[gridDim.z] || c1 - c0 > static_cast<int>(gridDim.x) * BLOCK_M) {
            bad = STATUS_BAD_CU;
        } else if (len < c1 - c0 || static_cast<long long>(len) > static_cast<long long>(max_pages) * page_size) {
            bad = STATUS_BAD_LEN;
        }
        if (bad != 0) {
            if (threadIdx.x == 0) atomicOr(status, bad);
            if (range_ok) {   // this block's rows of this head: NaN
                for (int i = threadIdx.x; i < BLOCK_M * D; i += MMA_THREADS) {
                    const int r = m0 + i / D;
                    if (r < c1 - c0) o[(static_cast<size_t>(c0 + r) * heads + head) * D + i % D] = from_float<T>(__int_as_float(0x7fc00000));
                }
            }
            return;
        }
        tokens = c1 - c0;
        context = len;
        table = block_tables + static_cast<long long>(b) * max_pages;
        q += static_cast<size_t>(c0) * heads * D;
        o += static_cast<size_t>(c0) * heads * D;
    }
    if (m0 >= tokens) return;
    const KeyRows kr{table, num_pages, page_size, page_stride, row_stride};
    const int kv_head = head / group;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    const int row_a = m0 + warp * 16 + g;   // query rows of this thread: row_a and row_b = row_a + 8
    const int row_b = row_a + 8;
    // Query positions (rows past T are computed as if they continued the sequence, never stored).
    const int pos_a = context - tokens + row_a;
    const int pos_b = context - tokens + row_b;

    // Q fragments for the whole head_dim, in registers for the whole key loop. q: [T, heads, D].
    uint32_t qf[KS][4];
    {
        const T* qa = q + (static_cast<size_t>(row_a) * heads + head) * D;
        const T* qb = q + (static_cast<size_t>(row_b) * heads + head) * D;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            const int c = ks * 16 + 2 * t;
            qf[ks][0] = row_a < tokens ? *reinterpret_cast<const uint32_t*>(qa + c) : 0u;
            qf[ks][1] = row_b < tokens ? *reinterpret_cast<const uint32_t*>(qb + c) : 0u;
            qf[ks][2] = row_a < tokens ? *reinterpret_cast<const uint32_t*>(qa + c + 8) : 0u;
            qf[ks][3] = row_b < tokens ? *reinterpret_cast<const uint32_t*>(qb + c + 8) : 0u;
        }
    }

    float acc[ND][4];
#pragma unroll
    for (int n = 0; n < ND; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float max_a = -INFINITY, max_b = -INFINITY;   // running maxima of rows a, b
    float sum_a = 0.0f, sum_b = 0.0f;             // this thread's part of the row sums

    // Keys 0 .. key_end - 1 are visible to some valid row of the block.
    const int last_row = min(m0 + BLOCK_M, tokens) - 1;
    const int key_end = context - tokens + last_row + 1;
    const T* k_head = k + static_cast<size_t>(kv_head) * head_stride;
    const T* v_head = v + static_cast<size_t>(kv_head) * head_stride;

    // Stage K and V rows n0 .. n0 + 63 of the context into buffer `buf` (zeros past the context
    // and for keys whose page is outside the cache, which raise s_bad), as one cp.async group.
    auto stage = [&](int buf, int n0) {
        T* sk = smem + static_cast<size_t>(buf) * 2 * BLOCK_N * LD;
        T* sv = sk + BLOCK_N * LD;
        for (int i = threadIdx.x; i < BLOCK_N * (D / VEC); i += MMA_THREADS) {
            const int r = i / (D / VEC), c = (i % (D / VEC)) * VEC;
            bool bad = false;
            const bool in = n0 + r < context;
            const long long off = (in ? key_row(kr, n0 + r, bad) : 0) + c;
            if (bad) atomicOr(&s_bad, 1u);
            cp_async16(sk + r * LD + c, k_head + off, in && !bad);
            cp_async16(sv + r * LD + c, v_head + off, in && !bad);
        }
        cp_async_commit();
    };

    if (threadIdx.x == 0) s_bad = 0;
    __syncthreads();   // s_bad is raised by any thread's staging
    stage(0, 0);
    for (int n0 = 0, it = 0; n0 < key_end; n0 += BLOCK_N, ++it) {
        const int buf = it % STAGES;
        if (n0 + BLOCK_N < key_end) {
            // The next tile's buffer was last read in iteration it - 1, which ended with a barrier.
            stage(buf ^ 1, n0 + BLOCK_N);
            cp_async_wait<1>();   // all but the group just issued: this tile has landed
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();   // every thread's copies of this tile are visible
        const T* s_k = smem + static_cast<size_t>(buf) * 2 * BLOCK_N * LD;   // [BLOCK_N][LD]
        const T* s_v = s_k + BLOCK_N * LD;

        // S = Q K^T (FP32 accumulation), then logits = S * scale in FP32, masked.
        float s[NB][4];
        // K fragments with ldmatrix (no transpose): matrices (keys nb*8 + 0..7) x (columns
        // ks*16 + 0..7 | ks*16 + 8..15 | (ks+1)*16 + 0..7 | (ks+1)*16 + 8..15); lane L gives row
        // L % 8 of matrix L / 8 and receives (key g, columns 2t..2t+1) of each: b0, b1 of k-step
        // ks, then of ks + 1.
        const int mat = lane / 8, mat_row = lane % 8;
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
            s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < KS; ks += 2) {
                const T* src = s_k + (nb * 8 + mat_row) * LD + (ks + (mat >> 1)) * 16 + (mat & 1) * 8;
                uint32_t b[4];
                ldmatrix_x4<false>(b, src);
                mma_m16n8k16<T>(s[nb], qf[ks], b[0], b[1]);
                mma_m16n8k16<T>(s[nb], qf[ks + 1], b[2], b[3]);
            }
        }
        float tile_max_a = -INFINITY, tile_max_b = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int key = n0 + nb * 8 + 2 * t + e;
                const bool in = key < context;
                s[nb][e] = in && key <= pos_a ? s[nb][e] * scale : -INFINITY;
                s[nb][2 + e] = in && key <= pos_b ? s[nb][2 + e] * scale : -INFINITY;
                tile_max_a = fmaxf(tile_max_a, s[nb][e]);
                tile_max_b = fmaxf(tile_max_b, s[nb][2 + e]);
            }
        }
        // The four lanes of a quad hold one row.
#pragma unroll
        for (int off = 1; off < 4; off *= 2) {
            tile_max_a = fmaxf(tile_max_a, __shfl_xor_sync(0xffffffffu, tile_max_a, off));
            tile_max_b = fmaxf(tile_max_b, __shfl_xor_sync(0xffffffffu, tile_max_b, off));
        }
        // Finite from the first tile on: key 0 is visible to every row.
        const float new_a = fmaxf(max_a, tile_max_a), new_b = fmaxf(max_b, tile_max_b);
        const float alpha_a = expf(max_a - new_a), alpha_b = expf(max_b - new_b);
        max_a = new_a;
        max_b = new_b;
        sum_a *= alpha_a;
        sum_b *= alpha_b;
#pragma unroll
        for (int n = 0; n < ND; ++n) {
            acc[n][0] *= alpha_a;
            acc[n][1] *= alpha_a;
            acc[n][2] *= alpha_b;
            acc[n][3] *= alpha_b;
        }
#pragma unroll
        for (int nb = 0; nb < NB; ++nb) {
            s[nb][0] = expf(s[nb][0] - max_a);
            s[nb][1] = expf(s[nb][1] - max_a);
            s[nb][2] = expf(s[nb][2] - max_b);
            s[nb][3] = expf(s[nb][3] - max_b);
            sum_a += s[nb][0] + s[nb][1];
            sum_b += s[nb][2] + s[nb][3];
        }

        // O += P V, P split into P_TERMS 16-bit terms (see the header).
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
            float rest[8] = {s[2 * kk][0], s[2 * kk][1], s[2 * kk][2], s[2 * kk][3],
                             s[2 * kk + 1][0], s[2 * kk + 1][1], s[2 * kk + 1][2], s[2 * kk + 1][3]};
            uint32_t pf[Mma<T>::P_TERMS][4];
#pragma unroll
            for (int term = 0; term < Mma<T>::P_TERMS; ++term) {
                // a[0]: row a keys 2t..+1 (block 2kk); a[1]: row b (block 2kk);
                // a[2]: row a keys 8+2t..+1 (block 2kk+1); a[3]: row b (block 2kk+1).
                pf[term][0] = Mma<T>::pack(rest[0], rest[1]);
                pf[term][1] = Mma<T>::pack(rest[2], rest[3]);
                pf[term][2] = Mma<T>::pack(rest[4], rest[5]);
                pf[term][3] = Mma<T>::pack(rest[6], rest[7]);
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const float2 used = Mma<T>::unpack(pf[term][r]);
                    rest[2 * r] -= used.x;       // exact: the rounding of a float, subtracted from it
                    rest[2 * r + 1] -= used.y;
                }
            }
            // V fragments with ldmatrix.trans: matrices (keys kk*16 + 0..7 | 8..15) x (columns of
            // blocks n | n + 1); lane L gives the address of row L % 8 of matrix L / 8, and receives
            // (keys 2t..2t+1, column g) of each: b0/b1 of block n, then of block n + 1.
#pragma unroll
            for (int n = 0; n < ND; n += 2) {
                const T* src = s_v + (kk * 16 + (mat & 1) * 8 + mat_row) * LD + (n + (mat >> 1)) * 8;
                uint32_t b[4];
                ldmatrix_x4<true>(b, src);
#pragma unroll
                for (int term = 0; term < Mma<T>::P_TERMS; ++term) {
                    mma_m16n8k16<T>(acc[n], pf[term], b[0], b[1]);
                    mma_m16n8k16<T>(acc[n + 1], pf[term], b[2], b[3]);
                }
            }
        }
        __syncthreads();   // this buffer is restaged by iteration it + 1
    }

    // Row sums over the quad, normalise, store. o: [T, heads, D].
#pragma unroll
    for (int off = 1; off < 4; off *= 2) {
        sum_a += __shfl_xor_sync(0xffffffffu, sum_a, off);
        sum_b += __shfl_xor_sync(0xffffffffu, sum_b, off);
    }
    // A page outside the cache (s_bad is final: every staging precedes the loop's last barrier):
    // the block's rows are NaN.
    if (s_bad != 0) {
        if (threadIdx.x == 0) atomicOr(status, STATUS_BAD_PAGE);
        sum_a = sum_b = __int_as_float(0x7fc00000);
    }
    T* oa = o + (static_cast<size_t>(row_a) * heads + head) * D;
    T* ob = o + (static_cast<size_t>(row_b) * heads + head) * D;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
        const int c = n * 8 + 2 * t;
        if (row_a < tokens) {
            *reinterpret_cast<uint32_t*>(oa + c) = Mma<T>::pack(acc[n][0] / sum_a, acc[n][1] / sum_a);
        }
        if (row_b < tokens) {
            *reinterpret_cast<uint32_t*>(ob + c) = Mma<T>::pack(acc[n][2] / sum_b, acc[n][3] / sum_b);
        }
    }
}

}  // namespace qk

// Entry points: attn_split_<dtype>_d<D>, attn_prefill_mma_<dtype>_d<D>.
#define QK_ATTN_SPLIT_ENTRY(NAME, T, D)                                                              \
    extern "C" __global__ void __launch_bounds__(qk::SPLIT_THREADS, 1) attn_split_##NAME(                \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o, \
        float* __restrict__ ws, unsigned* __restrict__ status, const int* __restrict__ block_tables,   \
        const int* __restrict__ seq_lens, const int* __restrict__ cu_seqlens, int batch, int heads,   \
        int group, int num_pages, int page_size, int max_pages, int context, int tokens,              \
        long long page_stride, long long head_stride, long long row_stride, int chunk,                \
        int max_splits, int heads_per_block, float scale) {                                           \
        qk::attn_split<T, D>(q, k, v, o, ws, status, block_tables, seq_lens, cu_seqlens, batch,       \
                             heads, group, num_pages, page_size, max_pages, context, tokens,          \
                             page_stride, head_stride, row_stride, chunk, max_splits,                 \
                             heads_per_block, scale);                                                 \
    }

#define QK_ATTN_MMA_ENTRY(NAME, T, D)                                                                \
    extern "C" __global__ void __launch_bounds__(qk::MMA_THREADS, 1) attn_prefill_mma_##NAME(            \
        const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ o, \
        unsigned* __restrict__ status, const int* __restrict__ block_tables,                          \
        const int* __restrict__ seq_lens, const int* __restrict__ cu_seqlens, int rows, int num_pages, \
        int page_size, int max_pages, int tokens, int context, int heads, int group,                  \
        long long page_stride, long long head_stride, long long row_stride, float scale) {            \
        qk::attn_prefill_mma<T, D>(q, k, v, o, status, block_tables, seq_lens, cu_seqlens, rows,      \
                                   num_pages, page_size, max_pages, tokens, context, heads, group,    \
                                   page_stride, head_stride, row_stride, scale);                      \
    }

QK_ATTN_SPLIT_ENTRY(f32_d64, float, 64)
QK_ATTN_SPLIT_ENTRY(f32_d128, float, 128)
QK_ATTN_SPLIT_ENTRY(f16_d64, __half, 64)
QK_ATTN_SPLIT_ENTRY(f16_d128, __half, 128)
QK_ATTN_SPLIT_ENTRY(bf16_d64, __nv_bfloat16, 64)
QK_ATTN_SPLIT_ENTRY(bf16_d128, __nv_bfloat16, 128)
QK_ATTN_MMA_ENTRY(f16_d64, __half, 64)
QK_ATTN_MMA_ENTRY(f16_d128, __half, 128)
QK_ATTN_MMA_ENTRY(bf16_d64, __nv_bfloat16, 64)
QK_ATTN_MMA_ENTRY(bf16_d128, __nv_bfloat16, 128)
