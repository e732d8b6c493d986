//! The PyTorch goldens (golden/data, made by golden/gen.py): the CPU references pass them all, and
//! references with known kinds of bug fail them.

use qwen_kernels::check::golden_rows;
use qwen_kernels::golden::metrics::{compare, Tolerance};
use qwen_kernels::golden::tolerance::table;
use qwen_kernels::golden::GoldenFile;
use qwen_kernels::model::Qwen2Config;
use qwen_kernels::check::in_range;
use qwen_kernels::reference::linear::{abs_dot_bound, linear};
use qwen_kernels::golden::metrics::compare_scaled;
use qwen_kernels::reference::attention::error_scale as attention_error_scale;
use qwen_kernels::reference::rope::{cos_sin, error_scale, inv_freq};
use qwen_kernels::reference::swiglu::silu;
use qwen_kernels::{DType, Error, HostTensor};

#[test]
fn golden_files_say_how_they_were_made() {
    for cfg in Qwen2Config::presets() {
        let f = GoldenFile::open(cfg.name, "ops").unwrap();
        assert_eq!(f.metadata("model"), Some(cfg.name));
        assert_eq!(f.metadata("command"), Some(format!("python3 golden/gen.py --model {}", cfg.name).as_str()));
        assert!(f.metadata("torch").unwrap().starts_with("2.11.0"));
        assert_eq!(f.metadata("transformers"), Some("5.17.0"));
        // The config the goldens were made with is the crate's preset.
        let config: serde_json::Value = serde_json::from_str(f.metadata("config").unwrap()).unwrap();
        assert_eq!(config["hidden_size"].as_u64(), Some(cfg.hidden_size as u64));
        assert_eq!(config["rms_norm_eps"].as_f64().map(|v| v as f32), Some(cfg.rms_norm_eps));
        assert_eq!(config["rope_theta"].as_f64().map(|v| v as f32), Some(cfg.rope_theta));
        assert_eq!(config["num_key_value_heads"].as_u64(), Some(cfg.num_key_value_heads as u64));
    }
}

#[test]
fn cpu_references_pass_every_golden() {
    let rows = golden_rows(None).unwrap();
    // 2 models x 3 dtypes x (3 RMSNorm outputs, 3 projections, SwiGLU, RoPE q and k), plus
    // attention: 5 cases x 3 dtypes for Qwen2.5, 6 (with the stress case) x 3 for VibeThinker.
    // lm_head and argmax: 2 models x 3 dtypes x 2. Sampling: 11 cases a model (transformers'
    // warpers on the model's bf16 and f32 logits rows).
    assert_eq!(rows.len(), 2 * 3 * 9 + 5 * 3 + 6 * 3 + 2 * 3 * 2 + 2 * 11);
    for r in &rows {
        assert!(r.comparison.passed(), "{} {} {}: {}", r.op, r.case, r.dtype, r.comparison);
        // Where we round exactly where PyTorch does, PyTorch's own output passes the same
        // tolerance: it is not tighter than the rounding PyTorch itself does. Attention is the
        // exception by design: we keep p and p.v in FP32 and round once, PyTorch's paths round
        // more, so its error may exceed our bound.
        if r.op == "argmax" {
            continue; // compared by index, no PyTorch error to set beside ours
        }
        let p = r.pytorch.as_ref().unwrap();
        // Sampling's tolerance bounds our filtered probabilities against the float64 softmax of
        // transformers' scores; PyTorch's own FP32 softmax over 151665 logits is further off
        // (about 5e-6, its chunked float sum), which the vs_torch column shows, not a bound.
        if !r.op.starts_with("attention") && !r.op.starts_with("sampling.") {
            assert!(p.passed(), "pytorch {} {} {}: {p}", r.op, r.case, r.dtype);
        }
    }
}

#[test]
fn missing_golden_names_the_command_that_makes_it() {
    let e = GoldenFile::open("qwen2.5-0.5b", "no-such-file").err().unwrap();
    assert!(matches!(e, Error::Golden { .. }));
    assert!(e.to_string().contains("python3 golden/gen.py --model qwen2.5-0.5b"), "{e}");
    let f = GoldenFile::open("qwen2.5-0.5b", "ops").unwrap();
    assert!(f.tensor("rmsnorm.bf16.nothing").is_err());
}

/// RMSNorm of the golden inputs with a deliberate bug; the golden must reject it.
fn broken_rmsnorm(model: &str, dtype: DType, bug: &str) -> bool {
    let cfg = Qwen2Config::preset(model).unwrap();
    let f = GoldenFile::open(model, "ops").unwrap();
    let x = f.host(&format!("rmsnorm.{dtype}.x")).unwrap();
    let w = f.host(&format!("rmsnorm.{dtype}.weight")).unwrap();
    let truth = f.tensor(&format!("rmsnorm.{dtype}.y.truth")).unwrap().values;
    let hidden = cfg.hidden_size;
    let mut y = Vec::new();
    for row in x.data().chunks(hidden) {
        let sum_sq: f32 = match bug {
            // squares and their sum in the storage dtype (f16 overflows on massive activations)
            "squares in storage dtype" => row.iter().fold(0.0, |acc, &v| dtype.round(acc + dtype.round(v * v))),
            _ => row.iter().map(|&v| v * v).sum(),
        };
        let n = if bug == "mean over hidden - 1" { hidden - 1 } else { hidden };
        let inv = 1.0 / (sum_sq / n as f32 + cfg.rms_norm_eps).sqrt();
        for (&v, &wi) in row.iter().zip(w.data()) {
            let wi = if bug == "weight as 1 + w" { 1.0 + wi } else { wi };
            y.push(dtype.round(wi * dtype.round(v * inv)));
        }
    }
    let max_w = w.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    !compare(&y, &truth, table::rmsnorm(dtype, hidden, max_w)).passed()
}

#[test]
fn broken_references_fail_the_goldens() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        for dtype in DType::ALL {
            assert!(!broken_rmsnorm(model, dtype, "none"), "the unbroken variant must pass ({model} {dtype})");
            assert!(broken_rmsnorm(model, dtype, "weight as 1 + w"), "{model} {dtype}");
        }
        // Dividing by hidden - 1 scales every output by about 1 + 1 / (2 hidden) (5.6e-4 at 896):
        // far outside the f32 tolerance, below one bf16 rounding (3.9e-3), so only f32 can see it.
        assert!(broken_rmsnorm(model, DType::F32, "mean over hidden - 1"), "{model}");
        assert!(broken_rmsnorm(model, DType::F16, "squares in storage dtype"), "{model}");
    }
}

/// A projection of the golden inputs computed with a deliberate bug; true if the golden rejects it.
fn broken_projection(model: &str, proj: &str, dtype: DType, bug: &str) -> bool {
    let f = GoldenFile::open(model, "ops").unwrap();
    let x = f.host(&format!("{proj}.{dtype}.x")).unwrap();
    let w = f.synth_weight(&format!("golden.{model}.{proj}.weight")).unwrap();
    let (out, inp) = (w.dims()[0], w.dims()[1]);
    let mut values = w.into_data();
    if bug == "transposed weight" {
        // Read the [out, in] buffer as if it were [in, out]: same shape claim, wrong element order.
        let original = values.clone();
        for j in 0..out {
            for k in 0..inp {
                values[j * inp + k] = original[k * out + j];
            }
        }
    }
    let w = HostTensor::from_f32(dtype, &[out, inp], values).unwrap();
    let b = f.host(&format!("{proj}.{dtype}.bias")).ok();
    let b = if bug == "dropped bias" { None } else { b };
    let y = linear(&x, &w, b.as_ref()).unwrap();
    let truth = f.tensor(&format!("{proj}.{dtype}.y.truth")).unwrap().values;
    let max_abs_dot = abs_dot_bound(&x, &w, b.as_ref()).unwrap().into_iter().fold(0f32, f32::max);
    !compare(y.data(), &truth, table::linear(dtype, inp, max_abs_dot)).passed()
}

#[test]
fn transposed_weights_and_dropped_biases_fail_the_goldens() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        for dtype in DType::ALL {
            assert!(!broken_projection(model, "q_proj", dtype, "none"), "{model} {dtype}: unbroken must pass");
            // q_proj is square in both models: only the values can expose a transposed read.
            assert!(broken_projection(model, "q_proj", dtype, "transposed weight"), "{model} {dtype}");
            assert!(broken_projection(model, "q_proj", dtype, "dropped bias"), "{model} {dtype}");
            assert!(broken_projection(model, "k_proj", dtype, "dropped bias"), "{model} {dtype}");
        }
    }
}

#[test]
fn synthetic_weights_regenerate_with_their_recorded_checksums() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        let f = GoldenFile::open(model, "ops").unwrap();
        for proj in ["q_proj", "k_proj", "o_proj"] {
            // synth_weight verifies the checksum gen.py recorded; an error would say which differs.
            let w = f.synth_weight(&format!("golden.{model}.{proj}.weight")).unwrap();
            assert_eq!(w.dtype(), DType::BF16);
        }
    }
}

/// SwiGLU of the golden inputs with a deliberate bug; true if the golden rejects it.
fn broken_swiglu(model: &str, dtype: DType, bug: &str) -> bool {
    let f = GoldenFile::open(model, "ops").unwrap();
    let gate = f.host(&format!("swiglu.{dtype}.gate")).unwrap();
    let up = f.host(&format!("swiglu.{dtype}.up")).unwrap();
    let truth = in_range(dtype, f.tensor(&format!("swiglu.{dtype}.y.truth")).unwrap().values);
    let y: Vec<f32> = gate
        .data()
        .iter()
        .zip(up.data())
        .map(|(&g, &u)| match bug {
            "act on up" => dtype.round(dtype.round(silu(u)) * g),
            "sigmoid for silu" => dtype.round(dtype.round(1.0 / (1.0 + (-g).exp())) * u),
            _ => dtype.round(dtype.round(silu(g)) * u),
        })
        .collect();
    let max_up = up.data().iter().fold(0f32, |m, v| m.max(v.abs()));
    !compare(&y, &truth, table::swiglu(dtype, max_up)).passed()
}

#[test]
fn broken_swiglu_fails_the_goldens() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        for dtype in DType::ALL {
            assert!(!broken_swiglu(model, dtype, "none"), "{model} {dtype}: unbroken must pass");
            assert!(broken_swiglu(model, dtype, "act on up"), "{model} {dtype}");
            assert!(broken_swiglu(model, dtype, "sigmoid for silu"), "{model} {dtype}");
        }
    }
}

#[test]
fn rope_tables_match_transformers() {
    for cfg in Qwen2Config::presets() {
        let f = GoldenFile::open(cfg.name, "ops").unwrap();
        let golden_inv: Vec<f32> = f.tensor("rope.inv_freq").unwrap().values_f32();
        // inv_freq = 1 / theta^(2i/d) in FP32: bit for bit.
        let ours = inv_freq(cfg.rope_theta, cfg.head_dim);
        assert_eq!(ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), golden_inv.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{}", cfg.name);
        // cos/sin of the FP32 angles, up to the last position: within 2 FP32 ulps of PyTorch's.
        let positions: Vec<i32> = f.tensor("rope.positions").unwrap().values.iter().map(|&p| p as i32).collect();
        assert_eq!(*positions.iter().max().unwrap() as usize, cfg.max_position_embeddings - 1);
        let (cos, sin) = cos_sin(&positions, &ours);
        for (ours, theirs) in [(cos, "rope.cos"), (sin, "rope.sin")] {
            let golden = f.tensor(theirs).unwrap().values;
            let c = compare(&ours, &golden, Tolerance { atol: 2.0 * f32::EPSILON, rtol: 0.0 });
            assert!(c.passed(), "{} {theirs}: {c}", cfg.name);
        }
    }
}

/// RoPE of the golden q with a deliberate bug; true if the golden rejects it.
fn broken_rope(model: &str, dtype: DType, bug: &str) -> bool {
    let cfg = Qwen2Config::preset(model).unwrap();
    let f = GoldenFile::open(model, "ops").unwrap();
    let x = f.host(&format!("rope.{dtype}.q")).unwrap();
    let truth = f.tensor(&format!("rope.{dtype}.q_embed.truth")).unwrap().values;
    let mut positions: Vec<i32> = f.tensor("rope.positions").unwrap().values.iter().map(|&p| p as i32).collect();
    if bug == "position stuck at 0" {
        positions.fill(0);
    }
    let freqs = inv_freq(cfg.rope_theta, cfg.head_dim);
    let (mut cos, mut sin) = cos_sin(&positions, &freqs);
    if bug == "bf16 angles" {
        // Angles rounded to bf16 before cos/sin (a bf16 angle table).
        let half = cfg.head_dim / 2;
        for (t, &p) in positions.iter().enumerate() {
            for i in 0..cfg.head_dim {
                let angle = DType::BF16.round(p as f32 * freqs[i % half]);
                cos[t * cfg.head_dim + i] = angle.cos();
                sin[t * cfg.head_dim + i] = angle.sin();
            }
        }
    }
    let (d, half) = (cfg.head_dim, cfg.head_dim / 2);
    let mut y = Vec::new();
    for (t, token) in x.data().chunks(x.dims()[1] * d).enumerate() {
        for head in token.chunks(d) {
            for i in 0..d {
                let (partner, sign) = match bug {
                    // GPT-J style: pairs (2j, 2j + 1) instead of (i, i + d/2).
                    "interleaved pairs" => (i ^ 1, if i % 2 == 0 { -1.0 } else { 1.0 }),
                    _ => ((i + half) % d, if i < half { -1.0 } else { 1.0 }),
                };
                let a = dtype.round(head[i] * dtype.round(cos[t * d + i]));
                let b = dtype.round(sign * head[partner] * dtype.round(sin[t * d + i]));
                y.push(dtype.round(a + b));
            }
        }
    }
    !compare_scaled(&y, &truth, table::rope(dtype), Some(&error_scale(&x))).passed()
}

#[test]
fn broken_rope_fails_the_goldens() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        for dtype in DType::ALL {
            assert!(!broken_rope(model, dtype, "none"), "{model} {dtype}: unbroken must pass");
            assert!(broken_rope(model, dtype, "position stuck at 0"), "{model} {dtype}");
            assert!(broken_rope(model, dtype, "interleaved pairs"), "{model} {dtype}");
        }
        // A bf16 angle is off by up to 16 rad at position 15962 (Qwen2.5) or 8 rad near 4095:
        // visible in every storage dtype.
        for dtype in DType::ALL {
            assert!(broken_rope(model, dtype, "bf16 angles"), "{model} {dtype}");
        }
    }
}

/// Attention of a golden case computed with a deliberate bug; true if the golden rejects it.
fn broken_attention(model: &str, case: &str, dtype: DType, bug: &str) -> bool {
    let f = GoldenFile::open(model, "ops").unwrap();
    let key = |t: &str| format!("attention.{case}.{dtype}.{t}");
    let (q, k, v) = (f.host(&key("q")).unwrap(), f.host(&key("k")).unwrap(), f.host(&key("v")).unwrap());
    let truth = in_range(dtype, f.tensor(&key("o.truth")).unwrap().values);
    let (tokens, heads, dim) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let (context, kv_heads) = (k.dims()[0], k.dims()[1]);
    let scale = match bug {
        "scale 1/D" => 1.0 / dim as f32,
        _ => (dim as f32).powf(-0.5),
    };
    let mut o = Vec::new();
    for t in 0..tokens {
        let visible = if bug == "no causal mask" { context } else { context - tokens + t + 1 };
        for h in 0..heads {
            let kvh = if bug == "kv head = h % kv_heads" { h % kv_heads } else { h / (heads / kv_heads) };
            let qv = &q.data()[(t * heads + h) * dim..][..dim];
            let logits: Vec<f32> = (0..visible)
                .map(|s| {
                    let kv = &k.data()[(s * kv_heads + kvh) * dim..][..dim];
                    let dot: f32 = qv.iter().zip(kv).map(|(&a, &b)| a * b).sum();
                    // FP16 eager attention: q k^T rounded to f16 unscaled, then scaled.
                    if bug == "fp16 logits" { DType::F16.round(DType::F16.round(dot) * scale) } else { dot * scale }
                })
                .collect();
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            let e: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            for i in 0..dim {
                let acc: f32 = (0..visible).map(|s| e[s] / sum * v.data()[(s * kv_heads + kvh) * dim + i]).sum();
                o.push(dtype.round(acc));
            }
        }
    }
    let scale = attention_error_scale(&q, &k, &v).unwrap();
    !compare_scaled(&o, &truth, table::attention(dtype), Some(&scale)).passed()
}

#[test]
fn broken_attention_fails_the_goldens() {
    for model in ["qwen2.5-0.5b", "vibethinker-1.5b"] {
        for dtype in DType::ALL {
            for case in ["prefill16", "chunk5of40", "decode37"] {
                assert!(!broken_attention(model, case, dtype, "none"), "{model} {case} {dtype}: unbroken must pass");
                assert!(broken_attention(model, case, dtype, "kv head = h % kv_heads"), "{model} {case} {dtype}");
                assert!(broken_attention(model, case, dtype, "scale 1/D"), "{model} {case} {dtype}");
            }
            // Decode sees the whole context anyway: only prompts can expose a missing mask.
            assert!(broken_attention(model, "prefill16", dtype, "no causal mask"), "{model} {dtype}");
            assert!(broken_attention(model, "chunk5of40", dtype, "no causal mask"), "{model} {dtype}");
        }
    }
    // VibeThinker's layer 0 in f16: FP32 logits pass, FP16 logits (eager's rounding) fail.
    assert!(!broken_attention("vibethinker-1.5b", "stress8", DType::F16, "none"));
    assert!(broken_attention("vibethinker-1.5b", "stress8", DType::F16, "fp16 logits"));
}

#[test]
fn the_stress_golden_records_pytorch_eager_fp16_overflow() {
    let f = GoldenFile::open("vibethinker-1.5b", "ops").unwrap();
    let eager = f.tensor("attention.stress8.f16.o.torch").unwrap().values;
    assert!(eager.iter().all(|v| !v.is_finite()), "eager FP16 attention should give inf/NaN here");
    let sdpa = f.tensor("attention.stress8.f16.o.sdpa").unwrap().values;
    assert!(sdpa.iter().all(|v| v.is_finite()));
    assert!(f.tensor("attention.stress8.f16.o.truth").unwrap().values.iter().all(|v| v.is_finite()));
}

#[test]
fn unbounded_argmax_picks_a_padded_row() {
    use qwen_kernels::reference::argmax::argmax;
    for cfg in Qwen2Config::presets() {
        let f = GoldenFile::open(cfg.name, "ops").unwrap();
        for dtype in DType::ALL {
            // PyTorch's own unbounded argmax lands in the padding, the bounded one does not.
            let unbounded = f.tensor(&format!("argmax.{dtype}.unbounded.torch")).unwrap().values[0] as usize;
            let bounded = f.tensor(&format!("argmax.{dtype}.index.torch")).unwrap().values[0] as usize;
            assert!(unbounded >= cfg.real_vocab_size && bounded < cfg.real_vocab_size, "{} {dtype}", cfg.name);
            // Our argmax over the stored PyTorch logits: bounded matches torch.argmax, unbounded would
            // hand out a padded id.
            let logits = f.host(&format!("lm_head.{dtype}.logits.torch")).unwrap();
            let ours = argmax(&logits, cfg.real_vocab_size).unwrap()[0].unwrap();
            assert_eq!(ours.0 as usize, bounded, "{} {dtype}", cfg.name);
            let all = argmax(&logits, cfg.vocab_size).unwrap()[0].unwrap();
            assert_eq!(all.0 as usize, unbounded, "{} {dtype}", cfg.name);
        }
    }
}

#[test]
fn layer_stages_pass_and_carry_the_hazards() {
    let rows = qwen_kernels::check::layer_rows().unwrap();
    // 15 stages of layer 0 and of the layer where the massive activations collapse (L - 2), per model.
    assert_eq!(rows.len(), 2 * 2 * 15, "2 models x 2 layers x 15 stages");
    for cfg in Qwen2Config::presets() {
        let collapse = format!("layer{}.residual2", cfg.num_hidden_layers - 2);
        assert!(rows.iter().any(|r| r.op == collapse && r.case == cfg.name), "{collapse} of {}", cfg.name);
    }
    for r in &rows {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
        let p = r.pytorch.as_ref().unwrap();
        // PyTorch's bf16 attention rounds q.k and p to bf16; our FP32 contract does not, so only
        // our rows are held to it.
        if !r.op.ends_with(".attention") {
            assert!(p.passed(), "pytorch {} {}: {p}", r.op, r.case);
        }
    }
    // VibeThinker's layer 0 at its real magnitudes: |q| ~ 116, |k| ~ 405, scaled logits > 2e4
    // (gen.py also asserts that eager FP16 overflows on this layer).
    let f = GoldenFile::open("vibethinker-1.5b", "layer0").unwrap();
    let hazard = |k: &str| f.metadata(&format!("hazard.{k}")).unwrap().parse::<f64>().unwrap();
    assert!((100.0..135.0).contains(&hazard("q_abs_max")));
    assert!((350.0..460.0).contains(&hazard("k_abs_max")));
    assert!(hazard("scaled_logit_abs_max") > 2.0e4);
    // The bf16 q after RoPE really holds them.
    let q = f.tensor("rope.q").unwrap().values;
    assert!(q.iter().fold(0f64, |m, v| m.max(v.abs())) > 100.0);
}

/// Tensors that dtypes share are stored once and served under every dtype's name: inputs in the
/// name's dtype (exactly), truths as stored; a dtype whose values differ keeps its own tensor.
#[test]
fn shared_tensors_are_served_under_each_dtype_name() {
    let f = GoldenFile::open("qwen2.5-0.5b", "ops").unwrap();
    assert!(f.metadata("shared.rmsnorm.x").is_some(), "rmsnorm inputs are shared");
    for dtype in DType::ALL {
        let x = f.host(&format!("rmsnorm.{dtype}.x")).unwrap();
        assert_eq!(x.dtype(), dtype);
        assert!(f.has(&format!("rmsnorm.{dtype}.x")));
        // Served exactly: every value survives a round trip through the dtype.
        assert!(x.data().iter().all(|&v| dtype.round(v) == v));
        // Truths as float64, but a truth only f16 results meet as float32 (gen.py
        // `f16_truths_as_float32`: its rounding is 2^13 below f16's).
        let truth = f.tensor(&format!("rmsnorm.{dtype}.y.truth")).unwrap();
        let stored = if dtype == DType::F16 { Some(DType::F32) } else { None };
        assert_eq!(truth.dtype, stored, "{dtype} truth");
    }
    // The f16 lm_head weight rounds its smallest values (f16 subnormals), so its truth is its own.
    let f16 = f.tensor("lm_head.f16.logits.truth").unwrap().values;
    let bf16 = f.tensor("lm_head.bf16.logits.truth").unwrap().values;
    assert_ne!(f16, bf16);
    assert!(!f.has("rmsnorm.f8.x") && !f.has("no.such.tensor"));
}

/// golden/data/MANIFEST.json (written by gen.py) lists every golden file at its current size, and
/// the committed goldens stay within their 25 MB budget.
#[test]
fn manifest_lists_every_golden_within_budget() {
    let dir = qwen_kernels::golden::file::data_dir();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("MANIFEST.json")).unwrap()).unwrap();
    let files = manifest["files"].as_object().unwrap();
    let mut total = 0;
    for (name, entry) in files {
        let bytes = std::fs::metadata(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).len();
        assert_eq!(Some(bytes), entry["bytes"].as_u64(), "{name} changed size since the manifest was written");
        total += bytes;
    }
    for cfg in Qwen2Config::presets() {
        for kind in ["ops", "layer0", "model"] {
            assert!(files.contains_key(&format!("{}/{kind}.safetensors", cfg.name)), "{} {kind}", cfg.name);
        }
    }
    assert_eq!(Some(total), manifest["total_bytes"].as_u64());
    assert!(total <= 25_000_000, "goldens take {total} bytes");
}
