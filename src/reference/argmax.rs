//! `torch.argmax(logits[:, :n_valid], dim=-1)`: the first index of the largest value among the
//! first `n_valid` entries of each row. A row holding a NaN there has no answer: `None` (the
//! caller is told, never handed an arbitrary index).

use crate::error::Result;
pub use crate::spec::argmax::RowMax;
use crate::spec::argmax::check;
use crate::tensor::HostTensor;

pub fn argmax(logits: &HostTensor, n_valid: usize) -> Result<Vec<RowMax>> {
    let (_, stride) = check(logits.layout(), n_valid)?;
    Ok(logits
        .data()
        .chunks_exact(stride)
        .map(|row| {
            let best = argmax_row(&row[..n_valid])?;
            Some((best, row[best as usize]))
        })
        .collect())
}

/// The first index of the largest value of `valid`, `None` if it holds a NaN.
pub fn argmax_row(valid: &[f32]) -> Option<u32> {
    if valid.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut best = 0;
    for (i, &v) in valid.iter().enumerate() {
        if v > valid[best] {
            best = i;
        }
    }
    Some(best as u32)
}
