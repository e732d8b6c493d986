// model.cuh: what the last kernel of a decode step does for each row, shared by model.cu's
// decode_advance and the fused step's dec_finish (decode.cu): the position update
// (decode_advance_row) and the step's report (step_report_row).
#pragma once

#include "common.cuh"

namespace qk {

__device__ __forceinline__ void decode_advance_row(int b, int* __restrict__ positions, int* __restrict__ lens,
                                                   int* __restrict__ slot_mapping,
                                                   const int* __restrict__ block_tables, int max_pages,
                                                   int page_size) {
    const int p = positions[b] + 1;
    positions[b] = p;
    lens[b] += 1;
    const int i = p >= 0 ? p / page_size : max_pages;
    const int page = i < max_pages ? block_tables[static_cast<long long>(b) * max_pages + i] : -1;
    slot_mapping[b] = page >= 0 ? page * page_size + p % page_size : 0x7fffffff;
}

// The step's report: everything the host reads after a decode step, packed so that one copy
// brings it back (src/model/device/report.rs):
//   report[0] = the embedding's status word, report[1] = RoPE's, report[2] = decode attention's,
//   report[REPORT_HEAD + r] = row r's token (index[r]; -1 for a NaN row, negative for no draw).
// The embedding and RoPE words are sticky (kernels OR bits into them); the report moves them out
// and clears them, so each step's report holds that step's flags alone. The decode attention word
// is cleared at the start of each step (or each decode launch) and only read here. Every kernel
// of the step ran before this one (stream order), so the words are final. `report` null: no
// report (an engine's step, whose caller reads the words itself).
constexpr int REPORT_HEAD = 3;

__device__ __forceinline__ void step_report_row(int r, int token, unsigned* __restrict__ report,
                                                unsigned* __restrict__ embed_status,
                                                unsigned* __restrict__ rope_status,
                                                const unsigned* __restrict__ decode_status) {
    if (report == nullptr) return;
    report[REPORT_HEAD + r] = static_cast<unsigned>(token);
    if (r == 0) {
        report[0] = *embed_status;
        *embed_status = 0u;
        report[1] = *rope_status;
        *rope_status = 0u;
        report[2] = *decode_status;
    }
}

}  // namespace qk
