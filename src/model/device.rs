//! The whole Qwen2ForCausalLM on the device, from this crate's kernels only: prefill (chunked),
//! greedy decode of a batch of sequences with the KV cache, each decode step captured once into a
//! CUDA graph and replayed.
//!
//! ```text
//! prefill (one sequence, a chunk of T tokens at positions p0..p0+T, sequence s):
//!   resid = embed[tokens]                                      ops::embed
//!   per layer:  xn = rmsnorm(resid)            (layer 0)       ops::rmsnorm
//!               xn = add_rmsnorm(down, resid)  (layers 1..)    resid += down, then the norm
//!               qkv = xn [Wq; Wk; Wv]^T + [bq; bk; bv]         one GEMM (merged q/k/v)
//!               rope_qkv: q rotated -> q; k rotated, v -> the cache at s's slots of p0..p0+T
//!               attn = attention over s's pages, 0..p0+T       ops::attention::prefill_paged
//!               o = attn Wo^T;  xn = add_rmsnorm(o, resid)     resid after attention
//!               gu = xn [Wgate; Wup]^T                         one GEMM (merged gate/up)
//!               act = silu(gu[:, :I]) * gu[:, I:];  down = act Wdown^T
//!   xn = add_rmsnorm(down, resid, final norm); logits = xn[T-1] lm_head^T (f32); argmax
//!
//! decode step (B rows, row b continuing sequence batch[b]), on the cuBLAS path (the fused path,
//! the default, computes the same in 5-6 launches a layer: device/step.rs):
//!   the same with T = B, tokens = the previous step's argmax (on the device), rope_qkv at the
//!   rows' device positions and slots, attention::decode through each row's block table and
//!   length, logits [B, vocab] f32, the bounded argmax into the tokens of the next step, then
//!   positions and lengths + 1 and the next step's slots (decode_advance).
//! ```
//!
//! Merged: q, k and v are one GEMM over the concatenated [(heads + 2 kv_heads) D, H] weight and
//! bias, and gate and up one over [2I, H]. Each output element is still its own FP32 dot product
//! over the same H products plus its own bias, so the merges are exact in the sense the crate's
//! contract uses (what differs is cuBLAS' choice of kernel, which no contract pins). RoPE with the
//! cache write (`rope::rope_qkv`) reads q, k, v from the merged rows; the fused SwiGLU reads the
//! [gate | up] rows. A cuBLAS decode step is then 12 launches a layer (norm, bias fill, GEMM, RoPE,
//! 3 for attention, GEMM, add-norm, GEMM, SwiGLU, GEMM) and 6 more (embedding, final norm,
//! lm_head, 2 for the argmax, position update); the fused step's plan is in device/step.rs.
//!
//! Dtypes: weights and activations share one storage dtype (f32, f16 or bf16; checkpoints hold
//! bf16, which f32 holds exactly and f16 rounds), logits are f32, every op computes in FP32.
//!
//! The KV cache is paged ([`crate::spec::kv_cache`], `model/cache.rs`): `options.num_pages`
//! pages of `options.page_size` positions per layer, handed to sequences as they grow. The
//! default, one page of `capacity` positions per sequence, is the classic slot cache; any page size
//! runs the same kernels and gives the same tokens, bit for bit.
//!
//! Memory: the weights, the KV cache and a fixed workspace are allocated at construction
//! ([`DeviceModel::memory`] reports the bytes of each); nothing is allocated per token. A decode
//! step neither allocates nor synchronises, so it can be captured; [`DeviceModel::decode_step`]
//! captures it once per batch size and replays the graph afterwards (or launches directly when
//! graphs are off, for comparison).
//!
//! Errors: bad host input (a slot outside the cache, a sequence past its capacity, a token past
//! the vocabulary) is refused before anything is launched. What only the device sees (a NaN row's
//! argmax fed back as a token, a bad device position) is flagged in status words that
//! [`DeviceModel::check_status`] reads; [`DeviceModel::next_tokens`] reads them with the tokens.
//!
//! ```
//! use qwen_kernels::model::{DeviceModel, ModelOptions};
//! use qwen_kernels::{DType, Gpu};
//!
//! let gpu = Gpu::any(0)?; // a GPU when one is usable, else the software device
//! let dir = std::path::Path::new("golden/data/tiny-qwen2-gen/checkpoint");
//! // Up to 4 sequences of 64 positions, weights and activations in bf16.
//! let mut model = DeviceModel::from_checkpoint(&gpu, dir, ModelOptions::new(DType::BF16, 4, 64))?;
//! println!("{:?}", model.memory()); // weights, KV cache, workspace: all allocated here
//!
//! // Two prompts of different lengths, each prefilled into its slot; each returns its first token.
//! let first = vec![model.prefill(&gpu, 0, &[288, 369, 285, 377])?, model.prefill(&gpu, 1, &[54, 271])?];
//! // Decode both together: each step is one CUDA graph replay (captured at the first step).
//! model.begin_decode(&gpu, &[0, 1], &first)?;
//! for _ in 0..4 {
//!     model.decode_step(&gpu)?;
//!     let next = model.next_tokens(&gpu)?; // synchronises; a NaN row or a bad token is an error
//!     assert_eq!(next.len(), 2);
//! }
//! assert_eq!((model.seq_len(0), model.seq_len(1)), (8, 6));
//! let logits = model.logits(); // f32 [slots, vocab] on the device: row b is sequence b's
//! assert_eq!(logits.layout().shape.dims(), &[4, 448]);
//! let cache = model.kv_cache(0)?; // layer 0: 4 pages of 64 positions, [pages, kv_heads, 64, head_dim]
//! assert_eq!(cache.k.layout().shape.dims(), &[4, 2, 64, 64]);
//! # Ok::<(), qwen_kernels::Error>(())
//! ```
//!
//! An engine holding its weights on the device already passes them by Hugging Face name
//! ([`DeviceModel::from_device_tensors`], wrapping its cudarc buffers with
//! [`DeviceTensor::from_slice`]), and drives the model on its own stream ([`Gpu::with_stream`]).

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::model::weights::{bf16_to_f32, Checkpoint, ModelWeights};
use crate::model::Qwen2Config;
use crate::ops::argmax::{self, ArgmaxOutput};
use crate::ops::sampling::{self as sampling_op, SamplingParams};
use super::sampling::ModelSampling;
use crate::model::cache::PagedCache;
use crate::ops::attention::{self, AttentionStatus, PrefillPath};
use crate::ops::decode::Advance;
use crate::ops::decode::HeadCandidates;
use crate::ops::embed::{self, EmbedStatus};
use crate::ops::kv_cache::{KvCacheDims, KvCacheView, KvLayout, PagedBatch};
use crate::ops::gemm::linear;
use crate::ops::rmsnorm::{add_rmsnorm, rmsnorm};
use crate::ops::rope::{rope_qkv, RopeTable};
use crate::ops::swiglu::swiglu_fused;
use crate::tensor::{DeviceTensor, HostTensor, View};
use cudarc::driver::sys::{CUgraphInstantiate_flags_enum, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, CudaView};
use std::collections::HashMap;

const OP: &str = "device model";

/// How a [`DeviceModel`] is laid out: storage dtype, KV cache size, chunking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelOptions {
    /// Storage dtype of weights and activations (logits are always f32).
    pub dtype: DType,
    /// Sequences the KV cache holds at once: the largest decode batch.
    pub slots: usize,
    /// Positions per slot (prompt plus generated tokens), at most the config's
    /// `max_position_embeddings`.
    pub capacity: usize,
    /// Tokens per prefill launch; longer prompts are prefilled in chunks of this many.
    pub prefill_chunk: usize,
    /// Keys per decode split ([`attention::decode_with_chunk`]).
    pub decode_chunk: usize,
    /// Capture each decode step into a CUDA graph (once per batch size) and replay it.
    pub graphs: bool,
    /// Positions per page of the KV cache ([`crate::spec::kv_cache`]).
    pub page_size: usize,
    /// Pages of the KV cache (per layer); sequences take them as they grow.
    pub num_pages: usize,
    /// Order of a page's dimensions.
    pub kv_layout: KvLayout,
    /// How a decode step computes (`model/device/step.rs`): the fused GEMV kernels (the default)
    /// or the unfused launches over cuBLAS.
    pub decode_path: DecodePath,
    /// Launch the fused decode kernels as programmatic dependent launches (PDL, sm_90: each may
    /// start while the kernel before it finishes; [`Gpu::launch_struct`]), inside the captured
    /// graph too. Off by default until a GPU has measured it; the results are the same either way.
    pub pdl: bool,
}

impl ModelOptions {
    /// `slots` sequences of up to `capacity` positions in `dtype`; chunks of 512 prompt tokens,
    /// the default decode split, graphs on; a KV cache of one page of `capacity` positions per
    /// sequence (HND).
    pub fn new(dtype: DType, slots: usize, capacity: usize) -> Self {
        ModelOptions {
            dtype,
            slots,
            capacity,
            prefill_chunk: 512,
            decode_chunk: attention::DEFAULT_DECODE_CHUNK,
            graphs: true,
            page_size: capacity.max(1),
            num_pages: slots,
            kv_layout: KvLayout::Hnd,
            decode_path: DecodePath::Fused,
            pdl: false,
        }
    }

    /// A cache of pages of `page_size` positions in `layout`, enough for every sequence at its
    /// capacity.
    pub fn with_pages(self, page_size: usize, layout: KvLayout) -> Self {
        let page_size = page_size.max(1);
        ModelOptions { page_size, num_pages: self.slots * self.capacity.div_ceil(page_size), kv_layout: layout, ..self }
    }
}

/// Bytes a [`DeviceModel`] allocated, by purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReport {
    pub weights: usize,
    pub kv_cache: usize,
    /// Activations, logits, the attention and argmax workspaces, device token/position arrays.
    pub workspace: usize,
}

struct Layer {
    input_norm: DeviceTensor,
    /// [q; k; v]: [(heads + 2 kv_heads) head_dim, hidden], and its bias.
    qkv: DeviceTensor,
    qkv_bias: DeviceTensor,
    o: DeviceTensor,
    post_norm: DeviceTensor,
    /// [gate; up]: [2 * intermediate, hidden].
    gate_up: DeviceTensor,
    down: DeviceTensor,
}

/// Activations for up to `rows` tokens at once (a prefill chunk or a decode batch).
struct Workspace {
    rows: usize,
    resid: DeviceTensor,
    xn: DeviceTensor,
    /// The merged projection's output, [rows, (heads + 2 kv_heads) head_dim].
    qkv: DeviceTensor,
    /// The rotated q [rows, heads, head_dim].
    q: DeviceTensor,
    attn: DeviceTensor,
    /// o_proj's and down_proj's output, added into `resid` by the next add_rmsnorm.
    proj: DeviceTensor,
    gate_up: DeviceTensor,
    act: DeviceTensor,
    attn_ws: DeviceTensor,
    /// [slots, vocab] f32: the decode batch's logits.
    logits: DeviceTensor,
    /// [slots, vocab] f32: the last prefill's logits (a row per sequence it finished), and their
    /// argmax (apart from the decode batch's, so a prefill between decode steps leaves the batch's
    /// next tokens alone).
    prefill_logits: DeviceTensor,
    prefill_argmax: ArgmaxOutput,
    /// Prefill: token ids, positions and cache slots of the rows of a pass; the block table rows
    /// [slots, max_pages] and lengths [slots] of its sequences, and their cu_seqlens [slots + 1].
    tokens: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    slot_mapping: CudaSlice<i32>,
    pre_table: CudaSlice<i32>,
    pre_len: CudaSlice<i32>,
    pre_cu: CudaSlice<i32>,
    /// Decode: each row's position, length (position + 1) and cache slot, and its block table row
    /// [slots, max_pages]; the tokens are `argmax`'s index.
    dec: DecodeRows,
    dec_tables: CudaSlice<i32>,
    argmax: ArgmaxOutput,
    /// The fused head's per-block argmax candidates, [slots, vocab / 8].
    head_cand: HeadCandidates,
}

/// The decode batch's per-row metadata that a step advances on the device ([`Advance`]).
struct DecodeRows {
    positions: CudaSlice<i32>,
    lens: CudaSlice<i32>,
    slot_mapping: CudaSlice<i32>,
}

impl DecodeRows {
    /// The update of rows 0..b by the step's last kernel: `tables` is the first b rows of the
    /// decode block tables (a view the caller keeps until the launch).
    fn advance<'a, 'b>(&'a mut self, tables: &'a CudaView<'b, i32>, max_pages: usize, page_size: usize) -> Advance<'a, 'b> {
        Advance { positions: &mut self.positions, lens: &mut self.lens, slot_mapping: &mut self.slot_mapping, block_tables: tables, max_pages, page_size }
    }
}

impl Workspace {
    /// Over the first `t` rows: resid += proj (the pending projection), xn = rmsnorm(resid) with
    /// `weight` (one fused launch).
    fn add_norm(&mut self, gpu: &Gpu, t: usize, weight: &DeviceTensor, eps: f32) -> Result<()> {
        add_rmsnorm(gpu, &self.proj.view().rows(0..t)?, &mut self.resid.view_mut().rows_mut(0..t)?, &weight.view(), eps, &mut self.xn.view_mut().rows_mut(0..t)?)
    }
}

/// A Qwen2 model on the device: weights, KV cache, workspace (see the module docs).
pub struct DeviceModel {
    config: Qwen2Config,
    options: ModelOptions,
    embed: DeviceTensor,
    /// None when tied to the embedding.
    lm_head: Option<DeviceTensor>,
    norm: DeviceTensor,
    layers: Vec<Layer>,
    cache: PagedCache,
    rope: RopeTable,
    embed_status: EmbedStatus,
    attn_status: AttentionStatus,
    ws: Workspace,
    /// The decode steps' reports: the device buffer their last kernel packs, the pinned host
    /// buffers and the steps not read yet (device/report.rs).
    reports: report::StepReports,
    /// Valid positions of each slot: the one source of truth, with the cache's block tables. The
    /// device's copies for the decode batch (`ws.dec.positions`, `ws.dec.lens`,
    /// `ws.dec.slot_mapping`, `ws.dec_tables`) follow them: a decode step advances the first three
    /// itself, and anything else that changes a length or a table (truncate, reset, prefill,
    /// forward_layer, a page taken) sets `device_lens_stale`, so the next step uploads them again
    /// before it runs.
    lens: Vec<usize>,
    /// The device's metadata of the batch no longer equals the host's.
    device_lens_stale: bool,
    /// The decode batch: row b continues slot batch[b].
    batch: Vec<usize>,
    /// Decode-step graphs by (batch size, whether the head samples).
    graphs: HashMap<(usize, bool), CudaGraph>,
    /// Each slot's sampling parameters and the samplers of the two heads.
    sampling: ModelSampling,
    /// Whether the prefill head's rows (set by `prefill_pass`) and the decode batch sample.
    prefill_sampled: bool,
    decode_sampled: bool,
    memory: MemoryReport,
    defect: Option<Defect>,
}

/// A wiring defect planted on purpose, to show that the checks catch it (tests only). The
/// weight-level ones (a dropped bias, a transposed weight, gate and up swapped) are planted in the
/// weights handed to [`DeviceModel::new`] instead.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    /// Every token at position 0: RoPE never rotates and the cache row 0 is overwritten.
    PositionStuckAtZero,
    /// The argmax over the padded vocabulary instead of the real one.
    UnboundedArgmax,
}

/// What the per-layer trace of a forward holds (free-running, [`DeviceModel::prefill_traced`]).
#[derive(Clone, Debug, Default)]
pub struct DeviceTrace {
    /// After each layer's attention (the residual stream), [T, H] each.
    pub attn_residual: Vec<HostTensor>,
    /// The embedding, then after each layer: layers + 1 entries of [T, H].
    pub hidden: Vec<HostTensor>,
}

mod build;
mod engine;
mod generate;
mod prefill;
mod report;
mod step;
pub use engine::{EnginePrefill, EngineStep};
pub use step::DecodePath;
pub use generate::Generation;
pub use report::IN_FLIGHT;

fn bad(detail: String) -> Error {
    Error::invalid(OP, detail)
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| bad(format!("{what} {v} does not fit i32")))
}

impl DeviceModel {
    /// Plant `defect` (tests only: see [`Defect`]).
    #[doc(hidden)]
    pub fn plant_defect(&mut self, defect: Defect) {
        self.defect = Some(defect);
    }

    /// Positions as uploaded: `positions`, or zeros with the planted defect.
    fn positions(&self, positions: Vec<i32>) -> Vec<i32> {
        if self.defect == Some(Defect::PositionStuckAtZero) {
            return vec![0; positions.len()];
        }
        positions
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// Capture decode steps into CUDA graphs (replayed from the next step on), or launch them
    /// directly. Graphs already captured are kept for when they are switched back on.
    pub fn set_graphs(&mut self, on: bool) {
        self.options.graphs = on;
    }

    /// Bytes of weights, KV cache and workspace, all allocated at construction.
    pub fn memory(&self) -> MemoryReport {
        self.memory
    }

    /// Valid positions of `slot` (its prompt and generated tokens so far).
    pub fn seq_len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Forget the sequence in `slot` (its pages go back to the cache's pool).
    pub fn reset(&mut self, slot: usize) -> Result<()> {
        self.check_slot(slot)?;
        self.set_len(slot, 0);
        self.cache.truncate(slot, 0);
        Ok(())
    }

    /// Keep the first `len` positions of `slot` (an engine rolling a sequence back, e.g. after
    /// rejected speculative tokens); the rest are overwritten by the next tokens.
    pub fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        self.check_slot(slot)?;
        if len > self.lens[slot] {
            return Err(bad(format!("cannot truncate slot {slot} of {} positions to {len}", self.lens[slot])));
        }
        self.set_len(slot, len);
        self.cache.truncate(slot, len);
        Ok(())
    }

    /// Declare that the first `len` positions of `slot`'s sequence hold keys and values the caller
    /// writes into the KV cache ([`DeviceModel::kv_cache`]) at the pages [`DeviceModel::block_table`]
    /// lists (taken here as needed): an engine importing a sequence's cache, or a profile that
    /// needs a context without its prefill. The next token goes to position `len`.
    pub fn set_cached_len(&mut self, slot: usize, len: usize) -> Result<()> {
        self.check_slot(slot)?;
        if len > self.options.capacity {
            return Err(bad(format!("{len} cached positions in slot {slot} of {} positions", self.options.capacity)));
        }
        self.cache.truncate(slot, len);
        self.cache.grow(slot, len)?;
        self.set_len(slot, len);
        Ok(())
    }

    /// `dst` continues the sequence in `src` from its current length, sharing its pages (a
    /// common prompt's, for several continuations): nothing is copied until one of them writes
    /// into a shared page, which is then copied for it (copy-on-write). `dst` is reset first.
    pub fn fork(&mut self, src: usize, dst: usize) -> Result<()> {
        self.check_slot(src)?;
        self.check_slot(dst)?;
        if src == dst {
            return Err(bad(format!("cannot fork slot {src} into itself")));
        }
        let len = self.lens[src];
        self.cache.share(src, dst, len);
        self.set_len(dst, len);
        Ok(())
    }

    /// How the heads choose `slot`'s next tokens from now on: greedy (the bounded argmax, the
    /// default) or sampled ([`crate::ops::sampling`]). The draw for position p uses Philox step p
    /// of the seed, so a sequence rolled back or rebuilt draws the same tokens again.
    pub fn set_sampling(&mut self, slot: usize, params: SamplingParams) -> Result<()> {
        self.check_slot(slot)?;
        self.sampling.set(slot, params)?;
        // The decode batch's device parameters follow before the next step.
        self.device_lens_stale = true;
        Ok(())
    }

    pub fn sampling(&self, slot: usize) -> SamplingParams {
        self.sampling.get(slot)
    }

    /// The pages of `slot`'s sequence, in position order: position p is at offset p % page_size
    /// of page `block_table(slot)[p / page_size]` of every layer's cache.
    pub fn block_table(&self, slot: usize) -> &[i32] {
        self.cache.pages(slot.min(self.options.slots - 1))
    }

    /// Set the host's length of `slot` outside a decode step: the device's copy of the batch's
    /// positions and lens is uploaded again before the next step.
    fn set_len(&mut self, slot: usize, len: usize) {
        self.lens[slot] = len;
        self.device_lens_stale = true;
    }

    /// Layer `layer`'s paged KV cache in the model's dtype and layout ([`crate::spec::kv_cache`]);
    /// positions 0..seq_len(slot) of a sequence are valid, at its [`DeviceModel::block_table`].
    pub fn kv_cache(&self, layer: usize) -> Result<KvCacheView<'_>> {
        let c = self.cache.layers.get(layer).ok_or_else(|| bad(format!("layer {layer} of {}", self.layers.len())))?;
        Ok(c.view())
    }

    /// The cache's dimensions (shared by every layer).
    pub fn kv_cache_dims(&self) -> KvCacheDims {
        KvCacheDims {
            num_pages: self.options.num_pages,
            page_size: self.options.page_size,
            kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim,
            layout: self.options.kv_layout,
        }
    }

    /// Pages of the cache not held by any sequence.
    pub fn free_pages(&self) -> usize {
        self.cache.free_pages()
    }

    fn check_slot(&self, slot: usize) -> Result<()> {
        if slot >= self.options.slots {
            return Err(bad(format!("slot {slot} outside the cache's {} slots", self.options.slots)));
        }
        Ok(())
    }

    /// One decoder layer over the first `t` rows of the workspace: expects the residual stream in
    /// `resid` (layer 0) or the previous layer's down projection pending in `proj`, and leaves its
    /// own down projection pending in `proj`.
    fn layer(&mut self, gpu: &Gpu, l: usize, t: usize, attend: Attend<'_>, mut trace: Option<&mut DeviceTrace>) -> Result<()> {
        let c = &self.config;
        let eps = c.rms_norm_eps;
        let (heads, kv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let ws = &mut self.ws;
        let lw = &mut self.layers[l];
        let cache = &mut self.cache.layers[l];
        let max_pages = self.cache.max_pages;
        if l == 0 {
            rmsnorm(gpu, &ws.resid.view().rows(0..t)?, &lw.input_norm.view(), eps, &mut ws.xn.view_mut().rows_mut(0..t)?)?;
        } else {
            ws.add_norm(gpu, t, &lw.input_norm, eps)?;
        }
        linear(gpu, &ws.xn.view().rows(0..t)?, &lw.qkv.view(), Some(&lw.qkv_bias.view()), &mut ws.qkv.view_mut().rows_mut(0..t)?)?;
        let (positions, slots) = match attend {
            Attend::Prefill { .. } => (ws.positions.slice(0..t), ws.slot_mapping.slice(0..t)),
            Attend::Decode => (ws.dec.positions.slice(0..t), ws.dec.slot_mapping.slice(0..t)),
            Attend::Engine(step) => (step.positions.slice(0..t), step.slot_mapping.slice(0..t)),
            Attend::EnginePrefill(step) => (step.positions.slice(0..t), step.slot_mapping.slice(0..t)),
        };
        rope_qkv(gpu, &mut self.rope, &ws.qkv.view().rows(0..t)?, kv, &positions, &slots, &mut ws.q.view_mut().rows_mut(0..t)?, &mut cache.view_mut())?;
        match attend {
            Attend::Prefill { seqs, max_q } => {
                let (table, len, cu) = (ws.pre_table.slice(0..seqs * max_pages), ws.pre_len.slice(0..seqs), ws.pre_cu.slice(0..seqs + 1));
                let batch = PagedBatch { block_tables: &table, max_pages, seq_lens: &len };
                let q = ws.q.view().rows(0..t)?;
                attention::prefill_paged(gpu, &q, &cache.view(), &batch, &cu, max_q, &mut self.attn_status, &mut ws.attn.view_mut().rows_mut(0..t)?, PrefillPath::Auto)?
            }
            Attend::Decode => {
                let (table, lens) = (ws.dec_tables.slice(0..t * max_pages), ws.dec.lens.slice(0..t));
                let batch = PagedBatch { block_tables: &table, max_pages, seq_lens: &lens };
                let q = ws.q.view().rows(0..t)?;
                attention::decode_with_chunk(gpu, &q, &cache.view(), &batch, &mut ws.attn_ws.view_mut(), &mut ws.attn.view_mut().rows_mut(0..t)?, self.options.decode_chunk)?
            }
            Attend::Engine(step) => {
                let q = ws.q.view().rows(0..t)?;
                attention::decode_with_chunk(gpu, &q, &cache.view(), &step.paged, &mut ws.attn_ws.view_mut(), &mut ws.attn.view_mut().rows_mut(0..t)?, self.options.decode_chunk)?
            }
            Attend::EnginePrefill(step) => {
                let q = ws.q.view().rows(0..t)?;
                attention::prefill_paged(gpu, &q, &cache.view(), &step.paged, step.cu_seqlens, step.max_q_len, &mut self.attn_status, &mut ws.attn.view_mut().rows_mut(0..t)?, PrefillPath::Auto)?
            }
        }
        linear(gpu, &ws.attn.view().rows(0..t)?.reshape(&[t, heads * d])?, &lw.o.view(), None, &mut ws.proj.view_mut().rows_mut(0..t)?)?;
        ws.add_norm(gpu, t, &lw.post_norm, eps)?;
        if let Some(tr) = trace.as_deref_mut() {
            tr.attn_residual.push(ws.resid.view().rows(0..t)?.to_host(gpu)?);
        }
        linear(gpu, &ws.xn.view().rows(0..t)?, &lw.gate_up.view(), None, &mut ws.gate_up.view_mut().rows_mut(0..t)?)?;
        swiglu_fused(gpu, &ws.gate_up.view().rows(0..t)?, &mut ws.act.view_mut().rows_mut(0..t)?)?;
        linear(gpu, &ws.act.view().rows(0..t)?, &lw.down.view(), None, &mut ws.proj.view_mut().rows_mut(0..t)?)?;
        if let Some(tr) = trace {
            // The residual after this layer is resid + proj; the next add_rmsnorm forms it. For the
            // trace, form it now in a copy (the kernels' own sum: T(x + residual)).
            if l + 1 < self.layers.len() {
                let mut next = self.ws.resid.view().rows(0..t)?.to_host(gpu)?.into_data();
                let down = self.ws.proj.view().rows(0..t)?.to_host(gpu)?;
                let dtype = self.options.dtype;
                for (r, &x) in next.iter_mut().zip(down.data()) {
                    *r = dtype.round(*r + x);
                }
                tr.hidden.push(HostTensor::from_f32(dtype, &[t, self.config.hidden_size], next)?);
            }
        }
        Ok(())
    }

    /// The final norm over the first `t` rows: resid += proj (the last layer's output), xn = norm.
    fn final_norm(&mut self, gpu: &Gpu, t: usize) -> Result<()> {
        self.ws.add_norm(gpu, t, &self.norm, self.config.rms_norm_eps)
    }

    /// lm_head over rows `rows` of `xn` into the first rows of the logits `to` names (f32), then
    /// the bounded argmax into its argmax output.
    fn head(&mut self, gpu: &Gpu, rows: std::ops::Range<usize>, to: Head) -> Result<()> {
        let n = rows.len();
        self.lm_head_logits(gpu, rows, to)?;
        let n_valid = self.n_valid();
        let ws = &mut self.ws;
        let (logits, out) = match to {
            Head::Prefill => (&mut ws.prefill_logits, &mut ws.prefill_argmax),
            Head::Decode => (&mut ws.logits, &mut ws.argmax),
        };
        let (sampled, sampler) = match to {
            Head::Prefill => (self.prefill_sampled, &mut self.sampling.prefill),
            Head::Decode => (self.decode_sampled, &mut self.sampling.decode),
        };
        if sampled {
            // Greedy rows among them take the bounded argmax inside the sampling kernel; the
            // tokens land where the argmax's would, so the next step reads them the same way.
            sampling_op::sample_n(gpu, &logits.view().rows(0..n)?, n_valid, sampler, 1, out.index_mut())
        } else {
            argmax::argmax(gpu, &logits.view().rows(0..n)?, n_valid, out, false)
        }
    }

    /// lm_head over rows `rows` of `xn` into the first rows of the logits `to` names (f32).
    fn lm_head_logits(&mut self, gpu: &Gpu, rows: std::ops::Range<usize>, to: Head) -> Result<()> {
        let n = rows.len();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = match to {
            Head::Prefill => &mut self.ws.prefill_logits,
            Head::Decode => &mut self.ws.logits,
        };
        linear(gpu, &self.ws.xn.view().rows(rows)?, &head.view(), None, &mut logits.view_mut().rows_mut(0..n)?)
    }

    /// The vocabulary a head chooses from: the real one (the padded one with the planted defect).
    fn n_valid(&self) -> usize {
        if self.defect == Some(Defect::UnboundedArgmax) {
            self.config.vocab_size
        } else {
            self.config.real_vocab_size
        }
    }

    /// The logits of each row of the last decode step, f32 [slots, vocab] (rows past the batch
    /// hold stale values).
    pub fn logits(&self) -> View<'_> {
        self.ws.logits.view()
    }

    /// The logits of the last prefill's last token, f32 [slots, vocab]: row i is the i-th sequence
    /// the last pass finished (row 0 after [`DeviceModel::prefill`]).
    pub fn prefill_logits(&self) -> View<'_> {
        self.ws.prefill_logits.view()
    }

    /// Set the decode batch: row b continues the sequence in `slots[b]`, fed `tokens[b]` (usually
    /// the token its prefill returned). Later steps feed each row its own previous argmax. Steps of
    /// the previous batch not read yet are read first (their flags checked, their tokens dropped),
    /// so [`DeviceModel::next_tokens`] reads this batch's steps.
    pub fn begin_decode(&mut self, gpu: &Gpu, slots: &[usize], tokens: &[u32]) -> Result<()> {
        if slots.is_empty() || slots.len() > self.options.slots || tokens.len() != slots.len() {
            return Err(bad(format!("a decode batch of {} slots and {} tokens (1..={} rows, one token each)", slots.len(), tokens.len(), self.options.slots)));
        }
        for (b, &s) in slots.iter().enumerate() {
            self.check_slot(s)?;
            if slots[..b].contains(&s) {
                return Err(bad(format!("slot {s} appears twice in the decode batch {slots:?}")));
            }
        }
        embed::check_tokens(tokens, self.config.vocab_size)?;
        while self.steps_in_flight() > 0 {
            self.next_tokens(gpu)?;
        }
        let b = slots.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        gpu.stream().memcpy_htod(&ids, &mut self.ws.argmax.index_mut().slice_mut(0..b)).cuda("cuMemcpyHtoD(decode tokens)")?;
        self.batch = slots.to_vec();
        self.device_lens_stale = true;
        Ok(())
    }

    /// Teacher forcing: the next decode step is fed `tokens` (one a row of the batch) instead of
    /// the tokens the last step chose. Only the tokens are replaced: positions, lengths and
    /// slots stay the ones the device advanced. The copy is ordered on the stream after the steps
    /// already queued, whose reports still read back their own choices.
    pub fn feed_tokens(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        let b = self.batch.len();
        if b == 0 || tokens.len() != b {
            return Err(bad(format!("feed_tokens: {} tokens for a decode batch of {b} rows (one a row, after begin_decode)", tokens.len())));
        }
        embed::check_tokens(tokens, self.config.vocab_size)?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        gpu.stream().memcpy_htod(&ids, &mut self.ws.argmax.index_mut().slice_mut(0..b)).cuda("cuMemcpyHtoD(fed tokens)")
    }

    /// The batch's device metadata from the host's: positions (the lens), lens + 1, the slots of
    /// those positions and the block table rows in batch order. The decode step reads them and
    /// advances the first three itself.
    fn upload_batch_meta(&mut self, gpu: &Gpu) -> Result<()> {
        let b = self.batch.len();
        let lens: Vec<i32> = self.batch.iter().map(|&s| self.lens[s] as i32 + 1).collect();
        let positions = self.positions(self.batch.iter().map(|&s| self.lens[s] as i32).collect());
        let slots: Vec<i32> = self.batch.iter().zip(&positions).map(|(&s, &p)| self.cache.slot(s, p as usize)).collect();
        let tables: Vec<i32> = self.batch.iter().flat_map(|&s| self.cache.table_row(s)).collect();
        let stream = gpu.stream();
        stream.memcpy_htod(&positions, &mut self.ws.dec.positions.slice_mut(0..b)).cuda("cuMemcpyHtoD(decode positions)")?;
        stream.memcpy_htod(&lens, &mut self.ws.dec.lens.slice_mut(0..b)).cuda("cuMemcpyHtoD(decode lens)")?;
        stream.memcpy_htod(&slots, &mut self.ws.dec.slot_mapping.slice_mut(0..b)).cuda("cuMemcpyHtoD(decode slot mapping)")?;
        stream.memcpy_htod(&tables, &mut self.ws.dec_tables.slice_mut(0..tables.len())).cuda("cuMemcpyHtoD(decode block tables)")?;
        // Each row draws the position after the one it feeds.
        self.decode_sampled = self.sampling.any(self.batch.iter().copied());
        if self.decode_sampled {
            let rows: Vec<(usize, usize)> = self.batch.iter().map(|&s| (s, self.lens[s] + 1)).collect();
            self.sampling.upload(gpu, true, &rows)?;
        }
        self.device_lens_stale = false;
        Ok(())
    }

    /// Queue one decode step of the batch set by [`DeviceModel::begin_decode`]: every row's token
    /// through every layer, the logits [B, vocab], the argmax (the next step's tokens, read with
    /// [`DeviceModel::next_tokens`]), the position update, and the copy of the step's report to
    /// the host (device/report.rs). Launched from a CUDA graph when `options.graphs` (captured at
    /// the first step of each batch size), else directly. Neither allocates nor synchronises,
    /// unless [`IN_FLIGHT`] steps are unread: then it first waits for the oldest and checks it.
    pub fn decode_step(&mut self, gpu: &Gpu) -> Result<()> {
        let b = self.batch.len();
        if b == 0 {
            return Err(bad("decode_step before begin_decode".into()));
        }
        if let Some(&s) = self.batch.iter().find(|&&s| self.lens[s] >= self.options.capacity) {
            return Err(bad(format!("slot {s} is full: {} positions of {}", self.lens[s], self.options.capacity)));
        }
        self.make_room(gpu)?;
        // Pages for this step's position and the next one (the step computes the next step's slot
        // on the device, from the table it has); a shared page about to be written is copied.
        for &s in &self.batch {
            let p = self.lens[s];
            let end = (p + 2).min(self.options.capacity);
            if self.cache.ensure(gpu, s, p, end)? {
                self.device_lens_stale = true;
            }
        }
        if self.device_lens_stale {
            // A length or a table changed on the host since the last step (truncate, reset,
            // prefill, a new page): the device's copies, which the graph reads, follow before
            // anything runs.
            self.upload_batch_meta(gpu)?;
        }
        let key = (b, self.decode_sampled);
        if self.options.graphs {
            if !self.graphs.contains_key(&key) {
                let stream = gpu.stream().clone();
                stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).cuda("cuStreamBeginCapture")?;
                let enqueued = self.enqueue_decode(gpu, b);
                // End the capture whatever happened, so the stream is usable again.
                let graph = stream.end_capture(CUgraphInstantiate_flags_enum(0)).cuda("cuStreamEndCapture");
                enqueued?;
                let graph = graph?.ok_or_else(|| bad("the capture of a decode step produced no graph".into()))?;
                self.graphs.insert(key, graph);
            }
            self.graphs[&key].launch().cuda("cuGraphLaunch(decode step)")?;
        } else {
            self.enqueue_decode(gpu, b)?;
        }
        for &s in &self.batch {
            self.lens[s] += 1;
        }
        self.queue_report(gpu, b)
    }

    /// Layer `layer` alone on `x` [T, H] (positions 0..T of `slot`, which it resets), for
    /// teacher-forced checks: returns the residual after attention and after the layer.
    pub fn forward_layer(&mut self, gpu: &Gpu, slot: usize, layer: usize, x: &HostTensor) -> Result<(HostTensor, HostTensor)> {
        self.check_slot(slot)?;
        let h = self.config.hidden_size;
        let [t, width] = *x.dims() else {
            return Err(Error::shape(OP, format!("layer input must be [tokens, hidden], got {}", x.layout())));
        };
        if width != h || x.dtype() != self.options.dtype || t == 0 || t > self.ws.rows.min(self.options.capacity) {
            return Err(Error::shape(OP, format!("layer input {} for hidden {h}, dtype {}, at most {} rows", x.layout(), self.options.dtype, self.ws.rows)));
        }
        if layer >= self.layers.len() {
            return Err(bad(format!("layer {layer} of {}", self.layers.len())));
        }
        self.reset(slot)?;
        self.upload_prefill_meta(gpu, &[(slot, 0, t)])?;
        self.ws.resid.view_mut().rows_mut(0..t)?.upload(gpu, x)?;
        // A layer other than 0 expects its input as resid + proj: zero proj, so resid is the input.
        if layer > 0 {
            gpu.stream().memset_zeros(&mut self.ws.proj.view_mut().rows_mut(0..t)?.data).cuda("cuMemsetD8(proj)")?;
        }
        let mut trace = DeviceTrace::default();
        self.layer(gpu, layer, t, Attend::Prefill { seqs: 1, max_q: t }, Some(&mut trace))?;
        // The layer's output: resid + proj, formed by the kernels (the next norm's add).
        self.final_norm(gpu, t)?;
        let out = self.ws.resid.view().rows(0..t)?.to_host(gpu)?;
        self.reset(slot)?;
        self.check_status(gpu)?;
        let mid = trace.attn_residual.pop().ok_or_else(|| bad("no attention residual recorded".into()))?;
        Ok((mid, out))
    }

    /// The final norm and lm_head of the last row of `x` [T, H], for teacher-forced checks: the
    /// logits (f32 [vocab]) and their greedy token.
    pub fn forward_head(&mut self, gpu: &Gpu, x: &HostTensor) -> Result<(Vec<f32>, u32)> {
        let [t, width] = *x.dims() else {
            return Err(Error::shape(OP, format!("head input must be [tokens, hidden], got {}", x.layout())));
        };
        if width != self.config.hidden_size || x.dtype() != self.options.dtype || t == 0 || t > self.ws.rows {
            return Err(Error::shape(OP, format!("head input {} for hidden {}, dtype {}", x.layout(), self.config.hidden_size, self.options.dtype)));
        }
        self.ws.resid.view_mut().rows_mut(0..t)?.upload(gpu, x)?;
        gpu.stream().memset_zeros(&mut self.ws.proj.view_mut().rows_mut(0..t)?.data).cuda("cuMemsetD8(proj)")?;
        self.final_norm(gpu, t)?;
        self.head(gpu, t - 1..t, Head::Prefill)?;
        let logits = self.ws.prefill_logits.view().rows(0..1)?.to_host(gpu)?;
        Ok((logits.into_data(), self.read_prefill_tokens(gpu, 1)?[0]))
    }

    /// Greedy generation for one sequence in `slot` (reset first): prefill `prompt`, then `steps - 1`
    /// decode steps; returns the `steps` tokens chosen (the first from the prefill).
    pub fn greedy(&mut self, gpu: &Gpu, slot: usize, prompt: &[u32], steps: usize) -> Result<Vec<u32>> {
        self.reset(slot)?;
        if steps == 0 {
            return Ok(Vec::new());
        }
        let first = self.prefill(gpu, slot, prompt)?;
        let mut tokens = vec![first];
        self.begin_decode(gpu, &[slot], &[first])?;
        while tokens.len() < steps {
            self.decode_step(gpu)?;
            tokens.push(self.next_tokens(gpu)?[0]);
        }
        Ok(tokens)
    }
}

/// Which logits and argmax a head writes.
#[derive(Clone, Copy)]
enum Head {
    Prefill,
    Decode,
}

/// Where a layer's attention reads its keys.
#[derive(Clone, Copy)]
enum Attend<'a> {
    /// A ragged prefill pass of `seqs` sequences, at most `max_q` new tokens each: the prefill
    /// metadata (`upload_prefill_meta`).
    Prefill { seqs: usize, max_q: usize },
    /// The decode batch: each row's block table and length on the device.
    Decode,
    /// A decode step described by an engine ([`DeviceModel::decode_with`]).
    Engine(&'a EngineStep<'a>),
    /// A ragged prefill described by an engine ([`DeviceModel::prefill_with`]).
    EnginePrefill(&'a EnginePrefill<'a>),
}
