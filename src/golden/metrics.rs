//! Elementwise comparison with a tolerance `atol + rtol * |expected|`.
//!
//! Any element over tolerance fails, and so does a NaN or infinity where the expected value is
//! finite (or a finite value where it is not, or an infinity of the other sign). Means never decide.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

/// The outcome of comparing `actual` against `expected`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub len: usize,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    /// Largest |actual - expected| / (atol + rtol * |expected|): <= 1 passes.
    pub max_tolerance_used: f64,
    /// Elements whose finiteness (or infinity's sign, or NaN-ness) differs from the expected value.
    pub nonfinite_mismatches: usize,
    /// Elements over tolerance (non-finite mismatches included).
    pub failures: usize,
    /// Index, actual and expected value of the worst element (first non-finite mismatch if any).
    pub worst: Option<(usize, f64, f64)>,
    /// ||actual - expected|| / ||expected|| over the finite pairs (0 when both are 0).
    pub rel_l2: f64,
    /// cos(actual, expected) over the finite pairs (1 when both are 0).
    pub cosine: f64,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements: max abs {:.3e}, max rel {:.3e}, rel-L2 {:.3e}, cosine {:.9}, tolerance used {:.3}, \
             non-finite mismatches {}, failures {}",
            self.len,
            self.max_abs_err,
            self.max_rel_err,
            self.rel_l2,
            self.cosine,
            self.max_tolerance_used,
            self.nonfinite_mismatches,
            self.failures
        )?;
        if let Some((i, a, e)) = self.worst {
            write!(f, " (worst at {i}: got {a:e}, expected {e:e})")?;
        }
        Ok(())
    }
}

/// Compare elementwise: element i passes if |actual - expected| <= atol + rtol * |expected|.
/// Lengths must match (a mismatch counts every element as failed). `expected` may be f32 (a
/// reference) or f64 (a float64 truth).
pub fn compare<E: Copy + Into<f64>>(actual: &[f32], expected: &[E], tol: Tolerance) -> Comparison {
    compare_scaled(actual, expected, tol, None)
}

/// As `compare`, with element i allowed atol * scale\[i\] + rtol * |expected\[i\]|: for outputs whose
/// absolute error is proportional to the size of their inputs rather than of the output itself
/// (a rotation of two values, a sum whose terms cancel).
pub fn compare_scaled<E: Copy + Into<f64>>(actual: &[f32], expected: &[E], tol: Tolerance, scale: Option<&[f32]>) -> Comparison {
    let mut c = Comparison {
        len: expected.len(),
        max_abs_err: 0.0,
        max_rel_err: 0.0,
        max_tolerance_used: 0.0,
        nonfinite_mismatches: 0,
        failures: 0,
        worst: None,
        rel_l2: 0.0,
        cosine: 1.0,
    };
    let (mut diff_sq, mut exp_sq, mut act_sq, mut dot) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    if actual.len() != expected.len() || scale.is_some_and(|s| s.len() != expected.len()) {
        c.failures = actual.len().max(expected.len());
        c.max_tolerance_used = f64::INFINITY;
        return c;
    }
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e): (f64, f64) = (a.into(), e.into());
        if !e.is_finite() || !a.is_finite() {
            let same = (a.is_nan() && e.is_nan()) || (a.is_infinite() && a == e);
            if !same {
                c.nonfinite_mismatches += 1;
                c.failures += 1;
                if c.nonfinite_mismatches == 1 {
                    c.worst = Some((i, a, e));
                }
                c.max_tolerance_used = f64::INFINITY;
            }
            continue;
        }
        diff_sq += (a - e) * (a - e);
        exp_sq += e * e;
        act_sq += a * a;
        dot += a * e;
        let abs = (a - e).abs();
        let rel = if e != 0.0 { abs / e.abs() } else if abs == 0.0 { 0.0 } else { f64::INFINITY };
        let atol = tol.atol as f64 * scale.map_or(1.0, |s| s[i] as f64);
        let allowed = atol + tol.rtol as f64 * e.abs();
        let used = if allowed > 0.0 { abs / allowed } else if abs == 0.0 { 0.0 } else { f64::INFINITY };
        c.max_abs_err = c.max_abs_err.max(abs);
        c.max_rel_err = c.max_rel_err.max(rel);
        if used > 1.0 {
            c.failures += 1;
        }
        if used > c.max_tolerance_used && c.nonfinite_mismatches == 0 {
            c.max_tolerance_used = used;
            c.worst = Some((i, a, e));
        }
    }
    c.rel_l2 = if exp_sq > 0.0 { (diff_sq / exp_sq).sqrt() } else if diff_sq == 0.0 { 0.0 } else { f64::INFINITY };
    c.cosine = if exp_sq > 0.0 && act_sq > 0.0 { dot / (exp_sq.sqrt() * act_sq.sqrt()) } else if exp_sq == act_sq { 1.0 } else { 0.0 };
    c
}

/// Whether our error against a truth exceeds a peer's (PyTorch at the same dtype) beyond chance:
/// a paired comparison of the squared errors, element by element.
///
/// With a_i = ours_i - truth_i and b_i = peer_i - truth_i, the ratio is ||a|| / ||b|| (the
/// report's `vs_torch`) and d_i = a_i^2 - b_i^2. If our errors were no worse than the peer's
/// (each pair exchangeable), the sum D = sum d_i would be centred on 0 with standard deviation
/// about sigma = sqrt(sum d_i^2) (the paired sign test's normal approximation), so
/// `z = D / sigma` above 3 happens by chance with probability ~0.13%. An extra rounding of every
/// element (a bf16 P in attention, bf16 logits) moves every d_i the same way and shows as z far
/// above 3; two 16-bit forwards that round the same stored values differ only where a
/// pre-rounding value falls on the other side of a rounding boundary, which is the chance this
/// allows for. Passes when the ratio is at most 1 or z at most [`EXCESS_Z`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Excess {
    pub ratio: f64,
    pub z: f64,
}

/// The z above which our excess error over the peer's is not chance (one-sided, ~0.13%).
pub const EXCESS_Z: f64 = 3.0;

impl Excess {
    pub fn passed(&self) -> bool {
        self.ratio <= 1.0 || self.z <= EXCESS_Z
    }
}

/// [`Excess`] judged over units whose errors are independent of each other, when the elements
/// within a unit are not (the decode steps of a whole model, `diff::DecodeReport`): `ratios`
/// holds each unit's ours-over-peer rel-L2 ratio. The ratio is their geometric mean and z the
/// t statistic of their logarithms, mean / (sd / sqrt(n)): if ours were no worse than the peer
/// each log ratio would be centred on 0. Fewer than two units, or units that all agree, leave no
/// spread to measure chance by: z is then 0 when the ratio is at most 1, else infinite.
pub fn excess_over_units(ratios: &[f64]) -> Excess {
    let n = ratios.len() as f64;
    if ratios.is_empty() {
        return Excess { ratio: 1.0, z: 0.0 };
    }
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n;
    let ratio = mean.exp();
    let sd = if logs.len() > 1 { (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    let z = if !mean.is_finite() || !sd.is_finite() {
        if mean > 0.0 || mean.is_nan() { f64::INFINITY } else { 0.0 }
    } else if sd > 0.0 {
        mean / (sd / n.sqrt())
    } else if mean > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Excess { ratio, z }
}

/// [`Excess`] of `ours` over `peer` against `truth` (finite pairs only: non-finite values are the
/// comparisons' business).
pub fn excess<E: Copy + Into<f64>>(ours: &[f32], peer: &[f32], truth: &[E]) -> Excess {
    let (mut sum_a, mut sum_b, mut d, mut d2) = (0f64, 0f64, 0f64, 0f64);
    for ((&o, &p), &t) in ours.iter().zip(peer).zip(truth) {
        let t: f64 = t.into();
        let (a, b) = (o as f64 - t, p as f64 - t);
        if !(a.is_finite() && b.is_finite()) {
            continue;
        }
        sum_a += a * a;
        sum_b += b * b;
        d += a * a - b * b;
        d2 += (a * a - b * b).powi(2);
    }
    let ratio = if sum_b > 0.0 { (sum_a / sum_b).sqrt() } else if sum_a == 0.0 { 1.0 } else { f64::INFINITY };
    let z = if d2 > 0.0 { d / d2.sqrt() } else { 0.0 };
    Excess { ratio, z }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_pairs_elements() {
        let truth = [1.0f64, 2.0, 3.0, 4.0];
        let peer = [1.1f32, 1.9, 3.1, 3.9];
        assert_eq!(excess(&peer, &peer, &truth), Excess { ratio: 1.0, z: 0.0 });
        // Twice the peer's error on every element: the same sign in every pair.
        let ours = [1.2f32, 1.8, 3.2, 3.8];
        let e = excess(&ours, &peer, &truth);
        assert!((e.ratio - 2.0).abs() < 1e-5 && e.z > 1.99 && !(Excess { z: 3.5, ..e }).passed(), "{e:?}");
    }

    #[test]
    fn excess_over_units_is_a_t_test_of_log_ratios() {
        assert_eq!(excess_over_units(&[]), Excess { ratio: 1.0, z: 0.0 });
        // No spread: only a ratio at most 1 passes.
        assert_eq!(excess_over_units(&[1.0, 1.0]).z, 0.0);
        assert!(excess_over_units(&[1.5, 1.5, 1.5]).z.is_infinite() && !excess_over_units(&[1.5]).passed());
        assert!(excess_over_units(&[0.9]).passed());
        // ln 1.1 and ln 1.2 (mean 0.1388, sd 0.0615): t = 0.1388 / (0.0615 / sqrt 2) = 3.19.
        let e = excess_over_units(&[1.1, 1.2]);
        assert!((e.ratio - (1.1f64 * 1.2).sqrt()).abs() < 1e-12 && (e.z - 3.19).abs() < 0.01 && !e.passed(), "{e:?}");
        // The per-step ratios of a device decode that passes: spread around 1 at the early steps.
        let e = excess_over_units(&[1.0535, 1.0410, 1.0154, 0.9996, 1.0008, 0.9984, 1.0011, 0.9999]);
        assert!(e.ratio > 1.0 && e.z < EXCESS_Z && e.passed(), "{e:?}");
        // Every step twice as far from the truth, give or take: far beyond chance.
        assert!(!excess_over_units(&[1.9, 2.1, 2.0, 1.95]).passed());
        assert!(excess_over_units(&[f64::INFINITY, 1.0]).z.is_infinite());
    }
}
