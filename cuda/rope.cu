// rope.cu: rotary position embedding as transformers' Qwen2 computes it, in place on q and k, and the
// decode form that also writes the rotated k and v into the KV cache in the same launch.
//
// PyTorch (transformers/models/qwen2/modeling_qwen2.py, Qwen2RotaryEmbedding + apply_rotary_pos_emb):
//     inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))   # FP32
//     freqs = (inv_freq[None, :, None] @ position_ids[:, None, :].float()).transpose(1, 2)    # FP32
//     emb = torch.cat((freqs, freqs), dim=-1); cos, sin = emb.cos(), emb.sin()                # FP32
//     cos, sin = cos.to(x.dtype), sin.to(x.dtype)
//     q_embed = (q * cos) + (rotate_half(q) * sin); rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])
// Per token t, head h and pair i in 0..d/2 (T(.) = round to the storage dtype T):
//     angle = FP32(float(pos[t]) * inv_freq[i])      one IEEE multiply (__fmul_rn: never fused)
//     c = T(cosf(angle)), s = T(sinf(angle))         sincosf, full accuracy (no fast-math, 2 ulp):
//                                                    its argument reduction is accurate over the
//                                                    whole range (3-part Cody-Waite below ~1e5 rad,
//                                                    Payne-Hanek above), so the late positions'
//                                                    angles (~3.3e4 rad at 32767) lose nothing
//     out[i]       = T(T(x[i] * c)       + T(-x[i + d/2] * s))
//     out[i + d/2] = T(T(x[i + d/2] * c) + T( x[i] * s))
// Every multiply and add is a separate IEEE op (__fmul_rn / __fadd_rn), as PyTorch's three tensor ops
// are: no FMA contraction, which would change f32 results. inv_freq is not computed here: the host
// passes the table `spec::rope::inv_freq` computes (src/spec/rope.rs says why).
//
// Shapes (row-major): q [T, heads, d], k and v [T, kv_heads, d], positions and slot_mapping i32 [T],
// inv_freq f32 [d/2], caches paged (spec/kv_cache.rs: HND or NHD, given here by their strides):
//     slot = slot_mapping[t], page = slot / page_size, offset = slot % page_size
//     k_cache[page, h, offset, :] = rotated k[t, h, :],  v_cache[page, h, offset, :] = v[t, h, :]   (HND)
// (NHD swaps h and offset). A negative slot skips the token's cache write (padding, as vLLM's
// slot mapping has it); its q is still rotated.
//
// Positions and slots live on the device, so the host cannot check them without a sync. The kernel
// checks each token's: a position outside 0..pos_limit or a slot at or past n_slots (= num_pages *
// page_size) makes the token's block set a bit in *status (QK_ROPE_BAD_POSITION = 1,
// QK_ROPE_BAD_SLOT = 2) and return without writing anything for that token (q, k and the cache
// stay as they were). Nothing is ever written out of bounds; the caller reads the status when it
// next synchronises.
//
// Thread mapping: one block per token (grid = T). threadIdx.x = pair i (blockDim.x = d/2 rounded up to
// 32), threadIdx.y strides over the heads (q heads first, then kv heads). Each thread computes its
// (cos, sin) once and applies it to every head it visits. Offsets are 64-bit.
#include "rope.cuh"

namespace qk {

// The token's position if it is in 0..limit; otherwise flags `bit` and returns -1.
__device__ __forceinline__ int checked_index(const int* __restrict__ values, int limit, unsigned bit,
                                             unsigned* __restrict__ status) {
    const int p = values[blockIdx.x];
    if (p < 0 || p >= limit) {
        if (threadIdx.x == 0 && threadIdx.y == 0) atomicOr(status, bit);
        return -1;
    }
    return p;
}

template <typename T>
__device__ __forceinline__ void rope_in_place(T* __restrict__ q, T* __restrict__ k,
                                              const int* __restrict__ positions,
                                              const float* __restrict__ inv_freq,
                                              unsigned* __restrict__ status, int heads, int kv_heads,
                                              int half, int max_positions) {
    const int pos = checked_index(positions, max_positions, ROPE_BAD_POSITION, status);
    const int i = threadIdx.x;
    if (pos < 0 || i >= half) return;
    float c, s;
    rope_cos_sin<T>(pos, inv_freq[i], c, s);
    const int d = 2 * half;
    for (int h = threadIdx.y; h < heads + kv_heads; h += blockDim.y) {
        // q: [T, heads, d], k: [T, kv_heads, d]
        T* x = h < heads ? q + (static_cast<long long>(blockIdx.x) * heads + h) * d
                         : k + (static_cast<long long>(blockIdx.x) * kv_heads + (h - heads)) * d;
        T o1, o2;
        rope_pair(x[i], x[i + half], c, s, o1, o2);
        x[i] = o1;
        x[i + half] = o2;
    }
}

// One token's RoPE with the cache write. q is read from q_src and written, rotated, to q_dst (the
// same rows for rope_kv, in place; a separate contiguous q for rope_qkv); k and v are read at
// kv_stride elements per token. Row strides are in elements; the cache strides are those of
// spec/kv_cache.rs (between pages, between kv heads, between positions of a page).
template <typename T>
__device__ __forceinline__ void rope_kv_write(const T* q_src, long long q_src_stride, T* q_dst,
                                              long long q_dst_stride, const T* __restrict__ k,
                                              const T* __restrict__ v, long long kv_stride,
                                              const int* __restrict__ positions,
                                              const int* __restrict__ slot_mapping,
                                              const float* __restrict__ inv_freq, unsigned* __restrict__ status,
                                              T* __restrict__ k_cache, T* __restrict__ v_cache, int heads,
                                              int kv_heads, int half, int pos_limit, int n_slots, int page_size,
                                              long long page_stride, long long head_stride, long long row_stride) {
    const int pos = checked_index(positions, pos_limit, ROPE_BAD_POSITION, status);
    const int slot = slot_mapping[blockIdx.x];
    if (slot >= n_slots) {
        if (threadIdx.x == 0 && threadIdx.y == 0) atomicOr(status, ROPE_BAD_SLOT);
        return;
    }
    const int i = threadIdx.x;
    if (pos < 0 || i >= half) return;
    float c, s;
    rope_cos_sin<T>(pos, inv_freq[i], c, s);
    const int d = 2 * half;
    const long long t = blockIdx.x;
    // slot < 0: padding, no cache write.
    const int kv_end = slot < 0 ? heads : heads + kv_heads;
    const long long page_base = slot < 0 ? 0 : static_cast<long long>(slot / page_size) * page_stride +
                                                   static_cast<long long>(slot % page_size) * row_stride;
    for (int h = threadIdx.y; h < kv_end; h += blockDim.y) {
        if (h < heads) {
            const T* x = q_src + t * q_src_stride + static_cast<long long>(h) * d;
            T* y = q_dst + t * q_dst_stride + static_cast<long long>(h) * d;
            T o1, o2;
            rope_pair(x[i], x[i + half], c, s, o1, o2);
            y[i] = o1;
            y[i + half] = o2;
        } else {
            const int kh = h - heads;
            const long long src = t * kv_stride + static_cast<long long>(kh) * d;
            const long long dst = page_base + static_cast<long long>(kh) * head_stride;
            T o1, o2;
            rope_pair(k[src + i], k[src + i + half], c, s, o1, o2);
            k_cache[dst + i] = o1;
            k_cache[dst + i + half] = o2;
            v_cache[dst + i] = v[src + i];
            v_cache[dst + i + half] = v[src + i + half];
        }
    }
}

}  // namespace qk

// Entry points: rope_<dtype>, rope_kv_<dtype> and rope_qkv_<dtype> (q, k, v read from the rows of one
// [T, (heads + 2 kv_heads) d] tensor, the merged projection's output; q written rotated to a
// contiguous q_out). grid = (T, 1, 1), block = (round32(d/2), heads_y, 1).
#define QK_ROPE_ENTRY(NAME, T)                                                                     \
    extern "C" __global__ void rope_##NAME(T* __restrict__ q, T* __restrict__ k,                   \
                                           const int* __restrict__ positions,                      \
                                           const float* __restrict__ inv_freq,                     \
                                           unsigned* __restrict__ status, int heads, int kv_heads, \
                                           int half, int max_positions) {                          \
        qk::rope_in_place<T>(q, k, positions, inv_freq, status, heads, kv_heads, half, max_positions); \
    }                                                                                              \
    extern "C" __global__ void rope_kv_##NAME(                                                     \
        T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,                       \
        const int* __restrict__ positions, const int* __restrict__ slot_mapping,                   \
        const float* __restrict__ inv_freq, unsigned* __restrict__ status, T* __restrict__ k_cache, \
        T* __restrict__ v_cache, int heads, int kv_heads, int half, int pos_limit, int n_slots,    \
        int page_size, long long page_stride, long long head_stride, long long row_stride) {       \
        const long long q_stride = static_cast<long long>(heads) * 2 * half;                       \
        qk::rope_kv_write<T>(q, q_stride, q, q_stride, k, v, static_cast<long long>(kv_heads) * 2 * half, \
                             positions, slot_mapping, inv_freq, status, k_cache, v_cache, heads,   \
                             kv_heads, half, pos_limit, n_slots, page_size, page_stride, head_stride, \
                             row_stride);                                                          \
    }                                                                                              \
    extern "C" __global__ void rope_qkv_##NAME(                                                    \
        const T* __restrict__ qkv, T* __restrict__ q_out, const int* __restrict__ positions,       \
        const int* __restrict__ slot_mapping, const float* __restrict__ inv_freq,                  \
        unsigned* __restrict__ status, T* __restrict__ k_cache, T* __restrict__ v_cache, int heads, \
        int kv_heads, int half, int pos_limit, int n_slots, int page_size, long long page_stride,  \
        long long head_stride, long long row_stride) {                                             \
        const long long d = 2 * half, row = (heads + 2LL * kv_heads) * d;                          \
        qk::rope_kv_write<T>(qkv, row, q_out, heads * d, qkv + heads * d, qkv + (heads + kv_heads) * d, \
                             row, positions, slot_mapping, inv_freq, status, k_cache, v_cache, heads, \
                             kv_heads, half, pos_limit, n_slots, page_size, page_stride, head_stride, \
                             row_stride);                                                          \
    }

QK_ROPE_ENTRY(f32, float)
QK_ROPE_ENTRY(f16, __half)
QK_ROPE_ENTRY(bf16, __nv_bfloat16)
