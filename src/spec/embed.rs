//! The embedding lookup (`nn.Embedding`): `out[r, :] = table[tokens[r], :]`, an exact copy of one
//! row per token, no arithmetic. Validation shared by the kernel wrapper ([`crate::ops::embed`]) and
//! the CPU model ([`crate::reference::model::embed`], which checks host token ids with
//! [`check_tokens`]).

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "embedding";

/// Validate `table` [vocab, hidden], `out` [rows, hidden] of the table's dtype, and `tokens` (the
/// device array's length) equal to rows. Returns (rows, vocab, hidden).
pub fn check(table: Layout, tokens: usize, out: Layout) -> Result<(usize, usize, usize)> {
    let [vocab, hidden] = *table.shape.dims() else {
        return Err(Error::shape(OP, format!("table must be [vocab, hidden], got {table}")));
    };
    let [rows, out_hidden] = *out.shape.dims() else {
        return Err(Error::shape(OP, format!("out must be [rows, hidden], got {out}")));
    };
    if out.dtype != table.dtype {
        return Err(Error::dtype(OP, format!("out is {} but the table is {}", out.dtype, table.dtype)));
    }
    if out_hidden != hidden || vocab == 0 || hidden == 0 {
        return Err(Error::shape(OP, format!("out {out} for table {table}")));
    }
    if tokens != rows {
        return Err(Error::shape(OP, format!("{tokens} tokens for {rows} output rows")));
    }
    Ok((rows, vocab, hidden))
}

/// Host token ids: each inside 0..vocab.
pub fn check_tokens(tokens: &[u32], vocab: usize) -> Result<()> {
    if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        return Err(Error::invalid(OP, format!("token id {t} (index {i}) >= vocab size {vocab}")));
    }
    Ok(())
}
