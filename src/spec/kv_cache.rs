//! The paged KV cache, shared by the RoPE cache write (`ops::rope`), decode attention and the
//! paged prefill (`ops::attention`). Documented here, once.
//!
//! One layer's cache is two tensors of one storage dtype, `k_cache` and `v_cache`, made of
//! `num_pages` pages of `page_size` positions each, in one of two layouts chosen when the cache is
//! made (the shape alone cannot tell them apart when `kv_heads == page_size`, so the caller says
//! which):
//!
//! ```text
//! HND  [num_pages, kv_heads, page_size, head_dim]    a page's positions of one head are contiguous
//! NHD  [num_pages, page_size, kv_heads, head_dim]    a position's heads are contiguous (vLLM's flash backend)
//! ```
//!
//! A sequence's pages are a row of a *block table* `[batch, max_pages]` (i32): position `p` of
//! sequence `b` lives in page `block_tables[b, p / page_size]` at offset `p % page_size`; its
//! length is `seq_lens[b]` (i32), so its valid positions are `0..seq_lens[b]` and it may use
//! `max_pages * page_size` positions at most. Entries of the table past the sequence's last page
//! are never read. Sequences may share pages (a common prompt): the kernels only read through the
//! table, and writes go where the engine's slot mapping says (copy-on-write is the engine's job).
//!
//! The cache write takes a *slot mapping* `[tokens]` (i32): token `t`'s key and value go to slot
//! `slot_mapping[t] = page * page_size + offset`; a negative slot skips the token (vLLM's padding
//! convention), a slot at or past `num_pages * page_size` is refused on the device.
//!
//! FlashInfer's CSR form maps onto this one: with `indptr [batch + 1]`, `indices [nnz]` and
//! `last_page_len [batch]`, row `b` of the block table is `indices[indptr[b]..indptr[b + 1]]`
//! (padded to `max_pages` with anything), and `seq_lens[b] = (indptr[b + 1] - indptr[b] - 1) *
//! page_size + last_page_len[b]` ([`block_tables_from_csr`]).
//!
//! A cache of one page of `capacity` positions per sequence (`page_size = capacity`, the block
//! table of sequence `b` the single page `b`) is the classic per-sequence slot cache: the same
//! kernels, the same code path.
//!
//! Why HND by default: decode reads, for one (sequence, KV head), the keys of a page's positions
//! once for the whole query group; in HND those are one contiguous run of `page_size * head_dim`
//! elements. NHD makes a position's write one contiguous run of `kv_heads * head_dim` elements
//! and is what vLLM-style engines hand over. Every key row is `head_dim` contiguous elements in
//! both, so 16-byte loads work for either.

use crate::error::{Error, Result};
use crate::tensor::Layout;

pub const OP: &str = "kv_cache";

/// Order of a page's dimensions (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvLayout {
    /// `[num_pages, kv_heads, page_size, head_dim]`.
    #[default]
    Hnd,
    /// `[num_pages, page_size, kv_heads, head_dim]`.
    Nhd,
}

impl KvLayout {
    pub fn name(self) -> &'static str {
        match self {
            KvLayout::Hnd => "HND",
            KvLayout::Nhd => "NHD",
        }
    }

    /// The shape of a cache tensor of this layout.
    pub fn shape(self, num_pages: usize, page_size: usize, kv_heads: usize, head_dim: usize) -> [usize; 4] {
        match self {
            KvLayout::Hnd => [num_pages, kv_heads, page_size, head_dim],
            KvLayout::Nhd => [num_pages, page_size, kv_heads, head_dim],
        }
    }
}

/// The dimensions of a validated cache pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheDims {
    pub num_pages: usize,
    /// Positions per page.
    pub page_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub layout: KvLayout,
}

impl KvCacheDims {
    /// Elements between pages.
    pub fn page_stride(&self) -> usize {
        self.kv_heads * self.page_size * self.head_dim
    }

    /// Elements between the kv heads of one position.
    pub fn head_stride(&self) -> usize {
        match self.layout {
            KvLayout::Hnd => self.page_size * self.head_dim,
            KvLayout::Nhd => self.head_dim,
        }
    }

    /// Elements between consecutive positions of one head within a page.
    pub fn row_stride(&self) -> usize {
        match self.layout {
            KvLayout::Hnd => self.head_dim,
            KvLayout::Nhd => self.kv_heads * self.head_dim,
        }
    }

    /// Element offset of the key row of kv head `head` at offset `pos` of page `page`.
    pub fn offset(&self, page: usize, head: usize, pos: usize) -> usize {
        page * self.page_stride() + head * self.head_stride() + pos * self.row_stride()
    }

    /// Element offset of slot `slot` (`page * page_size + offset`) for kv head `head`.
    pub fn slot_offset(&self, slot: usize, head: usize) -> usize {
        self.offset(slot / self.page_size, head, slot % self.page_size)
    }

    /// Slots of the cache: the bound of a slot mapping's entries.
    pub fn slots(&self) -> usize {
        self.num_pages * self.page_size
    }

    /// The shape of each cache tensor.
    pub fn shape(&self) -> [usize; 4] {
        self.layout.shape(self.num_pages, self.page_size, self.kv_heads, self.head_dim)
    }
}

/// Validate `k_cache` and `v_cache` as a cache of `layout`: both 4-d of that layout's order, same
/// shape and dtype, no dimension 0, `num_pages * page_size` slots within i32 (a slot mapping's
/// type).
pub fn check(op: &'static str, k_cache: Layout, v_cache: Layout, layout: KvLayout) -> Result<KvCacheDims> {
    let [num_pages, a, b, head_dim] = *k_cache.shape.dims() else {
        let order = match layout {
            KvLayout::Hnd => "[num_pages, kv_heads, page_size, head_dim]",
            KvLayout::Nhd => "[num_pages, page_size, kv_heads, head_dim]",
        };
        return Err(Error::shape(op, format!("a {} k_cache must be {order}, got {k_cache}", layout.name())));
    };
    if v_cache.shape != k_cache.shape {
        return Err(Error::shape(op, format!("v_cache {v_cache} must match k_cache {k_cache}")));
    }
    if v_cache.dtype != k_cache.dtype {
        return Err(Error::dtype(op, format!("v_cache is {} but k_cache is {}", v_cache.dtype, k_cache.dtype)));
    }
    if num_pages == 0 || a == 0 || b == 0 || head_dim == 0 {
        return Err(Error::shape(op, format!("empty cache {k_cache}")));
    }
    let (kv_heads, page_size) = match layout {
        KvLayout::Hnd => (a, b),
        KvLayout::Nhd => (b, a),
    };
    let dims = KvCacheDims { num_pages, page_size, kv_heads, head_dim, layout };
    if dims.slots() > i32::MAX as usize {
        return Err(Error::unsupported(op, format!("{num_pages} pages of {page_size} positions: {} slots past i32", dims.slots())));
    }
    Ok(dims)
}

/// Validate the host's view of a paged batch: `block_tables` [batch, max_pages] (row-major) and
/// `seq_lens` [batch] against a cache of `cache.num_pages` pages. Every sequence's length is in
/// `0..=max_pages * page_size` and every page it uses (`0..ceil(len / page_size)`) is inside the
/// cache. The kernels check the same on the device (they cannot trust device arrays); this is the
/// host's check, for callers that hold the metadata on the host.
pub fn check_block_tables(op: &'static str, cache: &KvCacheDims, block_tables: &[i32], max_pages: usize, seq_lens: &[i32]) -> Result<()> {
    let batch = seq_lens.len();
    if block_tables.len() != batch * max_pages {
        return Err(Error::shape(op, format!("block table of {} entries for {batch} sequences of {max_pages} pages", block_tables.len())));
    }
    let max_len = max_pages * cache.page_size;
    for (b, &len) in seq_lens.iter().enumerate() {
        if len < 0 || len as usize > max_len {
            return Err(Error::invalid(op, format!("sequence {b}: length {len} outside 0..={max_len} ({max_pages} pages of {})", cache.page_size)));
        }
        let used = (len as usize).div_ceil(cache.page_size);
        for (i, &page) in block_tables[b * max_pages..][..used].iter().enumerate() {
            if page < 0 || page as usize >= cache.num_pages {
                return Err(Error::invalid(op, format!("sequence {b}: page {i} is {page}, outside the cache's {} pages", cache.num_pages)));
            }
        }
    }
    Ok(())
}

/// Block tables [batch, max_pages] and sequence lengths from FlashInfer's CSR form (`indptr`
/// [batch + 1], `indices`, `last_page_len` [batch]); unused table entries are -1. Refuses a
/// decreasing or out-of-range `indptr`, a last page length outside 1..=page_size for a sequence
/// with pages (0 for one without), and a sequence of more than `max_pages` pages.
pub fn block_tables_from_csr(indptr: &[i32], indices: &[i32], last_page_len: &[i32], page_size: usize, max_pages: usize) -> Result<(Vec<i32>, Vec<i32>)> {
    let batch = last_page_len.len();
    if indptr.len() != batch + 1 {
        return Err(Error::shape(OP, format!("indptr of {} entries for {batch} sequences (needs batch + 1)", indptr.len())));
    }
    let mut tables = vec![-1; batch * max_pages];
    let mut lens = Vec::with_capacity(batch);
    for b in 0..batch {
        let (start, end) = (indptr[b], indptr[b + 1]);
        if start < 0 || end < start || end as usize > indices.len() {
            return Err(Error::invalid(OP, format!("indptr[{b}..={}] = {start}..{end} is not an increasing range inside {} indices", b + 1, indices.len())));
        }
        let n = (end - start) as usize;
        if n > max_pages {
            return Err(Error::invalid(OP, format!("sequence {b} has {n} pages, more than max_pages {max_pages}")));
        }
        let last = last_page_len[b];
        let ok = if n == 0 { last == 0 } else { last >= 1 && last as usize <= page_size };
        if !ok {
            return Err(Error::invalid(OP, format!("sequence {b}: last_page_len {last} with {n} pages of {page_size}")));
        }
        tables[b * max_pages..][..n].copy_from_slice(&indices[start as usize..end as usize]);
        let len = if n == 0 { 0 } else { (n - 1) * page_size + last as usize };
        lens.push(i32::try_from(len).map_err(|_| Error::invalid(OP, format!("sequence {b}: length {len} past i32")))?);
    }
    Ok((tables, lens))
}
