//! What build.rs produced: kernels for every target, and ptxas' resource report.

use qwen_kernels::kernels;

/// CI sets QK_REQUIRE_KERNELS=1 so a build that silently lost nvcc fails instead of passing.
#[test]
fn kernels_are_built_when_required() {
    if std::env::var("QK_REQUIRE_KERNELS").is_ok_and(|v| v == "1") {
        assert!(kernels::built(), "QK_REQUIRE_KERNELS=1 but the crate was built without nvcc");
    }
    if !kernels::built() {
        assert!(matches!(qwen_kernels::Gpu::new(0), Err(qwen_kernels::Error::KernelsNotBuilt)));
    }
}

/// Every module, and every kernel of a sample across the ops and dtypes, for every target this
/// crate was built for: the default list, or the one `CUDA_COMPUTE_CAP` gave build.rs. The value
/// comes from the build (`kernels::COMPUTE_CAP`), not from the environment this test runs in, so a
/// bundle built with `CUDA_COMPUTE_CAP=90` passes on a machine that never set it.
#[test]
fn every_module_is_embedded_for_every_built_target() {
    if !kernels::built() {
        assert_eq!((kernels::SASS_TARGETS, kernels::PTX_TARGET), (&[][..], None));
        return;
    }
    let names: Vec<&str> = kernels::MODULES.iter().map(|m| m.0).collect();
    for module in ["rmsnorm", "swiglu", "argmax", "rope", "linear", "attention"] {
        assert!(names.contains(&module), "{module} missing from {names:?}");
    }
    let expected: Vec<u32> = match kernels::COMPUTE_CAP {
        None => vec![80, 86, 89, 90],
        Some(list) => list.split(',').map(|s| s.trim().parse().unwrap()).collect(),
    };
    assert_eq!(kernels::DEFAULT_SASS_TARGETS, [80, 86, 89, 90]);
    assert_eq!(kernels::SASS_TARGETS, expected, "built with CUDA_COMPUTE_CAP={:?}", kernels::COMPUTE_CAP);
    let ptx = *expected.iter().min().unwrap();
    assert_eq!(kernels::PTX_TARGET, Some(ptx));
    let sms: Vec<String> = expected.iter().map(|c| format!("sm_{c}")).collect();
    assert_eq!(kernels::TARGETS.unwrap(), format!("{} + compute_{ptx} PTX", sms.join(", ")));
    let resources = kernels::resources();
    for sm in &sms {
        for kernel in [
            "rmsnorm_bf16_vec",
            "add_rmsnorm_f16_scalar",
            "rmsnorm_f32_vec",
            "swiglu_bf16_vec",
            "swiglu_f32_scalar",
            "argmax_partial_f32_vec",
            "argmax_partial_bf16_scalar",
            "argmax_finish",
            "rope_bf16",
            "rope_kv_f16",
            "fill_bias_bf16_f32",
        ] {
            assert!(
                resources.iter().any(|r| r.kernel == kernel && r.target == *sm),
                "{kernel} for {sm} missing from the ptxas report"
            );
        }
    }
}

/// Spills to local memory are a performance bug in kernels this small: none allowed.
#[test]
fn no_kernel_spills_registers() {
    for r in kernels::resources() {
        assert!(r.registers > 0, "{r:?}");
        assert_eq!((r.spill_store_bytes, r.spill_load_bytes), (0, 0), "{r:?}");
    }
}

/// The decode GEMV kernels' shared memory fits the smallest opt-in limit of the built targets:
/// static (ptxas) plus the most dynamic memory a launch asks for (the staged normalised rows, or
/// the tensor cores' exchange of partials, src/ops/decode.rs and src/ops/gemv.rs).
#[test]
fn decode_kernels_fit_their_shared_memory() {
    use qwen_kernels::ops::{decode, gemv};
    use qwen_kernels::DType;
    let mut seen = 0;
    for r in kernels::resources() {
        let Some(dtype) = [("_f32_", DType::F32), ("_f16_", DType::F16), ("_bf16_", DType::BF16)].into_iter().find(|(s, _)| r.kernel.contains(s)).map(|(_, d)| d) else { continue };
        let tiles = if r.kernel.ends_with("_wide") || r.kernel.starts_with("dec_head_") { decode::WIDE_TILES } else { 1 };
        let dynamic = if ["dec_qkv_", "dec_gate_up_", "dec_head_"].iter().any(|p| r.kernel.starts_with(p)) {
            decode::stage_bytes(dtype).max(gemv::exchange_bytes(dtype, 2, tiles))
        } else if r.kernel.starts_with("dec_residual_") || r.kernel.starts_with("gemv_") {
            gemv::exchange_bytes(dtype, 1, 1)
        } else {
            continue;
        };
        seen += 1;
        let total = r.static_shared_bytes as usize + dynamic;
        assert!(total <= decode::SHARED_LIMIT_BYTES, "{} on {}: {} static + {dynamic} dynamic bytes of shared memory > {}", r.kernel, r.target, r.static_shared_bytes, decode::SHARED_LIMIT_BYTES);
    }
    assert!(seen > 0 || !kernels::built(), "no decode kernel in the ptxas report");
}

#[test]
fn ptxas_report_parser_reads_nvcc_13_output() {
    let report = "ptxas info    : Compiling entry function 'rmsnorm_f32_vec' for 'sm_90'\n\
                  ptxas info    : Function properties for rmsnorm_f32_vec\n\
                  \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
                  ptxas info    : Used 29 registers, used 1 barriers, 132 bytes smem\n";
    let r = kernels::parse_ptxas_report(report);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].kernel.as_str(), r[0].target.as_str(), r[0].registers, r[0].stack_frame_bytes, r[0].spill_store_bytes, r[0].spill_load_bytes),
        ("rmsnorm_f32_vec", "sm_90", 29, 8, 4, 12)
    );
    assert_eq!(r[0].static_shared_bytes, 132);
}
