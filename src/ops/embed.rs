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
use crate::kernel_args::QkDecodeAdvanceArgs;
use crate::ops::decode::{advance_args, report_args, Advance, StepReport};
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
        Err(Self::error(bits))
    }

    /// The error for the (non-zero) status `bits`.
    pub(crate) fn error(bits: u32) -> Error {
        Error::invalid(OP, format!("a token id outside the vocabulary (or a NaN row's argmax, -1) was looked up; its row is NaN (status {bits:#x})"))
    }

    /// The device word, for a step's report ([`crate::ops::decode::StepReport`]), which moves it out.
    pub(crate) fn word_mut(&mut self) -> &mut CudaSlice<u32> {
        &mut self.word
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

/// The last launch of a decode step that does not end in the fused head (`cuda/model.cu`'s
/// decode_advance), for b < batch: with `advance`, `positions[b] += 1`, `lens[b] += 1` and
/// `slot_mapping[b]` = the cache slot of the new position through row b of the block tables
/// (INT_MAX, refused by the next cache write, where the table has no page for it), so that a
/// replayed graph reads the moved-on values; with `report`, the step's report from `index` (the
/// step's tokens, i32 [at least batch]).
pub fn advance(gpu: &Gpu, batch: usize, advance: Option<Advance>, mut report: Option<(&CudaView<i32>, StepReport)>) -> Result<()> {
    let op = "decode_advance";
    if let Some(a) = &advance {
        a.check(op, batch)?;
    }
    if let Some((index, r)) = &report {
        r.check(op, batch)?;
        if index.len() < batch {
            return Err(Error::shape(op, format!("{} tokens for a batch of {batch}", index.len())));
        }
    }
    if batch == 0 || (advance.is_none() && report.is_none()) {
        return Ok(());
    }
    let batch_i = i32::try_from(batch).map_err(|_| Error::unsupported(op, format!("batch {batch} past i32")))?;
    let f = gpu.function(MODULE, "decode_advance")?;
    let mut p = gpu.addresses();
    let (index, report) = match report.as_mut() {
        Some((index, r)) => (p.read(*index).cast(), Some(r)),
        None => (std::ptr::null(), None),
    };
    let a = QkDecodeAdvanceArgs { batch: batch_i, advance: advance.is_some() as i32, adv: advance_args(&mut p, advance), index, report: report_args(&mut p, report) };
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (super::row_block_threads(batch), 1, 1), shared_mem_bytes: 0 };
    // SAFETY: with advance the three arrays hold at least `batch` i32 and the tables batch *
    // max_pages (checked above); thread b touches index b (and b + blockDim.x, ... below batch),
    // and reads table entry b * max_pages + i only for 0 <= i < max_pages. With a report it reads
    // index[b] (batch of them, checked) and writes report word REPORT_HEAD + b (checked), thread 0
    // words 0..3 and the two one-word statuses. Null pointers are never read.
    unsafe { gpu.launch_struct(&f, "decode_advance", &a, cfg) }?;
    Ok(())
}
