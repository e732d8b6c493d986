//! The device model's paged KV cache: one [`KvCache`] per layer (pages of `page_size` positions,
//! [`crate::spec::kv_cache`]), a page allocator, and each sequence's block table. An engine keeps
//! its own allocator and hands the kernels its own tables; this one serves [`super::DeviceModel`]
//! (`generate`, the tests): pages are taken as a sequence grows and given back when it is reset or
//! truncated, and sequences may share pages (a prompt's, for several continuations).
//!
//! The host's tables here are the source of truth; the device copies the decode step reads are
//! uploaded from them by the model whenever they change (see `DeviceModel::decode_step`).

use crate::dtype::DType;
use crate::error::{CudaContext as _, Error, Result};
use crate::gpu::Gpu;
use crate::ops::kv_cache::{KvCache, KvLayout};

const OP: &str = "device model";

pub(crate) struct PagedCache {
    /// One cache per layer, all with the same pages.
    pub layers: Vec<KvCache>,
    pub page_size: usize,
    /// Block table columns: pages a sequence may use.
    pub max_pages: usize,
    /// Pages not in use, taken from the back.
    free: Vec<i32>,
    /// Sequences holding each page.
    refs: Vec<u32>,
    /// Each sequence's pages, in position order.
    tables: Vec<Vec<i32>>,
}

impl PagedCache {
    /// `layers` caches of `num_pages` pages of `page_size` positions, for `sequences` sequences of
    /// at most `capacity` positions each.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        dtype: DType,
        layout: KvLayout,
        layers: usize,
        num_pages: usize,
        page_size: usize,
        kv_heads: usize,
        head_dim: usize,
        sequences: usize,
        capacity: usize,
    ) -> Result<Self> {
        let caches = (0..layers).map(|_| KvCache::zeros(gpu, dtype, layout, num_pages, page_size, kv_heads, head_dim)).collect::<Result<Vec<_>>>()?;
        Ok(PagedCache {
            layers: caches,
            page_size,
            max_pages: capacity.div_ceil(page_size),
            // Pages 0, 1, 2, ... handed out in that order.
            free: (0..num_pages as i32).rev().collect(),
            refs: vec![0; num_pages],
            tables: vec![Vec::new(); sequences],
        })
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// Sequence `seq`'s pages.
    pub fn pages(&self, seq: usize) -> &[i32] {
        &self.tables[seq]
    }

    /// Sequence `seq`'s block table row: its pages, then -1 up to `max_pages`.
    pub fn table_row(&self, seq: usize) -> Vec<i32> {
        let mut row = self.tables[seq].clone();
        row.resize(self.max_pages, -1);
        row
    }

    /// The slot (`page * page_size + offset`) of position `pos` of `seq`, whose page must exist.
    pub fn slot(&self, seq: usize, pos: usize) -> i32 {
        self.tables[seq][pos / self.page_size] * self.page_size as i32 + (pos % self.page_size) as i32
    }

    /// Give `seq` pages for positions `0..len` (at most `max_pages`); returns whether its table
    /// changed. A page `seq` shares with another sequence is copied first when a position from
    /// `from` on (the first to be written) falls in it: the other sequences keep their keys
    /// (copy-on-write).
    pub fn ensure(&mut self, gpu: &Gpu, seq: usize, from: usize, len: usize) -> Result<bool> {
        let need = len.div_ceil(self.page_size);
        if need > self.max_pages {
            return Err(Error::invalid(OP, format!("{len} positions need {need} pages, past the {} a sequence may use", self.max_pages)));
        }
        let mut changed = false;
        for i in from / self.page_size..self.tables[seq].len().min(need) {
            let page = self.tables[seq][i];
            if self.refs[page as usize] > 1 {
                let copy = self.take()?;
                self.copy_page(gpu, page, copy)?;
                self.refs[page as usize] -= 1;
                self.tables[seq][i] = copy;
                changed = true;
            }
        }
        Ok(self.grow(seq, len)? || changed)
    }

    /// Give `seq` new pages until positions `0..len` are covered (no copy-on-write: for positions
    /// the caller declares written). Returns whether its table changed.
    pub fn grow(&mut self, seq: usize, len: usize) -> Result<bool> {
        let need = len.div_ceil(self.page_size);
        if need > self.max_pages {
            return Err(Error::invalid(OP, format!("{len} positions need {need} pages, past the {} a sequence may use", self.max_pages)));
        }
        let mut changed = false;
        while self.tables[seq].len() < need {
            let page = self.take()?;
            self.tables[seq].push(page);
            changed = true;
        }
        Ok(changed)
    }

    /// Keep only the pages of `seq` that hold positions `0..len`; the others go back to the pool
    /// (once no sequence holds them). Returns whether its table changed.
    pub fn truncate(&mut self, seq: usize, len: usize) -> bool {
        let keep = len.div_ceil(self.page_size);
        let mut changed = false;
        while self.tables[seq].len() > keep {
            let page = self.tables[seq].pop().unwrap_or_default();
            self.release(page);
            changed = true;
        }
        changed
    }

    /// `dst` (emptied first) shares the pages of `src` that hold its positions `0..len`.
    pub fn share(&mut self, src: usize, dst: usize, len: usize) {
        self.truncate(dst, 0);
        let n = len.div_ceil(self.page_size).min(self.tables[src].len());
        let pages = self.tables[src][..n].to_vec();
        for &p in &pages {
            self.refs[p as usize] += 1;
        }
        self.tables[dst] = pages;
    }

    fn take(&mut self) -> Result<i32> {
        let page = self.free.pop().ok_or_else(|| Error::invalid(OP, format!("the KV cache's {} pages are all in use", self.refs.len())))?;
        self.refs[page as usize] = 1;
        Ok(page)
    }

    fn release(&mut self, page: i32) {
        let r = &mut self.refs[page as usize];
        *r -= 1;
        if *r == 0 {
            self.free.push(page);
        }
    }

    /// Copy page `from` to page `to` in every layer (k and v; on the stream).
    fn copy_page(&mut self, gpu: &Gpu, from: i32, to: i32) -> Result<()> {
        for cache in &mut self.layers {
            let dims = cache.dims()?;
            let bytes = dims.page_stride() * cache.k.dtype().size();
            let (src, dst) = (from as usize * bytes, to as usize * bytes);
            for t in [&mut cache.k, &mut cache.v] {
                let mut view = t.view_mut();
                let (mut lo, mut hi) = view.data.split_at_mut(src.max(dst));
                // The lower page is in `lo`, the higher at the start of `hi`.
                if src < dst {
                    gpu.stream().memcpy_dtod(&lo.slice(src..src + bytes), &mut hi.slice_mut(0..bytes)).cuda("cuMemcpyDtoD(KV page)")?;
                } else {
                    gpu.stream().memcpy_dtod(&hi.slice(0..bytes), &mut lo.slice_mut(dst..dst + bytes)).cuda("cuMemcpyDtoD(KV page)")?;
                }
            }
        }
        Ok(())
    }
}
