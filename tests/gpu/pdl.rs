//! Programmatic dependent launch (PDL) of the fused decode kernels (`ModelOptions::pdl`,
//! `Gpu::launch_struct`, `cuda/ptx.cuh`'s grid_dependency_wait): the same tokens and logits, bit
//! for bit, with it and without, through graphs and direct launches; the graph has the same
//! nodes. On the software device every programmatic launch is also checked against what it
//! promises (each thread waits for the kernel before it before touching device memory: a kernel
//! that reads first fails its launch, which softgpu/mutants.rs plants), and its counters show
//! which launches were programmatic. On a GPU of compute capability 9.0 the launches really
//! overlap, and the bit-for-bit comparison is the check that nothing reads too early.

use crate::model::{prompt, random_model};
use crate::GpuTest;
use qwen_kernels::gpu::DeviceKind;
use qwen_kernels::model::{DeviceModel, ModelOptions};
use qwen_kernels::{DType, Gpu};

pub const TESTS: &[GpuTest] = &[("pdl::programmatic_launches_change_nothing_but_the_launch", programmatic_launches_change_nothing_but_the_launch)];

/// Two sequences, 6 decode steps, with and without PDL (graphs on and off): tokens and logits
/// equal bit for bit, the same graph nodes; on the software device, one step's programmatic
/// launches are exactly the fused kernels (q/k/v, o, gate/up and down a layer, head and finish),
/// and none without PDL.
fn programmatic_launches_change_nothing_but_the_launch(gpu: &Gpu) {
    let w = random_model(71);
    let layers = w.config.num_hidden_layers;
    let prompts = [prompt(72, 7, 500), prompt(73, 3, 500)];
    for dtype in [DType::F32, DType::BF16] {
        for graphs in [true, false] {
            let run = |pdl: bool| {
                let mut m = DeviceModel::new(gpu, &w, ModelOptions { pdl, graphs, ..ModelOptions::new(dtype, 2, 40) }).unwrap();
                let firsts: Vec<u32> = (0..2).map(|s| m.prefill(gpu, s, &prompts[s]).unwrap()).collect();
                m.begin_decode(gpu, &[0, 1], &firsts).unwrap();
                let mut out = Vec::new();
                for _ in 0..6 {
                    m.decode_step(gpu).unwrap();
                    let tokens = m.next_tokens(gpu).unwrap();
                    let logits: Vec<u32> = m.logits().rows(0..2).unwrap().to_host(gpu).unwrap().data().iter().map(|v| v.to_bits()).collect();
                    out.push((tokens, logits));
                }
                let nodes = m.decode_graph_nodes().unwrap();
                // One more step, counted: which launches were programmatic.
                let flagged = (gpu.info().kind == DeviceKind::Software).then(|| {
                    let tools = gpu.software_tools().unwrap();
                    gpu.set_software_tools(&format!("{tools},counters")).unwrap();
                    gpu.take_software_counters().unwrap();
                    m.decode_step(gpu).unwrap();
                    m.next_tokens(gpu).unwrap();
                    let counters = gpu.take_software_counters().unwrap();
                    gpu.set_software_tools(&tools).unwrap();
                    counters.iter().filter(|c| c.kind == 0 && c.flags & 1 != 0).map(|c| c.name().to_string()).collect::<Vec<_>>()
                });
                (out, nodes, flagged)
            };
            let what = format!("{dtype}, graphs {graphs}");
            let (off, off_nodes, off_flagged) = run(false);
            let (on, on_nodes, on_flagged) = run(true);
            for (step, (a, b)) in off.iter().zip(&on).enumerate() {
                assert_eq!(a.0, b.0, "{what}, step {step}: tokens with and without PDL");
                assert!(a.1 == b.1, "{what}, step {step}: logits with and without PDL differ");
            }
            assert_eq!(off_nodes, on_nodes, "{what}: graph nodes");
            if let (Some(off), Some(on)) = (off_flagged, on_flagged) {
                assert!(off.is_empty(), "{what}: programmatic launches without PDL: {off:?}");
                assert_eq!(on.len(), 4 * layers + 2, "{what}: the fused kernels, 4 a layer and 2 a step: {on:?}");
                for base in ["dec_qkv_", "dec_residual_", "dec_gate_up_", "dec_head_", "dec_finish"] {
                    assert!(on.iter().any(|n| n.starts_with(base)), "{what}: no programmatic {base}: {on:?}");
                }
            }
        }
    }
}
