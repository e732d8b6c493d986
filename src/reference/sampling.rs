//! The exact filtered distribution of [`crate::spec::sampling`], in float64: which tokens a row keeps
//! after temperature, top-k, top-p and min-p, and the probability softmax gives each. The kernel
//! computes the same rules in FP32 with fixed-point sums; the two can disagree only for a token whose
//! decision lies within rounding of its cut-off, which [`Filtered::margin`] measures so a test can
//! tell such a token from a wrong one.

use crate::spec::sampling::SamplingParams;

/// One row's filtered distribution.
#[derive(Clone, Debug)]
pub struct Filtered {
    /// The probability of each valid token (0 for a removed one); sums to 1.
    pub probs: Vec<f64>,
    /// How close the nearest decision came to its cut-off, relative: for top-p, the smallest
    /// `|A_i / Z - top_p|` (A_i the probability ranked above token i, Z the total); for min-p, the
    /// smallest `|e_i / e_max - min_p|` over the tokens top-p kept. `f64::INFINITY` when no filter
    /// of the two is on. Top-k and the ties are exact in both implementations.
    pub margin: f64,
}

impl Filtered {
    pub fn kept(&self) -> Vec<bool> {
        self.probs.iter().map(|&p| p > 0.0).collect()
    }
}

/// The filtered distribution of `row` (its first `n_valid` entries), or `None` when the row has no
/// distribution (a NaN or +inf after the division, or no finite value). Greedy rows
/// (temperature 0) put probability 1 on the bounded argmax (`None` for a NaN row).
pub fn filtered(row: &[f32], n_valid: usize, p: &SamplingParams) -> Option<Filtered> {
    let row = &row[..n_valid];
    if p.is_greedy() {
        let best = crate::reference::argmax::argmax_row(row)?;
        let mut probs = vec![0.0; n_valid];
        probs[best as usize] = 1.0;
        return Some(Filtered { probs, margin: f64::INFINITY });
    }
    // TemperatureLogitsWarper: an f32 division, as `scores / temperature` on f32 scores.
    let x: Vec<f32> = row.iter().map(|&v| v / p.temperature).collect();
    if x.iter().any(|v| v.is_nan() || *v == f32::INFINITY) {
        return None;
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - max as f64).exp()).collect();
    let mut keep = vec![true; n_valid];

    // Top-k: the k-th largest value; every token at least that large stays.
    if p.top_k > 0 && (p.top_k as usize) < n_valid {
        let mut sorted = x.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[p.top_k as usize - 1];
        for (k, &v) in keep.iter_mut().zip(&x) {
            *k = v >= kth;
        }
    }

    // Top-p over what top-k kept: rank by (value, index) descending; keep iff the mass above < top_p.
    let mut margin = f64::INFINITY;
    if p.top_p < 1.0 {
        let z: f64 = (0..n_valid).filter(|&i| keep[i]).map(|i| e[i]).sum();
        let mut order: Vec<usize> = (0..n_valid).filter(|&i| keep[i]).collect();
        // partial_cmp: -0 and +0 are equal values, as torch.sort and the kernel take them.
        order.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).expect("no NaN").then(b.cmp(&a)));
        let mut above = 0.0;
        for &i in &order {
            let frac = above / z;
            margin = margin.min((frac - p.top_p as f64).abs());
            if frac >= p.top_p as f64 && above > 0.0 {
                keep[i] = false;
            }
            above += e[i];
        }
    }

    // Min-p: e_i / e_max >= min_p (e_max = 1).
    if p.min_p > 0.0 {
        for i in 0..n_valid {
            if keep[i] {
                margin = margin.min((e[i] - p.min_p as f64).abs());
                if e[i] < p.min_p as f64 {
                    keep[i] = false;
                }
            }
        }
    }

    let z: f64 = (0..n_valid).filter(|&i| keep[i]).map(|i| e[i]).sum();
    let probs = (0..n_valid).map(|i| if keep[i] { e[i] / z } else { 0.0 }).collect();
    Some(Filtered { probs, margin })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: u32, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, min_p, seed: 0 }
    }

    #[test]
    fn top_k_keeps_ties_at_the_cut() {
        let f = filtered(&[1.0, 3.0, 2.0, 2.0, 0.0], 5, &params(1.0, 2, 1.0, 0.0)).unwrap();
        assert_eq!(f.kept(), [false, true, true, true, false]);
    }

    #[test]
    fn top_p_keeps_a_tie_group_from_its_highest_index_down() {
        // Four equal tokens of 1/4 each: top_p 0.5 keeps the tokens with mass above 0 and 1/4:
        // the two highest indices.
        let f = filtered(&[0.0; 4], 4, &params(1.0, 0, 0.5, 0.0)).unwrap();
        assert_eq!(f.kept(), [false, false, true, true]);
        // 0.3: only the highest index is below 0.3 ... and the next (mass above 1/4 < 0.3) too.
        let f = filtered(&[0.0; 4], 4, &params(1.0, 0, 0.3, 0.0)).unwrap();
        assert_eq!(f.kept(), [false, false, true, true]);
        let f = filtered(&[0.0; 4], 4, &params(1.0, 0, 0.25, 0.0)).unwrap();
        assert_eq!(f.kept(), [false, false, false, true]);
    }

    #[test]
    fn min_p_is_relative_to_the_top_and_the_top_stays() {
        let ln2 = std::f32::consts::LN_2;
        let f = filtered(&[0.0, -ln2, -3.0 * ln2], 3, &params(1.0, 0, 1.0, 0.25)).unwrap();
        assert_eq!(f.kept(), [true, true, false]);
        assert!((f.probs[0] - 2.0 / 3.0).abs() < 1e-6);
        let f = filtered(&[0.0, -1.0], 2, &params(1.0, 0, 1.0, 1.0)).unwrap();
        assert_eq!(f.kept(), [true, false]);
    }

    #[test]
    fn rows_without_a_distribution() {
        assert!(filtered(&[0.0, f32::NAN], 2, &params(1.0, 0, 1.0, 0.0)).is_none());
        assert!(filtered(&[0.0, f32::INFINITY], 2, &params(1.0, 0, 1.0, 0.0)).is_none());
        assert!(filtered(&[f32::NEG_INFINITY; 3], 3, &params(1.0, 0, 1.0, 0.0)).is_none());
        // Only the valid part counts.
        assert!(filtered(&[0.0, 1.0, f32::NAN], 2, &params(1.0, 0, 1.0, 0.0)).is_some());
        // Greedy: the argmax, ties to the lowest index.
        let f = filtered(&[1.0, 5.0, 5.0], 3, &SamplingParams::greedy()).unwrap();
        assert_eq!(f.kept(), [false, true, false]);
    }
}
