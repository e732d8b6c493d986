// sampling.cu: one token per row of logits, with temperature, top-k, top-p and min-p in transformers'
// order, per-row parameters and per-row Philox streams (src/spec/sampling.rs states the semantics).
//
// One block per row; grid (rows, 1, 1), blockDim.x a multiple of 32 (<= 1024). The block makes a
// few passes over its row's first n_valid logits (L2-resident after the first: 593 KiB for one
// f32 row of 151665), never sorting it:
//   1. the maximum of x = logit / temperature, and whether the row has a distribution;
//   2. top-k: the k-th largest x by radix selection over the order-preserving 32-bit key of x
//      (8 bits a level, 4 levels; a level is a 256-bin histogram of the keys under the prefix
//      chosen so far, and warp 0 finds the bin where the count from the top reaches k);
//   3. top-p: the same selection over the probability mass of what top-k kept, in fixed point
//      (e = exp(x - max) as an integer multiple of 2^-40, summed with 64-bit integer atomics:
//      exact, so the cut does not depend on the order the threads add in), walking from the top
//      until the mass reaches ceil(top_p * Z); the tie group at the cut is then resolved by index,
//      highest first (a radix selection over the indices of the group, when it is cut);
//   4. the draw: Gumbel-max over the tokens kept, x_i - log(-log u_i), u_i from Philox4x32-10
//      keyed by the row's seed with counter (i / 4, step, domain); ties to the lower index.
// Min-p needs no pass: a token stays iff exp(x - max) >= min_p. Greedy rows (temperature 0) skip
// 2-4 and take the bounded argmax, NaN rows reported, as argmax.cu does.
//
// Every sum is an integer sum and every comparison exact, so the result does not depend on
// blockDim, the schedule or the batch: a row's token is a function of its logits, parameters, seed
// and step. `probs` (optional, [rows, n_valid] f32): the filtered distribution, e_i / sum(e_kept)
// for the kept tokens and 0 elsewhere (one-hot for a greedy row, NaN for a row without a
// distribution or with bad parameters). `draws` tokens a row (>= 1), draw d at step step[row] + d:
// the filter runs once and each draw is one more pass (n samples of one prompt, as engines' `n`).
// `advance`: add `draws` to step[row] once the row is done.
#include "common.cuh"

#include <limits.h>

namespace qk {

constexpr int SAMPLE_NO_DISTRIBUTION = -1;
constexpr int SAMPLE_BAD_PARAMS = -2;
constexpr unsigned SAMPLE_DOMAIN = 0x53414D50u;  // "SAMP", the fourth Philox counter word
constexpr int RADIX_BINS = 256;
// e in [0, 1] as a multiple of 2^-40: a row of 2^23 tokens sums below 2^63.
constexpr float MASS_ONE = 1099511627776.0f;

// The order-preserving key of a float that is not NaN: larger value, larger key; -0 is +0.
__device__ __forceinline__ unsigned order_key(float x) {
    const unsigned b = static_cast<unsigned>(__float_as_int(x + 0.0f));
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_value(unsigned k) {
    const unsigned b = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __int_as_float(static_cast<int>(b));
}

__device__ __forceinline__ unsigned long long mass_of(float e) {
    return static_cast<unsigned long long>(e * MASS_ONE);
}

struct Philox4 {
    unsigned x, y, z, w;
};

__device__ __forceinline__ unsigned mul_hi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}

// Philox4x32-10 (Random123), checked against its known answers by src/spec/sampling.rs.
__device__ __forceinline__ Philox4 philox4x32_10(Philox4 c, unsigned k0, unsigned k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const unsigned hi0 = mul_hi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        const unsigned hi1 = mul_hi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = Philox4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// Gumbel noise from one Philox word: u = ((w >> 9) + 0.5) / 2^23, exact, in (0, 1).
__device__ __forceinline__ float gumbel(unsigned w) {
    const float u = (static_cast<float>(w >> 9) + 0.5f) * (1.0f / 8388608.0f);
    return -logf(-logf(u));
}

// ---- block-wide helpers ----------------------------------------------------------------------------
// Reductions through shared-memory integer atomics: exact and commutative, so the order the
// threads arrive in does not matter, and two barriers each (no shuffle rounds).

// Sum over the block, returned to every thread.
__device__ __forceinline__ unsigned long long block_sum_u64(unsigned long long x) {
    __shared__ unsigned long long total;
    if (threadIdx.x == 0) total = 0ull;
    __syncthreads();
    if (x != 0ull) atomicAdd(&total, x);
    __syncthreads();
    const unsigned long long out = total;
    __syncthreads();  // the next call may reset `total`
    return out;
}

// The maximum of `v` (not NaN) and the OR of `flags` over the block, returned to every thread.
__device__ __forceinline__ void block_max_or(float& v, int& flags) {
    __shared__ unsigned max_key;
    __shared__ unsigned any;
    if (threadIdx.x == 0) {
        max_key = 0u;
        any = 0u;
    }
    __syncthreads();
    atomicMax(&max_key, order_key(v));
    if (flags != 0) atomicOr(&any, static_cast<unsigned>(flags));
    __syncthreads();
    v = key_value(max_key);
    flags = static_cast<int>(any);
    __syncthreads();
}

// The largest `v` over the block and, among equal values, the lowest index `i` (INT_MAX: none):
// one 64-bit key, the value's order key above the complement of the index.
__device__ __forceinline__ int block_best_index(float v, int i) {
    __shared__ unsigned long long best;
    if (threadIdx.x == 0) best = 0ull;
    __syncthreads();
    if (i != INT_MAX) {
        atomicMax(&best, (static_cast<unsigned long long>(order_key(v)) << 32) | (0xffffffffu - static_cast<unsigned>(i)));
    }
    __syncthreads();
    const unsigned long long b = best;
    __syncthreads();
    return b == 0ull ? INT_MAX : static_cast<int>(0xffffffffu - static_cast<unsigned>(b));
}

struct Best {
    float v;
    int i;
};

// The larger value; on equal values the lower index (an index of INT_MAX is "none").
__device__ __forceinline__ Best best_of(Best a, Best b) {
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

// Where the running total of `weight`, walking the items from the largest `key` down, first
// reaches `need` (>= 1): that item's key, and the total of the items with larger keys.
struct RadixCut {
    unsigned key;
    unsigned long long above;
    int reached;
};

// Radix selection over items 0..n (key(i): unsigned, weight(i): integer, 0 = not a candidate).
// Four passes of 8 bits; warp 0 scans each level's 256 bins, lane l holding bins 255 - 8l down to
// 248 - 8l, and each lane adds up the lanes before it from shared memory (32 reads: cheaper than
// a shuffle scan of 64-bit totals, and no collective beyond one __syncwarp).
template <typename KeyFn, typename WeightFn>
__device__ RadixCut radix_cut(int n, unsigned long long need, KeyFn key, WeightFn weight) {
    __shared__ unsigned long long hist[RADIX_BINS];
    __shared__ unsigned long long lane_mass[WARP];
    __shared__ RadixCut cut;
    if (threadIdx.x == 0) cut = RadixCut{0u, 0ull, 1};
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < RADIX_BINS; b += blockDim.x) hist[b] = 0ull;
        __syncthreads();
        const unsigned prefix = cut.key;
        const unsigned high = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const unsigned long long w = weight(i);
            if (w == 0ull) continue;
            const unsigned k = key(i);
            if ((k & high) != prefix) continue;
            atomicAdd(&hist[(k >> shift) & 0xffu], w);
        }
        __syncthreads();
        if (threadIdx.x < WARP) {
            const int lane = threadIdx.x;
            const unsigned long long rest = need - cut.above;  // still to reach, > 0
            unsigned long long mine = 0ull;
#pragma unroll
            for (int j = 0; j < 8; ++j) mine += hist[255 - 8 * lane - j];
            lane_mass[lane] = mine;
            __syncwarp();  // lane_mass written; every lane has read cut.above
            // The mass of the lanes before this one (larger keys): running totals only grow, so
            // exactly one lane holds the bin where `rest` is reached, if any does.
            unsigned long long before = 0ull;
            for (int l = 0; l < lane; ++l) before += lane_mass[l];
            if (before < rest && before + mine >= rest) {
                unsigned long long acc = before;
                for (int j = 0; j < 8; ++j) {
                    const int bin = 255 - 8 * lane - j;
                    if (acc + hist[bin] >= rest) {
                        cut.key = prefix | (static_cast<unsigned>(bin) << shift);
                        cut.above += acc;
                        break;
                    }
                    acc += hist[bin];
                }
            } else if (lane == WARP - 1 && before + mine < rest) {
                cut.reached = 0;
            }
        }
        __syncthreads();
        if (!cut.reached) break;
    }
    const RadixCut result = cut;
    __syncthreads();
    return result;
}

template <typename T>
__device__ void sample_row(const T* __restrict__ logits, long long stride, int n, const float* __restrict__ temperature,
                           const int* __restrict__ top_k, const float* __restrict__ top_p,
                           const float* __restrict__ min_p, const unsigned long long* __restrict__ seed,
                           unsigned long long* __restrict__ step, int* __restrict__ tokens, int draws,
                           float* __restrict__ probs, int advance) {
    const int r = blockIdx.x;
    const T* row = logits + static_cast<long long>(r) * stride;
    float* prow = probs == nullptr ? nullptr : probs + static_cast<long long>(r) * n;
    const float temp = temperature[r];
    const int k = top_k[r];
    const float pp = top_p[r];
    const float mp = min_p[r];
    const unsigned long long s = seed[r];
    const unsigned long long st = step[r];
    const bool bad = !(temp >= 0.0f && temp <= 3.402823466e38f) || k < 0 || !(pp > 0.0f && pp <= 1.0f) ||
                     !(mp >= 0.0f && mp <= 1.0f);
    const bool greedy = temp == 0.0f;
    auto x_at = [&](int i) { return greedy ? to_float(row[i]) : to_float(row[i]) / temp; };

    // 1. The maximum; flags: 1 a NaN, 2 a +inf.
    float x_max = -INFINITY;
    int flags = 0;
    if (!bad) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float x = x_at(i);
            if (x != x) flags |= 1;
            else if (x == INFINITY) flags |= 2;
            x_max = fmaxf(x_max, x);
        }
    }
    block_max_or(x_max, flags);
    int answer = INT_MAX;  // set when the row ends without a draw
    if (bad) answer = SAMPLE_BAD_PARAMS;
    else if (greedy ? (flags & 1) != 0 : (flags != 0 || x_max == -INFINITY)) answer = SAMPLE_NO_DISTRIBUTION;
    if (answer != INT_MAX) {
        if (threadIdx.x == 0) {
            for (int d = 0; d < draws; ++d) tokens[static_cast<long long>(r) * draws + d] = answer;
            if (advance) step[r] = st + static_cast<unsigned long long>(draws);
        }
        if (prow != nullptr)
            for (int i = threadIdx.x; i < n; i += blockDim.x) prow[i] = __int_as_float(0x7fc00000);
        return;
    }

    auto key_at = [&](int i) { return order_key(x_at(i)); };

    // 2. Top-k: keep keys >= kk.
    unsigned kk = 0u;
    if (!greedy && k > 0 && k < n) {
        kk = radix_cut(n, static_cast<unsigned long long>(k), key_at, [&](int) { return 1ull; }).key;
    }

    // 3. Top-p over what top-k kept: keep keys > kp, and keys == kp from index ip up.
    unsigned kp = 0u;
    int ip = 0;
    if (!greedy && pp < 1.0f) {
        auto mass = [&](int i) {
            const float x = x_at(i);
            return order_key(x) >= kk ? mass_of(expf(x - x_max)) : 0ull;
        };
        unsigned long long z = 0ull;
        for (int i = threadIdx.x; i < n; i += blockDim.x) z += mass(i);
        z = block_sum_u64(z);
        // A token stays iff the mass above it < top_p * z: the walk stops at the first token whose
        // mass brings the total to ceil(top_p * z) (>= 1: the top token's mass is 2^40).
        const unsigned long long need = static_cast<unsigned long long>(ceil(static_cast<double>(pp) * static_cast<double>(z)));
        const RadixCut cut = radix_cut(n, need, key_at, mass);
        if (cut.reached) {
            kp = cut.key;
            // The group of equal keys at the cut: each member carries the same mass g; the first m
            // of them from the highest index down are needed to reach `need`.
            const unsigned long long g = mass_of(expf(key_value(kp) - x_max));
            const unsigned long long m = (need - cut.above + g - 1ull) / g;
            auto in_group = [&](int i) { return order_key(x_at(i)) == kp ? 1ull : 0ull; };
            unsigned long long members = 0ull;
            for (int i = threadIdx.x; i < n; i += blockDim.x) members += in_group(i);
            members = block_sum_u64(members);
            if (m < members) {
                ip = static_cast<int>(radix_cut(n, m, [&](int i) { return static_cast<unsigned>(i); }, in_group).key);
            }
        }
    }

    auto kept = [&](int i, float x) {
        const unsigned key = order_key(x);
        return key >= kk && (key > kp || (key == kp && i >= ip)) && (mp == 0.0f || expf(x - x_max) >= mp);
    };

    // 4. The draws (greedy: the bounded argmax): draw d at step st + d.
    const unsigned k0 = static_cast<unsigned>(s), k1 = static_cast<unsigned>(s >> 32);
    const int groups = (n + 3) / 4;
    int winner = 0;
    for (int d = 0; d < draws; ++d) {
        const unsigned long long at = st + static_cast<unsigned long long>(d);
        Best best{-INFINITY, INT_MAX};
        for (int g = threadIdx.x; g < groups; g += blockDim.x) {
            Philox4 w{0u, 0u, 0u, 0u};
            if (!greedy) w = philox4x32_10(Philox4{static_cast<unsigned>(g), static_cast<unsigned>(at), static_cast<unsigned>(at >> 32), SAMPLE_DOMAIN}, k0, k1);
            const unsigned words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int i = 4 * g + j;
                if (i >= n) break;
                const float x = x_at(i);
                if (greedy) {
                    best = best_of(best, Best{x, i});
                } else if (kept(i, x)) {
                    best = best_of(best, Best{x + gumbel(words[j]), i});
                }
            }
        }
        const int chosen = block_best_index(best.v, best.i);
        // INT_MAX only for a greedy row of -inf and NaN-free: index 0, as torch.argmax.
        winner = chosen == INT_MAX ? 0 : chosen;
        if (threadIdx.x == 0) tokens[static_cast<long long>(r) * draws + d] = winner;
        if (greedy) {
            for (int e = d + 1; e < draws; ++e)
                if (threadIdx.x == 0) tokens[static_cast<long long>(r) * draws + e] = winner;
            break;
        }
    }
    if (threadIdx.x == 0 && advance) step[r] = st + static_cast<unsigned long long>(draws);

    if (prow != nullptr) {
        if (greedy) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) prow[i] = i == winner ? 1.0f : 0.0f;
        } else {
            unsigned long long z = 0ull;
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                const float x = x_at(i);
                if (kept(i, x)) z += mass_of(expf(x - x_max));
            }
            z = block_sum_u64(z);
            const float scale = static_cast<float>(static_cast<double>(MASS_ONE) / static_cast<double>(z));
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                const float x = x_at(i);
                prow[i] = kept(i, x) ? expf(x - x_max) * scale : 0.0f;
            }
        }
    }
}

}  // namespace qk

// Entry points: sample_<dtype>, grid (rows, 1, 1), block (threads, 1, 1), threads a multiple of 32.
// Per-row arrays (temperature, top_k, top_p, min_p, seed, step) hold `rows` entries, tokens
// [rows, draws] (draw d of row r at step step[r] + d); probs is null or [rows, n_valid].
#define QK_SAMPLE_ENTRY(NAME, T)                                                                         \
    extern "C" __global__ void sample_##NAME(                                                            \
        const T* __restrict__ logits, long long stride, int n_valid, const float* __restrict__ temperature, \
        const int* __restrict__ top_k, const float* __restrict__ top_p, const float* __restrict__ min_p,  \
        const unsigned long long* __restrict__ seed, unsigned long long* __restrict__ step,               \
        int* __restrict__ tokens, int draws, float* __restrict__ probs, int advance) {                   \
        qk::sample_row<T>(logits, stride, n_valid, temperature, top_k, top_p, min_p, seed, step, tokens, \
                          draws, probs, advance);                                                        \
    }

QK_SAMPLE_ENTRY(f32, float)
QK_SAMPLE_ENTRY(f16, __half)
QK_SAMPLE_ENTRY(bf16, __nv_bfloat16)
