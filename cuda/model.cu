// model.cu: the two small kernels the whole-model forward needs besides the ops (src/model/device.rs).
//
// 1. embed_<dtype>: the embedding lookup, out[r, :] = table[tokens[r], :] (nn.Embedding: an exact
//    copy of a row, no arithmetic). The token ids live on the device: in a decode step they are the
//    previous step's argmax, never seen by the host. A token outside 0..vocab (the argmax's NaN row
//    marker -1 included) makes its row's block fill the row with NaN and set QK_EMBED_BAD_TOKEN in
//    *status; nothing is read outside the table. The caller reads the status when it synchronises.
//    grid = (rows, 1, 1), any block size (the host uses 128); offsets are 64-bit.
//
// 2. decode_advance: after a decode step, each row's position and length move on by one:
//    positions[b] += 1, lens[b] += 1 for b < batch, and the row's cache slot for the new position
//    is looked up in its block table (spec/kv_cache.rs): slot_mapping[b] = page * page_size +
//    position % page_size. Kept on the device so that a captured decode step replays without the
//    host (the next replay reads the new values). A position past the table or a page not given
//    (negative) yields INT_MAX, which the next cache write refuses and flags: never a silent skip.
//    With a report (args.h's QkDecodeAdvanceArgs) it also packs the step's report (model.cuh's
//    step_report_row) from index[b]; `advance` 0 writes the report alone. A programmatic dependent
//    launch is allowed (ptx.cuh: each thread waits first). grid = (1, 1, 1), block = batch rounded
//    up to 32 threads, looping for larger batches.
#include "args.h"
#include "model.cuh"

namespace qk {

constexpr unsigned EMBED_BAD_TOKEN = 1u;

template <typename T>
__device__ __forceinline__ void embed_row(const T* __restrict__ table, const int* __restrict__ tokens,
                                          T* __restrict__ out, int vocab, int hidden,
                                          unsigned* __restrict__ status) {
    const int token = tokens[blockIdx.x];
    T* dst = out + static_cast<long long>(blockIdx.x) * hidden;
    if (token < 0 || token >= vocab) {
        if (threadIdx.x == 0) atomicOr(status, EMBED_BAD_TOKEN);
        const T nan = from_float<T>(__int_as_float(0x7fc00000));
        for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = nan;
        return;
    }
    const T* src = table + static_cast<long long>(token) * hidden;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) dst[c] = src[c];
}

}  // namespace qk

#define QK_EMBED_ENTRY(NAME, T)                                                                        \
    extern "C" __global__ void embed_##NAME(const T* __restrict__ table, const int* __restrict__ tokens, \
                                            T* __restrict__ out, int vocab, int hidden,                \
                                            unsigned* __restrict__ status) {                           \
        qk::embed_row<T>(table, tokens, out, vocab, hidden, status);                                   \
    }

QK_EMBED_ENTRY(f32, float)
QK_EMBED_ENTRY(f16, __half)
QK_EMBED_ENTRY(bf16, __nv_bfloat16)

extern "C" __global__ void decode_advance(const QkDecodeAdvanceArgs a) {
    qk::grid_dependency_wait();
    qk::grid_dependents_launch();
    for (int b = threadIdx.x; b < a.batch; b += blockDim.x) {
        if (a.advance != 0) {
            qk::decode_advance_row(b, a.adv.positions, a.adv.lens, a.adv.slot_mapping, a.adv.block_tables,
                                   a.adv.max_pages, a.adv.page_size);
        }
        if (a.report.out != nullptr) {
            qk::step_report_row(b, a.index[b], a.report.out, a.report.embed_status, a.report.rope_status,
                                a.report.decode_status);
        }
    }
}
