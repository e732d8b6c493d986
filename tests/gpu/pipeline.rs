//! The host between decode steps (src/model/device/report.rs, generate.rs): each step's tokens
//! and status words come back in one packed copy, a step may be queued before the one before it
//! is read, and `generate` runs that way, rolling back the step it ran past an EOS, so that every
//! slot ends as an unpipelined loop leaves it.

use crate::model::{prompt, random_model, SAMPLED};
use crate::GpuTest;
use qwen_kernels::gpu::DeviceKind;
use qwen_kernels::model::device::IN_FLIGHT;
use qwen_kernels::model::{DeviceModel, ModelOptions};
use qwen_kernels::{DType, Gpu};

pub const TESTS: &[GpuTest] = &[
    ("pipeline::generate_runs_a_step_ahead_and_rolls_back_at_eos", generate_runs_a_step_ahead_and_rolls_back_at_eos),
    ("pipeline::samples_that_stop_early_leave_the_batch_exactly", samples_that_stop_early_leave_the_batch_exactly),
    ("pipeline::each_step_reports_its_own_flags", each_step_reports_its_own_flags),
    ("pipeline::one_copy_a_step_comes_back", one_copy_a_step_comes_back),
];

/// The first index k in `from..` whose token did not occur before it (so a run with that id as
/// its EOS stops exactly at k), if any.
fn first_new(tokens: &[u32], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&k| !tokens[..k].contains(&tokens[k]))
}

/// Greedy and sampled: `generate` gives the tokens of the step-then-read loop, with every decode
/// step but the first queued before its predecessor was read. Stopped at an EOS, the step queued
/// past it is dropped: the slot's length is the unpipelined one, and feeding the EOS token on
/// continues exactly as the uninterrupted run (for sampling too: draws depend on the position).
/// Three steps queued without a read: the oldest is read to make room, the other two stay.
fn generate_runs_a_step_ahead_and_rolls_back_at_eos(gpu: &Gpu) {
    let w = random_model(61);
    let p = prompt(62, 9, 500);
    let mut m = DeviceModel::new(gpu, &w, ModelOptions::new(DType::F32, 1, 40)).unwrap();
    let reference = m.greedy(gpu, 0, &p, 12).unwrap();
    for sampled in [false, true] {
        let params = if sampled { SAMPLED } else { qwen_kernels::ops::sampling::SamplingParams::greedy() };
        let what = if sampled { "sampled" } else { "greedy" };
        let full = m.generate_sampled(gpu, 0, &p, 12, &[], params, |_| Ok(())).unwrap();
        if !sampled {
            assert_eq!(full.tokens, reference, "generate equals the step-then-read loop");
        }
        assert_eq!((full.queued_ahead, full.stopped_at_eos), (10, false), "{what}: 11 decode steps, each after the first queued ahead of a read");
        assert_eq!((m.seq_len(0), m.steps_in_flight()), (p.len() + 11, 0), "{what}");

        let k = first_new(&full.tokens, 2).filter(|&k| k + 2 < full.tokens.len()).unwrap_or_else(|| panic!("{what}: no usable EOS in {:?}", full.tokens));
        let eos = full.tokens[k];
        let mut streamed = Vec::new();
        let stopped = m
            .generate_sampled(gpu, 0, &p, 12, &[eos], params, |t| {
                streamed.push(t);
                Ok(())
            })
            .unwrap();
        assert_eq!((&stopped.tokens[..], stopped.stopped_at_eos), (&full.tokens[..=k], true), "{what}: stopped at {eos}");
        assert_eq!(streamed, stopped.tokens, "{what}: on_token saw the kept tokens only");
        assert_eq!(stopped.queued_ahead, k, "{what}: steps 2..={} were queued ahead (the last one past the EOS)", k + 1);
        assert_eq!((m.seq_len(0), m.steps_in_flight()), (p.len() + k, 0), "{what}: the step past the EOS was rolled back");
        m.begin_decode(gpu, &[0], &[eos]).unwrap();
        for (j, want) in full.tokens[k + 1..].iter().enumerate() {
            m.decode_step(gpu).unwrap();
            assert_eq!(m.next_tokens(gpu).unwrap(), [*want], "{what}: token {} after the rolled-back run", k + 1 + j);
        }
    }

    // Three steps without a read: the oldest is read (and dropped) to make room for the third.
    let first = {
        m.reset(0).unwrap();
        m.set_sampling(0, qwen_kernels::ops::sampling::SamplingParams::greedy()).unwrap();
        m.prefill(gpu, 0, &p).unwrap()
    };
    assert_eq!(first, reference[0]);
    m.begin_decode(gpu, &[0], &[first]).unwrap();
    for n in 1..=3 {
        m.decode_step(gpu).unwrap();
        assert_eq!(m.steps_in_flight(), n.min(IN_FLIGHT));
    }
    assert_eq!(m.next_tokens(gpu).unwrap(), [reference[2]]);
    assert_eq!(m.next_tokens(gpu).unwrap(), [reference[3]]);
    let e = m.next_tokens(gpu).unwrap_err().to_string();
    assert!(e.contains("no decode step unread"), "{e}");
    // begin_decode reads what a previous batch left unread, so the next read is the new batch's.
    m.decode_step(gpu).unwrap();
    m.begin_decode(gpu, &[0], &[reference[4]]).unwrap();
    assert_eq!(m.steps_in_flight(), 0);
    m.decode_step(gpu).unwrap();
    assert_eq!(m.next_tokens(gpu).unwrap(), [reference[5]]);
}

/// `generate_samples` with an EOS id that stops some continuations before the others: the batch
/// shrinks while a step of the old batch is in flight. Each continuation equals the uninterrupted
/// run cut at its own first EOS, and each slot's length is the unpipelined one.
fn samples_that_stop_early_leave_the_batch_exactly(gpu: &Gpu) {
    let w = random_model(41);
    let p = prompt(42, 9, 500);
    let mut m = DeviceModel::new(gpu, &w, ModelOptions::new(DType::F32, 3, 40)).unwrap();
    let full: Vec<Vec<u32>> = m.generate_samples(gpu, &p, 3, 12, &[], SAMPLED, |_, _| Ok(())).unwrap().into_iter().map(|g| g.tokens).collect();
    // An id that stops one continuation at 2..10 while another goes on past it.
    let cut = |row: &[u32], eos: u32| row.iter().position(|&t| t == eos).map_or(row.len(), |k| k + 1);
    let eos = (0..3)
        .flat_map(|i| full[i][2..10].to_vec())
        .find(|&t| {
            let ends: Vec<usize> = full.iter().map(|r| cut(r, t)).collect();
            ends.iter().any(|&e| (3..=10).contains(&e)) && ends.iter().any(|&e| e > *ends.iter().min().unwrap())
        })
        .unwrap_or_else(|| panic!("no EOS stops one continuation before another: {full:?}"));
    let mut seen = vec![Vec::new(); 3];
    let got = m
        .generate_samples(gpu, &p, 3, 12, &[eos], SAMPLED, |i, t| {
            seen[i].push(t);
            Ok(())
        })
        .unwrap();
    for i in 0..3 {
        let want = &full[i][..cut(&full[i], eos)];
        assert_eq!(got[i].tokens, want, "continuation {i} with EOS {eos}");
        assert_eq!(seen[i], want, "continuation {i}: on_token");
        assert_eq!(got[i].stopped_at_eos, want.last() == Some(&eos), "continuation {i}");
        // Every token but the last was fed: the unpipelined length.
        assert_eq!(m.seq_len(i), p.len() + want.len() - 1, "continuation {i}: its slot's length");
    }
    assert_eq!(m.steps_in_flight(), 0);
}

/// A step's flags come back in its own report: a token whose embedding row is NaN gives a NaN
/// row (step 1's read is that error); step 2, queued before it was read, looked the NaN row's -1
/// up (its read is the embedding's status error). Each is reported once: afterwards the status
/// words are clear. check_status reads the unread steps' flags too, and next_tokens does not
/// report them again.
fn each_step_reports_its_own_flags(gpu: &Gpu) {
    let mut w = random_model(63);
    let h = w.config.hidden_size;
    let bad = 7u32;
    w.embed_tokens.bits[bad as usize * h..(bad as usize + 1) * h].fill(0x7fc0);
    let p: Vec<u32> = prompt(64, 6, 500).into_iter().map(|t| if t == bad { bad + 1 } else { t }).collect();
    for graphs in [true, false] {
        let mut m = DeviceModel::new(gpu, &w, ModelOptions::new(DType::F32, 1, 40)).unwrap();
        m.set_graphs(graphs);
        let first = m.prefill(gpu, 0, &p).unwrap();
        m.begin_decode(gpu, &[0], &[bad]).unwrap();
        m.decode_step(gpu).unwrap();
        m.decode_step(gpu).unwrap();
        let e = m.next_tokens(gpu).unwrap_err().to_string();
        assert!(e.contains("row 0's logits hold a NaN") && !e.contains("embedding"), "graphs {graphs}, step 1: {e}");
        let e = m.next_tokens(gpu).unwrap_err().to_string();
        assert!(e.contains("embedding") && e.contains("status 0x1"), "graphs {graphs}, step 2: {e}");
        m.check_status(gpu).unwrap();

        // check_status sees the unread steps' flags (once); their tokens are still to be read.
        // (The NaN rows' keys and values are dropped first.)
        m.truncate(0, p.len()).unwrap();
        m.begin_decode(gpu, &[0], &[first]).unwrap();
        m.decode_step(gpu).unwrap();
        m.begin_decode(gpu, &[0], &[bad]).unwrap();
        m.decode_step(gpu).unwrap();
        m.decode_step(gpu).unwrap();
        let e = m.check_status(gpu).unwrap_err().to_string();
        assert!(e.contains("embedding") && e.contains("status 0x1"), "graphs {graphs}: {e}");
        assert!(m.next_tokens(gpu).unwrap_err().to_string().contains("NaN"), "graphs {graphs}: step 1's NaN row");
        let e = m.next_tokens(gpu).unwrap_err().to_string();
        assert!(e.contains("NaN") && !e.contains("embedding"), "graphs {graphs}: step 2's flag was reported by check_status: {e}");
        m.check_status(gpu).unwrap();
    }
}

/// On the software device (its counters see every copy): between two tokens handed to
/// `on_token` in a greedy `generate`, exactly one decode step's work ran, with exactly one copy
/// of the step's report (16 bytes: three status words and the token) and no other read-back.
/// A GPU has no such counters; there the other tests of this file carry the pipeline.
fn one_copy_a_step_comes_back(gpu: &Gpu) {
    if gpu.info().kind != DeviceKind::Software {
        println!("  (counts need the software device's counters: nothing to count on {})", gpu.describe());
        return;
    }
    let w = random_model(65);
    let p = prompt(66, 5, 500);
    let mut m = DeviceModel::new(gpu, &w, ModelOptions::new(DType::F32, 1, 40)).unwrap();
    m.generate(gpu, 0, &p, 3, &[], |_| Ok(())).unwrap(); // captures the step's graph
    let tools = gpu.software_tools().unwrap();
    gpu.set_software_tools(&format!("{tools},counters")).unwrap();
    gpu.take_software_counters().unwrap();
    let mut between: Vec<Vec<(String, u64)>> = Vec::new();
    let g = m
        .generate(gpu, 0, &p, 8, &[], |_| {
            let c = gpu.take_software_counters().unwrap();
            between.push(c.iter().filter(|c| c.kind == 1).map(|c| (c.name().to_string(), c.distinct_read_bytes)).collect());
            Ok(())
        })
        .unwrap();
    gpu.set_software_tools(&tools).unwrap();
    assert_eq!(g.tokens.len(), 8);
    // Token 1 (the prefill's) and token 2 (after the batch's upload and two steps) aside, each
    // token came after exactly one more step, queued before the read: one copy, the report (16
    // bytes: three status words and the token); the last came after none (no step past max_new).
    let reads = |node: &[(String, u64)]| -> Vec<u64> { node.iter().filter(|(name, _)| name == "cuMemcpy").map(|&(_, bytes)| bytes).collect() };
    assert_eq!(between.len(), 8);
    for (t, nodes) in between.iter().enumerate().take(7).skip(2) {
        assert_eq!(reads(nodes), [16], "token {}: one copy a step, the report of one row (16 bytes): {nodes:?}", t + 1);
    }
    assert!(reads(&between[7]).is_empty(), "token 8: no step was queued past max_new: {:?}", between[7]);
}
