//! Validation and launch planning of the SwiGLU, argmax, RoPE and linear wrappers: every bad input
//! is a typed error naming the op, raised before any launch. Pure functions, so tested without a GPU.

use qwen_kernels::ops::{argmax, gemm, rope, swiglu};
use qwen_kernels::{DType, Error, Layout};

fn l(dtype: DType, dims: &[usize]) -> Layout {
    Layout::new(dtype, dims).unwrap()
}

// ---- SwiGLU -------------------------------------------------------------------------------------

#[test]
fn swiglu_fused_input_must_hold_two_halves() {
    assert_eq!(swiglu::check_fused(l(DType::BF16, &[3, 2 * 4864])).unwrap(), (3, 4864));
    assert_eq!(swiglu::check_fused(l(DType::F32, &[2, 5, 18])).unwrap(), (10, 9));
    let e = swiglu::check_fused(l(DType::BF16, &[3, 4863])).unwrap_err();
    assert!(matches!(e, Error::Shape { op: "swiglu_fused", .. }), "{e}");
    assert!(matches!(swiglu::check_fused(l(DType::BF16, &[3, 0])), Err(Error::Shape { .. })));
    assert!(matches!(swiglu::check_fused(l(DType::BF16, &[])), Err(Error::Shape { .. })));
}

#[test]
fn swiglu_output_must_match_rows_width_and_dtype() {
    let x = l(DType::BF16, &[3, 2 * 8960]);
    swiglu::check_out(swiglu::FUSED_OP, x, 8960, l(DType::BF16, &[3, 8960])).unwrap();
    assert!(matches!(swiglu::check_out(swiglu::FUSED_OP, x, 8960, l(DType::BF16, &[3, 2 * 8960])), Err(Error::Shape { .. })));
    assert!(matches!(swiglu::check_out(swiglu::FUSED_OP, x, 8960, l(DType::BF16, &[4, 8960])), Err(Error::Shape { .. })));
    assert!(matches!(swiglu::check_out(swiglu::FUSED_OP, x, 8960, l(DType::BF16, &[1, 3, 8960])), Err(Error::Shape { .. })));
    assert!(matches!(swiglu::check_out(swiglu::FUSED_OP, x, 8960, l(DType::F32, &[3, 8960])), Err(Error::DType { .. })));
    let g = l(DType::F16, &[2, 7, 4864]);
    swiglu::check_out(swiglu::OP, g, 4864, l(DType::F16, &[2, 7, 4864])).unwrap();
    assert!(matches!(swiglu::check_out(swiglu::OP, g, 4864, l(DType::F16, &[14, 4864])), Err(Error::Shape { .. })));
}

#[test]
fn swiglu_plan_vectorises_only_aligned_widths() {
    use swiglu::{plan, Path};
    // 4864 bf16 = 608 vectors of 8; the fused stride 9728 is whole vectors too.
    let p = plan(swiglu::OP, DType::BF16, 3, 4864, [4864, 4864], true, Path::Auto).unwrap();
    assert_eq!((p.kernel, p.vectorized, p.threads), ("swiglu_bf16_vec", true, 256));
    assert_eq!(p.grid, (3 * 608u32).div_ceil(256));
    // f32: 4 per vector; width 6 is not whole vectors -> scalar under Auto, error under Vector16.
    assert_eq!(plan(swiglu::OP, DType::F32, 2, 6, [6, 6], true, Path::Auto).unwrap().kernel, "swiglu_f32_scalar");
    let e = plan(swiglu::OP, DType::F32, 2, 6, [6, 6], true, Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { op: "swiglu", .. }), "{e}");
    // Width whole vectors but an odd stride (a fused row read at 2 * width + 4 would be): scalar.
    assert!(!plan(swiglu::OP, DType::F16, 2, 8, [8, 12], true, Path::Auto).unwrap().vectorized);
    // Misaligned base pointer.
    assert!(matches!(plan(swiglu::OP, DType::F16, 2, 8, [8, 8], false, Path::Vector16), Err(Error::Alignment { .. })));
    assert_eq!(plan(swiglu::OP, DType::F16, 2, 8, [8, 8], true, Path::Scalar).unwrap().kernel, "swiglu_f16_scalar");
    // Huge inputs cap the grid (the kernel loops).
    assert_eq!(plan(swiglu::OP, DType::BF16, 1 << 20, 8960, [8960, 8960], true, Path::Auto).unwrap().grid, 65_535);
    // Widths past i32.
    assert!(matches!(plan(swiglu::OP, DType::BF16, 1, 1 << 31, [1 << 31, 1 << 31], true, Path::Auto), Err(Error::UnsupportedSize { .. })));
}

// ---- argmax -------------------------------------------------------------------------------------

#[test]
fn argmax_rejects_bad_bounds_and_ranks() {
    let logits = l(DType::F32, &[4, 151936]);
    assert_eq!(argmax::check(logits, 151665).unwrap(), (4, 151936));
    assert_eq!(argmax::check(logits, 151936).unwrap(), (4, 151936));
    let e = argmax::check(logits, 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { op: "argmax", .. }), "{e}");
    assert!(matches!(argmax::check(logits, 151937), Err(Error::InvalidArgument { .. })));
    assert!(matches!(argmax::check(l(DType::F32, &[151936]), 151665), Err(Error::Shape { .. })));
    assert!(matches!(argmax::check(l(DType::F32, &[1, 2, 151936]), 151665), Err(Error::Shape { .. })));
}

#[test]
fn argmax_plan_vectorises_aligned_rows_only() {
    use argmax::{plan, Path};
    let p = plan(DType::F32, 3, 151936, 151665, true, Path::Auto).unwrap();
    assert_eq!((p.kernel, p.vectorized, p.rows, p.threads), ("argmax_partial_f32_vec", true, 3, 256));
    // 151665 / 256 chunks = 592.4 -> 593 -> 600 (a multiple of 8); 256 chunks of 600 cover the row.
    assert_eq!(p.chunk, 600);
    assert!(p.chunk as usize * argmax::CHUNKS >= 151665 && p.chunk % 8 == 0);
    // A short row: chunks of 8, most of them empty.
    assert_eq!(plan(DType::F16, 1, 7, 7, true, Path::Auto).unwrap().chunk, 8);
    // bf16 rows of 151936 are 303872 bytes: whole 16-byte vectors.
    assert!(plan(DType::BF16, 1, 151936, 151665, true, Path::Auto).unwrap().vectorized);
    // A stride of 1001 f16 puts row 1 at 2002 bytes: not aligned.
    assert!(!plan(DType::F16, 2, 1001, 1000, true, Path::Auto).unwrap().vectorized);
    let e = plan(DType::F16, 2, 1001, 1000, true, Path::Vector16).unwrap_err();
    assert!(matches!(e, Error::Alignment { op: "argmax", .. }), "{e}");
    assert!(matches!(plan(DType::F32, 2, 1024, 1000, false, Path::Vector16), Err(Error::Alignment { .. })));
    assert!(matches!(plan(DType::F32, 1, 1 << 32, (1 << 30) + 1, true, Path::Auto), Err(Error::UnsupportedSize { .. })));
    assert!(matches!(plan(DType::F32, 65_536, 1024, 1000, true, Path::Auto), Err(Error::UnsupportedSize { .. })));
    plan(DType::F32, 65_535, 1024, 1000, true, Path::Auto).unwrap();
}

// ---- RoPE ---------------------------------------------------------------------------------------

#[test]
fn rope_table_parameters_are_checked() {
    rope::check_table(1e6, 64, 32768).unwrap();
    rope::check_table(1e4, 128, 4096).unwrap();
    for (theta, d, max) in [(1.0, 64, 32768), (f32::NAN, 64, 32768), (f32::INFINITY, 64, 32768)] {
        let e = rope::check_table(theta, d, max).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { op: "rope", .. }), "{e}");
    }
    for (d, max) in [(0, 1), (63, 1), (4096, 1), (64, 0), (64, (1 << 24) + 1)] {
        assert!(matches!(rope::check_table(1e4, d, max), Err(Error::UnsupportedSize { .. })), "{d} {max}");
    }
}

#[test]
fn rope_q_and_k_must_agree() {
    let q = l(DType::BF16, &[5, 14, 64]);
    let k = l(DType::BF16, &[5, 2, 64]);
    let d = rope::check_qk(rope::OP, q, k, 64, 5).unwrap();
    assert_eq!((d.tokens, d.heads, d.head_dim), (5, 14, 64));
    let shape = |e: Error| assert!(matches!(e, Error::Shape { op: "rope", .. }), "{e}");
    shape(rope::check_qk(rope::OP, q, k, 128, 5).unwrap_err()); // table for another head_dim
    shape(rope::check_qk(rope::OP, q, k, 64, 4).unwrap_err()); // positions of another length
    shape(rope::check_qk(rope::OP, q, l(DType::BF16, &[4, 2, 64]), 64, 5).unwrap_err()); // tokens
    shape(rope::check_qk(rope::OP, q, l(DType::BF16, &[5, 2, 128]), 64, 5).unwrap_err()); // head_dim
    shape(rope::check_qk(rope::OP, q, l(DType::BF16, &[5, 3, 64]), 64, 5).unwrap_err()); // 14 % 3
    shape(rope::check_qk(rope::OP, l(DType::BF16, &[5, 896]), k, 64, 5).unwrap_err()); // rank
    shape(rope::check_qk(rope::OP, q, l(DType::BF16, &[5, 2, 64, 1]), 64, 5).unwrap_err());
    let e = rope::check_qk(rope::OP, q, l(DType::F16, &[5, 2, 64]), 64, 5).unwrap_err();
    assert!(matches!(e, Error::DType { .. }), "{e}");
}

#[test]
fn rope_launch_covers_every_pair_and_head() {
    use rope::{launch_config, RopeDims};
    for (tokens, heads, kv_heads, d) in [(1, 14, 2, 64), (4096, 12, 2, 128), (3, 6, 1, 2), (2, 2, 2, 2048), (5, 7, 7, 96)] {
        let c = launch_config(RopeDims { tokens, heads, head_dim: d }, kv_heads);
        let (x, y, z) = c.block_dim;
        assert_eq!(c.grid_dim, (tokens as u32, 1, 1));
        assert!(x as usize >= d / 2 && x % 32 == 0 && x * y <= 1024 && z == 1, "{:?} for d {d}", c.block_dim);
        assert!(y >= 1 && y as usize <= heads + kv_heads, "{:?}", c.block_dim);
    }
}

#[test]
fn rope_kv_cache_must_fit_k_and_v() {
    use qwen_kernels::ops::kv_cache::KvLayout::{Hnd, Nhd};
    let q = l(DType::BF16, &[3, 12, 128]);
    let k = l(DType::BF16, &[3, 2, 128]);
    let cache = l(DType::BF16, &[4, 2, 4096, 128]);
    let dims = rope::check_kv(q, k, k, 3, cache, cache, Hnd).unwrap();
    assert_eq!((dims.num_pages, dims.kv_heads, dims.page_size, dims.head_dim), (4, 2, 4096, 128));
    // The same pages in NHD: [num_pages, page_size, kv_heads, head_dim].
    let nhd = l(DType::BF16, &[4, 16, 2, 128]);
    let dims = rope::check_kv(q, k, k, 3, nhd, nhd, Nhd).unwrap();
    assert_eq!((dims.num_pages, dims.kv_heads, dims.page_size, dims.row_stride(), dims.head_stride()), (4, 2, 16, 256, 128));
    let shape = |r: qwen_kernels::Result<_>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    let dtype = |r: qwen_kernels::Result<_>| assert!(matches!(r, Err(Error::DType { .. })), "{r:?}");
    shape(rope::check_kv(q, k, k, 3, nhd, nhd, Hnd)); // NHD pages read as HND: 16 kv heads
    shape(rope::check_kv(q, k, l(DType::BF16, &[3, 1, 128]), 3, cache, cache, Hnd)); // v heads
    dtype(rope::check_kv(q, k, l(DType::F16, &[3, 2, 128]), 3, cache, cache, Hnd)); // v dtype
    shape(rope::check_kv(q, k, k, 2, cache, cache, Hnd)); // slot mapping length
    shape(rope::check_kv(q, k, k, 3, l(DType::BF16, &[4, 1, 4096, 128]), l(DType::BF16, &[4, 1, 4096, 128]), Hnd)); // cache kv_heads
    shape(rope::check_kv(q, k, k, 3, l(DType::BF16, &[4, 2, 4096, 64]), l(DType::BF16, &[4, 2, 4096, 64]), Hnd)); // cache head_dim
    shape(rope::check_kv(q, k, k, 3, cache, l(DType::BF16, &[4, 2, 4095, 128]), Hnd)); // caches differ
    shape(rope::check_kv(q, k, k, 3, l(DType::BF16, &[2, 4096, 128]), l(DType::BF16, &[2, 4096, 128]), Hnd)); // rank
    shape(rope::check_kv(q, k, k, 3, l(DType::BF16, &[0, 2, 4096, 128]), l(DType::BF16, &[0, 2, 4096, 128]), Hnd)); // empty
    let f32_cache = l(DType::F32, &[4, 2, 4096, 128]);
    dtype(rope::check_kv(q, k, k, 3, f32_cache, f32_cache, Hnd)); // cache dtype != q's
    dtype(rope::check_kv(q, k, k, 3, cache, f32_cache, Hnd)); // k and v caches differ
    shape(rope::check_kv(q, l(DType::BF16, &[3, 256]), l(DType::BF16, &[3, 256]), 3, cache, cache, Hnd)); // k rank
}

#[test]
fn kv_cache_offsets_and_block_tables() {
    use qwen_kernels::ops::kv_cache::{block_tables_from_csr, check, check_block_tables, KvLayout};
    let hnd = check("t", l(DType::BF16, &[5, 2, 16, 64]), l(DType::BF16, &[5, 2, 16, 64]), KvLayout::Hnd).unwrap();
    let nhd = check("t", l(DType::BF16, &[5, 16, 2, 64]), l(DType::BF16, &[5, 16, 2, 64]), KvLayout::Nhd).unwrap();
    // Element offsets by the row-major index of each shape.
    assert_eq!(hnd.offset(3, 1, 7), ((3 * 2 + 1) * 16 + 7) * 64);
    assert_eq!(nhd.offset(3, 1, 7), ((3 * 16 + 7) * 2 + 1) * 64);
    assert_eq!(hnd.slot_offset(3 * 16 + 7, 1), hnd.offset(3, 1, 7));
    assert_eq!((hnd.slots(), hnd.shape(), nhd.shape()), (80, [5, 2, 16, 64], [5, 16, 2, 64]));
    // 2^31 slots do not fit a slot mapping's i32.
    let big = l(DType::BF16, &[1 << 27, 1, 16, 64]);
    assert!(matches!(check("t", big, big, KvLayout::Hnd), Err(Error::UnsupportedSize { .. })));
    // FlashInfer's CSR: sequence 0 has pages [4, 1] (last one 3 positions full), 1 has none, 2 has [0].
    let (tables, lens) = block_tables_from_csr(&[0, 2, 2, 3], &[4, 1, 0], &[3, 0, 16], 16, 3).unwrap();
    assert_eq!(tables, vec![4, 1, -1, -1, -1, -1, 0, -1, -1]);
    assert_eq!(lens, vec![19, 0, 16]);
    check_block_tables("t", &hnd, &tables, 3, &lens).unwrap();
    let invalid = |r: qwen_kernels::Result<_>| assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    invalid(check_block_tables("t", &hnd, &tables, 3, &[33, 0, 16])); // page 2 of sequence 0 is -1
    invalid(check_block_tables("t", &hnd, &[5, 1, -1, -1, -1, -1, 0, -1, -1], 3, &lens)); // page 5 of 5
    invalid(check_block_tables("t", &hnd, &tables, 3, &[49, 0, 16])); // past 3 pages of 16
    invalid(check_block_tables("t", &hnd, &tables, 3, &[-1, 0, 16]));
    invalid(block_tables_from_csr(&[0, 2, 1, 3], &[4, 1, 0], &[3, 0, 16], 16, 3).map(|_| ())); // decreasing indptr
    invalid(block_tables_from_csr(&[0, 2, 2, 3], &[4, 1, 0], &[17, 0, 16], 16, 3).map(|_| ())); // last page past 16
    invalid(block_tables_from_csr(&[0, 2, 2, 3], &[4, 1, 0], &[3, 0, 16], 16, 1).map(|_| ())); // 2 pages > max_pages 1
    assert!(matches!(block_tables_from_csr(&[0, 2], &[4, 1, 0], &[3, 0, 16], 16, 3), Err(Error::Shape { .. })));
}

// ---- linear -------------------------------------------------------------------------------------

#[test]
fn linear_output_dtype_and_shape() {
    let x = l(DType::BF16, &[7, 896]);
    let d = gemm::check_linear(x, l(DType::BF16, &[151936, 896]), None).unwrap();
    gemm::check_output(x, d, l(DType::BF16, &[7, 151936])).unwrap();
    gemm::check_output(x, d, l(DType::F32, &[7, 151936])).unwrap(); // f32 logits
    let e = gemm::check_output(x, d, l(DType::F16, &[7, 151936])).unwrap_err();
    assert!(matches!(e, Error::DType { op: "linear", .. }), "{e}");
    assert!(matches!(gemm::check_output(x, d, l(DType::BF16, &[7, 896])), Err(Error::Shape { .. })));
    assert!(matches!(gemm::check_output(x, d, l(DType::BF16, &[8, 151936])), Err(Error::Shape { .. })));
    assert!(matches!(gemm::check_output(x, d, l(DType::BF16, &[1, 7, 151936])), Err(Error::Shape { .. })));
    // 3-D activations keep their leading dims.
    let x3 = l(DType::F16, &[2, 3, 1536]);
    let d3 = gemm::check_linear(x3, l(DType::F16, &[2048, 1536]), Some(l(DType::F16, &[2048]))).unwrap();
    assert_eq!(d3.rows, 6);
    gemm::check_output(x3, d3, l(DType::F16, &[2, 3, 2048])).unwrap();
    assert!(matches!(gemm::check_output(x3, d3, l(DType::F16, &[6, 2048])), Err(Error::Shape { .. })));
}

#[test]
fn tf32_is_opt_in_and_only_for_f32() {
    use cudarc::cublas::sys::cublasComputeType_t::*;
    use gemm::{compute_type, Precision};
    for dtype in DType::ALL {
        assert_eq!(compute_type(dtype, Precision::Fp32).unwrap(), CUBLAS_COMPUTE_32F);
    }
    assert_eq!(compute_type(DType::F32, Precision::Tf32).unwrap(), CUBLAS_COMPUTE_32F_FAST_TF32);
    assert!(matches!(compute_type(DType::BF16, Precision::Tf32), Err(Error::DType { .. })));
    assert!(matches!(compute_type(DType::F16, Precision::Tf32), Err(Error::DType { .. })));
}

/// Every kernel name a wrapper can launch is an entry point of the compiled fatbins (a misspelt
/// name would otherwise fail only on a GPU).
#[test]
#[cfg_attr(qk_no_kernels, ignore = "the kernels were not built (no nvcc): scripts/setup-cuda.sh")]
fn every_planned_kernel_exists() {
    use qwen_kernels::kernels;
    assert!(kernels::built(), "the kernels were not built, and build.rs did not set cfg(qk_no_kernels)");
    let have: std::collections::HashSet<String> = kernels::resources().into_iter().map(|r| r.kernel).collect();
    let mut names: Vec<&str> = vec!["argmax_finish"];
    for dtype in DType::ALL {
        for aligned in [true, false] {
            names.push(swiglu::plan(swiglu::OP, dtype, 2, 64, [64, 64], aligned, swiglu::Path::Auto).unwrap().kernel);
            names.push(argmax::plan(dtype, 2, 64, 60, aligned, argmax::Path::Auto).unwrap().kernel);
        }
    }
    for (dtype, name) in [(DType::F32, "f32"), (DType::F16, "f16"), (DType::BF16, "bf16")] {
        for kernel in [format!("rope_{name}"), format!("rope_kv_{name}"), format!("fill_bias_{name}_{name}")] {
            assert!(have.contains(&kernel), "{kernel} ({dtype}) missing");
        }
    }
    for kernel in ["fill_bias_f16_f32", "fill_bias_bf16_f32"] {
        assert!(have.contains(kernel), "{kernel} missing");
    }
    for kernel in names {
        assert!(have.contains(kernel), "{kernel} missing from the compiled kernels");
    }
}
