//! The whole Qwen2ForCausalLM on the CPU in f32, with a KV cache: prefill, greedy decode and, on
//! request, a first-order bound on every value's error, from which the whole-model goldens take
//! their tolerances.
//!
//! transformers' Qwen2 at float32, line by line (modeling_qwen2.py):
//! ```text
//! h = embed_tokens[ids]
//! for each layer:  r = h
//!                  x = input_layernorm(h)                          # Qwen2RMSNorm
//!                  q, k, v = q_proj(x), k_proj(x), v_proj(x)        # with biases
//!                  q, k = apply_rotary_pos_emb(q, k, cos, sin)      # FP32 angles
//!                  o = softmax(q k^T * d^-0.5 + causal) v           # kv head = head / group
//!                  h = r + o_proj(o)                                # "attn_residual"
//!                  h = h + down_proj(silu(gate_proj(rmsnorm(h))) * up_proj(rmsnorm(h)))
//! logits = lm_head(norm(h))
//! ```
//! Weights are bf16 values ([`ModelWeights`]); every product and sum is f32. Dot products run in
//! 16 f32 lanes (the order a vectorised kernel uses), summed at the end.
//!
//! ## Error model
//! With `bounds` on, each op also returns, per element, the standard deviation of its error
//! against the same function in exact arithmetic on exact inputs, under the independent-rounding
//! model of probabilistic rounding error analysis (Higham & Mary, SIAM J. Sci. Comput. 2019): each
//! f32 rounding of a value y adds an independent error of variance (u y)^2 / 3 (uniform within
//! half an ulp, u = 2^-24), and incoming errors propagate to first order:
//! ```text
//! dot(K)     var = (K/16 + 16) / 3 (u sum|w x|)^2      16 lanes of K/16 terms, then 16 lane sums
//! linear     var_y = sum_k W_jk^2 var_k + dot(K) + rnd(y)                     (+ b: one rounding)
//! rmsnorm    rel_S^2 = sum (2 x_i s_i)^2 / S^2 + dot(n) / S^2,   S = sum x^2
//!            rel_r^2 = (rel_S^2 + u^2/3) / 4 (ms / (ms + eps))^2 + 2 u^2 / 3     (sqrt, divide)
//!            var_y = (w r)^2 (s_i^2 + x_i^2 rel_r^2) + 2 rnd(y)
//! rope       var_y = (c s_i)^2 + (s s_p)^2 + (2u)^2 (x_i^2 + x_p^2) / 3 + 3 rnd   (cos/sin of one
//!                                                    FP32 angle differ by <= 2 ulp between libms)
//! attention  var_s = scale^2 (sum q^2 s_k^2 + k^2 s_q^2 + dot(D)) + rnd(s)
//!            rel_p_j^2 = var_s_j + sum_i p_i^2 var_s_i + rnd(s_j - max) + (S/16 + 18) u^2 / 3
//!            var_o = sum_j p_j^2 (rel_p_j^2 v_j^2 + s_vj^2) + dot(S) over p |v|
//! silu * up  var_y = (silu'(g) s_g up)^2 + (silu(g) s_up)^2 + (2u silu(g) up)^2 / 3 + rnd(y)
//! residual   var = s_a^2 + s_b^2 + rnd(a + b)
//! ```
//! (s: a standard deviation; rnd(y) = (u y)^2 / 3.) A layer fed the float32-rounded truth of its
//! input and compared with the truth of its output may then be off by a few of these standard
//! deviations: `crate::diff` allows 6 (a correct element exceeds it with probability ~2e-9 under
//! the model) plus the truth's own f32 rounding. Worst-case bounds were the first choice and are
//! useless here: summing |W| times worst-case errors over four chained projections per layer
//! overestimates by 10^4 or more, so they would pass any bug. Across many layers errors compound,
//! so free-running comparisons are reported, not judged by this model.

use crate::error::{Error, Result};
use crate::model::weights::{bf16_to_f32, Linear, Matrix, ModelWeights};
use crate::spec::embed::check_tokens;
use crate::reference::rope::cos_sin;
use crate::spec::rope::inv_freq;

/// One f32 rounding, relative.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

const OP: &str = "model";

/// Values [rows, width] and, when errors are tracked, each value's error standard deviation.
#[derive(Clone, Debug)]
pub struct Act {
    pub rows: usize,
    pub width: usize,
    pub v: Vec<f32>,
    pub e: Option<Vec<f64>>,
}

impl Act {
    /// Values known exactly, or (with `rounded`) rounded once to f32 from exact values.
    pub fn new(rows: usize, width: usize, v: Vec<f32>, bounds: bool, rounded: bool) -> Self {
        let e = bounds.then(|| v.iter().map(|&x| if rounded { rnd(x).sqrt() } else { 0.0 }).collect());
        Act { rows, width, v, e }
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.v[r * self.width..(r + 1) * self.width]
    }

    /// The error standard deviations as f32 (for `compare_scaled`), zeros when not tracked.
    pub fn bounds_f32(&self) -> Vec<f32> {
        match &self.e {
            Some(e) => e.iter().map(|&x| x as f32).collect(),
            None => vec![0.0; self.v.len()],
        }
    }
}

/// One layer's cache: k and v [kv_heads, capacity, head_dim] (one slot of the layout in
/// `crate::spec::kv_cache`), and their bounds when tracked.
#[derive(Clone, Debug)]
pub struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
    ek: Vec<f64>,
    ev: Vec<f64>,
}

/// The KV cache of one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub capacity: usize,
    /// Positions filled.
    pub len: usize,
    layers: Vec<LayerCache>,
    bounds: bool,
}

impl KvCache {
    pub fn new(w: &ModelWeights, capacity: usize, bounds: bool) -> Result<Self> {
        let c = &w.config;
        if capacity == 0 || capacity > c.max_position_embeddings {
            return Err(Error::invalid(OP, format!("cache capacity {capacity} outside 1..={}", c.max_position_embeddings)));
        }
        let n = c.num_key_value_heads * capacity * c.head_dim;
        let nb = if bounds { n } else { 0 };
        let layer = LayerCache { k: vec![0.0; n], v: vec![0.0; n], ek: vec![0.0; nb], ev: vec![0.0; nb] };
        Ok(KvCache { capacity, len: 0, layers: vec![layer; c.num_hidden_layers], bounds })
    }
}

/// What a forward pass records: the residual stream after the embedding and after every layer
/// (\[L+1\] entries of \[T, H\]) and after every layer's attention (\[L\] entries).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub hidden: Vec<Act>,
    pub attn_residual: Vec<Act>,
}

/// Variance of one f32 rounding of `y`.
fn rnd(y: f32) -> f64 {
    let e = U * y as f64;
    e * e / 3.0
}

/// Variance of the rounding error of a 16-lane f32 dot product of `k` terms with sum |terms| `mag`.
fn dot_var(k: usize, mag: f64) -> f64 {
    let e = U * mag;
    (k / 16 + 16) as f64 / 3.0 * e * e
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(16)
}

/// 16-lane f32 dot product.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[i] += x * y;
    }
    acc.iter().sum()
}

/// An `nn.Linear` layer (see `matmul`).
fn linear(x: &Act, l: &Linear) -> Act {
    matmul(x, &l.weight, l.bias.as_deref())
}

/// `y = x W^T (+ b)` over bf16 W [N, K], rows of x [T, K]; split over threads by output feature.
fn matmul(x: &Act, w: &Matrix, bias_row: Option<&[f32]>) -> Act {
    let (t, k, n) = (x.rows, w.cols, w.rows);
    debug_assert_eq!(x.width, k);
    let parts = threads().min(n).max(1);
    let per = n.div_ceil(parts);
    let bounded = x.e.is_some();
    let results: Vec<(Vec<f32>, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..parts)
            .map(|p| {
                s.spawn(move || {
                    let (j0, j1) = (p * per, ((p + 1) * per).min(n));
                    let mut v = Vec::with_capacity((j1 - j0) * t);
                    let mut e = Vec::new();
                    let mut row = vec![0f32; k];
                    let mut abs_row = vec![0f32; if bounded { k } else { 0 }];
                    for j in j0..j1 {
                        for (dst, &b) in row.iter_mut().zip(w.row(j)) {
                            *dst = bf16_to_f32(b);
                        }
                        if bounded {
                            for (dst, &src) in abs_row.iter_mut().zip(&row) {
                                *dst = src * src;
                            }
                        }
                        let bias = bias_row.map_or(0.0, |b| b[j]);
                        for r in 0..t {
                            let xr = x.row(r);
                            v.push(dot(xr, &row) + bias);
                            if let Some(ex) = &x.e {
                                let exr = &ex[r * k..(r + 1) * k];
                                let (mut var, mut mag) = (0f64, 0f64);
                                for i in 0..k {
                                    var += abs_row[i] as f64 * exr[i] * exr[i];
                                    mag += (row[i] * xr[i]).abs() as f64;
                                }
                                let y = *v.last().expect("pushed");
                                e.push((var + dot_var(k, mag) + if bias_row.is_some() { rnd(y) } else { 0.0 }).sqrt());
                            }
                        }
                    }
                    (v, e)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("linear worker")).collect()
    });
    let mut v = vec![0f32; t * n];
    let mut e = if bounded { vec![0f64; t * n] } else { Vec::new() };
    for (p, (pv, pe)) in results.into_iter().enumerate() {
        let j0 = p * per;
        for (i, val) in pv.into_iter().enumerate() {
            let (j, r) = (j0 + i / t, i % t);
            v[r * n + j] = val;
        }
        for (i, val) in pe.into_iter().enumerate() {
            let (j, r) = (j0 + i / t, i % t);
            e[r * n + j] = val;
        }
    }
    Act { rows: t, width: n, v, e: bounded.then_some(e) }
}

/// Qwen2RMSNorm at f32: `w * (x * rsqrt(mean(x^2) + eps))`.
fn rmsnorm(x: &Act, w: &[f32], eps: f32) -> Act {
    let n = x.width;
    let mut v = Vec::with_capacity(x.v.len());
    let mut e = x.e.as_ref().map(|_| Vec::with_capacity(x.v.len()));
    for r in 0..x.rows {
        let row = x.row(r);
        let ms = dot(row, row) / n as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        let start = v.len();
        v.extend(row.iter().zip(w).map(|(&xi, &wi)| wi * (xi * inv)));
        if let (Some(e), Some(ex)) = (e.as_mut(), x.e.as_ref()) {
            let exr = &ex[r * n..(r + 1) * n];
            let sum_sq = ms as f64 * n as f64;
            let var_s: f64 = row.iter().zip(exr).map(|(&xi, &si)| (2.0 * xi as f64 * si).powi(2)).sum::<f64>() + dot_var(n, sum_sq);
            let rel_s2 = if sum_sq > 0.0 { var_s / (sum_sq * sum_sq) } else { 0.0 };
            let damp = ms as f64 / (ms as f64 + eps as f64);
            let rel_r2 = (rel_s2 + U * U / 3.0) / 4.0 * damp * damp + 2.0 * U * U / 3.0;
            for i in 0..n {
                let y = v[start + i];
                let wr = (w[i] * inv) as f64;
                e.push((wr * wr * (exr[i] * exr[i] + (row[i] as f64).powi(2) * rel_r2) + 2.0 * rnd(y)).sqrt());
            }
        }
    }
    Act { rows: x.rows, width: n, v, e }
}

/// apply_rotary_pos_emb on `x` [T, heads * D] in place (positions per row).
fn rope(x: &mut Act, head_dim: usize, positions: &[usize], theta: f32) {
    let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
    let (cos, sin) = cos_sin(&pos, &inv_freq(theta, head_dim));
    let half = head_dim / 2;
    for r in 0..x.rows {
        let (cs, sn) = (&cos[r * head_dim..(r + 1) * head_dim], &sin[r * head_dim..(r + 1) * head_dim]);
        for head in 0..x.width / head_dim {
            let base = r * x.width + head * head_dim;
            let src: Vec<f32> = x.v[base..base + head_dim].to_vec();
            let src_e: Option<Vec<f64>> = x.e.as_ref().map(|e| e[base..base + head_dim].to_vec());
            for i in 0..head_dim {
                let p = if i < half { i + half } else { i - half };
                let rotated = if i < half { -src[p] } else { src[p] };
                x.v[base + i] = src[i] * cs[i] + rotated * sn[i];
                if let (Some(e), Some(se)) = (x.e.as_mut(), src_e.as_ref()) {
                    let (c, sn_) = (cs[i] as f64, sn[i] as f64);
                    let var = (c * se[i]).powi(2) + (sn_ * se[p]).powi(2)
                        + 4.0 * U * U * ((src[i] as f64).powi(2) + (src[p] as f64).powi(2)) / 3.0
                        + rnd(src[i] * cs[i]) + rnd(rotated * sn[i]) + rnd(x.v[base + i]);
                    e[base + i] = var.sqrt();
                }
            }
        }
    }
}

fn residual(a: &Act, b: &Act) -> Act {
    let v: Vec<f32> = a.v.iter().zip(&b.v).map(|(x, y)| x + y).collect();
    let e = match (&a.e, &b.e) {
        (Some(ea), Some(eb)) => Some(ea.iter().zip(eb).zip(&v).map(|((x, y), &s)| (x * x + y * y + rnd(s)).sqrt()).collect()),
        _ => None,
    };
    Act { rows: a.rows, width: a.width, v, e }
}

fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// |d silu / dg| = |sigma(g) (1 + g (1 - sigma(g)))|.
fn silu_slope(g: f32) -> f64 {
    let s = 1.0 / (1.0 + (-(g as f64)).exp());
    (s * (1.0 + g as f64 * (1.0 - s))).abs()
}

fn swiglu(gate: &Act, up: &Act) -> Act {
    let v: Vec<f32> = gate.v.iter().zip(&up.v).map(|(&g, &u)| silu(g) * u).collect();
    let e = match (&gate.e, &up.e) {
        (Some(eg), Some(eu)) => Some(
            (0..v.len())
                .map(|i| {
                    let (g, u) = (gate.v[i], up.v[i]);
                    let (s, u) = (silu(g) as f64, u as f64);
                    let var = (silu_slope(g) * eg[i] * u).powi(2) + (s * eu[i]).powi(2) + (2.0 * U * s * u).powi(2) / 3.0 + rnd(v[i]);
                    var.sqrt()
                })
                .collect(),
        ),
        _ => None,
    };
    Act { rows: gate.rows, width: gate.width, v, e }
}

/// Causal GQA attention of the new rows of `q` [T, heads * D] (positions start..start+T) against
/// the cache's positions 0..start+T.
fn attention(q: &Act, cache: &LayerCache, capacity: usize, start: usize, heads: usize, kv_heads: usize, d: usize) -> Act {
    let group = heads / kv_heads;
    let scale = (d as f64).powf(-0.5) as f32;
    let bounded = q.e.is_some();
    let mut v = vec![0f32; q.rows * heads * d];
    let mut e = if bounded { vec![0f64; v.len()] } else { Vec::new() };
    let mut s = vec![0f32; start + q.rows];
    let mut es = vec![0f64; start + q.rows];
    for t in 0..q.rows {
        let visible = start + t + 1;
        for h in 0..heads {
            let kvh = h / group;
            let qo = t * heads * d + h * d;
            let qv = &q.v[qo..qo + d];
            for j in 0..visible {
                let ko = (kvh * capacity + j) * d;
                let kv = &cache.k[ko..ko + d];
                s[j] = dot(qv, kv) * scale;
                if let Some(eq) = &q.e {
                    let eqv = &eq[qo..qo + d];
                    let ekv = &cache.ek[ko..ko + d];
                    let (mut var, mut mag) = (0f64, 0f64);
                    for i in 0..d {
                        var += (qv[i] as f64 * ekv[i]).powi(2) + (eqv[i] * kv[i] as f64).powi(2);
                        mag += (qv[i] as f64 * kv[i] as f64).abs();
                    }
                    let sc = scale as f64;
                    es[j] = sc * sc * (var + dot_var(d, mag)) + rnd(s[j]); // a variance
                }
            }
            let max = s[..visible].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut p: Vec<f32> = s[..visible].iter().map(|&x| (x - max).exp()).collect();
            let z: f32 = p.iter().sum();
            for x in &mut p {
                *x /= z;
            }
            let norm_var: f64 = if bounded { (0..visible).map(|j| (p[j] as f64).powi(2) * es[j]).sum() } else { 0.0 };
            for i in 0..d {
                let mut acc = 0f32;
                let (mut err, mut mag) = (0f64, 0f64);
                for j in 0..visible {
                    let vo = (kvh * capacity + j) * d + i;
                    let val = cache.v[vo];
                    acc += p[j] * val;
                    if bounded {
                        let rel2 = es[j] + norm_var + rnd(s[j] - max) + (visible / 16 + 18) as f64 * U * U / 3.0;
                        let pj = p[j] as f64;
                        err += pj * pj * (rel2 * (val as f64).powi(2) + cache.ev[vo].powi(2));
                        mag += pj * val.abs() as f64;
                    }
                }
                v[qo + i] = acc;
                if bounded {
                    e[qo + i] = (err + dot_var(visible, mag)).sqrt();
                }
            }
        }
    }
    Act { rows: q.rows, width: heads * d, v, e: bounded.then_some(e) }
}

/// The embedding rows of `tokens` (exact).
pub fn embed(w: &ModelWeights, tokens: &[u32], bounds: bool) -> Result<Act> {
    check_tokens(tokens, w.config.vocab_size)?;
    let h = w.config.hidden_size;
    let v = tokens.iter().flat_map(|&t| w.embed_tokens.row(t as usize).iter().map(|&b| bf16_to_f32(b))).collect();
    Ok(Act::new(tokens.len(), h, v, bounds, false))
}

/// Layer `l` on the new rows `x` [T, H] at positions cache.len..cache.len+T: returns the residual
/// after attention and after the layer, and writes the rows' keys and values into the cache.
/// Does not advance `cache.len` (the whole model does, after its last layer).
pub fn layer(w: &ModelWeights, l: usize, x: &Act, cache: &mut KvCache) -> Result<(Act, Act)> {
    let c = &w.config;
    let lw = &w.layers[l];
    let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let start = cache.len;
    if start + x.rows > cache.capacity {
        return Err(Error::invalid(OP, format!("{} new tokens after {start} overflow the cache of {}", x.rows, cache.capacity)));
    }
    if x.width != c.hidden_size || (x.e.is_some() && !cache.bounds) {
        return Err(Error::shape(OP, format!("layer input [{}, {}] (bounds: {}) for hidden {}", x.rows, x.width, x.e.is_some(), c.hidden_size)));
    }
    let positions: Vec<usize> = (start..start + x.rows).collect();
    let xn = rmsnorm(x, &lw.input_layernorm, c.rms_norm_eps);
    let mut q = linear(&xn, &lw.q_proj);
    let mut k = linear(&xn, &lw.k_proj);
    let vv = linear(&xn, &lw.v_proj);
    rope(&mut q, d, &positions, c.rope_theta);
    rope(&mut k, d, &positions, c.rope_theta);
    let capacity = cache.capacity;
    let lc = &mut cache.layers[l];
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..kv_heads {
            let (src, dst) = (t * kv_heads * d + h * d, (h * capacity + pos) * d);
            lc.k[dst..dst + d].copy_from_slice(&k.v[src..src + d]);
            lc.v[dst..dst + d].copy_from_slice(&vv.v[src..src + d]);
            if let (Some(ek), Some(ev)) = (&k.e, &vv.e) {
                lc.ek[dst..dst + d].copy_from_slice(&ek[src..src + d]);
                lc.ev[dst..dst + d].copy_from_slice(&ev[src..src + d]);
            }
        }
    }
    let o = attention(&q, lc, capacity, start, heads, kv_heads, d);
    let mid = residual(x, &linear(&o, &lw.o_proj));
    let mn = rmsnorm(&mid, &lw.post_attention_layernorm, c.rms_norm_eps);
    let act = swiglu(&linear(&mn, &lw.gate_proj), &linear(&mn, &lw.up_proj));
    let out = residual(&mid, &linear(&act, &lw.down_proj));
    Ok((mid, out))
}

/// Run `tokens` through every layer (prefill, or one decode step when it is one token), appending
/// to the cache. Returns the trace; the last entry of `hidden` is the last layer's output.
pub fn forward(w: &ModelWeights, tokens: &[u32], cache: &mut KvCache) -> Result<Trace> {
    let mut trace = Trace::default();
    let mut h = embed(w, tokens, cache.bounds)?;
    for l in 0..w.config.num_hidden_layers {
        let (mid, out) = layer(w, l, &h, cache)?;
        trace.hidden.push(std::mem::replace(&mut h, out));
        trace.attn_residual.push(mid);
    }
    trace.hidden.push(h);
    cache.len += tokens.len();
    Ok(trace)
}

/// The final norm of the last row of `h`, then the lm_head: (normed \[H\], logits \[vocab\]).
/// `h` without rows, or of another width than the model's hidden size, is an error.
pub fn head(w: &ModelWeights, h: &Act) -> Result<(Act, Act)> {
    if h.rows == 0 || h.width != w.config.hidden_size {
        return Err(Error::shape(OP, format!("head input [{}, {}]: at least one row of hidden {}", h.rows, h.width, w.config.hidden_size)));
    }
    let last = Act {
        rows: 1,
        width: h.width,
        v: h.row(h.rows - 1).to_vec(),
        e: h.e.as_ref().map(|e| e[(h.rows - 1) * h.width..].to_vec()),
    };
    let normed = rmsnorm(&last, &w.norm, w.config.rms_norm_eps);
    let logits = matmul(&normed, w.lm_head(), None);
    Ok((normed, logits))
}

/// Argmax over the real vocabulary (ties to the lowest id), `None` if a logit there is NaN.
pub fn bounded_argmax(logits: &[f32], real_vocab: usize) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits[..real_vocab.min(logits.len())].iter().enumerate() {
        if x.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// What a greedy run produced.
#[derive(Clone, Debug)]
pub struct Greedy {
    /// The prefill's trace.
    pub prefill: Trace,
    /// The prefill's last logits \[vocab\].
    pub logits: Vec<f32>,
    /// For each generated token, the final norm's output it was chosen from \[H\].
    pub normed: Vec<Vec<f32>>,
    pub tokens: Vec<u32>,
}

/// Prefill `prompt`, then `steps` greedy tokens, each fed back through the KV cache.
pub fn greedy(w: &ModelWeights, prompt: &[u32], steps: usize) -> Result<Greedy> {
    if prompt.is_empty() {
        return Err(Error::invalid(OP, "empty prompt".to_string()));
    }
    let mut cache = KvCache::new(w, prompt.len() + steps, false)?;
    let prefill = forward(w, prompt, &mut cache)?;
    let (mut normed, mut logits) = head(w, prefill.hidden.last().expect("layers"))?;
    let first_logits = logits.v.clone();
    let (mut tokens, mut normed_all) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for step in 0..steps {
        let token = bounded_argmax(&logits.v, w.config.real_vocab_size)
            .ok_or_else(|| Error::invalid(OP, format!("NaN logits at greedy step {step}")))?;
        tokens.push(token);
        normed_all.push(std::mem::take(&mut normed.v));
        if step + 1 == steps {
            break;
        }
        let trace = forward(w, &[token], &mut cache)?;
        (normed, logits) = head(w, trace.hidden.last().expect("layers"))?;
    }
    Ok(Greedy { prefill, logits: first_logits, normed: normed_all, tokens })
}
