//! Attention kernel wrappers' validation, on the CPU: every error path of `plan_prefill` and
//! `check_decode` (what the GPU entry points run before any launch), the workspace size and the
//! tensor-core error term.

use qwen_kernels::ops::attention::{
    check_decode, decode_header_len, decode_heads_per_block, decode_splits, decode_workspace_len, mma_extra_error, plan_prefill, plan_prefill_paged, DecodeDims, PrefillPath, DECODE_OP,
    DEFAULT_DECODE_CHUNK, MMA_BLOCK_M,
};
use qwen_kernels::ops::kv_cache::{self, KvLayout};
use qwen_kernels::{DType, Error, Layout};

fn l(dtype: DType, dims: &[usize]) -> Layout {
    Layout::new(dtype, dims).unwrap()
}

const ALIGNED: [usize; 4] = [0, 256, 512, 1024];

fn prefill(q: Layout, k: Layout, v: Layout, out: Layout) -> qwen_kernels::Result<&'static str> {
    plan_prefill(q, k, v, out, ALIGNED, PrefillPath::Auto).map(|(_, launch)| launch.kernel)
}

#[test]
fn prefill_picks_tensor_cores_for_16_bit_and_simt_for_f32() {
    let bf = DType::BF16;
    let (q, kv) = (l(bf, &[100, 14, 64]), l(bf, &[300, 2, 64]));
    let (dims, launch) = plan_prefill(q, kv, kv, q, ALIGNED, PrefillPath::Auto).unwrap();
    assert_eq!((dims.tokens, dims.context, dims.group()), (100, 300, 7));
    assert_eq!(launch.kernel, "attn_prefill_mma_bf16_d64");
    assert_eq!(launch.grid, (2, 14, 1)); // ceil(100 / 64) query tiles x heads
    // two stages of K and V tiles, 64 rows of (64 + 8) 16-bit elements
    assert_eq!(launch.shared_bytes, 2 * 2 * 64 * 72 * 2);
    let q = l(DType::F16, &[5, 12, 128]);
    let kv = l(DType::F16, &[40, 2, 128]);
    assert_eq!(prefill(q, kv, kv, q).unwrap(), "attn_prefill_mma_f16_d128");
    let (_, simt) = plan_prefill(q, kv, kv, q, ALIGNED, PrefillPath::Simt).unwrap();
    assert_eq!(simt.kernel, "attn_split_f16_d128");
    assert_eq!(simt.shared_bytes, 0);
    let (_, mma128) = plan_prefill(q, kv, kv, q, ALIGNED, PrefillPath::TensorCore).unwrap();
    assert_eq!(mma128.shared_bytes, 69632); // past the 48 KiB default, within sm_86's 99 KiB

    assert_eq!(simt.grid, (5, 2, 1)); // tokens x kv heads (group 6 fits one block)
    let q = l(DType::F32, &[5, 18, 128]);
    let kv = l(DType::F32, &[40, 2, 128]);
    let (_, f32_launch) = plan_prefill(q, kv, kv, q, ALIGNED, PrefillPath::Auto).unwrap();
    assert_eq!(f32_launch.kernel, "attn_split_f32_d128");
    assert_eq!(f32_launch.grid, (5, 4, 1)); // group 9: two blocks of heads per kv head
}

#[test]
fn prefill_rejects_each_bad_input() {
    let bf = DType::BF16;
    let (q, kv) = (l(bf, &[4, 14, 64]), l(bf, &[10, 2, 64]));
    // heads not a multiple of kv heads
    let q13 = l(bf, &[4, 13, 64]);
    assert!(matches!(prefill(q13, kv, kv, q13), Err(Error::Shape { op: "attention", .. })));
    // unsupported head_dim (no generic path): 96, 256, 32
    for d in [32, 96, 256] {
        let (qd, kvd) = (l(bf, &[4, 14, d]), l(bf, &[10, 2, d]));
        let e = prefill(qd, kvd, kvd, qd).unwrap_err();
        assert!(matches!(e, Error::UnsupportedSize { op: "attention", .. }), "{e}");
        assert!(e.to_string().contains(&format!("head_dim {d}")), "{e}");
    }
    // T > S
    let q11 = l(bf, &[11, 14, 64]);
    let e = prefill(q11, kv, kv, q11).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("11 new tokens"), "{e}");
    // mismatched shapes: k vs v, q vs k head_dim, out
    assert!(matches!(prefill(q, kv, l(bf, &[9, 2, 64]), q), Err(Error::Shape { .. })));
    assert!(matches!(prefill(q, l(bf, &[10, 2, 128]), l(bf, &[10, 2, 128]), q), Err(Error::Shape { .. })));
    assert!(matches!(prefill(q, kv, kv, l(bf, &[4, 14, 65])), Err(Error::Shape { .. })));
    assert!(matches!(prefill(q, kv, kv, l(bf, &[3, 14, 64])), Err(Error::Shape { .. })));
    assert!(matches!(prefill(l(bf, &[4, 896]), kv, kv, l(bf, &[4, 896])), Err(Error::Shape { .. })));
    // mismatched dtypes: k, out
    assert!(matches!(prefill(q, l(DType::F16, &[10, 2, 64]), l(DType::F16, &[10, 2, 64]), q), Err(Error::DType { .. })));
    assert!(matches!(prefill(q, kv, kv, l(DType::F32, &[4, 14, 64])), Err(Error::DType { .. })));
    // tensor cores demanded for f32
    let (q32, kv32) = (l(DType::F32, &[4, 14, 64]), l(DType::F32, &[10, 2, 64]));
    assert!(matches!(plan_prefill(q32, kv32, kv32, q32, ALIGNED, PrefillPath::TensorCore), Err(Error::DType { .. })));
    // misaligned operands, each one
    for i in 0..4 {
        let mut offsets = ALIGNED;
        offsets[i] += 8;
        let e = plan_prefill(q, kv, kv, q, offsets, PrefillPath::Auto).unwrap_err();
        assert!(matches!(e, Error::Alignment { .. }), "{e}");
    }
}

/// A decode over HND caches `kc`, `vc` of one page per sequence (max_pages 1): `rows` block-table
/// rows and `lens` seq_lens.
#[allow(clippy::too_many_arguments)]
fn decode_at(q: Layout, kc: Layout, vc: Layout, out: Layout, rows: usize, lens: usize, ws: Layout, chunk: usize, offsets: [usize; 4]) -> qwen_kernels::Result<DecodeDims> {
    let cache = kv_cache::check(DECODE_OP, kc, vc, KvLayout::Hnd)?;
    check_decode(q, &cache, kc.dtype, out, rows, 1, lens, ws, chunk, offsets)
}

#[allow(clippy::too_many_arguments)]
fn decode(q: Layout, kc: Layout, vc: Layout, out: Layout, rows: usize, lens: usize, ws: Layout, chunk: usize) -> qwen_kernels::Result<()> {
    decode_at(q, kc, vc, out, rows, lens, ws, chunk, ALIGNED).map(|_| ())
}

#[test]
fn decode_workspace_is_sized_by_shapes_only() {
    // Qwen2.5-0.5B: 64 sequences, 14 heads, D 64, 32k positions, 256-key chunks: 128 splits.
    assert_eq!(decode_splits(32768, 256), 128);
    assert_eq!(decode_splits(1, 256), 1);
    assert_eq!(decode_splits(257, 256), 2);
    // Status word and one split counter per (sequence, head), then the partials.
    assert_eq!(decode_header_len(64, 14), 1 + 64 * 14);
    assert_eq!(decode_workspace_len(64, 14, 64, 32768, 256), 1 + 64 * 14 + 64 * 14 * 128 * 66);
    assert_eq!(DEFAULT_DECODE_CHUNK, 64);
    let bf = DType::BF16;
    let (q, cache) = (l(bf, &[3, 12, 128]), l(bf, &[5, 2, 4096, 128]));
    let need = decode_workspace_len(3, 12, 128, 4096, DEFAULT_DECODE_CHUNK);
    let dims = decode_at(q, cache, cache, q, 3, 3, l(DType::F32, &[need]), DEFAULT_DECODE_CHUNK, ALIGNED).unwrap();
    assert_eq!((dims.batch, dims.group(), dims.max_splits(), dims.max_len()), (3, 6, 64, 4096));
}

/// One head a decode block while the grid would leave SMs idle, else the whole group (at most 8).
#[test]
fn decode_heads_per_block_spreads_small_grids() {
    // Batch 1 of Qwen2.5-0.5B (2 kv heads, group 7) at 512 keys, 64-key splits, 132 SMs: 16 blocks
    // with the group, so one head each (112 blocks).
    assert_eq!(decode_heads_per_block(1, 2, 7, 8, 132), 1);
    // Batch 8: 128 blocks, still under 132; batch 9: 144, the whole group.
    assert_eq!(decode_heads_per_block(8, 2, 7, 8, 132), 1);
    assert_eq!(decode_heads_per_block(9, 2, 7, 8, 132), 7);
    // A long row alone: 2 kv heads x 512 splits.
    assert_eq!(decode_heads_per_block(1, 2, 6, 512, 132), 6);
    // Groups past 8 heads keep blocks of 8 (the kernel's register arrays).
    assert_eq!(decode_heads_per_block(64, 1, 16, 64, 132), 8);
}

#[test]
fn decode_rejects_each_bad_input() {
    let bf = DType::BF16;
    let (q, cache) = (l(bf, &[3, 14, 64]), l(bf, &[5, 2, 1000, 64]));
    let chunk = DEFAULT_DECODE_CHUNK;
    let ws = l(DType::F32, &[decode_workspace_len(3, 14, 64, 1000, chunk)]);
    decode(q, cache, cache, q, 3, 3, ws, chunk).unwrap();
    // heads not a multiple of kv heads
    let q13 = l(bf, &[3, 13, 64]);
    assert!(matches!(decode(q13, cache, cache, q13, 3, 3, ws, chunk), Err(Error::Shape { op: "attention_decode", .. })));
    // unsupported head_dim
    let (q96, c96) = (l(bf, &[3, 14, 96]), l(bf, &[5, 2, 1000, 96]));
    let ws96 = l(DType::F32, &[decode_workspace_len(3, 14, 96, 1000, chunk)]);
    assert!(matches!(decode(q96, c96, c96, q96, 3, 3, ws96, chunk), Err(Error::UnsupportedSize { .. })));
    // q and cache disagree on head_dim; cache pair mismatched; cache rank; q rank
    let c128 = l(bf, &[5, 2, 1000, 128]);
    assert!(matches!(decode(q, c128, c128, q, 3, 3, ws, chunk), Err(Error::Shape { .. })));
    assert!(matches!(decode(q, cache, l(bf, &[5, 2, 999, 64]), q, 3, 3, ws, chunk), Err(Error::Shape { .. })));
    assert!(matches!(decode(q, l(bf, &[2, 1000, 64]), l(bf, &[2, 1000, 64]), q, 3, 3, ws, chunk), Err(Error::Shape { .. })));
    assert!(matches!(decode(l(bf, &[3, 1, 14, 64]), cache, cache, l(bf, &[3, 1, 14, 64]), 3, 3, ws, chunk), Err(Error::Shape { .. })));
    // dtypes: cache vs q, v_cache vs k_cache, out, workspace
    let c16 = l(DType::F16, &[5, 2, 1000, 64]);
    assert!(matches!(decode(q, c16, c16, q, 3, 3, ws, chunk), Err(Error::DType { .. })));
    assert!(matches!(decode(q, cache, c16, q, 3, 3, ws, chunk), Err(Error::DType { .. })));
    assert!(matches!(decode(q, cache, cache, l(DType::F16, &[3, 14, 64]), 3, 3, ws, chunk), Err(Error::DType { .. })));
    assert!(matches!(decode(q, cache, cache, q, 3, 3, l(bf, &[ws.numel()]), chunk), Err(Error::DType { .. })));
    // out shape
    assert!(matches!(decode(q, cache, cache, l(bf, &[2, 14, 64]), 3, 3, ws, chunk), Err(Error::Shape { .. })));
    // block table / seq_lens length mismatch
    for (s, n) in [(2, 3), (3, 4), (0, 0)] {
        let e = decode(q, cache, cache, q, s, n, ws, chunk).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("seq_lens"), "{e}");
    }
    // workspace too small (by one element)
    let e = decode(q, cache, cache, q, 3, 3, l(DType::F32, &[ws.numel() - 1]), chunk).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("workspace"), "{e}");
    // chunk not a positive multiple of 64
    for bad in [0, 63, 100] {
        assert!(matches!(decode(q, cache, cache, q, 3, 3, ws, bad), Err(Error::InvalidArgument { .. })));
    }
    // misaligned operands
    for i in 0..4 {
        let mut offsets = ALIGNED;
        offsets[i] += 2;
        let e = decode_at(q, cache, cache, q, 3, 3, ws, chunk, offsets).unwrap_err();
        assert!(matches!(e, Error::Alignment { .. }), "{e}");
    }
    // splits past CUDA's grid limit: capacity 65536 * 64 + 1 with 64-key chunks
    let huge = l(bf, &[1, 1, 65535 * 64 + 1, 64]);
    let q1 = l(bf, &[1, 1, 64]);
    let e = decode(q1, huge, huge, q1, 1, 1, l(DType::F32, &[decode_workspace_len(1, 1, 64, 65535 * 64 + 1, 64)]), 64).unwrap_err();
    assert!(matches!(e, Error::UnsupportedSize { .. }), "{e}");
}

#[test]
fn ragged_prefill_plan_and_its_refusals() {
    let bf = DType::BF16;
    // 3 sequences, 100 new tokens in all, at most 70 of one; 40 pages of 16 (NHD), 8 pages a row.
    let cache = kv_cache::check("t", l(bf, &[40, 16, 2, 64]), l(bf, &[40, 16, 2, 64]), KvLayout::Nhd).unwrap();
    let q = l(bf, &[100, 14, 64]);
    let plan = |q: Layout, out: Layout, batch, table, max_pages, cu, max_q, path| plan_prefill_paged(q, &cache, bf, out, batch, table, max_pages, cu, max_q, ALIGNED, path);
    let (dims, launch) = plan(q, q, 3, 24, 8, 4, 70, PrefillPath::Auto).unwrap();
    assert_eq!((dims.tokens, dims.context, dims.group()), (100, 128, 7));
    assert_eq!((launch.kernel, launch.grid), ("attn_prefill_mma_bf16_d64", (70usize.div_ceil(MMA_BLOCK_M) as u32, 14, 3)));
    let (_, simt) = plan(q, q, 3, 24, 8, 4, 70, PrefillPath::Simt).unwrap();
    assert_eq!((simt.kernel, simt.grid.0), ("attn_split_bf16_d64", 100));
    let shape = |r: qwen_kernels::Result<_>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    shape(plan(q, q, 3, 24, 8, 3, 70, PrefillPath::Auto)); // cu_seqlens not batch + 1
    shape(plan(q, q, 3, 23, 8, 4, 70, PrefillPath::Auto)); // block table not batch x max_pages
    shape(plan(q, q, 3, 0, 0, 4, 70, PrefillPath::Auto)); // no pages
    shape(plan(q, l(bf, &[99, 14, 64]), 3, 24, 8, 4, 70, PrefillPath::Auto)); // out rows
    shape(plan(l(bf, &[100, 13, 64]), l(bf, &[100, 13, 64]), 3, 24, 8, 4, 70, PrefillPath::Auto)); // heads vs kv heads
    assert!(matches!(plan(q, q, 3, 24, 8, 4, 101, PrefillPath::Auto), Err(Error::InvalidArgument { .. }))); // max_q_len > rows
    assert!(matches!(plan(q, q, 3, 24, 8, 4, 129, PrefillPath::Auto), Err(Error::InvalidArgument { .. }))); // > 8 pages of 16
    let f16 = l(DType::F16, &[100, 14, 64]);
    assert!(matches!(plan(f16, f16, 3, 24, 8, 4, 70, PrefillPath::Auto), Err(Error::DType { .. }))); // cache is bf16
    assert!(matches!(plan(q, q, 70000, 70000 * 8, 8, 70001, 70, PrefillPath::Auto), Err(Error::UnsupportedSize { .. }))); // grid.z
}

#[test]
fn tensor_core_error_term_counts_its_sources() {
    // f32 never runs on tensor cores.
    assert_eq!(mma_extra_error(DType::F32, 128, 100, 3.0), 0.0);
    // truncation: 2 (D + 2) L + S + 2; weights: f16 4 + S / 2, bf16 1.
    assert_eq!(mma_extra_error(DType::BF16, 64, 10, 1.0), 2.0 * 66.0 + 12.0 + 1.0);
    assert_eq!(mma_extra_error(DType::F16, 64, 10, 1.0), 2.0 * 66.0 + 12.0 + 4.0 + 5.0);
}

/// Every kernel the planners can choose is in the build for every target, without spills.
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn every_attention_kernel_is_built_without_spills() {
    assert!(qwen_kernels::kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let resources = qwen_kernels::kernels::resources();
    let mut names = Vec::new();
    for dtype in ["f32", "f16", "bf16"] {
        for d in [64, 128] {
            names.push(format!("attn_split_{dtype}_d{d}"));
            if dtype != "f32" {
                names.push(format!("attn_prefill_mma_{dtype}_d{d}"));
            }
        }
    }
    let targets: Vec<&str> = {
        let mut t: Vec<&str> = resources.iter().map(|r| r.target.as_str()).collect();
        t.sort();
        t.dedup();
        t
    };
    assert!(!targets.is_empty());
    for name in &names {
        for target in &targets {
            let r = resources
                .iter()
                .find(|r| &r.kernel == name && &r.target == target)
                .unwrap_or_else(|| panic!("{name} missing for {target}"));
            assert_eq!((r.spill_store_bytes, r.spill_load_bytes, r.stack_frame_bytes), (0, 0, 0), "{name} on {target}: {r:?}");
        }
    }
}
