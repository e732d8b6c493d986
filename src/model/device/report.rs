//! What the host reads after a decode step, and how: one packed copy a step into pinned memory,
//! waited on by an event, with up to two steps in flight.
//!
//! ```text
//! step n's last kernel (dec_finish, or decode_advance)   report_dev = [embed, rope, decode | tokens]
//!                                                          (the embedding and RoPE words moved out)
//! decode_step, after the launch                          report_dev -> pinned[n % 2]   one DtoH copy
//!                                                          then pinned[n % 2]'s event
//! next_tokens                                            waits for that event, checks the words,
//!                                                          returns the tokens
//! ```
//! Step n+1 needs nothing from the host (its tokens are step n's argmax, on the device), so a
//! caller may queue it before reading step n ([`DeviceModel::generate`] does): the GPU then never
//! waits for the host between steps. Each step's report holds its own flags, so an error is
//! reported at the step that raised it. At most [`IN_FLIGHT`] steps may be unread: queueing one
//! more first reads the oldest (its flags are checked; its tokens, which were the caller's to
//! read, are dropped on the host, though the device fed them on).
//!
//! The host buffers are pinned without write-combining (the host reads them; write-combined
//! memory is for buffers the host only writes).

use super::{bad, DeviceModel};
use crate::error::{CudaContext as _, Result};
use crate::gpu::Gpu;
use crate::ops::argmax::NAN_ROW;
use crate::ops::attention;
use crate::ops::decode::{StepReport, REPORT_HEAD};
use crate::ops::embed::EmbedStatus;
use crate::ops::rope::RopeTable;
use crate::tensor::DeviceTensor;
use cudarc::driver::{CudaSlice, CudaView, PinnedHostSlice};
use std::collections::VecDeque;

/// Decode steps that may be queued and not yet read: the one running and the next.
pub const IN_FLIGHT: usize = 2;

/// The device's report buffer, one pinned host buffer per step in flight, and the queue of unread
/// steps.
pub(super) struct StepReports {
    /// u32 [REPORT_HEAD + slots]: written by each step's last kernel.
    device: CudaSlice<u32>,
    /// Where the steps in flight are copied; the copy into each records the buffer's event, which
    /// reading it waits on.
    host: Vec<PinnedHostSlice<u32>>,
    /// The unread steps, oldest first.
    pending: VecDeque<Pending>,
    /// The host buffer the next step's copy goes to.
    next: usize,
}

#[derive(Clone, Copy)]
struct Pending {
    buffer: usize,
    rows: usize,
    /// Its status words were read already ([`DeviceModel::check_status`]).
    checked: bool,
}

impl StepReports {
    pub(super) fn new(gpu: &Gpu, slots: usize) -> Result<Self> {
        let len = REPORT_HEAD + slots;
        let device = gpu.stream().alloc_zeros::<u32>(len).cuda("cuMemAlloc(step report)")?;
        let mut host = Vec::with_capacity(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            // SAFETY: the buffer is zeroed below before anything reads it. Flags 0: page-locked,
            // cached (not write-combined), since the host reads it.
            let mut buf = unsafe { gpu.context().alloc_pinned_with_flags::<u32>(len, 0) }.cuda("cuMemHostAlloc(step report)")?;
            buf.as_mut_slice().cuda("cuEventSynchronize(step report)")?.fill(0);
            host.push(buf);
        }
        Ok(StepReports { device, host, pending: VecDeque::new(), next: 0 })
    }

    /// Bytes of device memory (the workspace's share).
    pub(super) fn device_bytes(&self) -> usize {
        self.device.len() * 4
    }

    /// Steps queued and not read.
    pub(super) fn unread(&self) -> usize {
        self.pending.len()
    }

    /// After a step of `rows` rows was enqueued: copy its report to the next host buffer (one
    /// asynchronous copy; the buffer's event follows it).
    fn queue(&mut self, gpu: &Gpu, rows: usize) -> Result<()> {
        if self.pending.len() >= IN_FLIGHT {
            return Err(bad(format!("{IN_FLIGHT} decode steps are unread already")));
        }
        let buffer = self.next;
        let src = self.device.slice(0..REPORT_HEAD + rows);
        gpu.stream().memcpy_dtoh(&src, &mut self.host[buffer]).cuda("cuMemcpyDtoHAsync(step report)")?;
        self.pending.push_back(Pending { buffer, rows, checked: false });
        self.next = (buffer + 1) % IN_FLIGHT;
        Ok(())
    }

    /// The words of unread step `i` (0: the oldest), once its copy has landed.
    fn words(&self, i: usize) -> Result<(&Pending, &[u32])> {
        let p = &self.pending[i];
        let words = self.host[p.buffer].as_slice().cuda("cuEventSynchronize(step report)")?;
        Ok((p, &words[..REPORT_HEAD + p.rows]))
    }
}

/// The tokens of an argmax or sampler's index: an error for a NaN row or a row that drew nothing.
fn tokens(index: &[i32]) -> Result<Vec<u32>> {
    index
        .iter()
        .enumerate()
        .map(|(r, &i)| match i {
            NAN_ROW => Err(bad(format!("row {r}'s logits hold a NaN in the real vocabulary (or, sampled, a +inf or no finite value)"))),
            i if i < 0 => Err(bad(format!("row {r} drew nothing: its sampling parameters are out of range ({i})"))),
            i => Ok(i as u32),
        })
        .collect()
}

/// What a step's last kernel needs to write its report: the device buffer and the three status
/// words (the decode attention's is the first word of its workspace).
pub(super) fn parts<'a>(reports: &'a mut StepReports, embed: &'a mut EmbedStatus, rope: &'a mut RopeTable, attn_ws: &'a DeviceTensor) -> StepReport<'a> {
    let (_, rope_status) = rope.device_parts();
    StepReport { out: &mut reports.device, embed_status: embed.word_mut(), rope_status, decode_status: attn_ws.view() }
}

impl DeviceModel {

    /// Before a step is queued: with [`IN_FLIGHT`] steps unread, read the oldest (its flags are
    /// checked, its tokens dropped).
    pub(super) fn make_room(&mut self, gpu: &Gpu) -> Result<()> {
        if self.reports.unread() >= IN_FLIGHT {
            self.next_tokens(gpu)?;
        }
        Ok(())
    }

    /// After a step of `rows` rows was enqueued: its report's copy to the host.
    pub(super) fn queue_report(&mut self, gpu: &Gpu, rows: usize) -> Result<()> {
        self.reports.queue(gpu, rows)
    }

    /// Decode steps queued ([`DeviceModel::decode_step`]) whose tokens were not read yet.
    pub fn steps_in_flight(&self) -> usize {
        self.reports.unread()
    }

    /// The tokens the oldest unread decode step chose (one per row of its batch), after checking
    /// its status words: a NaN row, a bad token fed back, a bad position, slot or page on the
    /// device is an error. Waits for that step only (an event), not for the steps queued after it.
    pub fn next_tokens(&mut self, gpu: &Gpu) -> Result<Vec<u32>> {
        let _ = gpu;
        if self.reports.unread() == 0 {
            return Err(bad("next_tokens with no decode step unread (decode_step queues one)".into()));
        }
        let (p, words) = self.reports.words(0)?;
        let (checked, words) = (p.checked, words.to_vec());
        self.reports.pending.pop_front();
        if !checked {
            self.report_error(&words)?;
        }
        tokens(&words[REPORT_HEAD..].iter().map(|&w| w as i32).collect::<Vec<_>>())
    }

    /// The error a report's status words carry, if any (in the order of [`DeviceModel::check_status`]).
    fn report_error(&self, words: &[u32]) -> Result<()> {
        let [embed, rope, decode] = [words[0], words[1], words[2]];
        if embed != 0 {
            return Err(EmbedStatus::error(embed));
        }
        if rope != 0 {
            return Err(self.rope.status_error(rope));
        }
        if decode != 0 {
            return Err(attention::decode_status_error(decode));
        }
        Ok(())
    }

    /// The tokens of the last prefill's head (its first `rows` rows): its argmax (or draws) read
    /// back after every status word (synchronises). Decode steps are read from their reports.
    pub(super) fn read_prefill_tokens(&mut self, gpu: &Gpu, rows: usize) -> Result<Vec<u32>> {
        let index = gpu.stream().clone_dtoh(&self.ws.prefill_argmax.index().slice(0..rows)).cuda("cuMemcpyDtoH(argmax index)")?;
        self.check_status(gpu)?;
        tokens(&index)
    }

    /// Every status word: the unread decode steps' (waiting for them; each step's flags are
    /// reported once, here or by [`DeviceModel::next_tokens`]), then the device's own (read and
    /// cleared: embedding, RoPE, paged prefill, decode attention), which hold what ran outside a
    /// step (a prefill, an engine's step).
    pub fn check_status(&mut self, gpu: &Gpu) -> Result<()> {
        for i in 0..self.reports.unread() {
            let (p, words) = self.reports.words(i)?;
            if p.checked {
                continue;
            }
            let words = words.to_vec();
            self.reports.pending[i].checked = true;
            self.report_error(&words)?;
        }
        self.embed_status.check(gpu)?;
        self.rope.check_status(gpu)?;
        self.attn_status.check(gpu)?;
        // The last decode's word (zero until a decode has run; each decode clears it first).
        attention::decode_status(gpu, &self.ws.attn_ws.view())
    }

    /// The bounded argmax of each row of the last decode step, on the device (i32 [slots]; rows
    /// past the batch hold stale values; -1 marks a row whose logits held a NaN): an engine feeds
    /// them to the next step without a copy to the host.
    pub fn step_tokens(&self) -> CudaView<'_, i32> {
        self.ws.argmax.index().slice(0..self.options.slots)
    }
}
