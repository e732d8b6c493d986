//! The embedding lookup on the device (`cuda/model.cu`): `out[r, :] = table[tokens[r], :]` for
//! device token ids (in a decode step, the previous step's argmax, which the host never sees).
//!
//! ```text
//! table [vocab, hidden], tokens i32 [rows] (device), out [rows, hidden]      any storage dtype
//! ```
//! A token outside 0..vocab cannot be checked on the host. The kernel fills that row with NaN,
//! reads nothing for it, and sets a bit in the [`EmbedStatus`], which [`EmbedStatus::check`] reads
//! (synchronising) as a typed error. The argmax's NaN-row marker (-1) is such a token, so a NaN
//! that reached the logits is reported at the next step instead of becoming token 0.

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::tensor::{View, ViewMut};
use cudarc::driver::{CudaSlice, CudaView, LaunchConfig};

pub use crate::spec::embed::{check, check_tokens, OP};
const MODULE: &str = "model";
const THREADS: u32 = 128;

/// Status bit: some row's token was outside 0..vocab (its row is NaN).
pub const STATUS_BAD_TOKEN: u32 = 1;

/// The device word the kernel flags bad tokens in; cleared by [`EmbedStatus::check`].
pub struct EmbedStatus {
    word: CudaSlice<u32>,
}

impl EmbedStatus {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Ok(EmbedStatus { word: gpu.stream().alloc_zeros::<u32>(1).cuda("cuMemAlloc(embed status)")? })
    }

    /// `Ok` if no lookup since the last check had a token outside the table (synchronises), else
    /// an error; the word is cleared either way.
    pub fn check(&mut self, gpu: &Gpu) -> Result<()> {
        let bits = gpu.stream().clone_dtoh(&self.word).cuda("cuMemcpyDtoH(embed status)")?[0];
        gpu.synchronize()?;
        if bits == 0 {
            return Ok(());
        }
        gpu.stream().memset_zeros(&mut self.word).cuda("cuMemsetD8(embed status)")?;
        Err(Error::invalid(OP, format!("a token id outside the vocabulary (or a NaN row's argmax, -1) was looked up; its row is NaN (status {bits:#x})")))
    }
}

fn kernel(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "embed_f32",
        DType::F16 => "embed_f16",
        DType::BF16 => "embed_bf16",
    }
}

/// `out[r] = table[tokens[r]]` for the `tokens.len()` rows of `out`.
pub fn embed(gpu: &Gpu, table: &View, tokens: &CudaView<i32>, out: &mut ViewMut, status: &mut EmbedStatus) -> Result<()> {
    let (rows, vocab, hidden) = check(table.layout(), tokens.len(), out.layout())?;
    if vocab > i32::MAX as usize || hidden > i32::MAX as usize || rows > i32::MAX as usize {
        return Err(Error::unsupported(OP, format!("table {} or {rows} rows past i32", table.layout())));
    }
    if rows == 0 {
        return Ok(());
    }
    let name = kernel(table.layout().dtype);
    let f = gpu.function(MODULE, name)?;
    let (vocab_i, hidden_i) = (vocab as i32, hidden as i32);
    let mut args = gpu.launcher(&f, name);
    args.arg(&table.data).arg(tokens).arg(&mut out.data).arg(&vocab_i).arg(&hidden_i).arg(&mut status.word);
    let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: table holds vocab * hidden elements and out rows * hidden of one dtype, tokens rows
    // i32 (checked above). Block r reads tokens[r], and table row tokens[r] only when it is in
    // 0..vocab; it writes out row r.
    unsafe { args.launch(cfg) }?;
    Ok(())
}

/// `positions[b] += 1`, `lens[b] += 1` and `slot_mapping[b]` = the cache slot of the new position
/// through row b of `block_tables` [batch, max_pages] (INT_MAX, refused by the next cache write,
/// where the table has no page for it), for b < batch, on the stream (a decode step's last
/// launch, so that a replayed graph reads the moved-on values).
#[allow(clippy::too_many_arguments)]
pub fn advance(
    gpu: &Gpu,
    positions: &mut CudaSlice<i32>,
    lens: &mut CudaSlice<i32>,
    slot_mapping: &mut CudaSlice<i32>,
    block_tables: &CudaView<i32>,
    max_pages: usize,
    page_size: usize,
    batch: usize,
) -> Result<()> {
    if batch > positions.len() || batch > lens.len() || batch > slot_mapping.len() || Some(block_tables.len()) != batch.checked_mul(max_pages) {
        return Err(Error::shape(
            "decode_advance",
            format!("batch {batch} past {} positions / {} lens / {} slots, or {} block-table entries for {max_pages} pages a row", positions.len(), lens.len(), slot_mapping.len(), block_tables.len()),
        ));
    }
    if page_size == 0 || max_pages.checked_mul(page_size).is_none_or(|n| n > i32::MAX as usize) {
        return Err(Error::invalid("decode_advance", format!("{max_pages} pages of {page_size} positions")));
    }
    if batch == 0 {
        return Ok(());
    }
    let f = gpu.function(MODULE, "decode_advance")?;
    let (batch_i, max_pages_i, page_size_i) = (batch as i32, max_pages as i32, page_size as i32);
    let mut args = gpu.launcher(&f, "decode_advance");
    args.arg(positions).arg(lens).arg(slot_mapping).arg(block_tables).arg(&max_pages_i).arg(&page_size_i).arg(&batch_i);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (super::row_block_threads(batch), 1, 1), shared_mem_bytes: 0 };
    // SAFETY: the three arrays hold at least `batch` i32 and the tables batch * max_pages (checked
    // above); thread b touches index b (and b + blockDim.x, ... below batch), and reads table
    // entry b * max_pages + i only for 0 <= i < max_pages.
    unsafe { args.launch(cfg) }?;
    Ok(())
}
