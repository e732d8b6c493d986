//! The whole-model CPU reference against the whole-model goldens of both models (full size, every
//! layer, the 151936-row vocabulary; weights regenerated from the recipes in the golden metadata),
//! and negative tests: bugs an engine really had must FAIL, in the layer where they are.

use qwen_kernels::diff::{self, forced_layer, Truth};
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::{ModelWeights, Qwen2Config};
use qwen_kernels::reference::model::{bounded_argmax, forward, head, KvCache};
use std::sync::{Mutex, OnceLock};

/// Qwen2.5-0.5B's golden and weights, built once for the tests that perturb them (under the lock,
/// restored before it is released).
fn qwen() -> &'static Mutex<(GoldenFile, ModelWeights)> {
    static CELL: OnceLock<Mutex<(GoldenFile, ModelWeights)>> = OnceLock::new();
    CELL.get_or_init(|| {
        let cfg = Qwen2Config::qwen2_5_0_5b();
        let file = GoldenFile::open(cfg.name, "model").unwrap();
        let w = ModelWeights::from_recipes(&cfg, &file).unwrap();
        Mutex::new((file, w))
    })
}

fn assert_model_passes(cfg: &Qwen2Config) {
    let report = diff::analyse(cfg).unwrap();
    for r in diff::rows(&report) {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
    }
    // Free-running, an f32 model stays within a few f32 roundings of the truth at every layer.
    for (i, l) in report.layers.iter().enumerate() {
        assert!(l.free_out.rel_l2 < 1e-4, "layer {i}: free-running rel-L2 {}", l.free_out.rel_l2);
    }
    assert_eq!(report.greedy_ours, report.greedy_truth);
    assert!(report.greedy_truth.len() >= 32);
}

#[test]
fn qwen2_5_whole_model_passes_its_golden() {
    assert_model_passes(&Qwen2Config::qwen2_5_0_5b());
}

#[test]
fn vibethinker_whole_model_passes_its_golden() {
    assert_model_passes(&Qwen2Config::vibethinker_1_5b());
}

/// The golden carries the hazards of ../shared/DESIGN.md at their real magnitudes (gen.py asserts
/// them too; here they are read back from the committed data).
#[test]
fn goldens_carry_massive_activations_and_sinks() {
    for cfg in Qwen2Config::presets() {
        let file = GoldenFile::open(cfg.name, "model").unwrap();
        assert_eq!(file.metadata("profile"), Some("synthetic, hazards (golden/hazards.py)"));
        let constants: serde_json::Value = serde_json::from_str(file.metadata("profile.constants").unwrap()).unwrap();
        let c = |k: &str| constants[k].as_u64().unwrap() as usize;
        let h = file.tensor("hidden.truth").unwrap();
        let (t, hid) = (h.shape[1], h.shape[2]);
        let at = |layer: usize, pos: usize, ch: usize| h.values[(layer * t + pos) * hid + ch];
        // After the writing layer's MLP (index layer + 1 in the stream): about -4192 in C1.
        let written = at(c("write_layer") + 1, 0, c("c1"));
        assert!((-5500.0..-3000.0).contains(&written), "{}: {written}", cfg.name);
        // Held through the middle: about 7968 in C2.
        let mid = cfg.num_hidden_layers / 2;
        assert!((7000.0..9000.0).contains(&at(mid, 0, c("c2"))), "{}: {}", cfg.name, at(mid, 0, c("c2")));
        // Collapsed at the end.
        let last = cfg.num_hidden_layers;
        let bos_max = (0..hid).map(|ch| at(last, 0, ch).abs()).fold(0.0, f64::max);
        assert!(bos_max < 1000.0, "{}: {bos_max}", cfg.name);
        // Sinks: recorded per layer from the truth's attention probabilities.
        let sinks: Vec<f64> = serde_json::from_str(file.metadata("hazard.sink_weight_per_layer").unwrap()).unwrap();
        assert!(sinks[c("sink_from")..].iter().all(|&s| s > 0.5), "{}: {sinks:?}", cfg.name);
        // Padded rows beat every real logit.
        let logits = file.tensor("logits.truth").unwrap().values;
        let unbounded = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
        assert!(unbounded >= cfg.real_vocab_size);
    }
}

#[test]
fn a_dropped_bias_fails_in_its_layer_only() {
    let mut guard = qwen().lock().unwrap();
    let (file, w) = &mut *guard;
    let truth = Truth::load(file).unwrap();
    let saved = w.layers[5].k_proj.bias.take();
    let broken = forced_layer(&truth, w, 5).unwrap();
    let neighbour = forced_layer(&truth, w, 4).unwrap();
    w.layers[5].k_proj.bias = saved;
    assert!(!broken.0.passed(), "dropped k bias must fail: {}", broken.0);
    assert!(neighbour.0.passed() && neighbour.1.passed());
    assert!(forced_layer(&truth, w, 5).unwrap().1.passed());
}

#[test]
fn swapped_gate_and_up_fail() {
    let mut guard = qwen().lock().unwrap();
    let (file, w) = &mut *guard;
    let truth = Truth::load(file).unwrap();
    let l = &mut w.layers[7];
    std::mem::swap(&mut l.gate_proj, &mut l.up_proj);
    let broken = forced_layer(&truth, w, 7).unwrap();
    let l = &mut w.layers[7];
    std::mem::swap(&mut l.gate_proj, &mut l.up_proj);
    assert!(broken.0.passed(), "attention is untouched");
    assert!(!broken.1.passed(), "silu(up) * gate must fail: {}", broken.1);
}

#[test]
fn a_wrong_rope_theta_fails() {
    let mut guard = qwen().lock().unwrap();
    let (file, w) = &mut *guard;
    let truth = Truth::load(file).unwrap();
    w.config.rope_theta = 10_000.0; // Qwen2.5 uses 1e6
    let broken = forced_layer(&truth, w, 3).unwrap();
    w.config.rope_theta = 1_000_000.0;
    assert!(!broken.0.passed(), "{}", broken.0);
}

/// A decode loop whose position counter is stuck at 0 (each new token written over position 0 and
/// attending to itself alone) must not reproduce the greedy golden.
#[test]
fn a_stuck_position_counter_fails_the_greedy_golden() {
    let guard = qwen().lock().unwrap();
    let (file, w) = &*guard;
    let prompt: Vec<u32> = file.tensor("prompt").unwrap().values.iter().map(|&t| t as u32).collect();
    let truth: Vec<u32> = file.tensor("greedy.tokens.truth").unwrap().values.iter().map(|&t| t as u32).collect();
    let mut cache = KvCache::new(w, prompt.len() + 8, false).unwrap();
    let trace = forward(w, &prompt, &mut cache).unwrap();
    let (_, mut logits) = head(w, trace.hidden.last().unwrap()).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..8 {
        let token = bounded_argmax(&logits.v, w.config.real_vocab_size).unwrap();
        tokens.push(token);
        cache.len = 0; // the bug
        let trace = forward(w, &[token], &mut cache).unwrap();
        logits = head(w, trace.hidden.last().unwrap()).unwrap().1;
    }
    assert_eq!(tokens[0], truth[0], "the prefill is unaffected");
    assert_ne!(tokens[..], truth[..8], "a stuck position must change the continuation");
}

#[test]
fn an_unbounded_argmax_picks_a_padded_row() {
    let guard = qwen().lock().unwrap();
    let (file, w) = &*guard;
    let logits: Vec<f32> = file.tensor("logits.truth").unwrap().values.iter().map(|&v| v as f32).collect();
    let unbounded = bounded_argmax(&logits, logits.len()).unwrap() as usize;
    let bounded = bounded_argmax(&logits, w.config.real_vocab_size).unwrap();
    assert!(unbounded >= w.config.real_vocab_size);
    let truth = file.tensor("greedy.tokens.truth").unwrap().values[0] as u32;
    assert_eq!(bounded, truth);
}

/// `--checkpoint`: a tiny Qwen2 saved by transformers' save_pretrained (golden/tiny_checkpoint.py)
/// and its goldens (golden/gen.py --checkpoint): the weights come from the checkpoint's own
/// safetensors and config.json, and a broken copy fails.
#[test]
fn a_save_pretrained_checkpoint_passes_its_golden() {
    let dir = qwen_kernels::golden::file::data_dir().join("tiny-qwen2/checkpoint");
    let report = diff::analyse_checkpoint(&dir, "tiny-qwen2", None).unwrap();
    for r in diff::rows(&report) {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
    }
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = Qwen2Config::from_hf_json("tiny-qwen2", &text).unwrap();
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim, cfg.vocab_size, cfg.real_vocab_size), (64, 2, 16, 256, 256));
    let file = GoldenFile::open("tiny-qwen2", "model").unwrap();
    assert_eq!(file.metadata("profile"), Some("checkpoint"));
    let truth = Truth::load(&file).unwrap();
    let mut w = ModelWeights::from_checkpoint(&cfg, &dir).unwrap();
    w.layers[1].v_proj.bias = None;
    assert!(forced_layer(&truth, &w, 0).unwrap().1.passed());
    assert!(!forced_layer(&truth, &w, 1).unwrap().0.passed(), "a dropped v bias must fail");
    // Another model's goldens are refused.
    assert!(diff::analyse_checkpoint(&dir, "qwen2.5-0.5b", None).is_err());
}

/// The parameter count a decode step reads (the benchmarks' weight-bandwidth floor) is the
/// published one: Qwen2.5-0.5B 494,032,768 and Qwen2.5-1.5B (VibeThinker's architecture)
/// 1,543,714,304, embeddings tied.
#[test]
fn parameter_counts_are_the_published_ones() {
    assert_eq!(Qwen2Config::qwen2_5_0_5b().parameter_count(), 494_032_768);
    assert_eq!(Qwen2Config::vibethinker_1_5b().parameter_count(), 1_543_714_304);
}
