//! Source mutants: each is one kernel file with one planted defect, built (by softgpu/build.rs)
//! only for the software device, into its own library. tests/softgpu.rs runs the GPU tests named
//! in `caught_by` with the mutant in place of the real module and requires them to fail, with
//! `says` in the output: the proof that the suite, run on the software device, catches the defect.

pub struct Mutant {
    /// Also the library's name (libNAME.so) and the QK_SOFTGPU_MUTANT value's key.
    pub name: &'static str,
    /// cuda/<module>.cu
    pub module: &'static str,
    /// Text that must occur exactly once in the module (the build checks), and its replacement.
    pub find: &'static str,
    pub replace: &'static str,
    /// GPU tests (tests/gpu, by name filter) that must fail with the mutant in place.
    pub caught_by: &'static [&'static str],
    /// Text the failing run must print: the assertion (or the software device's check) that the
    /// defect must trip, not any failure.
    pub says: &'static str,
    /// Whether the catch is the software device's own check (a guard page, the barrier or
    /// collective check), which fails the launch. Otherwise the defect is one of results, and a
    /// child run in which the software device reports any error (a launch that failed instead of
    /// computing a wrong answer) does not count as caught.
    pub device_error: bool,
    /// For a defect a tool reports (memcheck, initcheck, racecheck): a text of the mutated
    /// cuda/<module>.cu whose line the report must name, as `cuda/<module>.cu:<line>`.
    pub at: Option<&'static str>,
}

pub const MUTANTS: &[Mutant] = &[
    Mutant {
        name: "ldmatrix_v_without_trans",
        module: "attention",
        find: "ldmatrix_x4<true>(b, src);",
        replace: "ldmatrix_x4<false>(b, src);",
        caught_by: &["attention::goldens_prefill_every_case_and_dtype"],
        says: "prefill mismatch: golden",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "bf16_p_one_term",
        module: "attention",
        find: "static constexpr int P_TERMS = 3;",
        replace: "static constexpr int P_TERMS = 1;",
        caught_by: &["attention::tensor_core_weights_keep_fp32_accuracy_under_cancellation"],
        says: "prefill mismatch: cancellation",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "bf16_p_two_terms",
        module: "attention",
        find: "static constexpr int P_TERMS = 3;",
        replace: "static constexpr int P_TERMS = 2;",
        caught_by: &["attention::tensor_core_weights_keep_fp32_accuracy_under_cancellation"],
        says: "prefill mismatch: equal weights in two tiles",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "causal_mask_off_by_one",
        module: "attention",
        find: "s[nb][e] = in && key <= pos_a ? s[nb][e] * scale : -INFINITY;",
        replace: "s[nb][e] = in && key <= pos_a + 1 ? s[nb][e] * scale : -INFINITY;",
        caught_by: &["attention::goldens_prefill_every_case_and_dtype"],
        says: "prefill mismatch: golden",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "no_barrier_after_cp_async_wait",
        module: "attention",
        find: "__syncthreads();   // every thread's copies of this tile are visible",
        replace: "// (barrier removed)",
        caught_by: &["attention::goldens_prefill_every_case_and_dtype"],
        // racecheck sees it before any result is wrong: a thread's ldmatrix reads what another
        // thread's cp.async wrote, with no barrier between.
        says: "racecheck: shared-memory read-after-write hazard",
        device_error: true,
        at: Some("cp_async16(sk + r * LD + c, k_head + off, in && !bad);"),
    },
    Mutant {
        name: "no_trailing_barrier",
        module: "attention",
        find: "__syncthreads();   // this buffer is restaged by iteration it + 1",
        replace: "// (barrier removed)",
        caught_by: &["schedules::attention_prefill"],
        // The next tile's copies overwrite what slower threads still read (found without the
        // schedule that makes the result differ).
        says: "racecheck: shared-memory write-after-read hazard",
        device_error: true,
        at: Some("cp_async16(sk + r * LD + c, k_head + off, in && !bad);"),
    },
    Mutant {
        name: "rmsnorm_reads_one_past",
        module: "rmsnorm",
        find: "for (int i = threadIdx.x; i < hidden; i += blockDim.x) {\n            y[i] =",
        replace: "for (int i = threadIdx.x; i <= hidden; i += blockDim.x) {\n            y[i] =",
        caught_by: &["rmsnorm::random_inputs_every_dtype_and_hidden_size"],
        // Hidden size 1 first: the 4-byte weight's allocation ends 12 bytes before its guard page,
        // so only memcheck can see the read of weight[1].
        says: "bytes past the end of device allocation",
        device_error: true,
        at: Some("y[i] = from_float<T>(to_float(weight[i]) * round_to<T>(to_float(src[i]) * inv));"),
    },
    Mutant {
        name: "warp_exits_before_barrier",
        module: "rmsnorm",
        find: "    const float inv = inv_rms(block_sum(sum_sq), hidden, eps);",
        replace: "    if (blockDim.x > 32 && threadIdx.x / 32 == blockDim.x / 32 - 1) return;\n    const float inv = inv_rms(block_sum(sum_sq), hidden, eps);",
        caught_by: &["rmsnorm::random_inputs_every_dtype_and_hidden_size"],
        says: "is never reached by 32 thread(s)",
        device_error: true,
        at: None,
    },
    Mutant {
        name: "shuffle_half_the_lanes_skip",
        module: "argmax",
        find: "o.v = __shfl_xor_sync(0xffffffffu, x.v, offset);",
        replace: "if (threadIdx.x % WARP < 16) o.v = __shfl_xor_sync(0xffffffffu, x.v, offset);",
        caught_by: &["argmax::"],
        says: "divergent warp",
        device_error: true,
        at: None,
    },
    // The software device's tools (softgpu/tools.cpp): each planted defect must be reported by
    // its tool, naming the source line of the access.
    Mutant {
        name: "softmax_without_syncwarp",
        module: "attention",
        find: "            __syncwarp();\n            if (lane == 0) {",
        replace: "            if (lane == 0) {",
        caught_by: &["attention::decode_many_sequences_of_different_lengths"],
        says: "racecheck: shared-memory write-after-read hazard",
        device_error: true,
        at: Some("s_max[j] = m_new;"),
    },
    Mutant {
        name: "rmsnorm_blocks_write_one_row",
        module: "rmsnorm",
        find: "    y += row_offset;\n",
        replace: "    (void)y;\n",
        caught_by: &["rmsnorm::rows_are_batch_invariant"],
        says: "racecheck: two blocks of one launch write",
        device_error: true,
        at: Some("store16(y + static_cast<size_t>(i) * N, out);"),
    },
    Mutant {
        name: "split_leaves_a_partial_unwritten",
        module: "attention",
        find: "            if (d == 0) {\n                ws_ml[part_index * 2] = bad ? nan : s_max[j];",
        replace: "            if (d == 0 && split != 1) {\n                ws_ml[part_index * 2] = bad ? nan : s_max[j];",
        caught_by: &["tools::decode_reads_only_the_workspace_it_writes"],
        says: "initcheck: 4-byte read",
        device_error: true,
        at: Some("for (int i = 0; i < n_splits; ++i) m = fmaxf(m, __ldcg(ws_ml + i * 2));"),
    },
    Mutant {
        name: "rmsnorm_reads_one_before",
        module: "rmsnorm",
        find: "            T r = x[i];",
        replace: "            T r = x[static_cast<long long>(i) - 1];",
        caught_by: &["rmsnorm::random_inputs_every_dtype_and_hidden_size"],
        says: "bytes before the start of device allocation",
        device_error: true,
        at: Some("T r = x[static_cast<long long>(i) - 1];"),
    },
    Mutant {
        name: "rmsnorm_vector_load_misaligned",
        module: "rmsnorm",
        find: "            const Vec16<T> w = load16(weight + static_cast<size_t>(i) * N);",
        replace: "            const Vec16<T> w = load16(weight + static_cast<size_t>(i) * N + N / 2);",
        caught_by: &["rmsnorm::random_inputs_every_dtype_and_hidden_size"],
        says: "memcheck: misaligned 16-byte read",
        device_error: true,
        at: Some("const Vec16<T> w = load16(weight + static_cast<size_t>(i) * N + N / 2);"),
    },
    Mutant {
        name: "rmsnorm_weight_read_strided",
        module: "rmsnorm",
        find: "            const Vec16<T> w = load16(weight + static_cast<size_t>(i) * N);",
        replace: "            const Vec16<T> w = load16(weight + static_cast<size_t>(i) * 2 % n_vec * N);",
        caught_by: &["tools::counters_of_rmsnorm"],
        says: "sectors per read request",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "mma_half_warp_at_another_line",
        module: "attention",
        find: "mma_m16n8k16<T>(s[nb], qf[ks], b[0], b[1]);",
        replace: "if (lane < 16) mma_m16n8k16<T>(s[nb], qf[ks], b[0], b[1]);\n                else mma_m16n8k16<T>(s[nb], qf[ks], b[0], b[1]);",
        caught_by: &["attention::tensor_core_weights_keep_fp32_accuracy_under_cancellation"],
        says: "divergent warp: lane 16 reaches mma.sync.m16n8k16.bf16 at mutants/mma_half_warp_at_another_line.attention.cu:",
        device_error: true,
        at: None,
    },
    // Sampling: the three defects the chi-square test (tests/gpu/sampling.rs) must catch.
    Mutant {
        name: "sampling_temperature_twice",
        module: "sampling",
        find: "to_float(row[i]) / temp; };",
        replace: "to_float(row[i]) / temp / temp; };",
        caught_by: &["sampling::draws_follow_the_filtered_distribution"],
        says: "chi-square",
        device_error: false,
        at: None,
    },
    Mutant {
        // Drops the tie group at the top-p cut: on a row without ties, the one last kept token.
        name: "sampling_top_p_one_token_short",
        module: "sampling",
        find: "(key > kp || (key == kp && i >= ip))",
        replace: "(key > kp || (key == kp && i >= ip && kp == 0u))",
        caught_by: &["sampling::draws_follow_the_filtered_distribution"],
        says: "chi-square",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "sampling_seed_shared_between_rows",
        module: "sampling",
        find: "const unsigned long long s = seed[r];",
        replace: "const unsigned long long s = seed[0];",
        caught_by: &["sampling::draws_follow_the_filtered_distribution"],
        says: "chi-square",
        device_error: false,
        at: None,
    },
    // The fused decode step: each defect changes what a fused kernel computes against the
    // unfused launches it must equal (tests/gpu/decode.rs).
    Mutant {
        name: "decode_norm_not_rounded",
        module: "decode",
        find: "from_float<T>(to_float(wv.v[e]) * round_to<T>(to_float(xv.v[e]) * ir));",
        replace: "from_float<T>(to_float(wv.v[e]) * (to_float(xv.v[e]) * ir));",
        caught_by: &["decode::qkv_equals_rmsnorm_gemv_rope_qkv"],
        says: "d 16 Auto: q",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_staged_rows_unswizzled",
        module: "decode",
        // The norm prologue stages its rows in place while gemv.cuh reads them swizzled: every
        // odd row's halves of each 128 bytes are read swapped (the unfused GEMV reads plain rows).
        find: "return staged_swizzle<T, VEC>() ? staged_vector(r, i, items) : i;",
        replace: "return (void)r, (void)items, i;",
        caught_by: &["decode::qkv_equals_rmsnorm_gemv_rope_qkv"],
        says: "rows 3 hidden 72 heads 4/2 d 16 Auto: q",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_gate_up_swapped",
        module: "decode",
        find: "swiglu_one(from_float<T>(acc[0]), from_float<T>(acc[1]))",
        replace: "swiglu_one(from_float<T>(acc[1]), from_float<T>(acc[0]))",
        caught_by: &["decode::gate_up_equals_rmsnorm_gemv_swiglu"],
        says: "Auto: act",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_rope_one_position_late",
        module: "decode",
        find: "rope_cos_sin<T>(pos, inv_freq[i], c, s);",
        replace: "rope_cos_sin<T>(pos + 1, inv_freq[i], c, s);",
        caught_by: &["decode::qkv_equals_rmsnorm_gemv_rope_qkv"],
        says: "Auto: q",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_residual_added_twice",
        module: "decode",
        find: "*y = from_float<T>(to_float(*y) + round_to<T>(acc[0]));",
        replace: "*y = from_float<T>(to_float(*y) + to_float(*y) + round_to<T>(acc[0]));",
        caught_by: &["decode::residual_equals_gemv_and_the_add"],
        says: "Auto: resid",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_argmax_ties_to_the_higher_index",
        module: "decode",
        find: "argmax_combine(b, ArgBest{s_v[j][r], s_i[j][r], false});",
        replace: "((s_v[j][r] > b.v || (s_v[j][r] == b.v && s_i[j][r] > b.i)) ? ArgBest{s_v[j][r], s_i[j][r], false} : b);",
        caught_by: &["decode::head_equals_rmsnorm_gemv_argmax_and_advance"],
        says: "Auto: argmax",
        device_error: false,
        at: None,
    },
    Mutant {
        name: "decode_wide_head_tiles_overlap",
        module: "decode",
        // A wide head block writes its 4 tiles' argmax candidates as if its blocks were narrow:
        // block b's tile jj lands on candidate b + jj, so the blocks overwrite each other's
        // candidates and most tiles' are lost (the head's launches are wide).
        // racecheck sees two blocks write one candidate before any answer is compared.
        find: "const int tile = blockIdx.x * NT + jj;",
        replace: "const int tile = blockIdx.x + jj;",
        caught_by: &["decode::head_equals_rmsnorm_gemv_argmax_and_advance"],
        says: "racecheck: two blocks of one launch write",
        device_error: true,
        at: None,
    },
    Mutant {
        name: "gemv_prefetch_past_the_matrix",
        module: "gemv",
        // The L2 hint ahead of the wait told the matrix holds 8 rows more than it does: the last
        // block hints lines past the weight's allocation. A GPU ignores such a hint; memcheck
        // holds the hint's address to the allocation all the same, since the arithmetic that
        // made it is wrong.
        find: "qk::GEMV_WARPS, a.n, a.k);",
        replace: "qk::GEMV_WARPS, a.n + qk::GEMV_WARPS, a.k);",
        caught_by: &["gemv::odd_sizes_every_dtype_against_the_reference"],
        says: "prefetch.global.L2 of",
        device_error: true,
        at: None,
    },
    Mutant {
        name: "residual_reads_before_its_wait",
        module: "decode",
        // The o/down projection kernel without griddepcontrol.wait: launched programmatically,
        // it would read the residual stream while the kernel before it may still write it. The
        // software device runs launches one after another, so the result is right; what the
        // launch promised is checked instead, at the kernel's first access.
        find: "qk::GEMV_WARPS, a.n, a.k);   \\\n        qk::grid_dependency_wait();",
        replace: "qk::GEMV_WARPS, a.n, a.k);   /* no wait */ \\\n",
        caught_by: &["pdl::programmatic_launches_change_nothing_but_the_launch"],
        says: "before this thread's griddepcontrol.wait",
        device_error: true,
        at: None,
    },
];
