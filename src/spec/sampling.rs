//! Sampling one token per row of logits [rows, stride] over the first `n_valid` entries (the real
//! vocabulary), with per-row parameters, as transformers' `generate(do_sample=True)` does:
//!
//! ```text
//! x      = logits[:n_valid].float() / temperature          TemperatureLogitsWarper (f32 division)
//! x      = top_k(x)                                         TopKLogitsWarper
//! x      = top_p(x)                                         TopPLogitsWarper
//! x      = min_p(x)                                         MinPLogitsWarper
//! token ~ softmax(x)                                        torch.multinomial(probs, 1)
//! ```
//!
//! Each filter sets the logits it removes to -inf, in that order, and each is defined on what the
//! previous one left:
//! - **top-k** (`top_k` in 1..n_valid): keeps every token whose value is at least the k-th largest,
//!   ties at the cut-off included (`scores < topk(scores, k)[-1]` is what transformers removes).
//! - **top-p** (`top_p` in (0, 1)): transformers sorts ascending (a stable sort: among equal values the
//!   lower index comes first), takes the cumulative softmax and removes every token whose cumulative
//!   probability is `<= 1 - top_p`, always keeping the last (largest). Equivalently: rank the tokens by
//!   value, and among equal values by index, highest first; a token is kept iff the probability of the
//!   tokens ranked above it is `< top_p`. So a tie group at the cut-off is kept from its highest index
//!   down, as far as needed.
//! - **min-p** (`min_p` in (0, 1]): removes a token whose probability is below `min_p` times the
//!   largest probability (`probs < min_p * probs.max()`); the largest always stays.
//!
//! Off values, as transformers' generation config leaves a warper out: `temperature` 1, `top_k` 0
//! (or >= n_valid), `top_p` 1, `min_p` 0. `temperature` 0 is greedy (the engines' convention, vLLM's
//! among them): the row's token is the bounded argmax, ties to the lowest index, whatever the
//! filters say ([`crate::spec::argmax`]).
//!
//! A sampled row without a distribution (a NaN or +inf among its valid logits after the division,
//! or no finite one) draws nothing: [`NO_DISTRIBUTION`], as argmax reports a NaN row. Parameters
//! out of range are refused on the host ([`SamplingParams::validate`]); parameters an engine writes
//! into device buffers itself are checked by the kernel, and a bad row is answered
//! [`BAD_PARAMS`] without drawing.
//!
//! **Randomness.** A row's draw is a function of its logits, its parameters, its `seed` and its
//! `step` only, never of the batch around it: Philox4x32-10 (Salmon et al., SC'11) keyed by the
//! seed, counter (token / 4, step, domain), gives every (seed, step, token) its own uniform u, and
//! the token drawn is `argmax_i x_i - log(-log u_i)` over the kept tokens (the Gumbel-max trick:
//! exactly a draw from softmax(x) restricted to them; vLLM's `probs / Exp(1)` argmax is the same
//! race). The step counter lives on the device and the kernel advances it, so a captured graph
//! draws fresh numbers on every replay.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "sample";

/// The token a row without a distribution gets (NaN or +inf logits, or none finite); also
/// [`crate::spec::argmax`]'s NaN row (-1).
pub const NO_DISTRIBUTION: i32 = -1;
/// The token a row whose device-side parameters are out of range gets (nothing drawn).
pub const BAD_PARAMS: i32 = -2;

/// One row's sampling parameters (see the module documentation for the semantics and the off
/// values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0: greedy; otherwise finite and > 0.
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// In (0, 1]; 1: off.
    pub top_p: f32,
    /// In [0, 1]; 0: off.
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Plain sampling from softmax(logits): temperature 1, no filter, seed 0.
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0 }
    }
}

impl SamplingParams {
    /// The bounded argmax (temperature 0).
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The ranges of the module documentation, as an `InvalidArgument` naming the parameter.
    pub fn validate(&self) -> Result<()> {
        let SamplingParams { temperature, top_p, min_p, .. } = *self;
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::invalid(OP, format!("temperature {temperature} must be finite and >= 0 (0: greedy)")));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::invalid(OP, format!("top_p {top_p} must be in (0, 1] (1: off)")));
        }
        if !(0.0..=1.0).contains(&min_p) {
            return Err(Error::invalid(OP, format!("min_p {min_p} must be in [0, 1] (0: off)")));
        }
        Ok(())
    }

    /// The device's top_k (i32): a k past i32::MAX keeps every token, as i32::MAX does.
    pub fn top_k_i32(&self) -> i32 {
        self.top_k.min(i32::MAX as u32) as i32
    }
}

/// What a row drew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draw {
    Token(u32),
    /// NaN or +inf among the valid logits, or none finite ([`NO_DISTRIBUTION`]).
    NoDistribution,
    /// The device-side parameters were out of range ([`BAD_PARAMS`]).
    BadParams,
}

impl Draw {
    /// The kernel's i32 answer.
    pub fn from_raw(raw: i32) -> Draw {
        match raw {
            BAD_PARAMS => Draw::BadParams,
            r if r < 0 => Draw::NoDistribution,
            r => Draw::Token(r as u32),
        }
    }

    pub fn token(self) -> Option<u32> {
        match self {
            Draw::Token(t) => Some(t),
            _ => None,
        }
    }
}

/// Validate logits [rows, stride] and `n_valid` in 1..=stride (i32 indices); returns (rows, stride).
pub fn check(logits: Layout, n_valid: usize) -> Result<(usize, usize)> {
    let [rows, stride] = *logits.shape.dims() else {
        return Err(Error::shape(OP, format!("logits must be [rows, stride], got {logits}")));
    };
    if n_valid == 0 || n_valid > stride {
        return Err(Error::invalid(OP, format!("n_valid {n_valid} must be in 1..={stride}")));
    }
    if n_valid > i32::MAX as usize {
        return Err(Error::unsupported(OP, format!("n_valid {n_valid} > {} (i32 token indices)", i32::MAX)));
    }
    Ok((rows, stride))
}

/// Philox4x32-10 (Random123's `philox4x32_10`): counter `c`, key `k`. The kernel's generator
/// (`cuda/sampling.cu`), here so that its constants are checked against Random123's known
/// answers and so that the CPU side can say which uniforms a row sees.
pub fn philox4x32_10(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    for _ in 0..10 {
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The fourth counter word of every sampling draw ("SAMP"): other uses of a seed get other domains.
pub const PHILOX_DOMAIN: u32 = 0x5341_4D50;

/// The uniform in (0, 1) that token `token` of a row with `seed` sees at `step`: 23 bits of the
/// Philox word, centred (`((w >> 9) + 0.5) / 2^23`, exact in f32).
pub fn uniform(seed: u64, step: u64, token: u32) -> f32 {
    let w = philox4x32_10([token / 4, step as u32, (step >> 32) as u32, PHILOX_DOMAIN], [seed as u32, (seed >> 32) as u32]);
    (((w[(token % 4) as usize] >> 9) as f32) + 0.5) * (1.0 / 8_388_608.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors for philox4x32_10 (kat_vectors).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_inside_the_open_interval() {
        for t in 0..64 {
            let u = uniform(7, 3, t);
            assert!(u > 0.0 && u < 1.0, "{u}");
        }
        assert_ne!(uniform(7, 3, 0), uniform(7, 4, 0));
        assert_ne!(uniform(7, 3, 0), uniform(8, 3, 0));
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        let ok = SamplingParams { temperature: 0.7, top_k: 20, top_p: 0.9, min_p: 0.05, seed: 1 };
        ok.validate().unwrap();
        SamplingParams::greedy().validate().unwrap();
        for bad in [
            SamplingParams { temperature: -1.0, ..ok },
            SamplingParams { temperature: f32::NAN, ..ok },
            SamplingParams { temperature: f32::INFINITY, ..ok },
            SamplingParams { top_p: 0.0, ..ok },
            SamplingParams { top_p: 1.5, ..ok },
            SamplingParams { min_p: -0.1, ..ok },
            SamplingParams { min_p: f32::NAN, ..ok },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.to_string().contains("sample"), "{e}");
        }
    }
}
