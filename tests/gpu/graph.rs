//! A decode step's tail (RoPE + KV-cache write, SwiGLU, bounded argmax) captured in a CUDA graph:
//! nothing in these ops synchronises, allocates or reads positions on the host, so the graph
//! replays them, reading the positions and cache slots the device holds at replay time (run by
//! tests/gpu/main.rs).

use crate::common::{rng, uniform};
use crate::GpuTest;
use cudarc::driver::sys::{CUgraphInstantiate_flags_enum, CUstreamCaptureMode};
use qwen_kernels::ops::argmax::{argmax, ArgmaxOutput, NAN_ROW};
use qwen_kernels::ops::kv_cache::{KvCacheViewMut, KvLayout};
use qwen_kernels::ops::rope::{rope_kv, RopeTable};
use qwen_kernels::ops::swiglu::swiglu_fused;
use qwen_kernels::{DType, DeviceTensor, Gpu, HostTensor};

pub const TESTS: &[GpuTest] = &[("graph::decode_tail_replays_with_device_positions", decode_tail_replays_with_device_positions)];

struct Step {
    table: RopeTable,
    q: DeviceTensor,
    k: DeviceTensor,
    v: DeviceTensor,
    k_cache: DeviceTensor,
    v_cache: DeviceTensor,
    positions: cudarc::driver::CudaSlice<i32>,
    slots: cudarc::driver::CudaSlice<i32>,
    gate_up: DeviceTensor,
    act: DeviceTensor,
    logits: DeviceTensor,
    out: ArgmaxOutput,
}

impl Step {
    /// Move the token to `pos` on the device: its position, and its slot (page 1, offset pos).
    fn at(&mut self, gpu: &Gpu, pos: i32) {
        gpu.stream().memcpy_htod(&[pos], &mut self.positions).unwrap();
        gpu.stream().memcpy_htod(&[32768 + pos], &mut self.slots).unwrap();
    }

    /// Enqueue the three ops (no synchronisation, no allocation).
    fn enqueue(&mut self, gpu: &Gpu) {
        rope_kv(
            gpu,
            &mut self.table,
            &mut self.q.view_mut(),
            &self.k.view(),
            &self.v.view(),
            &self.positions.slice(..),
            &self.slots.slice(..),
            &mut KvCacheViewMut { k: self.k_cache.view_mut(), v: self.v_cache.view_mut(), layout: KvLayout::Hnd },
        )
        .unwrap();
        swiglu_fused(gpu, &self.gate_up.view(), &mut self.act.view_mut()).unwrap();
        argmax(gpu, &self.logits.view(), 151665, &mut self.out, true).unwrap();
    }

    /// (q, k_cache, v_cache, act, argmax) as bits.
    fn results(&self, gpu: &Gpu) -> Vec<Vec<u32>> {
        let bits = |t: &DeviceTensor| t.to_host(gpu).unwrap().data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let (index, max) = self.out.raw_to_host(gpu, 1).unwrap();
        vec![bits(&self.q), bits(&self.k_cache), bits(&self.v_cache), bits(&self.act), vec![index[0] as u32, max[0].to_bits()]]
    }
}

fn decode_tail_replays_with_device_positions(gpu: &Gpu) {
    let mut r = rng(61);
    let dtype = DType::BF16;
    let q0 = uniform(&mut r, dtype, &[1, 14, 64], -4.0, 4.0);
    let t = |h: &HostTensor| DeviceTensor::from_host(gpu, h).unwrap();
    let mut step = Step {
        table: RopeTable::new(gpu, 1.0e6, 64, 32768).unwrap(),
        q: t(&q0),
        k: t(&uniform(&mut r, dtype, &[1, 2, 64], -4.0, 4.0)),
        v: t(&uniform(&mut r, dtype, &[1, 2, 64], -4.0, 4.0)),
        k_cache: DeviceTensor::zeros(gpu, dtype, &[2, 2, 32768, 64]).unwrap(),
        v_cache: DeviceTensor::zeros(gpu, dtype, &[2, 2, 32768, 64]).unwrap(),
        positions: gpu.stream().clone_htod(&[5i32]).unwrap(),
        slots: gpu.stream().clone_htod(&[32768 + 5i32]).unwrap(), // page 1, offset 5
        gate_up: t(&uniform(&mut r, dtype, &[1, 2 * 4864], -6.0, 6.0)),
        act: DeviceTensor::zeros(gpu, dtype, &[1, 4864]).unwrap(),
        logits: t(&uniform(&mut r, DType::F32, &[1, 151936], -20.0, 20.0)),
        out: ArgmaxOutput::new(gpu, 1).unwrap(),
    };

    // Eager, at positions 5 and then 30001 (q restored in between: RoPE rotates it in place).
    step.enqueue(gpu);
    let eager_5 = step.results(gpu);
    step.q.view_mut().upload(gpu, &q0).unwrap();
    step.at(gpu, 30001);
    step.enqueue(gpu);
    let eager_30001 = step.results(gpu);
    step.table.check_status(gpu).unwrap();

    // Fresh outputs, then capture one step and replay it at each position.
    let reset = |step: &mut Step| {
        step.q.view_mut().upload(gpu, &q0).unwrap();
        step.k_cache = DeviceTensor::zeros(gpu, dtype, &[2, 2, 32768, 64]).unwrap();
        step.v_cache = DeviceTensor::zeros(gpu, dtype, &[2, 2, 32768, 64]).unwrap();
        step.act = DeviceTensor::zeros(gpu, dtype, &[1, 4864]).unwrap();
        step.out = ArgmaxOutput::new(gpu, 1).unwrap();
        gpu.synchronize().unwrap();
    };
    reset(&mut step);
    gpu.stream().begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    step.enqueue(gpu);
    let graph = gpu.stream().end_capture(CUgraphInstantiate_flags_enum(0)).unwrap().expect("a captured graph");
    // Capture only records: nothing ran yet.
    assert!(step.act.to_host(gpu).unwrap().data().iter().all(|&v| v == 0.0), "capture executed the ops");

    step.at(gpu, 5);
    graph.launch().unwrap();
    assert_eq!(step.results(gpu), eager_5, "graph replay at position 5 differs from eager");

    // The same graph, new device-side position: the cache write moves with it. Everything the
    // second replay is judged by is something only that replay produces: q is restored unrotated,
    // act and the argmax index are poisoned, and the cache rows at 30001 were never written.
    let mismatches = second_replay(gpu, &mut step, &graph, &q0, &eager_5, &eager_30001, false);
    assert!(mismatches.is_empty(), "the second replay (position 30001) differs from eager in {mismatches:?}");
    step.table.check_status(gpu).unwrap();
    // The same checks with the replay left out must fail, every one: none passes by itself. The
    // graph holds the buffers' addresses: they are cleared in place, not replaced.
    let zeros = HostTensor::full(dtype, &[2, 2, 32768, 64], 0.0).unwrap();
    step.k_cache.view_mut().upload(gpu, &zeros).unwrap();
    step.v_cache.view_mut().upload(gpu, &zeros).unwrap();
    step.q.view_mut().upload(gpu, &q0).unwrap();
    step.at(gpu, 5);
    graph.launch().unwrap();
    let skipped = second_replay(gpu, &mut step, &graph, &q0, &eager_5, &eager_30001, true);
    let every = ["q at 30001", "act", "argmax", "k_cache head 0 at 30001", "k_cache head 1 at 30001", "v_cache head 0 at 30001", "v_cache head 1 at 30001"];
    assert_eq!(skipped, every, "checks that pass without the second replay prove nothing about it");
}

/// Set up and run (unless `skip`) the second replay at position 30001; the checks that differ from
/// eager: q, act and the argmax at 30001, the k/v cache rows at 30001 of both heads; the rows at
/// 5 (written by the first replay) must stay as eager wrote them either way.
fn second_replay(
    gpu: &Gpu,
    step: &mut Step,
    graph: &cudarc::driver::CudaGraph,
    q0: &HostTensor,
    eager_5: &[Vec<u32>],
    eager_30001: &[Vec<u32>],
    skip: bool,
) -> Vec<String> {
    step.q.view_mut().upload(gpu, q0).unwrap();
    let nan = |dims: &[usize]| HostTensor::full(DType::BF16, dims, f32::NAN).unwrap();
    step.act.view_mut().upload(gpu, &nan(&[1, 4864])).unwrap();
    gpu.stream().memcpy_htod(&[NAN_ROW], step.out.index_mut()).unwrap();
    step.at(gpu, 30001);
    if !skip {
        graph.launch().unwrap();
    }
    let replay = step.results(gpu);
    let mut differ = Vec::new();
    for (what, i) in [("q at 30001", 0), ("act", 3), ("argmax", 4)] {
        if replay[i] != eager_30001[i] {
            differ.push(what.to_string());
        }
    }
    // HND pages of 32768: [page, head, pos, :] starts at ((page * 2 + head) * 32768 + pos) * 64; page 1.
    let row = |cache: &[u32], head: usize, pos: usize| cache[((2 + head) * 32768 + pos) * 64..((2 + head) * 32768 + pos + 1) * 64].to_vec();
    for (which, c) in [("k_cache", 1), ("v_cache", 2)] {
        for head in 0..2 {
            if row(&replay[c], head, 30001) != row(&eager_30001[c], head, 30001) {
                differ.push(format!("{which} head {head} at 30001"));
            }
            assert_eq!(row(&replay[c], head, 5), row(&eager_5[c], head, 5), "{which} head {head} at 5 (first replay)");
        }
    }
    differ
}
